from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import Server, run_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One echo-mode instance shared by the read-only tests."""
    with run_server(["--instance-id", "sim-test"]) as srv:
        yield srv
