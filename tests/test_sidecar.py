"""Sidecar mode's own logic: its configuration, the three file formats, and the file's life
(0600, atomic replacement, removal and revocation on stop) against a stand-in agent on a
real gRPC Unix socket. tests/test_e2e_workload_credentials.py runs it in a real agent."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg.conninfo
import pytest

from agent.config import AgentConfig
from agent.sidecar import SidecarConfig, render, run_sidecar
from sevvo.runtime.config import ConfigError
from sevvo.runtime.deployment_token import DeploymentCredentials, wrap
from sevvo_client import Credential
from tests.credential_fake import TOKEN, FakeAgent, serving

SOCKET = Path("/var/run/sevvo/agent.sock")
HOSTILE_PASSWORD = "p:a\\s's \"w$(rm -rf x)`d`\n"


def _credential(password: str = HOSTILE_PASSWORD) -> Credential:
    conninfo = psycopg.conninfo.make_conninfo(
        host="db.internal",
        port=5432,
        dbname="shop",
        user="sevvo_dyn_ab12",
        password=password,
        sslmode="verify-full",
        sslrootcert="/var/run/sevvo/ca-1234.crt",
    )
    now = datetime.now(UTC)
    return Credential(
        lease_id="lease-1",
        username="sevvo_dyn_ab12",
        password=password,
        conninfo=conninfo,
        host="db.internal",
        port=5432,
        database="shop",
        ssl_mode="verify-full",
        connection_id="c-1",
        role="readonly",
        expire_time=now,
        max_expire_time=now,
    )


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path is limited to ~107 bytes."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="sd-") as name:
        yield Path(name)


def test_conninfo_format_is_the_libpq_string() -> None:
    """The conninfo file is the connection string on one line, password included."""
    credential = _credential()
    text = render(credential, "conninfo")
    assert text == credential.conninfo + "\n"
    assert psycopg.conninfo.conninfo_to_dict(text.strip())["password"] == HOSTILE_PASSWORD


def test_pgpass_format_escapes_colons_and_backslashes() -> None:
    """One pgpass line; ':' and '\\' inside a field are escaped as libpq reads them."""
    text = render(_credential("pa:ss\\word"), "pgpass")
    assert text == "db.internal:5432:shop:sevvo_dyn_ab12:pa\\:ss\\\\word\n"


def test_env_format_is_sourceable_and_round_trips_hostile_values(tmp_path: Path) -> None:
    """PG* assignments quoted for a POSIX shell: sourcing them yields the exact values, and
    nothing in the password is executed."""
    file = tmp_path / "db.env"
    file.write_text(render(_credential(), "env"))
    shown = subprocess.run(
        [
            "sh",
            "-c",
            f'. "{file}" && printf "%s|%s|%s|%s" "$PGUSER" "$PGSSLMODE" '
            '"$PGSSLROOTCERT" "$PGPASSWORD"',
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert shown == f"sevvo_dyn_ab12|verify-full|/var/run/sevvo/ca-1234.crt|{HOSTILE_PASSWORD}"
    assert list(tmp_path.iterdir()) == [file]  # $(rm ...) and `d` ran nothing.
    names = [line.split("=", 1)[0] for line in file.read_text().splitlines() if "=" in line]
    assert set(names) >= {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE"}


def test_an_unknown_format_is_refused() -> None:
    """render names the formats it knows."""
    with pytest.raises(ValueError, match="conninfo, pgpass, env"):
        render(_credential(), "json")


def test_sidecar_is_off_unless_a_connection_is_named() -> None:
    """Without SEVVO_SIDECAR_CONNECTION there is no sidecar."""
    assert SidecarConfig.load({}, SOCKET) is None


def test_sidecar_settings_load_from_the_environment(tmp_path: Path) -> None:
    """Every variable is read; the token from its file; the repr holds no token."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = SidecarConfig.load(
        {
            "SEVVO_SIDECAR_CONNECTION": "reporting-db",
            "SEVVO_SIDECAR_ROLE": "readonly",
            "SEVVO_SIDECAR_TTL": "30m",
            "SEVVO_SIDECAR_FILE": "/var/run/sevvo/db.env",
            "SEVVO_SIDECAR_FORMAT": "env",
            "SEVVO_SIDECAR_GRACE_SECONDS": "5",
            "SEVVO_WORKLOAD_TOKEN_FILE": str(token_file),
        },
        SOCKET,
    )
    assert config == SidecarConfig(
        connection="reporting-db",
        file=Path("/var/run/sevvo/db.env"),
        socket=str(SOCKET),
        workload_token=TOKEN,
        role="readonly",
        ttl_seconds=1800,
        format="env",
        grace_seconds=5.0,
    )
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("env", "socket", "variable"),
    [
        (
            {"SEVVO_SIDECAR_FILE": "/f", "SEVVO_WORKLOAD_TOKEN": TOKEN},
            None,
            "SEVVO_CREDENTIAL_SOCKET",
        ),
        ({"SEVVO_WORKLOAD_TOKEN": TOKEN}, SOCKET, "SEVVO_SIDECAR_FILE"),
        (
            {"SEVVO_SIDECAR_FILE": "relative/f", "SEVVO_WORKLOAD_TOKEN": TOKEN},
            SOCKET,
            "SEVVO_SIDECAR_FILE",
        ),
        ({"SEVVO_SIDECAR_FILE": "/f"}, SOCKET, "SEVVO_WORKLOAD_TOKEN"),
        (
            {"SEVVO_SIDECAR_FILE": "/f", "SEVVO_WORKLOAD_TOKEN": "sevvo_dt_x"},
            SOCKET,
            "SEVVO_WORKLOAD_TOKEN",
        ),
        (
            {
                "SEVVO_SIDECAR_FILE": "/f",
                "SEVVO_WORKLOAD_TOKEN": TOKEN,
                "SEVVO_SIDECAR_TTL": "2 hours",
            },
            SOCKET,
            "SEVVO_SIDECAR_TTL",
        ),
        (
            {
                "SEVVO_SIDECAR_FILE": "/f",
                "SEVVO_WORKLOAD_TOKEN": TOKEN,
                "SEVVO_SIDECAR_FORMAT": "json",
            },
            SOCKET,
            "SEVVO_SIDECAR_FORMAT",
        ),
        (
            {
                "SEVVO_SIDECAR_FILE": "/f",
                "SEVVO_WORKLOAD_TOKEN": TOKEN,
                "SEVVO_SIDECAR_GRACE_SECONDS": "-1",
            },
            SOCKET,
            "SEVVO_SIDECAR_GRACE_SECONDS",
        ),
    ],
)
def test_a_bad_sidecar_setting_fails_at_start_naming_the_variable(
    env: dict[str, str], socket: Path | None, variable: str
) -> None:
    """A missing or malformed sidecar variable is a ConfigError that names it."""
    with pytest.raises(ConfigError, match=variable) as caught:
        SidecarConfig.load({"SEVVO_SIDECAR_CONNECTION": "reporting-db", **env}, socket)
    assert "sevvo_dt_x" not in str(caught.value)


