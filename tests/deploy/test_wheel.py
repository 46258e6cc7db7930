"""The wheel a user installs works anywhere: installed into a fresh virtualenv outside the
checkout, run from `/` with an environment holding only PATH, it finds its own pipeline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_artefacts import REPO, run_make

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin/ of a virtualenv holding only the wheel `make dist` built (and its dependencies)."""
    result = run_make("dist")
    if result.returncode != 0:
        pytest.fail(f"make dist failed:\n{result.stdout}{result.stderr}")
    (wheel,) = (REPO / "dist").glob("felix_p4-*.whl")
    venv = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True, cwd="/"
    )
    yield venv / "bin"


def _run(bin_dir: Path, *argv: str, extra: dict[str, str] | None = None, timeout: float = 120):
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **(extra or {})}
    return subprocess.run(
        [str(bin_dir / "felix-p4"), *argv],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_holds_the_pipeline_not_the_checkout(installed):
    site = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import felix_p4, felix_p4.p4src as p; print(felix_p4.__file__); print(p.__file__)",
        ],
        cwd="/",
        env={"PATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in site:
        assert not path.startswith(str(REPO)), path
    version = _run(installed, "version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("felix-p4 ")
    assert "pipeline cookie 0x" in version.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_runs_from_root_with_only_path(installed, example):
    done = _run(installed, "sim", str(example))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 failed" in done.stdout


def test_the_driver_as_felix_runs_it_names_what_is_missing(installed, tmp_path):
    # Run as Felix runs it (no arguments) but without Felix's fds: the error says so.
    done = _run(installed, extra={"FELIX_P4_P4RUNTIME_PLAINTEXT": "true"})
    assert done.returncode == 2
    assert "fd 3 is not open" in done.stderr and "FELIX_DATAPLANEDRIVER" in done.stderr
    missing = tmp_path / "absent.p4info.txtpb"
    done = _run(
        installed,
        "check-config",
        extra={"FELIX_P4_P4RUNTIME_PLAINTEXT": "true", "FELIX_P4_PIPELINE_P4INFO": str(missing)},
    )
    assert done.returncode == 2
    assert str(missing) in done.stderr and "pipeline.p4info" in done.stderr
    done = _run(installed, "check-config", extra={"FELIX_P4_P4RUNTIME_TLS_CA": str(missing)})
    assert done.returncode == 2
    assert str(missing) in done.stderr and "p4runtime.tls.ca" in done.stderr


def test_check_config_passes_on_the_packaged_defaults(installed):
    done = _run(installed, "check-config", extra={"FELIX_P4_P4RUNTIME_PLAINTEXT": "true"})
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout
