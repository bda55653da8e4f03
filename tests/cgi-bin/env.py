"""Echo what a CGI script receives: environment, argv, and a digest of stdin."""
import hashlib
import os
import sys

body = sys.stdin.buffer.read()
sys.stdout.write("Content-Type: text/plain\r\n\r\n")
for name in sorted(os.environ):
    sys.stdout.write(f"{name}={os.environ[name]}\n")
sys.stdout.write(f"ARGV={sys.argv[1:]!r}\n")
sys.stdout.write(f"BODY_LENGTH={len(body)}\nBODY_SHA256={hashlib.sha256(body).hexdigest()}\n")
