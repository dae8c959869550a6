"""Temporal payload encryption: the codec's contract, and ciphertext-only history on a server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError, TerminatedError

# The workflow sandbox re-imports this module for every run; passing these through keeps it
# from re-importing pytest, grpc and the project, none of which the workflows below use.
with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.api.common.v1 import Payload, WorkflowExecution
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.failure.v1 import Failure
    from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
    from temporalio.converter import DataConverter
    from temporalio.worker import Worker

    from devstack.temporal import TemporalDevServer
    from sevvo.runtime.config import ConfigError
    from sevvo.runtime.payload_codec import (
        ENCODING,
        KEY_ID_METADATA,
        EncryptionCodec,
        KeyRefresher,
        OrgPayloadKeys,
        PayloadKey,
        PayloadKeyUnknown,
        PayloadUnreadable,
        data_converter,
    )

ORG = "org-a"
K1 = PayloadKey.generate("k1")
K2 = PayloadKey.generate("k2")
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'"password=canary-pw"')

# Each canary is a string that must never reach the server in clear. None of them occurs in a
# workflow or activity type name, id or task queue, which the server does see.
SECRET_INPUT = "host=db.canary.internal password=canary-pw"
ACTIVITY_FAILURE = "boom canary-failure-text"
WORKFLOW_FAILURE = "workflow gave up: canary-wf-failure"
CANARIES = ("db.canary.internal", "canary-pw", "canary-failure-text", "canary-wf-failure")
TIMEOUT = timedelta(seconds=10)


# --- workflows and activities run by the integration tests ---------------------------------


@activity.defn
async def shout(text: str) -> str:
    """Return the input uppercased, so the result differs from the input."""
    return text.upper()


@activity.defn
async def explode(text: str) -> str:
    """Fail at once, with a message the history must not show in clear."""
    raise ApplicationError(ACTIVITY_FAILURE, non_retryable=True)


@workflow.defn
class EchoWorkflow:
    """Shout the input, then catch an activity's failure and report its message."""

    @workflow.run
    async def run(self, text: str) -> str:
        """Return ``<shouted input> | caught: <activity failure message>``."""
        loud = await workflow.execute_activity(shout, text, start_to_close_timeout=TIMEOUT)
        try:
            await workflow.execute_activity(explode, text, start_to_close_timeout=TIMEOUT)
        except ActivityError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else repr(cause)
            return f"{loud} | caught: {message}"
        raise ApplicationError("explode returned", non_retryable=True)


@workflow.defn
class FailingWorkflow:
    """Fail the workflow itself with a message that must stay encrypted."""

    @workflow.run
    async def run(self, text: str) -> None:
        """Raise a non-retryable ApplicationError."""
        raise ApplicationError(WORKFLOW_FAILURE, non_retryable=True)


# --- helpers -------------------------------------------------------------------------------


def org_keys(
    org_id: str = ORG, keys: Sequence[PayloadKey] = (K1,), current: str = "k1"
) -> OrgPayloadKeys:
    return OrgPayloadKeys(org_id, keys, current)


def encode(codec: EncryptionCodec, payload: Payload = PLAIN) -> Payload:
    [encoded] = asyncio.run(codec.encode([payload]))
    return encoded


def decode(codec: EncryptionCodec, payload: Payload) -> Payload:
    [decoded] = asyncio.run(codec.decode([payload]))
    return decoded


def reason_of(error: pytest.ExceptionInfo[PayloadUnreadable]) -> str:
    return error.value.reason


def raw_history(history: WorkflowHistory) -> str:
    """Every event's proto bytes and the JSON export, lowercased: what the server stores."""
    raw = b"".join(event.SerializeToString() for event in history.events)
    return (raw.decode("latin-1") + history.to_json()).lower()


def leaked(history: WorkflowHistory) -> list[str]:
    text = raw_history(history)
    return [canary for canary in CANARIES if canary in text]


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[TemporalDevServer]:
    with TemporalDevServer() as server:
        yield server


@asynccontextmanager
async def worker_for(
    server: TemporalDevServer, converter: DataConverter
) -> AsyncIterator[tuple[Client, str]]:
    """A client and a running worker on a fresh task queue, both using ``converter``."""
    client = await Client.connect(server.address, data_converter=converter)
    task_queue = f"payload-codec-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[EchoWorkflow, FailingWorkflow],
        activities=[shout, explode],
    ):
        yield client, task_queue


