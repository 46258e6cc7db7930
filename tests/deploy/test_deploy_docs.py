"""docs/deploy.md names only files and make targets that exist, and the shim's settings as the
shim has them."""

from __future__ import annotations

import re

from deploy_artefacts import REPO

DOC = (REPO / "docs" / "deploy.md").read_text()
SHIM_SOURCE = (REPO / "packaging" / "felix-p4-shim.c").read_text()


def test_every_project_path_the_guide_names_exists() -> None:
    named = set(re.findall(r"`((?:deploy|packaging|tests|docs)/[^`\s]*)`", DOC))
    assert named, "the guide names no project files"
    missing = sorted(path for path in named if not (REPO / path).exists())
    assert missing == []


def test_every_make_target_the_guide_runs_exists() -> None:
    targets = set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)", DOC, re.M))
    assert targets
    makefile = (REPO / "Makefile").read_text()
    assert {t for t in targets if not re.search(rf"^{t}:", makefile, re.M)} == set()


def test_the_shim_settings_table_matches_the_shim() -> None:
    socket = re.search(r'#define DEFAULT_SOCKET "([^"]+)"', SHIM_SOURCE)
    timeout = re.search(r"#define DEFAULT_TIMEOUT_S (\d+)\.0\b", SHIM_SOURCE)
    assert socket and timeout
    assert f"| `P4_SHIM_SOCKET` | `{socket.group(1)}` |" in DOC
    assert f"| `P4_SHIM_CONNECT_TIMEOUT` | `{timeout.group(1)}` " in DOC
    for code in range(6):
        assert re.search(rf"^ \*   {code}  ", SHIM_SOURCE, re.M), f"exit {code} undocumented in C"
        assert re.search(rf"^\| {code} \| ", DOC, re.M), f"exit {code} missing from the guide"
