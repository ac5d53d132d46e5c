"""The full check of a latchkey access key, with PyJWT.

:class:`Verifier` does what the Rust ``latchkey-verifier`` crate does,
minus the push stream:

1. Reads the issuer's RFC 8414 metadata once (its ``issuer`` must be the
   configured one) and the JWKS at ``jwks_uri``. Each JWK fixes its own
   algorithm from ``kty``/``crv`` (and ``alg`` when present): Ed25519 →
   EdDSA, P-256 → ES256, RSA → RS256. The token header's ``alg`` must agree
   with the key its ``kid`` names; it never chooses the algorithm, so
   ``none`` and HS256 are refused.
2. Verifies the signature, then ``typ`` = ``at+jwt``, ``iss``, ``aud``,
   ``exp``/``nbf`` (with a small leeway, against an injectable clock), and
   the roles/accounts rule of the contract.
3. Looks the token up in its Token Status List (``status.status_list``):
   fetched with ``Accept: application/statuslist+jwt``, verified with the
   issuer's JWKS, cached for its ``ttl`` (or ``Cache-Control: max-age``).
   When a list cannot be re-fetched, the cached one is used while it is
   younger than ``staleness`` seconds; after that, and for a list never
   fetched, every token on it is refused (``status_unavailable``).

Revocations reach a poller within the list's ``ttl``. A service that must
learn of them within milliseconds uses the Rust crate, which also follows
``/v1/status/stream``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

import jwt

from . import status_list

DEFAULT_LEEWAY = 30
DEFAULT_STALENESS = 300
JWKS_COOLDOWN = 30
MAX_TOKEN_BYTES = 8 * 1024
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
ROLES = ("global_admin", "global_viewer", "cloud_account_viewer")
READS = ("GET", "HEAD")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class Refused(Exception):
    """Why a token was refused: ``code`` is stable (same codes as the Rust
    crate), ``message`` is safe to send to the caller (it never quotes the token)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedKey:
    """A key whose token passed every check, with the access policy of contract §1."""

    id: str
    name: str
    roles: tuple[str, ...]
    accounts: tuple[str, ...] | None
    expires_at: int
    jti: str

    def is_admin(self) -> bool:
        return "global_admin" in self.roles

    def can_read_all(self) -> bool:
        return self.is_admin() or "global_viewer" in self.roles

    def can_read(self, account: str) -> bool:
        if self.can_read_all():
            return True
        if not account or "cloud_account_viewer" not in self.roles:
            return False
        return any(a in ("*", account) for a in self.accounts or ())

    def can_write(self, account: str | None = None) -> bool:
        return self.is_admin()

    def allows(self, method: str, account: str) -> bool:
        """Reads (GET, HEAD) within the key's scope; writes only for global_admin."""
        method = method.upper()
        if method in READS:
            return self.can_read(account)
        if method in WRITES:
            return self.can_write(account)
        return False


@dataclass
class Response:
    status: int
    headers: dict  # lower-cased names
    body: bytes


def http_get(url: str, accept: str) -> Response:
    """The default fetcher: a plain GET with a short timeout."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def algorithm_of(jwk: dict) -> str | None:
    """The one algorithm a JWK may verify, from its ``kty``/``crv``; None if unusable."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    alg = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}.get((kty, crv))
    if kty == "RSA":
        alg = "RS256"
    if alg is None or jwk.get("alg", alg) != alg:
        return None
    return alg


def _max_age(headers: dict) -> int | None:
    match = re.search(r"max-age=(\d+)", headers.get("cache-control", ""))
    return int(match.group(1)) if match else None


@dataclass
class _CachedList:
    raw: bytes
    iat: int
    exp: int | None
    fetched_at: float
    fresh_until: float


