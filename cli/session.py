"""Where the command line keeps the signed-in session: ``<config dir>/session.json``, 0600.

The file holds the endpoint the session belongs to, the session JWT and its expiry. It is
written with ``write_private_file`` (owner-only, atomic) in a 0700 directory, so no other
local user can read the token.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.errors import CliError, not_signed_in
from sevvo.runtime.files import write_private_file

APP_NAME = "sevvo"
SESSION_FILE = "session.json"


def default_config_dir() -> Path:
    """The user's config directory for sevvo (for example ~/.config/sevvo on Linux)."""
    return Path(typer.get_app_dir(APP_NAME))


@dataclass(frozen=True)
class Session:
    """A signed-in user's session at one endpoint."""

    endpoint: str
    # Secret: kept out of repr so a traceback or debug print never shows it.
    session_token: str = field(repr=False)
    expire_time: datetime
    email: str
    org_id: str
    user_id: str

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the server would refuse the token by now."""
        return (now or datetime.now(UTC)) >= self.expire_time

    def to_json(self) -> str:
        """The file's contents."""
        data = asdict(self)
        data["expire_time"] = self.expire_time.isoformat()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Session:
        """Parses the file's contents; raises ValueError (or KeyError) when malformed."""
        data = json.loads(text)
        expire_time = datetime.fromisoformat(data["expire_time"])
        if expire_time.tzinfo is None:
            raise ValueError("expire_time has no time zone")
        return cls(
            endpoint=str(data["endpoint"]),
            session_token=str(data["session_token"]),
            expire_time=expire_time,
            email=str(data["email"]),
            org_id=str(data["org_id"]),
            user_id=str(data["user_id"]),
        )


class SessionStore:
    """The session file in one config directory."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.path = config_dir / SESSION_FILE

    def save(self, session: Session) -> None:
        """Writes the session, creating the config directory owner-only if needed."""
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(self.path, session.to_json())

    def load(self) -> Session | None:
        """The stored session, or None when there is none."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return Session.from_json(text)
        except (ValueError, KeyError, TypeError):
            raise not_signed_in(
                f"the session file {self.path} is damaged: run sevvo login"
            ) from None

    def current(self, endpoint: str | None) -> Session:
        """The session to call ``endpoint`` with (the session's own when None).

        A session is never sent to an endpoint other than the one that issued it.
        """
        session = self.load()
        if session is None:
            raise not_signed_in()
        if endpoint is not None and endpoint != session.endpoint:
            raise not_signed_in(
                f"not signed in to {endpoint} (the session is for {session.endpoint}):"
                " run sevvo login"
            )
        if session.expired():
            raise not_signed_in("session expired: run sevvo login")
        return session

    def clear(self) -> bool:
        """Deletes the session; returns whether there was one."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True