async def run_echo(server: TemporalDevServer, converter: DataConverter) -> tuple[str, str]:
    """Run EchoWorkflow to completion; return its result and workflow id."""
    async with worker_for(server, converter) as (client, task_queue):
        workflow_id = f"echo-{uuid.uuid4()}"
        result = await client.execute_workflow(
            EchoWorkflow.run, SECRET_INPUT, id=workflow_id, task_queue=task_queue
        )
    return result, workflow_id


EXPECTED_ECHO = f"{SECRET_INPUT.upper()} | caught: {ACTIVITY_FAILURE}"


# --- the codec -----------------------------------------------------------------------------


def test_round_trip_restores_the_payload() -> None:
    """Decoding an encoded payload gives back the original payload, metadata included."""
    codec = EncryptionCodec(org_keys())
    assert decode(codec, encode(codec)) == PLAIN


def test_encoded_payload_is_marked_and_holds_no_plaintext() -> None:
    """An encoded payload says binary/encrypted, names its key, and its bytes hide the input."""
    encoded = encode(EncryptionCodec(org_keys()))
    assert dict(encoded.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}
    assert b"canary-pw" not in encoded.SerializeToString()
    assert b"json/plain" not in encoded.SerializeToString()


def test_each_encode_uses_a_fresh_nonce() -> None:
    """Encoding the same payload twice gives different nonces and ciphertexts."""
    codec = EncryptionCodec(org_keys())
    first, second = encode(codec), encode(codec)
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


def test_payload_from_another_org_does_not_decrypt() -> None:
    """Same key id and key bytes, other org id: decoding fails as PAYLOAD_UNDECRYPTABLE."""
    foreign = encode(EncryptionCodec(org_keys("org-b")))
    with pytest.raises(PayloadUnreadable) as caught:
        decode(EncryptionCodec(org_keys("org-a")), foreign)
    assert reason_of(caught) == "PAYLOAD_UNDECRYPTABLE"


def test_unknown_key_id_is_named_in_the_error() -> None:
    """A payload under a key this process lacks fails as PAYLOAD_KEY_UNKNOWN naming the id."""
    encoded = encode(EncryptionCodec(org_keys()))
    with pytest.raises(PayloadKeyUnknown) as caught:
        decode(EncryptionCodec(org_keys(keys=[K2], current="k2")), encoded)
    assert caught.value.reason == "PAYLOAD_KEY_UNKNOWN"
    assert caught.value.key_id == "k1"
    assert "'k1'" in str(caught.value)
    assert caught.value.metadata == {"key_id": "k1"}


def test_rotation_keeps_old_payloads_readable_and_encrypts_with_the_new_key() -> None:
    """After update() adds a new current key, old payloads decode and new ones use the new id."""
    keys = org_keys()
    codec = EncryptionCodec(keys)
    old = encode(codec)
    keys.update([K1, K2], "k2")
    new = encode(codec)
    assert new.metadata[KEY_ID_METADATA] == b"k2"
    assert decode(codec, old) == PLAIN
    assert decode(codec, new) == PLAIN


def test_update_drops_keys_left_out_of_the_new_set() -> None:
    """update() replaces the key set, so a retired key no longer decrypts."""
    keys = org_keys()
    codec = EncryptionCodec(keys)
    old = encode(codec)
    keys.update([K2], "k2")
    assert keys.key_ids == frozenset({"k2"})
    with pytest.raises(PayloadKeyUnknown):
        decode(codec, old)


def test_failed_update_leaves_the_keys_unchanged() -> None:
    """An update whose current id is not among its keys raises and changes nothing."""
    keys = org_keys()
    with pytest.raises(ConfigError, match="'k3' is not among the keys 'k2'"):
        keys.update([K2], "k3")
    assert keys.current_id == "k1"
    assert keys.key_ids == frozenset({"k1"})


class _Fetcher:
    """Installs the org's keys (k1 and k2, k2 current) when the refresher asks; counts calls."""

    def __init__(self, keys: OrgPayloadKeys, *, fails: bool = False) -> None:
        self.keys = keys
        self.fails = fails
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.fails:
            raise ConnectionError("control plane unreachable")
        self.keys.update([K1, K2], "k2")


