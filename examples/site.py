# The twisthost demo: every feature on 127.0.0.1:8080, using *.localhost names
# (they resolve to loopback without touching /etc/hosts).
#
#   make run          # or: twistd -n twisthost --config examples/site.py
#   curl http://app.localhost:8080/
#   curl --cacert examples/tls/localhost.pem --http2 https://app.localhost:8443/
#   twisthost check examples/site.py
from twisthost import ASGI, CGI, TLS, WSGI, HealthCheck, Host, Proxy, Redirect, Resource, Scripts, Site, Static

site = Site(
    listen=[
        "tcp:8080:interface=127.0.0.1",
        # HTTPS (and HTTP/2) for every host; a self-signed demo certificate (examples/tls).
        TLS("tcp:8443:interface=127.0.0.1", cert="tls/localhost.pem", key="tls/localhost.key"),
    ],
    hosts=[
        # A twisted.web resource tree built by Python code (examples/demo_resources.py).
        Host("app.localhost", Resource("demo_resources:make_root()"), aliases=["www.localhost"]),
        # Several services on one host, chosen by the longest path prefix.
        Host("tools.localhost", routes={
            "/": Resource("demo_resources:hello"),
            "/old": Redirect("http://app.localhost:8080/", status=308),
        }),
        # .rpy scripts from the repo's rpy/ folder, and CGI scripts (examples/cgi-bin).
        Host("scripts.localhost", routes={
            "/": Scripts("../rpy"),
            "/cgi-bin": CGI("cgi-bin", interpreters={".py": "python3", ".pl": "perl"}, timeout=10),
        }),
        # HTTPS only: plain HTTP gets 308 to https://secure.localhost:8443, HTTPS gets HSTS.
        Host("secure.localhost", Resource("demo_resources:hello"), https_redirect=True, hsts=True),
        # A reverse proxy (docs/proxy.md). Its upstream is this same demo on port 8080,
        # asked for app.localhost (its health checks too), so it runs with nothing else started:
        #   curl -i http://proxy.localhost:8080/    (see the X-Forwarded-* the app gets)
        Host("proxy.localhost", Proxy(
            "http://127.0.0.1:8080", host="app.localhost", via=True,
            health=HealthCheck("/", interval=10),
        )),
        # Static files (docs/static.md) from examples/static: ETag, 304, Range, a .gz sidecar,
        # no dotfiles, a custom 404 page, and a second mount with a folder listing.
        #   curl -i --compressed http://static.localhost:8080/css/site.css
        Host("static.localhost", routes={
            "/": Static("static", not_found="404.html", gzip_min_size=256,
                        cache={"*.css": "max-age=86400"}),
            "/files": Static("static/files", listing=True),
        }),
        # A Flask app (examples/wsgi_demo.py, docs/wsgi.md) on 4 threads, a queue of 8 and a
        # 3 s deadline:  curl http://wsgi.localhost:8080/stream ; curl http://wsgi.localhost:8080/slow?s=5
        # Its /download/<name> answers X-Accel-Redirect; the internal Static (examples/private, 404
        # when asked directly) sends the file:  curl -i http://wsgi.localhost:8080/download/report.txt
        Host("wsgi.localhost", routes={
            "/": WSGI("wsgi_demo:app", threads=4, queue=8, timeout=3),
            "/protected": Static("private", internal=True),
        }),
        # An ASGI app (examples/asgi_demo.py, docs/asgi.md) on an event loop of its own:
        #   curl http://asgi.localhost:8080/ ; curl -N http://asgi.localhost:8080/stream
        # /block stalls its loop with time.sleep(2); the other hosts do not notice.
        Host("asgi.localhost", ASGI("asgi_demo:app", max_concurrency=100, request_timeout=10)),
        # A wildcard: any other name under .localhost goes to the app.
        Host("*.localhost", Redirect("http://app.localhost:8080")),
    ],
    # Requests for names no host claims (e.g. http://127.0.0.1:8080/).
    default=Host(Resource("demo_resources:hello")),
    # Observability (docs/observability.md): access log lines on stdout, each starting with
    # the host that answered and the port (Apache's vhost_combined), and the admin
    # listener: http://127.0.0.1:9901/status, /metrics, /healthz, /readyz.
    access_log="-",
    log_format="vhost_combined",
    admin="tcp:9901:interface=127.0.0.1",
    # Hardening (docs/security.md): the defaults already suit the internet; these are
    # tighter, e.g.  curl -i http://app.localhost:8080/$(head -c 5000 /dev/zero | tr '\0' a)  -> 414
    max_request_line=4096,
    max_connections_per_ip=64,
    header_timeout=10,
    server_header="twisthost",
    # Lifecycle (docs/operations.md): kill -HUP reloads this file with no failed request
    # (a broken edit is logged as site.py:LINE and the running config stays); kill -TERM
    # lets requests finish for up to graceful_timeout s. For one process per CPU under a
    # master, add  workers="auto"  (and max_requests=1000 to recycle workers).
    graceful_timeout=10,
    hooks={"when_ready": lambda site: print("demo ready: http://app.localhost:8080/")},
)
