"""Write our pid to the file named in the query, then hang (for timeout tests)."""
import os
import sys
import time
from urllib.parse import unquote

with open(unquote(os.environ["QUERY_STRING"]), "w") as handle:
    handle.write(str(os.getpid()))
if os.environ.get("PATH_INFO") == "/after-headers":
    sys.stdout.write("Content-Type: text/plain\n\nstarted\n")
    sys.stdout.flush()
time.sleep(60)
