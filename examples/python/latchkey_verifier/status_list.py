"""Reading a Token Status List (draft-ietf-oauth-status-list).

A status list is a byte array in which every token owns ``bits`` bits.
latchkey publishes 2 bits per token: ``0`` valid, ``1`` invalid (revoked),
``2`` suspended (``3`` is application specific and read as invalid, so it
fails closed). Entry ``idx`` lives in byte ``idx // 4`` at bit offset
``(idx % 4) * 2``, counted from the least significant bit.

On the wire the array is DEFLATE-compressed in the ZLIB format, base64url
encoded without padding, and carried as ``status_list.lst`` in a signed
``statuslist+jwt`` whose ``sub`` is the list's own URL. This module decodes
``lst`` and checks the signed list; fetching and caching live in
:mod:`latchkey_verifier.verifier`.
"""

from __future__ import annotations

import base64
import zlib

import jwt

VALID, INVALID, SUSPENDED = 0, 1, 2
BITS = 2
MEDIA_TYPE = "application/statuslist+jwt"
TYP = "statuslist+jwt"
# A larger list is refused rather than risk a zip bomb (64 Mi entries).
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024


class StatusListError(Exception):
    """The list could not be read or did not verify; the message says why."""


def decode_lst(lst: str) -> bytes:
    """base64url-decodes and inflates ``lst`` (bounded, nothing may follow the stream)."""
    try:
        compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
    except (ValueError, TypeError) as e:
        raise StatusListError("`lst` is not base64url") from e
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error as e:
        raise StatusListError("`lst` is not a zlib stream") from e
    if len(raw) > MAX_DECOMPRESSED_BYTES:
        raise StatusListError("the list inflates to more than 16 MiB")
    if not inflater.eof or inflater.unused_data:
        raise StatusListError("`lst` is truncated or has data after its zlib stream")
    return raw


def entry(raw: bytes, idx: int) -> int | None:
    """The 2-bit status of entry ``idx`` of the inflated list, or None past its end."""
    if idx < 0 or idx // 4 >= len(raw):
        return None
    return (raw[idx // 4] >> ((idx % 4) * 2)) & 0b11


def verify_list_jwt(token: str, keys: dict, uri: str, now: float) -> tuple[dict, bytes]:
    """Checks a fetched ``statuslist+jwt`` and returns its claims and inflated list.

    ``keys`` maps ``kid`` to ``(PyJWK, algorithm)`` (see the verifier's JWKS
    handling): the key named by ``kid`` fixes the algorithm. Then ``typ`` must
    be ``statuslist+jwt``, ``sub`` the URL the list was fetched from, ``exp``
    (when present) in the future, and ``bits`` 2.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise StatusListError("not a compact JWS") from e
    if "crit" in header:
        raise StatusListError("the header has `crit`")
    key = keys.get(header.get("kid"))
    if key is None:
        raise StatusListError("signed by a key that is not in the issuer's JWKS")
    jwk, alg = key
    if header.get("alg") != alg:
        raise StatusListError("`alg` is not the algorithm of the signing key")
    try:
        claims = jwt.decode(
            token,
            jwk.key,
            algorithms=[alg],
            # Times are checked below with the caller's clock.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": False, "verify_iss": False, "require": ["sub", "iat"]},
        )
    except jwt.PyJWTError as e:
        raise StatusListError(f"the list token does not verify: {e}") from e
    typ = str(header.get("typ", "")).lower().removeprefix("application/")
    if typ != TYP:
        raise StatusListError("`typ` is not statuslist+jwt")
    if not all(isinstance(claims.get(c, 0), int) for c in ("iat", "exp", "ttl")):
        raise StatusListError("`iat`, `exp` and `ttl` must be integers")
    if claims["sub"] != uri:
        raise StatusListError(f"`sub` is {claims['sub']!r}, not the URL it was fetched from")
    exp = claims.get("exp")
    if exp is not None and exp <= now:
        raise StatusListError("the status list has expired (`exp`)")
    status_list = claims.get("status_list")
    if not isinstance(status_list, dict) or not isinstance(status_list.get("lst"), str):
        raise StatusListError("the claims have no `status_list.lst`")
    if status_list.get("bits") != BITS:
        raise StatusListError(f"{status_list.get('bits')} bits per entry; latchkey lists have 2")
    return claims, decode_lst(status_list["lst"])
