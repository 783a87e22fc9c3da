"""google-auth credentials.refresh() in a loop, for touchgate-bench.

usage: python refresh.py MODE N [FILE]
  MODE sa:       service_account.Credentials from key FILE
  MODE user:     oauth2 Credentials from authorized_user FILE (its token_uri)
  MODE metadata: compute_engine.Credentials (GCE_METADATA_HOST / GCE_METADATA_IP)

One untimed refresh, then N timed ones with one transport (keep-alive, as an
application has). Prints one JSON line: seconds per refresh, the tokens, the
google-auth version.
"""
import json
import sys
import time

import google.auth
from google.auth.transport.requests import Request

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def credentials(mode, path):
    if mode == "sa":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(path, scopes=[CLOUD_PLATFORM])
    if mode == "user":
        from google.oauth2 import credentials as oauth2

        with open(path) as f:
            info = json.load(f)
        return oauth2.Credentials(
            None,
            refresh_token=info["refresh_token"],
            token_uri=info["token_uri"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
        )
    if mode == "metadata":
        from google.auth import compute_engine

        return compute_engine.Credentials()
    raise SystemExit(f"unknown mode {mode}")


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    creds = credentials(mode, sys.argv[3] if len(sys.argv) > 3 else None)
    request = Request()
    creds.refresh(request)
    seconds, tokens = [], []
    for _ in range(n):
        t = time.perf_counter()
        creds.refresh(request)
        seconds.append(time.perf_counter() - t)
        tokens.append(creds.token)
    print(json.dumps({"seconds": seconds, "tokens": tokens, "google_auth": google.auth.__version__}))


if __name__ == "__main__":
    main()
