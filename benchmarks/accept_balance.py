"""Accept balance of 2 Twisted processes: one inherited socket vs SO_REUSEPORT each."""
import collections, http.client, os, socket, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
CHILD = r'''
import os, socket, sys
from twisted.internet import reactor
from twisted.web import server, resource
class R(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        sum(range(20000))  # a little CPU per request
        return b"%d" % os.getpid()
mode, arg = sys.argv[1], sys.argv[2]
site = server.Site(R()); site.noisy = False
if mode == "shared":
    reactor.adoptStreamPort(3, socket.AF_INET, site)
else:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", int(arg))); s.listen(128); s.setblocking(False)
    reactor.adoptStreamPort(s.fileno(), socket.AF_INET, site)
reactor.run()
'''
def run(mode, n=2000, conc=8):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    if mode == "shared": s.listen(128); s.setblocking(False); os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, mode, str(port)], pass_fds=(3,) if mode == "shared" else ()) for _ in range(2)]
    time.sleep(1.5)
    def get(_):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10); c.request("GET", "/"); b = c.getresponse().read(); c.close(); return b
    t = time.monotonic()
    with ThreadPoolExecutor(conc) as pool: counts = collections.Counter(pool.map(get, range(n)))
    took = time.monotonic() - t
    for p in procs: p.kill()
    s.close()
    print(mode, sorted(counts.values()), f"{n/took:.0f} req/s")
for mode in ("shared", "reuseport", "shared", "reuseport"):
    run(mode)