def test_payload_under_a_new_key_is_read_after_one_fetch() -> None:
    """A payload naming a key not held yet makes the codec fetch keys once, then decode."""
    new = encode(EncryptionCodec(org_keys(keys=[K1, K2], current="k2")))
    held = org_keys()
    fetcher = _Fetcher(held)
    assert decode(EncryptionCodec(held, KeyRefresher(fetcher)), new) == PLAIN
    assert fetcher.calls == 1
    assert held.current_id == "k2"


def test_a_key_the_fetch_does_not_bring_is_still_refused() -> None:
    """A key id nobody issued stays PAYLOAD_KEY_UNKNOWN after the one fetch."""
    foreign = encode(EncryptionCodec(org_keys(keys=[PayloadKey.generate("k9")], current="k9")))
    fetcher = _Fetcher(org_keys())
    with pytest.raises(PayloadKeyUnknown):
        decode(EncryptionCodec(fetcher.keys, KeyRefresher(fetcher)), foreign)
    assert fetcher.calls == 1


def test_a_failed_fetch_refuses_the_payload_as_unknown() -> None:
    """When the keys cannot be fetched the payload fails as before, naming the key."""
    new = encode(EncryptionCodec(org_keys(keys=[K1, K2], current="k2")))
    fetcher = _Fetcher(org_keys(), fails=True)
    with pytest.raises(PayloadKeyUnknown) as caught:
        decode(EncryptionCodec(fetcher.keys, KeyRefresher(fetcher)), new)
    assert caught.value.key_id == "k2"


def test_made_up_key_ids_are_fetched_for_at_most_once_per_interval() -> None:
    """Concurrent payloads under unknown keys share fetches, spaced by the minimum interval."""
    foreign = encode(EncryptionCodec(org_keys(keys=[PayloadKey.generate("k9")], current="k9")))
    fetcher = _Fetcher(org_keys())
    codec = EncryptionCodec(fetcher.keys, KeyRefresher(fetcher, min_interval=0.2))

    async def many() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(codec.decode([foreign]) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(o, PayloadKeyUnknown) for o in outcomes)
        return loop.time() - started

    elapsed = asyncio.run(many())
    # The first fetch serves everyone who asked before it started; one more for the rest.
    assert fetcher.calls <= 2
    assert elapsed < 1.0


def test_unencrypted_payload_is_rejected() -> None:
    """A plaintext payload is refused on decode (PAYLOAD_NOT_ENCRYPTED), not passed through."""
    with pytest.raises(PayloadUnreadable) as caught:
        decode(EncryptionCodec(org_keys()), PLAIN)
    assert reason_of(caught) == "PAYLOAD_NOT_ENCRYPTED"


def _flip_data(payload: Payload, index: int) -> None:
    data = bytearray(payload.data)
    data[index] ^= 1
    payload.data = bytes(data)


@pytest.mark.parametrize(
    "index", [0, 11, 12, -17, -1], ids=["nonce0", "nonce11", "ct0", "ct-last", "tag-last"]
)
def test_tampered_bytes_fail_authentication(index: int) -> None:
    """Flipping one bit in the nonce, ciphertext or tag fails as PAYLOAD_UNDECRYPTABLE."""
    encoded = encode(EncryptionCodec(org_keys()))
    _flip_data(encoded, index)
    with pytest.raises(PayloadUnreadable) as caught:
        decode(EncryptionCodec(org_keys()), encoded)
    assert reason_of(caught) == "PAYLOAD_UNDECRYPTABLE"


def test_relabelled_key_id_fails_authentication() -> None:
    """A payload whose key-id metadata is rewritten to another id with the same bytes fails."""
    twin = PayloadKey("k1-twin", K1.key)
    encoded = encode(EncryptionCodec(org_keys(keys=[K1, twin])))
    encoded.metadata[KEY_ID_METADATA] = b"k1-twin"
    with pytest.raises(PayloadUnreadable) as caught:
        decode(EncryptionCodec(org_keys(keys=[K1, twin])), encoded)
    assert reason_of(caught) == "PAYLOAD_UNDECRYPTABLE"


