"""Certificates, CA bundles and keyrings followed from their mounted files without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import TLSConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack.pki import DevPki, ensure_dev_pki, issue_server_cert
from devstack.temporal import TemporalDevServer
from devstack.tls_proxy import ThreadedTlsProxy
from sevvo.runtime import temporal
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel, secure_channel
from sevvo.runtime.grpc_server import TlsFiles
from sevvo.runtime.sealing import Keyring, KeyringFile, load_keyring, seal, unseal
from tests.plugins.auth_stack import BackgroundLoop

_METHOD = "/test.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _replace(source: Path, target: Path) -> None:
    """Swaps a file in whole, as the kubelet swaps a Secret's files (new inode)."""
    staged = target.with_name(f".{target.name}.new")
    shutil.copyfile(source, staged)
    os.replace(staged, target)


class _Server:
    """An aio TLS server on loopback whose certificate comes from files under ``live``."""

    def __init__(self, loop: BackgroundLoop, live: Path, cert: Path, key: Path) -> None:
        self.cert, self.key = live / "tls.crt", live / "tls.key"
        _replace(cert, self.cert)
        _replace(key, self.key)
        self._loop = loop

        async def start() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
                    ),
                )
            )
            port = server.add_secure_port(
                "127.0.0.1:0", TlsFiles(self.cert, self.key).credentials()
            )
            await server.start()
            return server, port

        self.server, self.port = loop.run(start())

    def served_subject(self) -> str:
        """The subject of the certificate a new TLS connection is handed."""
        pem = ssl.get_server_certificate(("127.0.0.1", self.port), timeout=5)
        return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()

    def stop(self) -> None:
        self._loop.run(self.server.stop(grace=0))


@pytest.fixture
def tls_server(
    dev_pki: DevPki, background_loop: BackgroundLoop, tmp_path: Path
) -> Iterator[_Server]:
    """A server started with the certificate ``CN=first``."""
    cert, key = issue_server_cert(dev_pki, tmp_path / "issued", name="first")
    live = tmp_path / "live"
    live.mkdir()
    server = _Server(background_loop, live, cert, key)
    yield server
    server.stop()


def test_server_hands_a_renewed_certificate_to_new_connections(
    tls_server: _Server, dev_pki: DevPki, tmp_path: Path
) -> None:
    """After the cert/key pair is replaced, the next handshake gets the new certificate."""
    assert tls_server.served_subject() == "CN=first"
    cert, key = issue_server_cert(dev_pki, tmp_path / "issued", name="second")
    _replace(key, tls_server.key)
    _replace(cert, tls_server.cert)
    assert tls_server.served_subject() == "CN=second"


def test_server_keeps_its_certificate_when_the_new_pair_does_not_match(
    tls_server: _Server, dev_pki: DevPki, tmp_path: Path
) -> None:
    """A certificate whose key is not yet written keeps the old pair; the warning quotes no key."""
    cert, _ = issue_server_cert(dev_pki, tmp_path / "issued", name="second")
    with structlog.testing.capture_logs() as logs:
        _replace(cert, tls_server.cert)
        assert tls_server.served_subject() == "CN=first"
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "does not belong to the certificate" in warnings[0]["problem"]
    assert "PRIVATE KEY" not in repr(logs)


def test_server_refuses_to_start_with_a_mismatched_pair(dev_pki: DevPki) -> None:
    """A key that is not the certificate's fails at start as a ConfigError naming the files."""
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        TlsFiles(dev_pki.server_cert, dev_pki.client_key).credentials()


def test_aio_channel_follows_a_rotated_ca_bundle(
    tls_server: _Server, background_loop: BackgroundLoop, tmp_path: Path, dev_pki: DevPki
) -> None:
    """Server and client move to a new CA; the client's next call verifies with the new bundle
    on a new channel, and the replaced channel is closed."""
    other = ensure_dev_pki(tmp_path / "other-ca")
    ca_file = tmp_path / "ca.crt"
    _replace(dev_pki.ca_cert, ca_file)

    async def scenario() -> None:
        channel = secure_aio_channel(
            f"localhost:{tls_server.port}", ClientTls(ca_file=ca_file), check_seconds=0
        )
        echo = channel.unary_unary(_METHOD)  # Made once, as a stub does.
        assert await echo(b"one", timeout=5) == b"one"
        first = channel.current()
        _replace(other.server_key, tls_server.key)
        _replace(other.server_cert, tls_server.cert)
        _replace(other.ca_cert, ca_file)
        assert await echo(b"two", timeout=5) == b"two"
        assert channel.current() is not first
        # The replaced channel's closing (no call in flight to wait for) is done or under way.
        await asyncio.wait_for(asyncio.gather(*channel._closing), 5)
        with pytest.raises(grpc.aio.UsageError):
            await first.unary_unary(_METHOD)(b"three", timeout=5)
        await channel.close()

    background_loop.run(scenario())


def test_blocking_channel_keeps_working_when_the_ca_file_is_broken(
    tls_server: _Server, dev_pki: DevPki, tmp_path: Path
) -> None:
    """A CA file cut short keeps the working channel and is reported once, by path."""
    ca_file = tmp_path / "ca.crt"
    _replace(dev_pki.ca_cert, ca_file)
    with secure_channel(
        f"localhost:{tls_server.port}", ClientTls(ca_file=ca_file), check_seconds=0
    ) as channel:
        echo = channel.unary_unary(_METHOD)
        assert echo(b"one", timeout=5) == b"one"
        ca_file.write_bytes(dev_pki.ca_cert.read_bytes()[:100])
        with structlog.testing.capture_logs() as logs:
            assert echo(b"two", timeout=5) == b"two"
            assert echo(b"three", timeout=5) == b"three"
    assert [e["problem"] for e in logs if e["log_level"] == "warning"] == [
        f"{ca_file}: not PEM certificates"
    ]


