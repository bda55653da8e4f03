"""Misbehave as the query asks: a bad header line, no header end, or huge output."""
import os
import sys

mode = os.environ["QUERY_STRING"]
if mode == "bad-header":
    sys.stdout.write("this is not a header\n\nbody\n")
elif mode == "no-headers":
    sys.stdout.write("Content-Type: text/plain\n")
elif mode == "bad-status":
    sys.stdout.write("Status: ok\n\n")
elif mode == "big":
    sys.stdout.write("Content-Type: application/octet-stream\n\n")
    for _ in range(1000):
        sys.stdout.write("x" * 1000)
sys.exit(3 if mode == "no-headers" else 0)