@pytest.mark.parametrize(
    ("metadata", "data"),
    [
        ({"encoding": ENCODING}, b"\x00" * 40),
        ({"encoding": ENCODING, KEY_ID_METADATA: b""}, b"\x00" * 40),
        ({"encoding": ENCODING, KEY_ID_METADATA: b"\xff"}, b"\x00" * 40),
        ({"encoding": ENCODING, KEY_ID_METADATA: b"k1"}, b"\x00" * 27),
    ],
    ids=["no-key-id", "empty-key-id", "non-utf8-key-id", "truncated"],
)
def test_malformed_encrypted_payload_is_rejected(metadata: dict[str, bytes], data: bytes) -> None:
    """A binary/encrypted payload without a usable key id or too short fails as MALFORMED."""
    with pytest.raises(PayloadUnreadable) as caught:
        decode(EncryptionCodec(org_keys()), Payload(metadata=metadata, data=data))
    assert reason_of(caught) == "PAYLOAD_MALFORMED"


def test_reprs_hide_the_key_bytes() -> None:
    """Neither a PayloadKey's nor the key holder's repr shows key material."""
    keys = org_keys(keys=[K1, K2], current="k2")
    for text in (repr(K1), repr(keys)):
        assert repr(K1.key) not in text
        assert K1.key.hex() not in text
    assert repr(keys) == "OrgPayloadKeys(org_id='org-a', current_id='k2', key_ids=('k1', 'k2'))"


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda: PayloadKey("k1", b"\x00" * 31), "must be 32 bytes, got 31 bytes"),
        (lambda: PayloadKey("bad id", b"\x00" * 32), "payload key id 'bad id' must match"),
        (lambda: OrgPayloadKeys("", [K1], "k1"), "non-empty org id"),
        (lambda: OrgPayloadKeys(ORG, [K1], "k2"), "'k2' is not among the keys 'k1'"),
        (lambda: OrgPayloadKeys(ORG, [], "k1"), "'k1' is not among the keys (none)"),
        (lambda: OrgPayloadKeys(ORG, [K1, K1], "k1"), "'k1' appears twice"),
    ],
    ids=["short-key", "bad-id", "no-org", "current-missing", "no-keys", "duplicate"],
)
def test_invalid_key_configuration_is_rejected(build: object, problem: str) -> None:
    """Malformed keys or key sets fail at construction with a message naming the problem."""
    assert callable(build)
    with pytest.raises(ConfigError) as caught:
        build()
    assert problem in str(caught.value)


def test_data_converter_round_trips_protobuf_messages() -> None:
    """A protobuf message converts to an encrypted payload and back to an equal message."""
    converter = data_converter(org_keys())
    message = WorkflowExecution(workflow_id="wf-1", run_id="run-1")

    async def round_trip() -> tuple[Payload, object]:
        [payload] = await converter.encode([message])
        [value] = await converter.decode([payload], [WorkflowExecution])
        return payload, value

    payload, value = asyncio.run(round_trip())
    assert payload.metadata["encoding"] == ENCODING
    assert b"wf-1" not in payload.SerializeToString()
    assert value == message


def test_data_converter_encrypts_failure_messages() -> None:
    """A failure's message and stack trace travel encrypted and decode back to the error."""
    converter = data_converter(org_keys())
    failure = Failure()

    async def round_trip() -> BaseException:
        try:
            raise ApplicationError(ACTIVITY_FAILURE)
        except ApplicationError as err:
            await converter.encode_failure(err, failure)
        decoded = Failure()
        decoded.CopyFrom(failure)
        return await converter.decode_failure(decoded)

    error = asyncio.run(round_trip())
    assert b"canary-failure-text" not in failure.SerializeToString()
    assert failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    assert isinstance(error, ApplicationError)
    assert error.message == ACTIVITY_FAILURE


# --- against a real Temporal server --------------------------------------------------------


def test_history_holds_no_plaintext_while_the_client_decodes_the_result(
    temporal_server: TemporalDevServer,
) -> None:
    """Input, activity result and a handled activity failure are ciphertext in the history."""
    converter = data_converter(org_keys())

    async def scenario() -> tuple[str, WorkflowHistory]:
        result, workflow_id = await run_echo(temporal_server, converter)
        client = await Client.connect(temporal_server.address, data_converter=converter)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return result, history

    result, history = asyncio.run(scenario())
    assert result == EXPECTED_ECHO
    event_types = {event.event_type for event in history.events}
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED in event_types
    assert leaked(history) == []


