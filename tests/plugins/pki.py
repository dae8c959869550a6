"""Pytest plugin: a development CA and TLS certificates shared by the whole test session."""

from __future__ import annotations

import pytest

from devstack.pki import DevPki, ensure_dev_pki


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """A CA plus a server certificate (localhost, 127.0.0.1, ::1) and a client certificate."""
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))
