"""An agent's readiness does not depend on its log: a supervisor reads its ready file."""

from __future__ import annotations

import pytest

from tests.plugins.dev_stack import EndToEnd


def test_an_agent_logging_warnings_only_is_ready_and_unready_when_stopped(
    e2e: EndToEnd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SEVVO_LOG_LEVEL=warning (a documented value) the agent never logs "agent
    polling", yet the stack sees it ready from its ready file, which it removes on stop."""
    monkeypatch.setenv("SEVVO_LOG_LEVEL", "warning")
    tenant = e2e.new_tenant(start_agent=False)
    agent = e2e.start_agent(tenant)  # Waits for readiness; raises if it never comes.
    try:
        assert agent.ready_file.read_text().startswith(f"polling tenant-{tenant.org_id}")
        assert "agent polling" not in agent.output()
    finally:
        agent.stop()
    assert not agent.ready_file.exists()
