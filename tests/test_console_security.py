"""The console's browser-facing protections as pure functions: CSRF tokens, origins, cookies."""

from __future__ import annotations

import re

from starlette.responses import Response

from console import security
from console.web import STATIC


def test_the_csrf_token_is_bound_to_the_session_it_was_made_for() -> None:
    token = security.csrf_token("session-a")
    assert security.csrf_valid("session-a", token)
    assert not security.csrf_valid("session-b", token)
    assert not security.csrf_valid("session-a", None)
    assert not security.csrf_valid("session-a", "")
    assert not security.csrf_valid("session-a", token[:-1] + ("0" if token[-1] != "0" else "1"))


def test_the_csrf_token_does_not_reveal_the_session() -> None:
    session = "eyJhbGciOiJFZERTQSJ9.secret-session-token"
    token = security.csrf_token(session)
    assert session not in token and "secret" not in token
    assert len(token) == 64 and int(token, 16) >= 0


def test_only_the_consoles_own_origin_may_post() -> None:
    assert security.same_origin("https://console.example:8444", "https", "console.example:8444")
    assert not security.same_origin("https://evil.example", "https", "console.example:8444")
    assert not security.same_origin("http://console.example:8444", "https", "console.example:8444")
    assert not security.same_origin("null", "https", "console.example:8444")
    assert not security.same_origin("https://console.example:8444", "https", None)
    # No Origin at all: an old browser's same-site navigation; the CSRF token still applies.
    assert security.same_origin(None, "https", "console.example:8444")


def _set_cookie(response: Response) -> dict[str, str | bool]:
    """The response's one Set-Cookie header, as attribute -> value (True: a bare flag)."""
    (header,) = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    name_value, *attributes = (part.strip() for part in header.split(";"))
    parsed: dict[str, str | bool] = {"": name_value}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        parsed[key.lower()] = value or True
    return parsed


def test_the_session_cookie_is_host_only_https_only_and_invisible_to_scripts() -> None:
    response = Response()
    security.set_session_cookie(response, "the-token", 3600)
    cookie = _set_cookie(response)
    assert cookie[""] == "__Host-sevvo_session=the-token"
    assert cookie["secure"] is True and cookie["httponly"] is True
    assert cookie["samesite"] == "strict" and cookie["path"] == "/"
    assert cookie["max-age"] == "3600" and "domain" not in cookie
    expired = Response()
    security.set_session_cookie(expired, "the-token", -5)
    assert _set_cookie(expired)["max-age"] == "0"


def test_signing_out_clears_the_same_cookie() -> None:
    response = Response()
    security.clear_session_cookie(response)
    cookie = _set_cookie(response)
    assert cookie[""] in ('__Host-sevvo_session=""', "__Host-sevvo_session=")
    assert cookie["max-age"] == "0" and cookie["path"] == "/" and cookie["secure"] is True


def test_the_content_security_policy_allows_no_inline_code_and_no_framing() -> None:
    policy = dict(part.split(" ", 1) for part in security.CONTENT_SECURITY_POLICY.split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and "unsafe" not in security.CONTENT_SECURITY_POLICY
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"
    assert security.SECURITY_HEADERS["cache-control"] == "no-store"


def _luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of ``#rrggbb``."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_text_colour_meets_wcag_aa_contrast_on_its_background() -> None:
    """Text on the backgrounds the stylesheet puts it on: at least 4.5:1 (WCAG 2 AA)."""
    css = (STATIC / "console.css").read_text()
    palette = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [
        ("fg", "bg"),
        ("fg", "panel"),
        ("muted", "bg"),
        ("muted", "panel"),
        ("accent", "bg"),
        ("accent", "panel"),
        ("accent-fg", "accent"),
        ("accent-fg", "error"),
        ("error", "bg"),
        ("error", "error-bg"),
        ("ok", "bg"),
        ("ok", "ok-bg"),
        ("fg", "warn-bg"),
    ]
    weak = [
        (text, ground, round(_contrast(palette[text], palette[ground]), 2))
        for text, ground in pairs
        if _contrast(palette[text], palette[ground]) < 4.5
    ]
    assert weak == []
    assert _contrast("#777777", "#ffffff") < 4.5  # the check can fail
