"""The one structlog setup every sevvo process uses, with redaction of secrets before rendering."""

from __future__ import annotations

import datetime
import json as jsonlib
import logging
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "configure_logging",
    "enabled",
    "exception_chain",
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
_SECRET_KEY_WORDS = (
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
_TEXT_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "private_key",
    "private-key",
    "api_key",
    "api-key",
    "credential",
)
# Name characters are bounded and only follow the key word: an unbounded scan at every offset
# would be quadratic on long words (`sslpassword=` is still found at `password=`).
_TEXT_KEY = f"(?:{'|'.join(_TEXT_KEY_WORDS)})[A-Za-z0-9_-]{{0,64}}"
# Quoted values: SQL/libpq/Python single quotes (doubled or backslash-escaped quotes), JSON
# double quotes, optional bytes prefix; a missing closing quote (truncated text) runs to the end.
_QUOTED = r"""b?'(?:[^'\\]|\\.|'')*'?|b?"(?:[^"\\]|\\.)*"?"""
# Keeps a second pass from redacting "[REDACTED" and leaving a stray "]".
_NOT_REDACTED = rf"(?!{re.escape(REDACTED)})"


class _Rule(NamedTuple):
    # Casefolded literals of which every match contains one: most strings contain none, and
    # checking them is far cheaper than running the regex.
    needles: tuple[str, ...]
    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]


def _redact_userinfo(match: re.Match[str]) -> str:
    # The password runs from the first `:` after `//` to the last `@` of the token, so an
    # unencoded `@`, `/` or `#` in it is still covered; at worst more than the password goes.
    uri = match.group(0)
    start = uri.index("://") + 3
    at = uri.rfind("@")
    colon = uri.find(":", start, at) if at > start else -1
    if colon == -1:
        return uri
    return f"{uri[:colon]}:{REDACTED}{uri[at:]}"


