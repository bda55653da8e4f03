"""Answer with the status given as the query, e.g. ?404."""
import os

print(f"Status: {os.environ['QUERY_STRING']} Custom Reason")
print("Content-Type: text/plain")
print()
print("status page")
