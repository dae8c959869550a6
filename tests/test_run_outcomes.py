"""A run's state and outcome category never contradict each other (no succeeded + rejected,
no failed + rotated)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.message import Message

from services.orchestrator.domain import work_kinds
from sevvo.workflows.v1 import workflows_pb2 as wpb

KINDS = work_kinds(timedelta(seconds=60))


@pytest.mark.parametrize(
    ("kind", "result", "state", "category"),
    [
        ("preview", wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK), "succeeded", "ok"),
        (
            "preview",
            wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_QUERY_REJECTED),
            "failed",
            "query_rejected",
        ),
        (
            "credential_test",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK),
            "succeeded",
            "ok",
        ),
        (
            "credential_test",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED),
            "failed",
            "password_authentication_failed",
        ),
        (
            "credential_test",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_WORK_REFUSED),
            "failed",
            "work_refused",
        ),
        (
            "root_rotation",
            wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_ROTATED),
            "succeeded",
            "rotated",
        ),
        (
            "root_rotation",
            wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_LOGIN_FAILED),
            "failed",
            "login_failed",
        ),
    ],
    ids=[
        "preview-ok",
        "preview-rejected",
        "test-ok",
        "test-wrong-password",
        "test-refused",
        "rotation-rotated",
        "rotation-login-failed",
    ],
)
def test_a_run_succeeds_only_when_its_answer_is_a_success(
    kind: str, result: Message, state: str, category: str
) -> None:
    """The agent answered in every case; only its kind's success answer (ok, or rotated for
    a root rotation) makes the run succeeded."""
    outcome = KINDS[kind].outcome(result)
    assert (outcome.state, outcome.category) == (state, category)


def test_every_category_of_every_kind_gets_a_consistent_state() -> None:
    """Over each kind's whole category enum: the kind's success (ok; rotated for a root
    rotation) is succeeded, everything else failed."""
    enums = {
        "preview": (wpb.PreviewQueryResult, wpb.PreviewCategory, "ok"),
        "credential_test": (wpb.CredentialTestResult, wpb.TestCategory, "ok"),
        "root_rotation": (wpb.RootRotationResult, wpb.RootRotationCategory, "rotated"),
    }
    for kind, (message, enum, success) in enums.items():
        for value in enum.values():
            if value == 0:
                continue
            outcome = KINDS[kind].outcome(message(category=value))
            assert outcome.state == ("succeeded" if outcome.category == success else "failed"), (
                kind,
                outcome,
            )
