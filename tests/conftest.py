from __future__ import annotations

from collections.abc import Iterator

import pytest
import tiktoken

from tests.encodings import independent
from tests.servers import Server, run_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One echo-mode instance shared by the read-only tests."""
    with run_server(["--instance-id", "sim-test"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def cl100k() -> tiktoken.Encoding:
    """An independent count: tiktoken's cl100k_base, built from the shipped vocabulary."""
    return independent("cl100k_base")
