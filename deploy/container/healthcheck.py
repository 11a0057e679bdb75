"""The container's HEALTHCHECK: exit 0 when the web server answers GET /api/health, else 1 with the reason.

It asks 127.0.0.1 on HEYGEMD_WEB__PORT (default 7860) inside the container, with HEYGEMD_WEB__TOKEN as the bearer
token when one is set. Standard library only, so it runs with the image's system Python.
"""

import os
import sys
import urllib.request

port = os.environ.get("HEYGEMD_WEB__PORT", "7860")
token = os.environ.get("HEYGEMD_WEB__TOKEN", "")
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/health")
if token:
    request.add_header("Authorization", f"Bearer {token}")
try:
    with urllib.request.urlopen(request, timeout=8) as answer:
        print(answer.read().decode("utf-8", "replace"))
except OSError as exc:  # refused, timed out, or an HTTP error status (HTTPError)
    sys.exit(f"GET /api/health on port {port}: {exc}")
