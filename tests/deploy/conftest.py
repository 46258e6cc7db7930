"""Artefacts the packaging tests need, built by the same make targets a user runs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_artefacts import REPO, run_make


@pytest.fixture(scope="session")
def shim_binary() -> Path:
    """build/felix-p4-shim from `make shim`; skipped only where static linking is impossible."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the static shim (apt-get install gcc libc6-dev)")
    result = run_make("shim")
    if result.returncode != 0:
        if "cannot find -lc" in result.stderr:
            pytest.skip(
                "gcc cannot link statically here: libc.a is missing (apt-get install libc6-dev)"
            )
        pytest.fail(f"make shim failed:\n{result.stdout}{result.stderr}")
    return REPO / "build" / "felix-p4-shim"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path holds 108 bytes; tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="shim-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
