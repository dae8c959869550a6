"""The one structlog setup every sevvo process uses, with redaction of secrets before rendering."""

from __future__ import annotations

import datetime
import json as jsonlib
import logging
import re
import sys
import threading
import uuid
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "configure_logging",
    "get_logger",
    "is_secret_key",
    "redact_processor",
    "redact_text",
    "register_secret",
]

REDACTED = "[REDACTED]"

# Substrings of a lowercased key (hyphens read as underscores) whose value is never logged.
# Deliberately broad: `token_count` or `credential_mode` lose their values too, which is a
# cheaper mistake than one leaked secret.
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "dsn",
    "authorization",
    "cookie",
    "private_key",
    "api_key",
    "credential",
)

# Registering very short values would redact common words and digits everywhere.
_MIN_SECRET_LENGTH = 6
# Deeper (or cyclic) structures are rendered by repr() and redacted as text.
_MAX_DEPTH = 16

# The same key words inside free text (reprs, libpq strings, query strings), minus `dsn`:
# a DSN's secret is its password, which the URI and key=value rules remove while keeping the
# host and database readable.
# (No leading name characters: scanning for them at every offset is quadratic on long words,
# and `sslpassword=` is still found at `password=`.)
_TEXT_KEY = (
    r"(?:password|passwd|secret|token|authorization|cookie|private[_-]key|api[_-]key"
    r"|credential)[A-Za-z0-9_-]*"
)
# Quoted values: SQL/libpq/Python single quotes (doubled or backslash-escaped quotes), JSON
# double quotes, optional bytes prefix; a missing closing quote (truncated text) runs to the end.
_QUOTED = r"""b?'(?:[^'\\]|\\.|'')*'?|b?"(?:[^"\\]|\\.)*"?"""
# Keeps a second pass from redacting "[REDACTED" and leaving a stray "]".
_NOT_REDACTED = rf"(?!{re.escape(REDACTED)})"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, also a truncated block with no END line.
    (
        re.compile(
            r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----)"
            r".*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        rf"\1{REDACTED}-----END \2PRIVATE KEY-----",
    ),
    # URI userinfo for any scheme. The password runs to the last `@` before whitespace, so an
    # unencoded `@`, `/` or `#` in it is still covered (at worst more than the password goes).
    # The lookbehind keeps the scheme scan linear on long alphanumeric runs.
    (
        re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://[^:\s/@?#]*):\S*@"),
        rf"\1:{REDACTED}@",
    ),
    # SQL: PASSWORD '...' (doubled quotes), E'...' (backslash escapes) or $tag$...$tag$.
    (
        re.compile(
            r"\b(PASSWORD\s+)(?:[Ee]'(?:[^'\\]|\\.|'')*'?|'(?:[^']|'')*'?|\$(\w*)\$.*?\$\2\$)",
            re.IGNORECASE,
        ),
        rf"\1'{REDACTED}'",
    ),
    # Secret-named query parameters end at `&` or `#`, so the following parameters survive.
    (
        re.compile(rf"([?&][A-Za-z0-9_.-]*?{_TEXT_KEY}=){_NOT_REDACTED}[^&#\s]*", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # key=value (libpq conninfo, reprs, CLI flags): quoted, or unquoted up to whitespace.
    (
        re.compile(
            rf"({_TEXT_KEY}['\"]?\s*=\s*){_NOT_REDACTED}(?:{_QUOTED}|\S+)",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # key: 'value' and "key": "value" (dict reprs, JSON); quoted only, so prose survives.
    (
        re.compile(rf"({_TEXT_KEY}['\"]?\s*:\s*)(?:{_QUOTED})", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # Bearer credentials of any shape; "bearer token(s)" is prose, not a credential.
    (
        re.compile(r"\b(bearer)\s+(?!tokens?\b)[^\s'\",;]+", re.IGNORECASE),
        rf"\1 {REDACTED}",
    ),
    # JWTs (JWS has three segments, JWE five); the header always encodes as `eyJ`.
    (re.compile(r"eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){2,4}"), REDACTED),
    # Deployment tokens, see sevvo/runtime/deployment_token.py.
    (re.compile(r"sevvo_dt_[A-Za-z0-9_-]+=*"), f"sevvo_dt_{REDACTED}"),
    # Postgres password verifiers (pg_authid.rolpassword): SCRAM and legacy md5.
    (re.compile(r"SCRAM-SHA-256\$[^\s'\",]+"), f"SCRAM-SHA-256${REDACTED}"),
    (re.compile(r"\bmd5[0-9a-f]{32}\b"), f"md5{REDACTED}"),
)


class _SecretRegistry:
    """Live secret values, matched as one compiled alternation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        # A secret also reaches logs URL-encoded (inside DSNs) or escaped (inside reprs, JSON).
        variants = {
            value,
            quote(value, safe=""),
            quote(value),
            quote_plus(value),
            repr(value)[1:-1],
            jsonlib.dumps(value)[1:-1],
        }
        with self._lock:
            if variants <= self._values:
                return
            self._values |= variants
            # Longest first, so a secret that contains another is removed whole.
            ordered = sorted(self._values, key=len, reverse=True)
            # Readers use the previous pattern until this assignment; no lock on the read path.
            self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


_secrets = _SecretRegistry()


def register_secret(value: str) -> None:
    """Redacts `value` (and its URL-encoded and escaped forms) from every later log line.

    Values shorter than 6 characters are ignored: they would redact ordinary words and numbers.
    Safe to call from any thread. Registered values are kept for the life of the process.
    """
    if len(value) >= _MIN_SECRET_LENGTH:
        _secrets.add(value)


def redact_text(text: str) -> str:
    """Returns `text` with registered secrets and secret-shaped substrings replaced by REDACTED.

    Covers URI userinfo passwords, `password=` style assignments, `Bearer` credentials, JWTs,
    SQL `PASSWORD '...'`, PEM private keys, deployment tokens and Postgres password verifiers.
    Meant for any text that may leave the process, e.g. error messages, not only log lines.
    """
    # Registered values first: a pattern could remove part of one and leave the rest unmatched.
    text = _secrets.redact(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """Tells whether a field named `key` holds a secret whose value must never be logged."""
    normalized = key.lower().replace("-", "_")
    return any(word in normalized for word in SECRET_KEY_WORDS)


def _redact_value(value: object, depth: int) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        return _redact_mapping(value, depth + 1)
    if isinstance(value, list):
        return [_redact_value(item, depth + 1) for item in value]
    if type(value) is tuple:
        return tuple(_redact_value(item, depth + 1) for item in value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    # Anything else would be rendered by repr() after this processor has run, so redact that
    # text now (it catches e.g. `Config(password='...')`); mirrors JSONRenderer's fallback.
    to_log = getattr(value, "__structlog__", None)
    return redact_text(str(to_log()) if callable(to_log) else repr(value))


def _redact_mapping(mapping: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
    # Always a new dict: the caller's own data must not be altered by logging it.
    redacted: dict[Any, Any] = {}
    for key, value in mapping.items():
        if isinstance(key, str):
            redacted[redact_text(key)] = (
                REDACTED if is_secret_key(key) else _redact_value(value, depth)
            )
        else:
            redacted[key] = _redact_value(value, depth)
    return redacted


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redacts secret-named keys and secret-shaped text, recursively.

    Runs last before rendering, so it also sees formatted exceptions and stack traces.
    """
    return _redact_mapping(event_dict, depth=0)


def _add_service(service: str) -> Processor:
    def add_service(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # setdefault: when several services share one process (the local all-in-one mode),
        # a service bound in context names the line instead of the process.
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _take_foreign_stack(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    # stdlib records carry their stack already formatted; StackInfoRenderer would replace it
    # with the stack of the logging handler that is formatting the record.
    stack = event_dict.get("stack_info")
    if isinstance(stack, str):
        event_dict["stack"] = event_dict.pop("stack_info")
    return event_dict


class _RedactingHandler(logging.StreamHandler[TextIO]):
    """The root handler installed by configure_logging; marked by type so it is replaced."""

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib default prints the raw message and its arguments to stderr, which would
        # bypass redaction exactly when a caller passed a DSN with a bad format string.
        if not logging.raiseExceptions:
            return
        error = sys.exc_info()[1]
        detail = redact_text(f"{type(error).__name__}: {error}")
        sys.stderr.write(f"sevvo logging error in logger {record.name!r}: {detail}\n")


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    service: str,
    *,
    level: str = "INFO",
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Sends structlog and stdlib logging through one redacting pipeline to `stream`.

    Lines are JSON, one object per line with `timestamp` (ISO 8601, UTC), `level`, `logger`,
    `service` and `event`, unless `json` is False, or None and `stream` is a terminal, in which
    case they are rendered for humans. `stream` defaults to stderr. Third-party libraries that
    log through `logging` (grpc, temporalio, psycopg) are rendered and redacted the same way.
    Calling it again replaces the previous configuration.
    """
    out = stream if stream is not None else sys.stderr
    threshold = _level_number(level)
    use_json = json if json is not None else not _is_tty(out)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        structlog.processors.StackInfoRenderer(),
        # Exceptions become text here, before redaction, and in both renderers: the console
        # renderer would otherwise format exc_info itself, after redaction (with rich
        # installed, including local variables).
        structlog.processors.format_exc_info,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_take_foreign_stack, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_processor,
            renderer,
        ],
    )

    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _RedactingHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _RedactingHandler(out)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(threshold)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching would pin a module-level logger used before configure_logging to the
        # unredacted defaults for good, and would ignore a later reconfiguration.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """Returns a structlog logger named `name`, or after the calling module when omitted."""
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__", "sevvo")
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
