"""The committed workflow histories: where they live and the test-only key that encrypts them.

scripts/record_workflow_histories.py writes them and tests/test_workflow_replay.py replays
them; both read this module so the two never disagree on a path or a converter. Why they
exist and how they are kept: tests/workflow_histories/README.md.
"""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter

from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey, data_converter

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = ROOT / "tests" / "workflow_histories"
"""One folder per release (``0.1.0/``), each holding ``<workflow type>.<path>.json`` files."""
KEY_FILE = HISTORIES / "payload_key.json"
"""The published, test-only payload key the histories are encrypted under. Not a secret."""


def current_release() -> str:
    """The project version in pyproject.toml: the folder new recordings go to."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        version: str = tomllib.load(file)["project"]["version"]
        return version


def history_keys() -> OrgPayloadKeys:
    """The org and payload key every committed history was recorded with."""
    entry = json.loads(KEY_FILE.read_text())
    key = PayloadKey(entry["key_id"], base64.b64decode(entry["key"]))
    return OrgPayloadKeys(entry["org_id"], [key], key.key_id)


def history_converter() -> DataConverter:
    """The agent's own data converter (payload codec, encoded failure attributes) under the
    test-only key, so replay decodes payloads exactly as a worker does."""
    return data_converter(history_keys())


def committed_histories() -> list[Path]:
    """Every committed history file, of every release, in a stable order."""
    return sorted(HISTORIES.glob("*/*.json"))


def load_history(path: Path) -> WorkflowHistory:
    """The history in ``path``; its workflow id is the file's stem (to_json leaves it out)."""
    return WorkflowHistory.from_json(path.stem, path.read_text())


def workflow_type(history: WorkflowHistory) -> str:
    """The workflow type a history is of, from its first event."""
    started = history.events[0].workflow_execution_started_event_attributes
    name: str = started.workflow_type.name
    return name


def registered_type(cls: type) -> str:
    """The workflow type name ``@workflow.defn`` gave ``cls`` (its own, or the one passed)."""
    # temporalio keeps the definition on the class under this attribute and offers no public
    # accessor; the name is what histories and starts refer to.
    name: str = getattr(cls, "__temporal_workflow_definition").name
    return name
