"""Redirect: a local path (served by the server itself) or, with ?away, a URL."""
import os

if os.environ["QUERY_STRING"] == "away":
    print("Location: http://example.com/elsewhere")
else:
    print("Location: /hello?name=cgi")
print()