_RULES = (
    # PEM private keys, also a truncated block with no END line.
    _Rule(
        ("-----begin",),
        re.compile(
            r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----)"
            r".*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        rf"\1{REDACTED}-----END \2PRIVATE KEY-----",
    ),
    # URI userinfo for any scheme, see _redact_userinfo. The match is the whole
    # whitespace-delimited token, so hostile text cannot make the search quadratic.
    _Rule(
        ("://",),
        re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://\S*"),
        _redact_userinfo,
    ),
    # SQL: PASSWORD '...' (doubled quotes), E'...' (backslash escapes) or $tag$...$tag$.
    _Rule(
        ("password",),
        re.compile(
            r"\b(PASSWORD\s+)"
            r"(?:[Ee]'(?:[^'\\]|\\.|'')*'?"
            r"|'(?:[^']|'')*'?"
            r"|\$(\w*)\$.{0,1024}?\$\2\$)",
            re.IGNORECASE,
        ),
        rf"\1'{REDACTED}'",
    ),
    # Secret-named query parameters end at `&` or `#`, so the following parameters survive.
    _Rule(
        _TEXT_KEY_WORDS,
        re.compile(
            rf"([?&][A-Za-z0-9_.-]{{0,64}}?{_TEXT_KEY}=){_NOT_REDACTED}[^&#\s]*", re.IGNORECASE
        ),
        rf"\1{REDACTED}",
    ),
    # key=value (libpq conninfo, reprs, CLI flags): quoted, or unquoted up to whitespace.
    _Rule(
        _TEXT_KEY_WORDS,
        re.compile(rf"({_TEXT_KEY}['\"]?\s*=\s*){_NOT_REDACTED}(?:{_QUOTED}|\S+)", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # key: 'value' and "key": "value" (dict reprs, JSON); quoted only, so prose survives.
    _Rule(
        _TEXT_KEY_WORDS,
        re.compile(rf"({_TEXT_KEY}['\"]?\s*:\s*)(?:{_QUOTED})", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # Bearer credentials of any shape; "bearer token(s)" is prose, not a credential.
    _Rule(
        ("bearer",),
        re.compile(r"\b(bearer)\s+(?!tokens?\b)[^\s'\",;]+", re.IGNORECASE),
        rf"\1 {REDACTED}",
    ),
    # JWTs (JWS has three segments, JWE five); the header always encodes as `eyJ`.
    _Rule(
        ("eyj",),
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){2,4}"),
        REDACTED,
    ),
    # Deployment and workload tokens, see sevvo/runtime/credential_token.py.
    _Rule(
        ("sevvo_dt_", "sevvo_wt_"),
        re.compile(r"(sevvo_[dw]t_)[A-Za-z0-9_-]+=*"),
        rf"\1{REDACTED}",
    ),
    # Postgres password verifiers (pg_authid.rolpassword): SCRAM and legacy md5.
    _Rule(
        ("scram-sha-256$",),
        re.compile(r"SCRAM-SHA-256\$[^\s'\",]+"),
        f"SCRAM-SHA-256${REDACTED}",
    ),
    _Rule(("md5",), re.compile(r"\bmd5[0-9a-f]{32}\b"), f"md5{REDACTED}"),
)


# One scan that clears the common case, a string no rule can match, in a single pass.
_ANY_NEEDLE = re.compile("|".join(re.escape(needle) for rule in _RULES for needle in rule.needles))


class _SecretRegistry:
    """Live secret values, matched as one compiled alternation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        # Bumped after each new pattern: cached redactions from an older one are not used.
        self.generation = 0

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
            self.generation += 1

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
    SQL `PASSWORD '...'`, PEM private keys, deployment and workload tokens and Postgres
    password verifiers.
    Meant for any text that may leave the process, e.g. error messages, not only log lines.
    """
    # Registered values first: a pattern could remove part of one and leave the rest unmatched.
    text = _secrets.redact(text)
    lowered = text.casefold()
    if _ANY_NEEDLE.search(lowered) is None:
        return text
    for rule in _RULES:
        if any(needle in lowered for needle in rule.needles):
            text = rule.pattern.sub(rule.replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """Tells whether a field named `key` holds a secret whose value must never be logged."""
    normalized = key.lower().replace("-", "_")
    return any(word in normalized for word in _SECRET_KEY_WORDS)


# Log lines repeat the same strings (event names, methods, status codes, keys); their
# redaction is remembered, tagged with the registry generation it was computed under, so a
# secret registered later is never answered from the cache. Bounded: cleared when full.
_CACHE_LIMIT = 4096
_CACHEABLE_LENGTH = 256
_text_cache: dict[str, tuple[int, str]] = {}
_key_cache: dict[str, tuple[int, str, bool]] = {}


def _redact_log_text(text: str) -> str:
    if len(text) < _MIN_SECRET_LENGTH:
        # Shorter than any registered secret and than anything a rule matches.
        return text
    if len(text) > _CACHEABLE_LENGTH:
        return redact_text(text)
    generation = _secrets.generation
    hit = _text_cache.get(text)
    if hit is not None and hit[0] == generation:
        return hit[1]
    redacted = redact_text(text)
    if len(_text_cache) >= _CACHE_LIMIT:
        _text_cache.clear()
    _text_cache[text] = (generation, redacted)
    return redacted


def _redact_key(key: str) -> tuple[str, bool]:
    """A key as it may be rendered, and whether its value is a secret."""
    generation = _secrets.generation
    hit = _key_cache.get(key)
    if hit is not None and hit[0] == generation:
        return hit[1], hit[2]
    redacted, secret = redact_text(key), is_secret_key(key)
    if len(key) <= _CACHEABLE_LENGTH:
        if len(_key_cache) >= _CACHE_LIMIT:
            _key_cache.clear()
        _key_cache[key] = (generation, redacted, secret)
    return redacted, secret


def _redact_value(value: object, depth: int) -> object:
    if isinstance(value, str):
        return _redact_log_text(value)
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
    # The common cases (a known key; a string, number or None value) are inlined: this runs
    # for every key of every log line.
    redacted: dict[Any, Any] = {}
    generation = _secrets.generation
    for key, value in mapping.items():
        if type(key) is str:
            hit = _key_cache.get(key)
            if hit is not None and hit[0] == generation:
                shown, secret = hit[1], hit[2]
            else:
                shown, secret = _redact_key(key)
            if secret:
                redacted[shown] = REDACTED
                continue
        else:
            shown = key
        kind = type(value)
        if kind is str:
            redacted[shown] = _redact_log_text(value)
        elif value is None or kind is int or kind is float or kind is bool:
            redacted[shown] = value
        else:
            redacted[shown] = _redact_value(value, depth)
    return redacted


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redacts secret-named keys and secret-shaped text, recursively.

    Runs last before rendering, so it also sees formatted exceptions and stack traces.
    """
    return _redact_mapping(event_dict, depth=0)


# Frames are named relative to the project or to site-packages: shorter, and no home paths.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2]) + "/"
_MAX_CHAIN = 8


def _frame_path(filename: str) -> str:
    if filename.startswith(_PROJECT_ROOT):
        return filename[len(_PROJECT_ROOT) :]
    _, found, rest = filename.rpartition("site-packages/")
    return rest if found else filename


def exception_chain(error: BaseException) -> list[dict[str, object]]:
    """Where an exception came from, without what it says: for errors that may quote input.

    One entry per exception of the chain (``raise ... from``, or raised while handling),
    outermost first, each with its type and its frames as ``file:line function``. No
    message is included: a driver's message quotes the caller's input, SQL or a DSN.
    """
    chain: list[dict[str, object]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        kind = type(current)
        chain.append(
            {
                "type": f"{kind.__module__}.{kind.__qualname__}",
                "frames": [
                    f"{_frame_path(frame.f_code.co_filename)}:{line} {frame.f_code.co_name}"
                    for frame, line in traceback.walk_tb(current.__traceback__)
                ],
            }
        )
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


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
    if isinstance(event_dict.get("stack_info"), str):
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


class _Output:
    """Where rendered lines go: the installed handler's stream, under the handler's lock.

    structlog events are rendered by structlog's own processors and written here directly;
    a trip through logging.Logger (two LogRecords, a stack walk for the caller) cost more
    than rendering the line. Third-party stdlib records reach the same stream through the
    handler, under the same lock, so lines never interleave.
    """

    handler: _RedactingHandler | None = None
    threshold = logging.INFO


class _Sink:
    """The logger structlog writes to: one per name, writing to _Output's stream."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, line: str) -> None:
        handler = _Output.handler
        if handler is None:
            return
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except Exception:
            _report_write_error(self.name)
        finally:
            handler.release()

    debug = info = msg = warning = warn = error = err = critical = fatal = exception = write


def _report_write_error(name: str) -> None:
    # Like logging's handleError: never the line itself, which may be half-written.
    if logging.raiseExceptions:
        error = sys.exc_info()[1]
        detail = redact_text(f"{type(error).__name__}: {error}")
        sys.stderr.write(f"sevvo logging error in logger {name!r}: {detail}\n")


_sinks: dict[str, _Sink] = {}


def _sink_for(name: str = "sevvo", *args: Any) -> _Sink:
    sink = _sinks.get(name)
    if sink is None:
        sink = _sinks.setdefault(name, _Sink(name))
    return sink


def enabled(level: int) -> bool:
    """Whether events at ``level`` (logging.INFO, ...) are written; callers skip work if not."""
    return level >= _Output.threshold


# One encoder for every line: json.dumps with options (as structlog's JSONRenderer calls it)
# builds a new encoder each time, half the cost of a line's JSON. After redaction every value
# is JSON-native; repr() is the fallback JSONRenderer would use too.
_JSON = jsonlib.JSONEncoder(default=repr)


def _render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    return _JSON.encode(event_dict)


# structlog's processor list, kept as one list object: structlog.testing.capture_logs edits
# the configured list in place, and reconfiguring refills it.
_PROCESSORS: list[Processor] = []


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
    Calling it again replaces the previous configuration, also for loggers already in use.

    Events below `level` cost one method call: the bound logger's method for it does nothing.
    """
    out = stream if stream is not None else sys.stderr
    threshold = _level_number(level)
    use_json = json if json is not None else not _is_tty(out)
    renderer: Processor = (
        _render_json if use_json else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )
    # Exceptions and stacks become text before redaction, and in both renderers: the console
    # renderer would otherwise format exc_info itself, after redaction (with rich installed,
    # including local variables).
    to_text: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    # What the process itself adds (level, logger name, service, time) holds no secret.
    labels: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _take_foreign_stack,
            structlog.contextvars.merge_contextvars,
            *labels,
            *to_text,
        ],
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
    _Output.handler, _Output.threshold = handler, threshold

    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        *to_text,
        redact_processor,
        *labels,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_sink_for,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # A cached logger keeps the wrapper class (and so the level) it was first used
        # with; uncached, a later configure_logging reaches module-level loggers too.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """Returns a structlog logger named `name`, or after the calling module when omitted."""
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__", "sevvo")
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