def _keyring_file(tmp_path: Path, keyring: Keyring) -> Path:
    path = tmp_path / "keyring.json"
    staged = tmp_path / ".keyring.json.new"
    staged.write_text(keyring.to_json())
    os.replace(staged, path)
    return path


def test_keyring_file_picks_up_a_rotated_key(tmp_path: Path) -> None:
    """A key added and made primary in the file seals the next payload; older ones still open."""
    first = Keyring.generate("k1")
    path = _keyring_file(tmp_path, first)
    source = KeyringFile(path, "SEVVO_TEST_KEYRING_FILE", check_seconds=0)
    old = seal(source, b"secret", b"aad")
    _keyring_file(tmp_path, first.with_new_primary("k2"))
    new = seal(source, b"secret", b"aad")
    assert (old.key_id, new.key_id) == ("k1", "k2")
    assert unseal(source, old, b"aad") == unseal(source, new, b"aad") == b"secret"


def test_keyring_file_keeps_the_last_good_keyring_when_the_file_breaks(tmp_path: Path) -> None:
    """A malformed file keeps the keyring in use and is logged once without key material."""
    keyring = Keyring.generate("k1")
    path = _keyring_file(tmp_path, keyring)
    source = KeyringFile(path, "SEVVO_TEST_KEYRING_FILE", check_seconds=0)
    key_text = json.loads(keyring.to_json())["keys"]["k1"]
    path.write_text(keyring.to_json().replace('"primary": "k1"', '"primary": "k9"'))
    with structlog.testing.capture_logs() as logs:
        assert dict(source.current().keys) == dict(keyring.keys)
        assert source.primary_id == "k1"
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "SEVVO_TEST_KEYRING_FILE" in warnings[0]["problem"]
    assert "'k9'" in warnings[0]["problem"]
    assert key_text not in repr(logs)


def test_keyring_from_a_file_variable_is_followed_and_checked_at_start(tmp_path: Path) -> None:
    """``NAME_FILE`` gives a followed keyring; a bad file fails at start naming the variable."""
    path = _keyring_file(tmp_path, Keyring.generate("k1"))
    loaded = load_keyring({"SEVVO_X_KEYRING_FILE": str(path)}, "SEVVO_X_KEYRING")
    assert isinstance(loaded, KeyringFile)
    assert loaded.primary_id == "k1"
    path.write_text("{")
    with pytest.raises(ConfigError, match="SEVVO_X_KEYRING_FILE: keyring is not valid JSON"):
        load_keyring({"SEVVO_X_KEYRING_FILE": str(path)}, "SEVVO_X_KEYRING")


@workflow.defn(name="TlsReloadEcho")
class _EchoWorkflow:
    """A workflow with no activity: it completes once a worker polls its queue."""

    @workflow.run
    async def run(self, text: str) -> str:
        return text


def test_temporal_worker_follows_a_rotated_ca_bundle(dev_pki: DevPki, tmp_path: Path) -> None:
    """Temporal's TLS front moves to a new CA; once the CA file follows, the worker polls
    through a client made with the new bundle, and a bundle cut short is skipped."""
    other = ensure_dev_pki(tmp_path / "other-ca")
    ca_file = tmp_path / "ca.crt"
    _replace(dev_pki.ca_cert, ca_file)
    with TemporalDevServer() as server:
        host, _, port = server.address.rpartition(":")
        first = ThreadedTlsProxy((host, int(port)), dev_pki.server_cert, dev_pki.server_key)
        first.start()
        listen = int(first.address.rpartition(":")[2])
        address = f"localhost:{listen}"

        async def scenario() -> None:
            client = await Client.connect(address, tls=temporal.tls_config(ca_file=ca_file))
            replaced: list[Client] = []

            async def replace(tls: TLSConfig) -> None:
                new = await Client.connect(address, tls=tls)
                worker.client = new
                replaced.append(new)

            worker = Worker(
                client,
                task_queue="tls-reload",
                workflows=[_EchoWorkflow],
                workflow_runner=UnsandboxedWorkflowRunner(),
            )
            async with worker:
                follow = asyncio.create_task(
                    temporal.follow_tls_files(ca_file=ca_file, replace=replace, check_seconds=0.05)
                )
                try:
                    ca_file.write_bytes(other.ca_cert.read_bytes()[:100])
                    await asyncio.sleep(0.2)
                    assert replaced == []
                    first.stop()
                    second = ThreadedTlsProxy(
                        (host, int(port)), other.server_cert, other.server_key, port=listen
                    )
                    second.start()
                    try:
                        _replace(other.ca_cert, ca_file)
                        starter = await Client.connect(
                            address, tls=temporal.tls_config(ca_file=other.ca_cert)
                        )
                        result = await starter.execute_workflow(
                            "TlsReloadEcho",
                            "over the new CA",
                            id=f"tls-reload-{os.getpid()}",
                            task_queue="tls-reload",
                            execution_timeout=timedelta(seconds=20),
                        )
                        assert result == "over the new CA"
                        assert len(replaced) == 1
                    finally:
                        await worker.shutdown()
                        second.stop()
                finally:
                    follow.cancel()

        asyncio.run(scenario())
