"""Every Python package of the tree is in the wheel, and the P4 program is its package data."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_in_the_tree_is_listed():
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("felix_p4", "calico_proto")
        for p in (ROOT / top).rglob("__init__.py")
    }
    mapped = set(PROJECT["package-dir"])
    assert found | mapped == set(PROJECT["packages"])


def test_the_p4_program_is_package_data():
    assert PROJECT["package-dir"]["felix_p4.p4src"] == "pipeline"
    patterns = PROJECT["package-data"]["felix_p4.p4src"]
    shipped = {p.name for pattern in patterns for p in (ROOT / "pipeline").glob(pattern)}
    assert {"felix_pna.p4", "felix_pna.p4info.txtpb", "README.md"} <= shipped
