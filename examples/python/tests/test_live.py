"""The middleware against a live latchkey: keys made through the HTTP API,
then checked the way a downstream service would. Time comes from a clock
the tests move, so expiry and the list's `ttl` are tested without waiting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import unittest
import wsgiref.util

import demo_app
from latchkey_verifier import Refused, Verifier, http_get
from tests.issuer import STATUS_LIST_TTL, LiveIssuer

ISSUER: LiveIssuer | None = None


def setUpModule():
    global ISSUER
    ISSUER = LiveIssuer()


def tearDownModule():
    if ISSUER is not None:
        ISSUER.stop()


class Clock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def call(app, method: str, path: str, token: str | None):
    """Runs one request through a WSGI app; returns (status, headers, JSON body)."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], json.loads(body)


class LiveIssuerTest(unittest.TestCase):
    def verifier(self, clock=None, audience="latchkey", **options) -> Verifier:
        return Verifier(ISSUER.url, audience, clock=clock or Clock(), **options)

    def assertRefused(self, verifier: Verifier, token: str, code: str):
        with self.assertRaises(Refused) as caught:
            verifier.verify(token)
        self.assertEqual(caught.exception.code, code, caught.exception.message)

    def test_a_valid_key_reaches_the_app_with_its_identity_and_the_policy_applies(self):
        created = ISSUER.create_key("py-viewer", ["cloud_account_viewer"], ["acct-1", "acct-7"])
        record, token = created["key"], created["token"]
        app = demo_app.build(self.verifier())

        status, _, body = call(app, "GET", "/accounts/acct-1/data", token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["key"], {"id": record["id"], "name": "py-viewer",
                                       "roles": ["cloud_account_viewer"],
                                       "accounts": ["acct-1", "acct-7"]})
        # Another account, or a write: the §1 policy refuses with 403.
        status, headers, body = call(app, "GET", "/accounts/acct-2/data", token)
        self.assertEqual((status, body["error"]), (403, "forbidden"))
        self.assertIn('error="insufficient_scope"', headers["WWW-Authenticate"])
        status, _, _ = call(app, "POST", "/accounts/acct-1/data", token)
        self.assertEqual(status, 403)
        # The bootstrap admin may write; no key at all is a 401.
        status, _, body = call(app, "POST", "/accounts/acct-2/data", ISSUER.admin_token)
        self.assertEqual((status, body["key"]["roles"]), (200, ["global_admin"]))
        status, headers, body = call(app, "GET", "/accounts/acct-1/data", None)
        self.assertEqual((status, body["error"]), (401, "missing"))
        self.assertEqual(headers["WWW-Authenticate"], "Bearer")

    def test_a_revoked_key_is_refused_once_the_list_is_refetched(self):
        created = ISSUER.create_key("py-revoked", ["global_viewer"])
        clock = Clock()
        verifier = self.verifier(clock)
        self.assertEqual(verifier.verify(created["token"]).id, created["key"]["id"])
        status, _ = ISSUER.api("DELETE", f"/v1/keys/{created['key']['id']}")
        self.assertEqual(status, 204)
        # A poller keeps its list for `ttl`: the revocation is not seen yet...
        self.assertEqual(verifier.verify(created["token"]).name, "py-revoked")
        # ...and is once the list is due again.
        clock.advance(STATUS_LIST_TTL + 1)
        self.assertRefused(verifier, created["token"], "revoked")
        # Through the middleware: 401 with the reason.
        status, headers, body = call(demo_app.build(verifier), "GET", "/accounts/a/data",
                                     created["token"])
        self.assertEqual((status, body["error"]), (401, "revoked"))
        self.assertIn('error="invalid_token"', headers["WWW-Authenticate"])
        # A verifier that starts now sees it at once.
        self.assertRefused(self.verifier(), created["token"], "revoked")

    def test_a_suspended_key_is_refused_and_passes_again_once_resumed(self):
        created = ISSUER.create_key("py-suspended", ["global_viewer"])
        key_id, token = created["key"]["id"], created["token"]
        clock = Clock()
        verifier = self.verifier(clock)
        verifier.verify(token)
        self.assertEqual(ISSUER.api("POST", f"/v1/keys/{key_id}/suspend")[0], 200)
        clock.advance(STATUS_LIST_TTL + 1)
        self.assertRefused(verifier, token, "suspended")
        self.assertEqual(ISSUER.api("POST", f"/v1/keys/{key_id}/resume")[0], 200)
        # (A fresh verifier on the real time: moving `clock` on by another ttl
        # would put it past the `exp` of every list the issuer signs now.)
        self.assertEqual(self.verifier().verify(token).id, key_id)

    def test_an_expired_key_is_refused_on_a_fixed_clock(self):
        created = ISSUER.create_key("py-expiring", ["global_viewer"], expires_in_days=1)
        exp = self.verifier().verify(created["token"]).expires_at
        self.assertLessEqual(abs(exp - (time.time() + 86400)), 60)
        # Past exp and the 30 s leeway.
        self.assertRefused(self.verifier(Clock(exp + 31)), created["token"], "expired")

    def test_a_key_for_another_audience_is_refused(self):
        created = ISSUER.create_key("py-audience", ["global_viewer"])
        self.assertRefused(self.verifier(audience="billing-api"), created["token"],
                           "wrong_audience")

    def test_a_verifier_for_another_issuer_url_refuses_to_start(self):
        other = ISSUER.url.replace("127.0.0.1", "localhost")
        with self.assertRaisesRegex(ValueError, "names the issuer"):
            Verifier(other, "latchkey")

    def test_alg_none_hs256_and_a_tampered_payload_are_refused(self):
        token = ISSUER.create_key("py-forged", ["global_viewer"])["token"]
        verifier = self.verifier()
        header_b64, payload_b64, _ = token.split(".")
        header = json.loads(unb64(header_b64))
        claims = json.loads(unb64(payload_b64))
        claims["roles"] = ["global_admin"]
        forged_payload = b64(json.dumps(claims).encode())

        none = b64(json.dumps({**header, "alg": "none"}).encode())
        self.assertRefused(verifier, f"{none}.{forged_payload}.", "unsupported_algorithm")
        # HS256 keyed with the issuer's public key (the classic confusion attack).
        jwks = json.loads(http_get(verifier.jwks_uri, "application/json").body)
        public = next(k for k in jwks["keys"] if k["kid"] == header["kid"])["x"].encode()
        hs = b64(json.dumps({**header, "alg": "HS256"}).encode())
        mac = hmac.new(public, f"{hs}.{forged_payload}".encode(), hashlib.sha256).digest()
        self.assertRefused(verifier, f"{hs}.{forged_payload}.{b64(mac)}", "unsupported_algorithm")
        self.assertRefused(verifier, f"{header_b64}.{forged_payload}.{token.split('.')[2]}",
                           "bad_signature")

    def test_fails_closed_when_the_status_list_cannot_be_fetched(self):
        created = ISSUER.create_key("py-outage", ["global_viewer"])
        outage = {"on": False}

        def fetch(url, accept):
            if outage["on"] and "/v1/status/" in url:
                raise OSError("connection refused (simulated outage)")
            return http_get(url, accept)

        # Never fetched: refused.
        outage["on"] = True
        self.assertRefused(self.verifier(fetch=fetch), created["token"], "status_unavailable")
        # Fetched once: the cached list serves until it is `staleness` old, then not.
        outage["on"] = False
        clock = Clock()
        # (The bound is below the list's own `exp`, at least 1.5 ttl away.)
        verifier = self.verifier(clock, fetch=fetch, staleness=STATUS_LIST_TTL + 100)
        verifier.verify(created["token"])
        outage["on"] = True
        clock.advance(STATUS_LIST_TTL + 1)
        self.assertEqual(verifier.verify(created["token"]).name, "py-outage")
        clock.advance(100)
        self.assertRefused(verifier, created["token"], "status_unavailable")
        # The issuer is back: the next check re-fetches and passes.
        outage["on"] = False
        self.assertEqual(verifier.verify(created["token"]).name, "py-outage")


if __name__ == "__main__":
    unittest.main()
