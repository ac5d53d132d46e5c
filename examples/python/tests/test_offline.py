"""The checks no live issuer can be made to fail: a token from another
issuer signed by a trusted key, a wrong `typ`, JWKs whose parameters
disagree, bad status lists. An in-memory issuer signs with its own Ed25519
key and serves its documents through the verifier's injectable fetcher."""

from __future__ import annotations

import base64
import json
import unittest
import zlib

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from latchkey_verifier import Refused, Response, Verifier, algorithm_of
from latchkey_verifier import status_list

ISS = "https://issuer.example"
LIST = f"{ISS}/v1/status/0"
NOW = 1_750_000_000


def lst_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode()


class FakeIssuer:
    def __init__(self):
        self.key = ed25519.Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "EdDSA", "use": "sig"}]}
        self.statuses = bytearray(4)  # 16 entries, all valid
        self.list_claims = {}
        self.list_header = {}

    def sign(self, claims: dict, typ: str) -> str:
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "k1", "typ": typ})

    def list_jwt(self) -> str:
        claims = {"sub": LIST, "iat": NOW - 10, "exp": NOW + 600, "ttl": 300,
                  "status_list": {"bits": 2, "lst": lst_of(bytes(self.statuses))},
                  **self.list_claims}
        return self.sign(claims, self.list_header.get("typ", "statuslist+jwt"))

    def fetch(self, url: str, accept: str) -> Response:
        documents = {
            f"{ISS}/.well-known/oauth-authorization-server":
                json.dumps({"issuer": ISS, "jwks_uri": f"{ISS}/jwks"}),
            f"{ISS}/jwks": json.dumps(self.jwks),
            LIST: self.list_jwt(),
        }
        if url not in documents:
            return Response(404, {}, b"")
        return Response(200, {"cache-control": "public, max-age=300"}, documents[url].encode())

    def token(self, idx=3, typ="at+jwt", **overrides) -> str:
        claims = {"iss": ISS, "sub": "id-1", "client_id": "id-1", "aud": "latchkey",
                  "iat": NOW, "nbf": NOW, "exp": NOW + 3600, "jti": "jti-1", "name": "k",
                  "roles": ["global_viewer"], "status": {"status_list": {"idx": idx, "uri": LIST}},
                  **overrides}
        return self.sign({k: v for k, v in claims.items() if v is not None}, typ)


class StatusListReaderTest(unittest.TestCase):
    def test_the_drafts_two_bit_example(self):
        # draft-ietf-oauth-status-list, "Status List in JSON Format", bits = 2.
        raw = status_list.decode_lst("eNo76fITAAPfAgc")
        self.assertEqual(raw, bytes([0xC9, 0x44, 0xF9]))
        self.assertEqual([status_list.entry(raw, i) for i in range(12)],
                         [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3])
        self.assertIsNone(status_list.entry(raw, 12))

    def test_broken_lists_are_refused(self):
        for bad in ("!!!", lst_of(b"\0")[:-3], lst_of(b"\0") + "AAAA"):
            with self.assertRaises(status_list.StatusListError):
                status_list.decode_lst(bad)


