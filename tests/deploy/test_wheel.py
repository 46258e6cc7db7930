"""The wheel a user installs works anywhere: installed into a fresh virtualenv outside the
checkout, run from `/` with an environment holding only PATH, it finds its own pipeline, and
where DPDK is installed its P4-DPDK engine builds what it needs outside the package."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from deploy_artefacts import REPO, run_make
from target_process import free_port

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.client import P4RuntimeClient

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


async def _push_packaged_pipeline(address: str) -> None:
    """What the driver does first: become primary and set the pipeline (SWX starts empty)."""
    client = P4RuntimeClient(address, 1, 1, timeout=120)
    await client.connect()
    try:
        await client.set_pipeline(load_p4info(DEFAULT_P4INFO), b"", 1)
    finally:
        await client.close()


def _dpdk_missing() -> str | None:
    if (
        shutil.which("pkg-config") is None
        or subprocess.run(["pkg-config", "--exists", "libdpdk"], check=False).returncode
    ):
        return "DPDK is not installed (felix_p4/swx/install-dpdk.sh installs it, as root)"
    if shutil.which("gcc") is None:
        return "no gcc to build the P4-DPDK engine's library"
    return None


@pytest.mark.timeout(600)
def test_the_dpdk_engine_runs_from_the_wheel_building_into_the_user_cache(installed, tmp_path):
    missing = _dpdk_missing()
    if missing:
        pytest.skip(missing)
    cache = tmp_path / "cache"
    home = cache / "felix-p4"  # $XDG_CACHE_HOME/felix-p4
    env = {"XDG_CACHE_HOME": str(cache)}
    address = f"127.0.0.1:{free_port()}"
    argv = ("target", "--engine", "dpdk", "--listen", address)

    # First use: the engine refuses to start, saying how to get the DPDK headers it lacks
    # (its C helper is compiled against them too).
    refused = _run(installed, *argv, extra=env, timeout=300)
    assert refused.returncode == 2, refused.stderr
    (reason,) = refused.stderr.strip().splitlines()
    assert reason.startswith("felix-p4 target: --engine dpdk: DPDK internal header"), reason
    assert "FELIX_P4_SWX_INCLUDE" in reason and str(home / "dpdk-internal") in reason
    command = re.search(r"run `([^`]+)`", reason)
    assert command is not None, reason

    # Following it makes the engine run. Debian's source tarball comes from the checkout's
    # `make swx` where it has one (the script looks beside its destination), so no download.
    for tarball in (REPO / "build" / "dpdk-src").glob("dpdk_*.orig.tar.xz"):
        (home / "dpdk-src").mkdir(parents=True, exist_ok=True)
        shutil.copy(tarball, home / "dpdk-src")
    fetched = subprocess.run(
        shlex.split(command.group(1)),
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if fetched.returncode:
        pytest.skip(f"cannot fetch DPDK's internal headers here: {fetched.stderr.strip()}")

    log = tmp_path / "target.log"
    with log.open("w") as stderr:
        target = subprocess.Popen(
            [str(installed / "felix-p4"), *argv],
            cwd="/",
            env={"PATH": f"{installed}:/usr/bin:/bin", **env},
            stderr=stderr,
        )
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=300)
        asyncio.run(_push_packaged_pipeline(address))
        traced = _run(
            installed,
            "trace",
            "--target",
            address,
            "--in-port",
            "1",
            "--packet",
            "{src: 10.65.0.2, dst: 10.65.0.3, proto: tcp, dport: 80}",
            "--commit",  # the DPDK engine traces only committing (SWX learns as packets pass)
            "--json",
        )
        assert traced.returncode == 0, traced.stderr
        packet = json.loads(traced.stdout)["packets"][0]
        assert (packet["verdict"], packet["reason"]) == ("drop", "port 1 is not a known port")
    finally:
        target.terminate()
        target.wait(30)
    assert "DPDK EAL started" in log.read_text()
    # Both libraries were built on first use into the user's cache.
    assert len(list((home / "swx" / "cache").glob("libfelix_swx-*.so"))) == 1
    assert len(list((home / "swx" / "cache").glob("felix_pna-*.so"))) == 1
    (package,) = installed.parent.glob("lib/python*/site-packages/felix_p4")
    assert not list(package.rglob("*.so")), "nothing is built inside the installed package"
