"""A Python CGI script: what the request looked like, as plain text.

Try http://scripts.localhost:8080/cgi-bin/hello.py/some/path?name=Ada
"""
import os
from urllib.parse import parse_qs

query = parse_qs(os.environ.get("QUERY_STRING", ""))
name = query.get("name", ["world"])[0]
print("Content-Type: text/plain; charset=utf-8")
print()
print(f"Hello, {name}, from a CGI script in Python.")
for variable in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR"):
    print(f"{variable}={os.environ.get(variable, '')}")
