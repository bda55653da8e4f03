# twistd web's stock reverse proxy, for the `proxy` scenario:
#   twistd web --resource-script benchmarks/apps/proxy.rpy
# The backend port comes from $BENCH_BACKEND_PORT (set by benchmarks/run.py).
import os

from twisted.web.proxy import ReverseProxyResource

resource = ReverseProxyResource("127.0.0.1", int(os.environ["BENCH_BACKEND_PORT"]), b"")
