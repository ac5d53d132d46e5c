"""A tiny WSGI service protected by latchkey access keys.

    LATCHKEY_ISSUER=http://127.0.0.1:8080 python demo_app.py     # listens on 127.0.0.1:8000
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/accounts/acct-1/data

GET /accounts/{account}/data is allowed for global admins and viewers and for
cloud-account viewers of that account; POST needs global_admin (contract §1).
"""

import json
import os
from wsgiref.simple_server import make_server

from latchkey_verifier import LatchkeyMiddleware, Verifier


def account_of(environ):
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "data" else None


def app(environ, start_response):
    account, key = account_of(environ), environ["latchkey.key"]
    if account is None:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not_found"}']
    body = {"account": account, "method": environ["REQUEST_METHOD"],
            "key": {"id": key.id, "name": key.name, "roles": list(key.roles),
                    "accounts": list(key.accounts) if key.accounts is not None else None}}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def build(verifier):
    return LatchkeyMiddleware(app, verifier, account_of=account_of)


if __name__ == "__main__":
    verifier = Verifier(os.environ["LATCHKEY_ISSUER"], os.environ.get("LATCHKEY_AUDIENCE", "latchkey"))
    with make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), build(verifier)) as server:
        print(f"listening on http://127.0.0.1:{server.server_port}")
        server.serve_forever()
