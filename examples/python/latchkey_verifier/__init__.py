"""Verify latchkey access keys in Python: signature, claims and revocation status.

    from latchkey_verifier import Verifier, LatchkeyMiddleware
    verifier = Verifier("https://latchkey.example.com", "latchkey")
    app = LatchkeyMiddleware(app, verifier)   # the key is in environ["latchkey.key"]
"""

from .verifier import Refused, Response, VerifiedKey, Verifier, algorithm_of, http_get
from .wsgi import Denied, LatchkeyMiddleware, authorize

__all__ = ["Denied", "LatchkeyMiddleware", "Refused", "Response", "VerifiedKey", "Verifier",
           "algorithm_of", "authorize", "http_get"]
