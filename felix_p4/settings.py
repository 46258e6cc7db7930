"""felix-p4 settings as typed values: flags over FELIX_P4_<SECTION>_<KEY> over the YAML file.

Every value is checked when it is loaded; a wrong type or an unknown key fails with the
key's dotted name and where it came from (a flag, an environment variable, the file).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

DEFAULT_CONFIG_PATH = "/etc/felix-p4/config.yaml"
PORT_MODES = ("static", "netlink", "target", "auto")
SERVICE_SOURCES = ("auto", "none", "file", "kubernetes")


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and its source."""


class _InvalidValue(ValueError):
    """A validator's refusal, with the field it refused."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _choice(allowed: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in allowed:
            raise _InvalidValue(attribute.name, f"{value!r} is not one of {', '.join(allowed)}")

    return check


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise _InvalidValue(attribute.name, f"{value!r} must be positive")


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise _InvalidValue(attribute.name, f"{value!r} must not be negative")


@attrs.frozen(slots=True)
class TlsSettings:
    # ca: verify the target with it; cert + key: mutual TLS; server_name: the name to check.
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    reload_seconds: float = attrs.field(default=5.0, validator=_positive)


@attrs.frozen(slots=True)
class P4RuntimeSettings:
    address: str = "127.0.0.1:9559"
    device_id: int = attrs.field(default=1, validator=_positive)
    election_id: int = attrs.field(default=10, validator=_positive)
    # TLS is required unless an unencrypted channel is asked for explicitly.
    plaintext: bool = False
    tls: TlsSettings = attrs.Factory(TlsSettings)
    batch_size: int = attrs.field(default=1000, validator=_positive)
    # A write, read or pipeline call not answered within this is a lost session.
    timeout_seconds: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen(slots=True)
class LimitsSettings:
    # The fraction of any table one endpoint may take (never less than 16 entries), so that a
    # mistaken or hostile endpoint cannot starve a node of its normal pod count.
    endpoint_share: float = attrs.field(default=0.01, validator=_positive)


@attrs.frozen(slots=True)
class PipelineSettings:
    # Empty: the artefacts shipped in the package.
    p4info: str = ""
    device_config: str = ""
    # Push our pipeline when the device runs none or another one.
    push: bool = True


@attrs.frozen(slots=True)
class PortsSettings:
    # static: only `map`; netlink: interface ifindex; target: the embedded target's port
    # service; auto: netlink, then the target's service where it has one.
    mode: str = attrs.field(default="auto", validator=_choice(PORT_MODES))
    map: dict[str, int] = attrs.Factory(dict)
    host: str = "host"  # an interface name, or a port number written as digits
    # The node's network port (tunnels to other nodes, the host's own traffic): an interface
    # name or a port number; empty: none (other nodes are the host's business).
    uplink: str = ""


@attrs.frozen(slots=True)
class ForwardingSettings:
    gateway_mac: str = "ee:ee:ee:ee:ee:ee"


@attrs.frozen(slots=True)
class NetworkSettings:
    """Reaching other nodes through the uplink."""

    # The host's MAC on the network (what peers resolved the node address to): the outer
    # source of what the pipeline sends to other nodes. Empty: the MAC of the host's
    # interface that holds the node address, from netlink.
    node_mac: str = ""
    # Next hop MACs by address (labs, simulations); others come from the host's neighbour
    # table (netlink), kept resolved with managed neighbour entries.
    next_hops: dict[str, str] = attrs.Factory(dict)
    netlink: bool = True
    poll_seconds: float = attrs.field(default=2.0, validator=_positive)
    # natOutgoing in the host's own NAT (nftables), as Felix's rules say (felix_p4/hostnat.py).
    nat_outgoing: bool = True


@attrs.frozen(slots=True)
class ServicesSettings:
    # none: no services; file: `files`; kubernetes: watch the API server; auto: kubernetes
    # when running in a pod, else none.
    source: str = attrs.field(default="auto", validator=_choice(SERVICE_SOURCES))
    files: list[str] = attrs.Factory(list)
    poll_seconds: float = attrs.field(default=2.0, validator=_positive)
    kubeconfig: str = ""
    # How long the first apply waits for the source's first complete list.
    sync_timeout_seconds: float = attrs.field(default=10.0, validator=_not_negative)
    # Source address a pod sees when it reached itself through a service.
    hairpin_v4: str = "169.254.1.1"
    hairpin_v6: str = "fd00:a9fe:101::1"
    # The ClientIP affinity timeout the target's affinity expiry profile is set to: P4-DPDK
    # has one timeout per profile, so Services asking for another are warned about.
    affinity_seconds: int = attrs.field(default=10800, validator=_positive)


@attrs.frozen(slots=True)
class FelixSettings:
    max_frame_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    # Extra wait before an apply; 0 applies at once, and whatever arrives while an apply
    # runs is applied together by the next one.
    coalesce_ms: float = attrs.field(default=0.0, validator=_not_negative)


@attrs.frozen(slots=True)
class MetricsSettings:
    address: str = ""


@attrs.frozen(slots=True)
class Settings:
    p4runtime: P4RuntimeSettings = attrs.Factory(P4RuntimeSettings)
    pipeline: PipelineSettings = attrs.Factory(PipelineSettings)
    ports: PortsSettings = attrs.Factory(PortsSettings)
    forwarding: ForwardingSettings = attrs.Factory(ForwardingSettings)
    network: NetworkSettings = attrs.Factory(NetworkSettings)
    limits: LimitsSettings = attrs.Factory(LimitsSettings)
    services: ServicesSettings = attrs.Factory(ServicesSettings)
    felix: FelixSettings = attrs.Factory(FelixSettings)
    metrics: MetricsSettings = attrs.Factory(MetricsSettings)
    # Append every frame Felix sends to this file (owner-only), for `felix-p4 replay`.
    record: str = ""
    # Overrides Felix's LogSeverityScreen.
    log_level: str = ""


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and attrs.has(kind)


def _convert(kind: Any, value: Any, *, text: bool) -> Any:
    """`value` as `kind`; `text` values (environment, flags) are parsed from strings."""
    origin = typing.get_origin(kind)
    if origin is dict:
        key_type, value_type = typing.get_args(kind)
        if text and isinstance(value, str):
            value = yaml.safe_load(value) or {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{value!r} is not a mapping")
        return {
            _convert(key_type, k, text=False): _convert(value_type, v, text=text)
            for k, v in value.items()
        }
    if origin is list:
        (item_type,) = typing.get_args(kind)
        if text and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is not a list")
        return [_convert(item_type, v, text=text) for v in value]
    if isinstance(kind, types.UnionType):
        raise TypeError(f"unsupported setting type {kind}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not a number")
    if kind is str:
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            raise ValueError(f"{value!r} is not a string")
        return str(value)
    raise TypeError(f"unsupported setting type {kind}")


# One source's values: dotted name -> (value, where it came from, whether it is text).
_Layer = dict[str, tuple[Any, str, bool]]


def _flatten(cls: type, data: Mapping[str, Any], where: str, prefix: str = "") -> _Layer:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"setting {prefix.rstrip('.') or '(top level)'} ({where}) must be a mapping"
        )
    hints = _types(cls)
    out: _Layer = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown setting {name} ({where})")
        if _is_section(hints[key]):
            out.update(_flatten(hints[key], value, where, f"{name}."))
        else:
            out[name] = (value, where, False)
    return out


def _env_layer(env: Mapping[str, str]) -> _Layer:
    """FELIX_P4_P4RUNTIME_ADDRESS -> p4runtime.address; names with underscores (device_id)
    resolve by walking the settings' own field names."""
    out: _Layer = {}
    for variable, text in env.items():
        if not variable.startswith("FELIX_P4_") or variable == "FELIX_P4_CONFIG":
            continue
        parts = variable[len("FELIX_P4_") :].lower().split("_")
        cls: type = Settings
        path: list[str] = []
        i = 0
        while i < len(parts):
            hints = _types(cls)
            for j in range(len(parts), i, -1):
                key = "_".join(parts[i:j])
                if key in hints:
                    break
            else:
                raise ConfigError(f"environment variable {variable} names no setting")
            path.append(key)
            i = j
            if _is_section(hints[key]):
                if i == len(parts):
                    raise ConfigError(f"environment variable {variable} names a section")
                cls = hints[key]
            elif i < len(parts):
                raise ConfigError(f"environment variable {variable} names no setting")
        out[".".join(path)] = (text, f"environment variable {variable}", True)
    return out