def test_the_agent_config_carries_the_sidecar_through_its_own_socket() -> None:
    """AgentConfig.load turns sidecar mode on with the credential API's socket."""
    base = {
        "SEVVO_CONTROL_PLANE_ENDPOINT": "api.example",
        "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
        "SEVVO_SIDECAR_CONNECTION": "reporting-db",
        "SEVVO_SIDECAR_FILE": "/var/run/sevvo/db.conninfo",
        "SEVVO_WORKLOAD_TOKEN": TOKEN,
        "SEVVO_CREDENTIAL_SOCKET": "/var/run/sevvo/a.sock",
    }
    config = AgentConfig.load({**base, "SEVVO_DEPLOYMENT_TOKEN": _deployment_token()})
    assert config.sidecar is not None
    assert config.sidecar.socket == "/var/run/sevvo/a.sock"
    assert TOKEN not in repr(config)


def _deployment_token() -> str:
    return wrap(DeploymentCredentials("00000000-0000-0000-0000-000000000001", "s" * 43))


def test_the_sidecar_keeps_the_file_current_and_cleans_up_on_stop(short_dir: Path) -> None:
    """Against leases of 1 s up to 3 s: the file appears 0600, is atomically replaced with the
    new credential before the max TTL, and on stop the lease is revoked and the file removed."""
    agent = FakeAgent(ttl=1.0, max_ttl=3.0)
    file = short_dir / "db.conninfo"
    config = SidecarConfig(
        connection="reporting-db",
        file=file,
        socket=str(short_dir / "a.sock"),
        workload_token=TOKEN,
        grace_seconds=0.2,
    )

    async def run() -> None:
        async with serving(agent, short_dir / "a.sock"):
            stop = asyncio.Event()
            task = asyncio.create_task(run_sidecar(config, stop))
            for _ in range(50):
                if file.exists():
                    break
                await asyncio.sleep(0.05)
            assert file.stat().st_mode & 0o777 == 0o600
            first = file.read_text()
            inode = file.stat().st_ino
            assert "user=v_fake_0 " in first
            await asyncio.sleep(2.6)  # Replaced at ~2 s: the next renewal would pass 3 s.
            second = file.read_text()
            assert "user=v_fake_1 " in second
            assert file.stat().st_ino != inode  # A new file renamed over, not rewritten.
            assert file.stat().st_mode & 0o777 == 0o600
            # No temporary file left behind by a replacement.
            assert sorted(p.name for p in short_dir.iterdir()) == ["a.sock", "db.conninfo"]
            stop.set()
            await asyncio.wait_for(task, 5)
        assert not file.exists()
        assert agent.live() == []
        assert [r.purpose for r in agent.requests] == ["sidecar", "sidecar"]

    asyncio.run(run())


def test_the_sidecar_waits_for_the_credential_api(short_dir: Path) -> None:
    """Started before the API listens, the sidecar retries and writes once it can borrow."""
    agent = FakeAgent(ttl=30.0, max_ttl=60.0)
    file = short_dir / "db.pgpass"
    config = SidecarConfig(
        connection="reporting-db",
        file=file,
        socket=str(short_dir / "a.sock"),
        workload_token=TOKEN,
        format="pgpass",
    )

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sidecar(config, stop))
        await asyncio.sleep(0.5)
        assert not file.exists()
        async with serving(agent, short_dir / "a.sock"):
            for _ in range(100):
                if file.exists():
                    break
                await asyncio.sleep(0.05)
            assert file.read_text().startswith("db.internal:5432:shop:v_fake_0:")
            stop.set()
            await asyncio.wait_for(task, 5)
        assert not file.exists()
        assert agent.live() == []

    asyncio.run(run())
