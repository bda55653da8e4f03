"""Write our pid to the file named in the query, then hang (for timeout tests).

At ``/spawns`` the pid written is that of a child we start, which hangs too
(and, as daemons do, does not hold our output pipe).
"""
import os
import subprocess
import sys
import time
from urllib.parse import unquote

pid = os.getpid()
if os.environ.get("PATH_INFO") == "/spawns":
    pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.DEVNULL).pid
with open(unquote(os.environ["QUERY_STRING"]), "w") as handle:
    handle.write(str(pid))
if os.environ.get("PATH_INFO") == "/after-headers":
    sys.stdout.write("Content-Type: text/plain\n\nstarted\n")
    sys.stdout.flush()
time.sleep(60)
