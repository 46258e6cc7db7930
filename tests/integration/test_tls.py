"""The driver reaches a TLS P4Runtime target with mutual TLS and a server name override."""

import asyncio
import shutil
import subprocess

import pytest
from felix_harness import SNAPSHOT, Felix, felix_driver, issue_certificate, msg, wait_until

from felix_p4.softswitch.service import ServerTls, start_target

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def test_mutual_tls_with_server_name_override(tmp_path):
    issue_certificate(tmp_path, "ca", None)
    issue_certificate(tmp_path, "server", "ca", san="p4rt.felix-p4.test")
    issue_certificate(tmp_path, "client", "ca")
    tls = {
        "ca": str(tmp_path / "ca.crt"),
        "cert": str(tmp_path / "client.crt"),
        "key": str(tmp_path / "client.key"),
        "server_name": "p4rt.felix-p4.test",
    }

    async def main():
        server, port, target = await start_target(
            "127.0.0.1:0",
            tls=ServerTls(tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt"),
        )
        try:
            address = f"127.0.0.1:{port}"
            async with felix_driver(address, tmp_path, {"p4runtime": {"tls": tls}}) as felix:
                await felix.send(*SNAPSHOT, msg(in_sync={}))
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
            assert target.tables.entry_count("routes_v4") == 3
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_plaintext_driver_is_not_served_by_a_tls_target(tmp_path):
    issue_certificate(tmp_path, "ca", None)
    issue_certificate(tmp_path, "server", "ca", san="p4rt.felix-p4.test")

    async def main():
        server, port, target = await start_target(
            "127.0.0.1:0", tls=ServerTls(tmp_path / "server.crt", tmp_path / "server.key")
        )
        try:
            async with felix_driver(f"127.0.0.1:{port}", tmp_path) as felix:
                assert isinstance(felix, Felix)
                await felix.send(*SNAPSHOT, msg(in_sync={}))
                # The driver keeps retrying; it never gets to program anything.
                with pytest.raises(TimeoutError):
                    await felix.wait_for(lambda r: felix.in_sync(), timeout=3)
            assert target.tables is None
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_rotated_certificates_are_picked_up(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        d.mkdir()
        issue_certificate(d, "ca", None)
        issue_certificate(d, "server", "ca", san="p4rt.felix-p4.test")
        issue_certificate(d, "client", "ca")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (live / name).write_bytes((old / name).read_bytes())
    tls = {
        "ca": str(live / "ca.crt"),
        "cert": str(live / "client.crt"),
        "key": str(live / "client.key"),
        "server_name": "p4rt.felix-p4.test",
        "reload_seconds": 0.1,
    }

    def server_tls(d):
        return ServerTls(d / "server.crt", d / "server.key", d / "ca.crt")

    async def main():
        server, port, target = await start_target("127.0.0.1:0", tls=server_tls(old))
        address = f"127.0.0.1:{port}"
        try:
            async with felix_driver(address, tmp_path, {"p4runtime": {"tls": tls}}) as felix:
                await felix.send(*SNAPSHOT, msg(in_sync={}))
                await felix.wait_for(lambda r: felix.in_sync())
                # The target comes back with a new CA; the driver's files are rotated too.
                await server.stop(None)
                server, _, target = await start_target(address, tls=server_tls(new))
                for name in ("ca.crt", "client.crt", "client.key"):
                    (live / name).write_bytes((new / name).read_bytes())
                await wait_until(
                    lambda: (
                        target.tables is not None and target.tables.entry_count("routes_v4") == 3
                    ),
                    timeout=30,
                    what="the driver to reconnect with the rotated certificates",
                )
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_plaintext_must_be_asked_for(tmp_path):
    import os
    import sys

    env = dict(
        os.environ,
        FELIX_P4_CONFIG=str(tmp_path / "absent.yaml"),
        FELIX_P4_P4RUNTIME_ADDRESS="127.0.0.1:1",
    )
    done = subprocess.run(
        [sys.executable, "-m", "felix_p4"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "p4runtime.plaintext" in done.stderr
