"""Without its built library the P4-DPDK engine says, in one line, why it cannot run."""

import pytest

from felix_p4.swx import SwxPipeline, SwxUnavailable, availability, engine


@pytest.fixture
def no_library(monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "LIBRARY", tmp_path / "libfelix_swx.so")
    monkeypatch.setattr(engine, "_lib", None)


def test_a_missing_library_is_reported_as_the_reason(no_library):
    reason = availability()

    assert reason is not None
    assert "libfelix_swx.so is not built" in reason and "make swx" in reason
    assert "\n" not in reason


def test_loading_without_the_library_raises_the_same_reason(no_library, tmp_path):
    with pytest.raises(SwxUnavailable, match="is not built"):
        SwxPipeline.load(tmp_path / "any.spec", 1)
