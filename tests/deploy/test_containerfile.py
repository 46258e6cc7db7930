"""packaging/Containerfile builds from what `make dist` leaves in dist/ (the image itself cannot
be built here: no registry to pull the base image from)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from deploy_artefacts import REPO, run_make

CONTAINERFILE = REPO / "packaging" / "Containerfile"
SHIM_SOURCE = REPO / "packaging" / "felix-p4-shim.c"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _words(arguments: str) -> list[str]:
    """Exec form (a JSON array) or shell-like words."""
    if arguments.startswith("["):
        return list(json.loads(arguments))
    return shlex.split(arguments)


def _copy_sources() -> list[str]:
    sources = []
    for keyword, arguments in _instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in _words(arguments) if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in _words(arguments)), "one stage only"
        sources += words[:-1]  # the last word is the destination
    return sources


@pytest.fixture(scope="module")
def dist() -> Path:
    result = run_make("dist")
    assert result.returncode == 0, f"make dist failed:\n{result.stdout}{result.stderr}"
    return REPO / "dist"


@pytest.mark.timeout(600)
def test_every_path_the_containerfile_copies_is_produced_by_make_dist(dist: Path) -> None:
    sources = _copy_sources()
    assert sources, "the Containerfile copies nothing"
    for source in sources:
        assert source.startswith("dist/"), f"{source}: only make dist's output goes in the image"
        matches = sorted(REPO.glob(source))
        # One wheel: two versions side by side would make `pip install *.whl` ambiguous.
        assert len(matches) == 1, f"{source} matches {matches} after make dist"
        assert matches[0].is_file() and matches[0].stat().st_size > 0


def test_the_image_runs_the_driver_on_the_socket_the_shim_dials_by_default() -> None:
    commands = {k: _words(a) for k, a in _instructions() if k in ("ENTRYPOINT", "CMD")}
    argv = commands["ENTRYPOINT"] + commands["CMD"]
    assert argv[:2] == ["felix-p4", "driver"]
    socket_path = argv[argv.index("--felix-socket") + 1]
    default = re.search(r'#define DEFAULT_SOCKET "([^"]+)"', SHIM_SOURCE.read_text())
    assert default is not None
    assert socket_path == default.group(1)


def test_the_base_image_is_python_3_11_slim() -> None:
    bases = [a for k, a in _instructions() if k == "FROM"]
    assert len(bases) == 1
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim(-\w+)?", bases[0])
