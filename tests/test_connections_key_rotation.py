"""Key-encryption-key rotation: 1,000 connections stay readable before, during and after rewrap."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg

from sevvo.connections.v1 import connections_pb2 as pb
from tests.plugins.control_plane import ControlPlane

COUNT = 1000


def test_rotation_and_rewrap_keep_every_connection_readable(control_plane: ControlPlane) -> None:
    """New primary, rewrap under load, old key removed: every connection resolves correctly."""
    org = control_plane.auth.create_org()
    passwords = {f"conn-{i:04d}": f"pw-{i}-{random.randrange(10**9)}" for i in range(COUNT)}
    with ThreadPoolExecutor(8) as pool:
        created = list(
            pool.map(lambda item: control_plane.create(org, item[0], item[1]), passwords.items())
        )
    expected = {c.id: passwords[c.display_name] for c in created}
    old_keyring = control_plane.app.config.keyring.current()

    # Step 1: every process gets the keyring with the new primary (old key kept).
    rotated = old_keyring.with_new_primary("k2")
    control_plane.restart_connections(rotated)
    agent = control_plane.credentials(control_plane.agent_for(org))

    # Step 2: rewrap while agents keep resolving; nothing may fail in between.
    failures: list[str] = []
    stop = threading.Event()

    def resolve_randomly() -> None:
        ids = list(expected)
        while not stop.is_set():
            cid = random.choice(ids)
            try:
                got = agent.ResolveConnectionCredentials(
                    pb.ResolveConnectionCredentialsRequest(connection_id=cid)
                )
                if got.postgres.password != expected[cid]:
                    failures.append(f"wrong password for {cid}")
            except Exception as exc:
                failures.append(repr(exc))

    readers = [threading.Thread(target=resolve_randomly) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        moved = control_plane.app.domain.rewrap_all(batch_size=100)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert moved == COUNT
    assert control_plane.app.store.count_by_kek() == {"k2": COUNT}

    # Step 3: the old key is removed; every connection still resolves to its own password.
    control_plane.restart_connections(rotated.without("k1"))
    agent = control_plane.credentials(control_plane.agent_for(org))
    for cid, password in expected.items():
        got = agent.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=cid)
        )
        assert got.postgres.password == password
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        assert conn.execute(
            "select count(*) from connections.connections where kek_id <> 'k2'"
        ).fetchone() == (0,)