def _build(cls: type, values: _Layer, prefix: str = "") -> Any:
    kwargs: dict[str, Any] = {}
    for name, kind in _types(cls).items():
        dotted = f"{prefix}{name}"
        if _is_section(kind):
            kwargs[name] = _build(kind, values, f"{dotted}.")
        elif dotted in values:
            value, where, text = values[dotted]
            try:
                kwargs[name] = _convert(kind, value, text=text)
            except ValueError as exc:
                raise ConfigError(f"setting {dotted} ({where}): {exc}") from None
    try:
        return cls(**kwargs)
    except _InvalidValue as exc:
        dotted = f"{prefix}{exc.field}"
        where = values[dotted][1] if dotted in values else "default"
        raise ConfigError(f"setting {dotted} ({where}): {exc}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
) -> Settings:
    """Defaults, then the YAML file, then the environment, then explicit overrides (flags)."""
    env = os.environ if env is None else env
    config_path = Path(path or env.get("FELIX_P4_CONFIG", DEFAULT_CONFIG_PATH))
    values: _Layer = {}
    if config_path.exists():
        try:
            loaded = yaml.safe_load(config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        values.update(_flatten(Settings, loaded, f"file {config_path}"))
    elif path:
        raise ConfigError(f"config file {config_path} does not exist")
    values.update(_env_layer(env))
    if overrides:
        values.update(_flatten(Settings, overrides, "command line"))
    return _build(Settings, values)


def host_port(settings: PortsSettings) -> str | int:
    """The host port: a number when written as digits, else an interface name."""
    return int(settings.host) if settings.host.isdigit() else settings.host


def uplink_port(settings: PortsSettings) -> str | int | None:
    """The uplink: a number when written as digits, an interface name, or None (no uplink)."""
    if not settings.uplink:
        return None
    return int(settings.uplink) if settings.uplink.isdigit() else settings.uplink
