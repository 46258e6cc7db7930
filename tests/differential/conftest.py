"""One pair of targets (model and P4-DPDK) for the whole session; skipped, with the engine's
reason, where DPDK cannot run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engines import UNAVAILABLE, EnginePair


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnginePair]:
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    engines = EnginePair(tmp_path_factory.mktemp("differential"))
    engines.start()
    try:
        yield engines
    finally:
        engines.close()
