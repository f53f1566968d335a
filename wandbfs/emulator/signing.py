"""Signed storage URLs, like a cloud bucket's: an HMAC over path and expiry, no auth header.

The SDK fetches ``directUrl`` without credentials, so the URL itself must carry the grant;
an expired or tampered URL is refused with 403, which is what the SDK (and wandbfs) must
cope with by asking for a fresh URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlencode


class UrlSigner:
    def __init__(self, secret: bytes, lifetime_s: float = 3600.0) -> None:
        self.secret = secret
        self.lifetime_s = lifetime_s

    def _mac(self, path: str, exp: int) -> str:
        return hmac.new(self.secret, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, base_url: str, path: str, lifetime_s: float | None = None) -> str:
        exp = int(time.time() + (self.lifetime_s if lifetime_s is None else lifetime_s))
        return f"{base_url}{path}?{urlencode({'exp': exp, 'sig': self._mac(path, exp)})}"

    def check(self, path: str, query: str) -> str | None:
        """None when the grant is valid, otherwise the reason (shown in the 403 body)."""
        q = parse_qs(query)
        try:
            exp = int(q["exp"][0])
            sig = q["sig"][0]
        except (KeyError, ValueError, IndexError):
            return "missing signature"
        if not hmac.compare_digest(sig, self._mac(path, exp)):
            return "bad signature"
        if time.time() > exp:
            return "Request has expired"
        return None
