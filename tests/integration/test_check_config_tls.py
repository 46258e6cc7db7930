"""`felix-p4 check-config` parses the P4Runtime TLS files as PEM: the placeholder Secret, a
certificate that is not one, a key that is not the certificate's each exit 2 naming the file,
the setting and the problem; real files pass."""

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from felix_harness import issue_certificate

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDERS = REPO / "deploy" / "base" / "p4runtime-tls"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    issue_certificate(tmp, name, None)
    return tmp / f"{name}.crt", tmp / f"{name}.key"


def _check_config(tmp: Path, ca: Path, cert: Path, key: Path) -> subprocess.CompletedProcess:
    config = tmp / "config.yaml"
    tls = {"ca": str(ca), "cert": str(cert), "key": str(key)}
    config.write_text(yaml.safe_dump({"p4runtime": {"tls": tls}}))
    return subprocess.run(
        [sys.executable, "-m", "felix_p4", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refused(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def test_real_pem_files_pass(tmp_path):
    ca, _ = _self_signed(tmp_path, "ca")
    cert, key = _self_signed(tmp_path, "client")

    done = _check_config(tmp_path, ca, cert, key)

    assert done.returncode == 0, done.stderr
    assert "P4Runtime channel: TLS (mutual)" in done.stdout


def test_the_placeholder_secret_is_refused_naming_the_file(tmp_path):
    ca, cert, key = (PLACEHOLDERS / n for n in ("ca.crt", "tls.crt", "tls.key"))

    line = _refused(_check_config(tmp_path, ca, cert, key))

    assert f"p4runtime.tls.ca: {ca}: not PEM" in line


def test_bad_base64_in_a_certificate_is_refused(tmp_path):
    cert, key = _self_signed(tmp_path, "client")
    broken = tmp_path / "broken.crt"
    lines = cert.read_text().splitlines()
    lines[1] = "!" + lines[1][1:]
    broken.write_text("\n".join(lines) + "\n")

    line = _refused(_check_config(tmp_path, broken, cert, key))

    assert f"p4runtime.tls.ca: {broken}: the CERTIFICATE block is not valid base64" in line


def test_a_certificate_block_openssl_cannot_parse_is_refused(tmp_path):
    cert, key = _self_signed(tmp_path, "client")
    # Valid base64 of a DER SEQUENCE that is not a certificate.
    body = base64.b64encode(bytes([0x30, 0x03, 0x02, 0x01, 0x01])).decode()
    junk = tmp_path / "junk.crt"
    junk.write_text(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")

    line = _refused(_check_config(tmp_path, cert, junk, key))

    assert f"p4runtime.tls.cert: {junk}: certificate 1 does not parse" in line


def test_a_key_where_the_certificate_belongs_is_refused(tmp_path):
    cert, key = _self_signed(tmp_path, "client")

    line = _refused(_check_config(tmp_path, key, cert, key))

    assert f"p4runtime.tls.ca: {key}: no CERTIFICATE block (found PRIVATE KEY)" in line


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path):
    cert, _ = _self_signed(tmp_path, "client")
    _, other_key = _self_signed(tmp_path, "other")

    line = _refused(_check_config(tmp_path, cert, cert, other_key))

    assert "p4runtime.tls.cert and p4runtime.tls.key" in line
    assert f"the key in {other_key} is not the key of the certificate in {cert}" in line