class Verifier:
    """Verifies latchkey access keys for one issuer and audience.

    ``clock`` returns Unix seconds (inject a fixed one in tests); ``fetch``
    is ``(url, accept) -> Response`` (inject one to simulate an outage).
    Construction fetches the metadata and JWKS and raises ``ValueError`` if
    the issuer cannot be reached or names itself differently.
    """

    def __init__(self, issuer: str, audience: str, *, leeway: int = DEFAULT_LEEWAY,
                 staleness: int = DEFAULT_STALENESS, clock: Callable[[], float] = time.time,
                 fetch: Callable[[str, str], Response] = http_get):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.staleness = staleness
        self.clock = clock
        self.fetch = fetch
        self._lock = threading.RLock()
        self._lists: dict[str, _CachedList] = {}
        self._keys: dict = {}
        self._jwks_fetched_at = float("-inf")
        metadata = self._get_json(self._metadata_url())
        if metadata.get("issuer") != self.issuer:
            raise ValueError(f"the metadata names the issuer {metadata.get('issuer')!r}, "
                             f"not {self.issuer!r}")
        self.jwks_uri = metadata.get("jwks_uri")
        if not isinstance(self.jwks_uri, str):
            raise ValueError("the metadata has no jwks_uri")
        self._refresh_keys()

    def _metadata_url(self) -> str:
        # RFC 8414 §3: the well-known suffix goes between the host and any path.
        scheme, rest = self.issuer.split("://", 1)
        host, _, path = rest.partition("/")
        suffix = "/.well-known/oauth-authorization-server"
        return f"{scheme}://{host}{suffix}" + (f"/{path}" if path else "")

    def _get_json(self, url: str) -> dict:
        try:
            response = self.fetch(url, "application/json")
        except OSError as e:
            raise ValueError(f"cannot fetch {url}: {e}") from e
        if response.status != 200:
            raise ValueError(f"{url} answered {response.status}")
        return json.loads(response.body)

    def _refresh_keys(self) -> None:
        """Re-reads the JWKS: every usable key, with the one algorithm it allows."""
        self._jwks_fetched_at = self.clock()
        keys = {}
        for jwk in self._get_json(self.jwks_uri).get("keys", []):
            alg = algorithm_of(jwk)
            if alg is None or not jwk.get("kid"):
                continue
            try:
                keys[jwk["kid"]] = (jwt.PyJWK(jwk, algorithm=alg), alg)
            except jwt.PyJWTError:
                continue
        self._keys = keys

    def _key_for(self, kid) -> tuple:
        key = self._keys.get(kid)
        if key is None and self.clock() - self._jwks_fetched_at >= JWKS_COOLDOWN:
            # Perhaps a newly published key: re-read the JWKS, at most every 30 s.
            with self._lock:
                try:
                    self._refresh_keys()
                except (ValueError, OSError):
                    pass
            key = self._keys.get(kid)
        if key is None:
            raise Refused("unknown_key", "the access key was signed by an unknown key")
        return key

    def verify(self, token: str) -> VerifiedKey:
        """Every check of contract §8; returns the key or raises :class:`Refused`."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Refused("too_large", "the access key is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused("malformed", "the access key is malformed") from None
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise Refused("forbidden_header",
                              f"the access key header contains the forbidden parameter `{name}`")
        jwk, alg = self._key_for(header.get("kid"))
        if header.get("alg") != alg:
            raise Refused("unsupported_algorithm",
                          "the access key uses an unsupported signing algorithm")
        try:
            claims = jwt.decode(
                token, jwk.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                # PyJWT reads the wall clock; times are checked below with self.clock.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["iss", "sub", "aud", "exp", "nbf", "jti", "status"]},
            )
        except jwt.InvalidSignatureError:
            raise Refused("bad_signature", "the access key signature is invalid") from None
        except jwt.InvalidIssuerError:
            raise Refused("wrong_issuer", "the access key was issued by a different issuer") from None
        except jwt.InvalidAudienceError:
            raise Refused("wrong_audience",
                          "the access key is not intended for this audience") from None
        except jwt.PyJWTError:
            raise Refused("malformed", "the access key is malformed (claims)") from None
        if str(header.get("typ", "")).lower().removeprefix("application/") != "at+jwt":
            raise Refused("wrong_type", "the token is not an access key (wrong type)")
        if not all(isinstance(claims[c], int) for c in ("exp", "nbf")):
            raise Refused("malformed", "the access key is malformed (claims)")
        now = self.clock()
        if claims["exp"] <= now - self.leeway:
            raise Refused("expired", "the access key has expired")
        if claims["nbf"] > now + self.leeway:
            raise Refused("not_yet_valid", "the access key is not valid yet")
        key = _key_from(claims)
        ref = claims["status"].get("status_list") if isinstance(claims["status"], dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("idx"), int) \
                or not isinstance(ref.get("uri"), str):
            raise Refused("invalid_claims", "the access key claims are invalid (status)")
        status = self.status_of(ref["uri"], ref["idx"])
        if status == status_list.SUSPENDED:
            raise Refused("suspended", "the access key is suspended")
        if status != status_list.VALID:
            raise Refused("revoked", "the access key has been revoked")
        return key

    def status_of(self, uri: str, idx: int) -> int:
        """The token's entry, from a cached list or a fresh fetch; fails closed."""
        if not uri.startswith(self.issuer + "/"):
            # Never fetch a URL outside the issuer, even a signed one.
            raise Refused("status_unavailable", "the access key status cannot be checked right now")
        now = self.clock()
        cached = self._lists.get(uri)
        if cached is None or now >= cached.fresh_until:
            with self._lock:
                cached = self._lists.get(uri)
                if cached is None or now >= cached.fresh_until:
                    cached = self._refresh_list(uri, cached, now)
        usable = (cached is not None and now - cached.fetched_at <= self.staleness
                  and (cached.exp is None or now < cached.exp))
        value = status_list.entry(cached.raw, idx) if usable else None
        if value is None:
            raise Refused("status_unavailable", "the access key status cannot be checked right now")
        return value

    def _refresh_list(self, uri: str, cached: _CachedList | None, now: float):
        """Fetches and verifies one list; on any failure keeps what it had."""
        try:
            response = self.fetch(uri, status_list.MEDIA_TYPE)
            if response.status != 200:
                return cached
            token = response.body.decode("ascii").strip()
            # A list signed by a key published since the JWKS was read: re-read it.
            self._key_for(jwt.get_unverified_header(token).get("kid"))
            claims, raw = status_list.verify_list_jwt(token, self._keys, uri, now)
        except (OSError, ValueError, Refused, jwt.PyJWTError, status_list.StatusListError):
            return cached
        if cached is not None and claims["iat"] < cached.iat:
            return cached  # never go back to an older list (e.g. from a stale cache)
        ttl = claims.get("ttl", 0)  # the list's ttl first, then HTTP caching, then a minute
        ttl = ttl if ttl > 0 else (_max_age(response.headers) or 60)
        fresh = _CachedList(raw, claims["iat"], claims.get("exp"), now, now + ttl)
        self._lists[uri] = fresh
        return fresh


def _key_from(claims: dict) -> VerifiedKey:
    """The key the claims describe, after the roles/accounts rule of contract §1."""
    roles, accounts = claims.get("roles"), claims.get("accounts")
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
        raise Refused("invalid_claims", "the access key claims are invalid (roles)")
    if ("cloud_account_viewer" in roles) != (accounts is not None):
        raise Refused("invalid_claims", "the access key claims are invalid (accounts)")
    if accounts is not None and (not isinstance(accounts, list) or not accounts
                                 or not all(isinstance(a, str) and a for a in accounts)):
        raise Refused("invalid_claims", "the access key claims are invalid (accounts)")
    return VerifiedKey(
        id=claims["sub"], name=claims.get("name", ""), roles=tuple(roles),
        accounts=tuple(accounts) if accounts is not None else None,
        expires_at=claims["exp"], jti=claims["jti"],
    )
