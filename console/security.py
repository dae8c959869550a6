"""The console's browser-facing protections, as small pure pieces.

- The session cookie holds the user's signed session token: HttpOnly (no script reads it),
  Secure with the ``__Host-`` prefix (HTTPS only, this host only, path /), SameSite=Strict.
  Signing out revokes the token at auth, so a copied cookie dies with the session.
- Every state change is a POST carrying a CSRF token derived from the session token (an
  HMAC keyed by it), checked in constant time; a page from another site has neither. POSTs
  whose Origin names another site are refused before that, which also covers the sign-in form
  (no session yet).
- Every response carries a strict Content-Security-Policy: scripts and styles only from the
  console's own static files, no inline code, no framing, forms posting only to the console.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.responses import Response

SESSION_COOKIE = "__Host-sevvo_session"
CSRF_FIELD = "csrf_token"
_CSRF_MESSAGE = b"sevvo-console-csrf-v1"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    # Not no-referrer: under it browsers send "Origin: null" on form posts, and the origin
    # check needs the real one; same-origin still tells other sites nothing.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "strict-transport-security": "max-age=31536000",
    # Pages show org data: no shared or browser cache keeps them after sign-out.
    "cache-control": "no-store",
}


def csrf_token(session_token: str) -> str:
    """The CSRF token for forms of the session holding ``session_token``."""
    return hmac.new(session_token.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


def csrf_valid(session_token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (compared in constant time)."""
    if not presented:
        return False
    return hmac.compare_digest(csrf_token(session_token), presented)


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """Whether a request's Origin header (absent: a same-origin navigation in an old browser,
    accepted) names the console itself, ``scheme://host``."""
    if origin is None:
        return True
    return host is not None and origin == f"{scheme}://{host}"


def set_session_cookie(response: Response, token: str, max_age: int) -> None:
    """Sets the session cookie (see the module's docstring) on ``response``; a ``max_age``
    already past clears it."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(0, max_age),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response) -> None:
    """Tells the browser to drop the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