def test_workflow_failure_message_is_ciphertext_in_the_history(
    temporal_server: TemporalDevServer,
) -> None:
    """A failed workflow's message reaches the client decoded but is stored encrypted."""
    converter = data_converter(org_keys())

    async def scenario() -> tuple[WorkflowFailureError, WorkflowHistory]:
        async with worker_for(temporal_server, converter) as (client, task_queue):
            handle = await client.start_workflow(
                FailingWorkflow.run, SECRET_INPUT, id=f"fail-{uuid.uuid4()}", task_queue=task_queue
            )
            with pytest.raises(WorkflowFailureError) as caught:
                await handle.result()
            return caught.value, await handle.fetch_history()

    error, history = asyncio.run(scenario())
    assert isinstance(error.cause, ApplicationError)
    assert error.cause.message == WORKFLOW_FAILURE
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    assert leaked(history) == []


def test_client_without_the_codec_cannot_read_the_result(
    temporal_server: TemporalDevServer,
) -> None:
    """A client with Temporal's plain converter gets an error, never the plaintext result."""

    async def scenario() -> tuple[BaseException, WorkflowHistory]:
        _, workflow_id = await run_echo(temporal_server, data_converter(org_keys()))
        plain = await Client.connect(temporal_server.address)
        handle = plain.get_workflow_handle(workflow_id)
        # Temporal's converter has no "binary/encrypted" encoding to look up.
        with pytest.raises(KeyError) as caught:
            await handle.result()
        return caught.value, await handle.fetch_history()

    error, history = asyncio.run(scenario())
    assert "binary/encrypted" in str(error)
    assert not any(canary in str(error).lower() for canary in CANARIES)
    completed = history.events[-1].workflow_execution_completed_event_attributes
    [payload] = completed.result.payloads
    assert payload.metadata["encoding"] == ENCODING


def test_scan_finds_canaries_in_an_unencrypted_history(temporal_server: TemporalDevServer) -> None:
    """Control: without the codec the same run leaves every canary in the history."""

    async def scenario() -> WorkflowHistory:
        _, workflow_id = await run_echo(temporal_server, DataConverter.default)
        plain = await Client.connect(temporal_server.address)
        return await plain.get_workflow_handle(workflow_id).fetch_history()

    history = asyncio.run(scenario())
    assert leaked(history) == list(CANARIES[:3])


def test_worker_refuses_a_plaintext_workflow_input(temporal_server: TemporalDevServer) -> None:
    """A start with an unencrypted input fails the workflow task; no activity runs."""

    async def scenario() -> WorkflowHistory:
        async with worker_for(temporal_server, data_converter(org_keys())) as (_, task_queue):
            plain = await Client.connect(temporal_server.address)
            handle = await plain.start_workflow(
                EchoWorkflow.run, SECRET_INPUT, id=f"plain-{uuid.uuid4()}", task_queue=task_queue
            )
            try:
                async with asyncio.timeout(10):
                    while True:
                        history = await handle.fetch_history()
                        types = {event.event_type for event in history.events}
                        if EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in types:
                            return history
                        await asyncio.sleep(0.05)
            finally:
                await handle.terminate()

    history = asyncio.run(scenario())
    types = {event.event_type for event in history.events}
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in types
    [failed] = [
        event.workflow_task_failed_event_attributes
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    # The worker's own failure report goes through the codec too.
    assert failed.failure.encoded_attributes.metadata["encoding"] == ENCODING


def test_server_made_failures_need_no_plaintext_pass_through(
    temporal_server: TemporalDevServer,
) -> None:
    """A termination's failure carries no payload, so the strict codec still reports it."""

    async def scenario() -> WorkflowFailureError:
        client = await Client.connect(
            temporal_server.address, data_converter=data_converter(org_keys())
        )
        # No worker polls this queue: the workflow waits until the server terminates it.
        handle = await client.start_workflow(
            EchoWorkflow.run,
            SECRET_INPUT,
            id=f"terminated-{uuid.uuid4()}",
            task_queue=f"payload-codec-idle-{uuid.uuid4()}",
        )
        await handle.terminate(reason="operator stop")
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        return caught.value

    error = asyncio.run(scenario())
    assert isinstance(error.cause, TerminatedError)
    assert error.cause.message == "operator stop"
