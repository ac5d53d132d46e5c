"""WSGI middleware (Flask, Django, Bottle, Pyramid, ... are all WSGI apps).

:class:`LatchkeyMiddleware` refuses a request without a valid access key
with 401 and ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750),
and hands the app the verified key in ``environ["latchkey.key"]``. Given
``account_of(environ)``, it also applies the policy of contract §1 and
refuses with 403 (``error="insufficient_scope"``) what the key may not do.

Other frameworks (ASGI ones included) call :func:`authorize` with the
request's ``Authorization`` header, method and account.
"""

from __future__ import annotations

import json
from typing import Callable

from .verifier import Refused, VerifiedKey, Verifier


class Denied(Exception):
    """A request refused: HTTP ``status`` (401 or 403), stable ``code``, safe ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def www_authenticate(self) -> str:
        if self.code == "missing":
            return "Bearer"  # RFC 6750 §3.1: no error code when no credentials were sent
        error = "insufficient_scope" if self.status == 403 else "invalid_token"
        safe = "".join(c for c in self.message if c.isprintable() and c not in '"\\')
        return f'Bearer error="{error}", error_description="{safe}"'


def authorize(verifier: Verifier, authorization: str | None, method: str | None = None,
              account: str | None = None) -> VerifiedKey:
    """The key behind ``Authorization: Bearer <token>``; with ``method`` and
    ``account``, also the §1 policy. Raises :class:`Denied`."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Denied(401, "missing", "send Authorization: Bearer <access key>")
    try:
        key = verifier.verify(token.strip())
    except Refused as e:
        raise Denied(401, e.code, e.message) from None
    if method is not None and account is not None and not key.allows(method, account):
        raise Denied(403, "forbidden", f"this key may not {method.upper()} account {account!r}")
    return key


class LatchkeyMiddleware:
    def __init__(self, app, verifier: Verifier,
                 account_of: Callable[[dict], str | None] | None = None):
        self.app, self.verifier, self.account_of = app, verifier, account_of

    def __call__(self, environ, start_response):
        account = self.account_of(environ) if self.account_of else None
        try:
            key = authorize(self.verifier, environ.get("HTTP_AUTHORIZATION"),
                            environ.get("REQUEST_METHOD", "GET"), account)
        except Denied as e:
            body = json.dumps({"error": e.code, "detail": e.message}).encode()
            start_response(f"{e.status} {'Unauthorized' if e.status == 401 else 'Forbidden'}", [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", e.www_authenticate()),
            ])
            return [body]
        environ["latchkey.key"] = key
        return self.app(environ, start_response)
