"""`felix-p4 check-config` and `felix-p4 version`: what a driver would use, checked offline."""

from __future__ import annotations

import hashlib
import ipaddress
from importlib import metadata
from pathlib import Path

from felix_p4.model.values import InvalidObject, parse_mac
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_pipeline, pipeline_cookie
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.session import check_tls_files, tls_settings
from felix_p4.pipeline import PIPELINE
from felix_p4.ports import check_static
from felix_p4.settings import ConfigError, Settings, host_port


def check(settings: Settings) -> list[str]:
    """Everything a driver with these settings reads before it starts; raises ConfigError
    (or the artefact's own error) with the reason, else returns a summary."""
    tls = tls_settings(settings.p4runtime)
    summary = [f"P4Runtime target {settings.p4runtime.address}"]
    if tls is None:
        summary.append("P4Runtime channel: plaintext")
    else:
        check_tls_files(tls)
        summary.append("P4Runtime channel: TLS" + (" (mutual)" if tls.cert else ""))
    p4info, device_config = load_pipeline(settings.pipeline)
    PipelineSchema(p4info).check(PIPELINE)
    summary.append(f"pipeline cookie {pipeline_cookie(p4info, device_config):#018x}")
    ports = check_static(settings.ports.map)
    host = host_port(settings.ports)
    if isinstance(host, int) and host in ports.values() and ports.get("host") != host:
        owner = next(n for n, p in ports.items() if p == host)
        raise ConfigError(f"ports.host is port {host}, which ports.map gives to {owner}")
    summary.append(f"ports: mode {settings.ports.mode}, {len(ports)} pinned, host port {host!r}")
    try:
        parse_mac(settings.forwarding.gateway_mac)
    except InvalidObject as exc:
        raise ConfigError(f"forwarding.gateway_mac: {exc}") from None
    for name in ("hairpin_v4", "hairpin_v6"):
        value = getattr(settings.services, name)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"services.{name}: {value!r} is not an IP address") from None
    if settings.services.source == "file":
        for name in settings.services.files:
            if not Path(name).is_file():
                raise ConfigError(f"services.files: {name} does not exist")
    summary.append(f"services source {settings.services.source}")
    return summary


def version_lines(settings: Settings) -> list[str]:
    """The package's version, and the pipeline it would program (cookie, P4Info digest)."""
    p4info, device_config = load_pipeline(settings.pipeline)
    digest = hashlib.sha256(p4info.SerializeToString(deterministic=True)).hexdigest()
    where = settings.pipeline.p4info or f"packaged ({DEFAULT_P4INFO.name})"
    return [
        f"felix-p4 {metadata.version('felix-p4')}",
        f"pipeline cookie {pipeline_cookie(p4info, device_config):#018x}",
        f"P4Info {where} sha256 {digest}",
    ]