class OfflineVerifierTest(unittest.TestCase):
    def setUp(self):
        self.issuer = FakeIssuer()
        self.clock = [NOW]

    def verifier(self, **options) -> Verifier:
        return Verifier(ISS, "latchkey", clock=lambda: self.clock[0], fetch=self.issuer.fetch,
                        **options)

    def refused(self, token: str, verifier: Verifier | None = None) -> str:
        with self.assertRaises(Refused) as caught:
            (verifier or self.verifier()).verify(token)
        return caught.exception.code

    def test_a_good_token_passes_and_each_status_maps_to_its_reason(self):
        self.assertEqual(self.verifier().verify(self.issuer.token()).id, "id-1")
        for value, code in ((1, "revoked"), (2, "suspended"), (3, "revoked")):
            self.issuer.statuses[0] = value << 6  # entry 3
            self.assertEqual(self.refused(self.issuer.token(idx=3)), code)
        self.assertEqual(self.refused(self.issuer.token(idx=16)), "status_unavailable")

    def test_claims_that_break_a_rule(self):
        self.assertEqual(self.refused(self.issuer.token(iss="https://other.example")),
                         "wrong_issuer")
        self.assertEqual(self.refused(self.issuer.token(aud=["a", "b"])), "wrong_audience")
        self.assertEqual(self.verifier().verify(self.issuer.token(aud=["a", "latchkey"])).id, "id-1")
        self.assertEqual(self.refused(self.issuer.token(typ="JWT")), "wrong_type")
        self.assertEqual(self.refused(self.issuer.token(nbf=NOW + 31)), "not_yet_valid")
        self.assertEqual(self.refused(self.issuer.token(exp=NOW - 31)), "expired")
        self.assertEqual(self.verifier().verify(self.issuer.token(exp=NOW - 29)).id, "id-1")
        self.assertEqual(self.refused(self.issuer.token(accounts=["a"])), "invalid_claims")
        self.assertEqual(self.refused(self.issuer.token(roles=["cloud_account_viewer"])),
                         "invalid_claims")
        self.assertEqual(self.refused(self.issuer.token(roles=["root"])), "invalid_claims")

    def test_policy(self):
        key = self.verifier().verify(
            self.issuer.token(roles=["cloud_account_viewer"], accounts=["a1"]))
        self.assertEqual((key.allows("GET", "a1"), key.allows("HEAD", "a2"),
                          key.allows("DELETE", "a1"), key.allows("OPTIONS", "a1")),
                         (True, False, False, False))
        admin = self.verifier().verify(self.issuer.token(roles=["global_admin"]))
        self.assertTrue(admin.can_write("a1") and admin.can_read("any"))

    def test_the_jwk_not_the_header_fixes_the_algorithm(self):
        self.assertEqual(algorithm_of({"kty": "OKP", "crv": "Ed25519"}), "EdDSA")
        self.assertEqual(algorithm_of({"kty": "EC", "crv": "P-256"}), "ES256")
        self.assertEqual(algorithm_of({"kty": "RSA", "alg": "RS256"}), "RS256")
        for unusable in ({"kty": "OKP", "crv": "Ed25519", "alg": "ES256"},
                         {"kty": "EC", "crv": "P-384"}, {"kty": "oct"},
                         {"kty": "RSA", "use": "enc"}, {"kty": "RSA", "alg": "PS256"}):
            self.assertIsNone(algorithm_of(unusable), unusable)
        # A JWKS whose only key claims another algorithm than its type has: unusable.
        self.issuer.jwks["keys"][0]["alg"] = "ES256"
        self.assertEqual(self.refused(self.issuer.token()), "unknown_key")

    def test_a_token_signed_by_a_key_outside_the_jwks(self):
        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode({"iss": ISS}, other, algorithm="ES256",
                            headers={"kid": "k1", "typ": "at+jwt"})
        self.assertEqual(self.refused(forged), "unsupported_algorithm")
        self.assertEqual(self.refused(self.issuer.token().replace(".", ".x", 1)), "malformed")

    def test_bad_status_lists_fail_closed(self):
        token = self.issuer.token()
        for change in ({"claims": {"sub": f"{ISS}/v1/status/1"}},
                       {"claims": {"exp": NOW}},
                       {"claims": {"status_list": {"bits": 1, "lst": lst_of(b"\0")}}},
                       {"header": {"typ": "JWT"}}):
            self.issuer.list_claims = change.get("claims", {})
            self.issuer.list_header = change.get("header", {})
            self.assertEqual(self.refused(token), "status_unavailable", change)
        # A status URI outside the issuer is never fetched.
        outside = self.issuer.token(status={"status_list": {"idx": 0, "uri": "https://evil.example/l"}})
        self.assertEqual(self.refused(outside), "status_unavailable")

    def test_an_older_list_never_replaces_a_newer_one(self):
        verifier = self.verifier(staleness=1000)
        self.issuer.statuses[0] = 1 << 6  # entry 3 revoked, iat NOW - 10
        self.assertEqual(self.refused(self.issuer.token(), verifier), "revoked")
        # A cache serves an older list (iat NOW - 100) saying entry 3 is valid.
        self.issuer.statuses[0] = 0
        self.issuer.list_claims = {"iat": NOW - 100}
        self.clock[0] += 301
        self.assertEqual(self.refused(self.issuer.token(), verifier), "revoked")


if __name__ == "__main__":
    unittest.main()
