"""felix-p4 settings: flags over FELIX_P4_<SECTION>_<KEY> environment over the YAML file."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = "/etc/felix-p4/config.yaml"

DEFAULTS: dict[str, Any] = {
    "p4runtime": {
        "address": "127.0.0.1:9559",
        "device_id": 1,
        "election_id": 10,
        # TLS is required unless plaintext is asked for explicitly.
        "plaintext": False,
        "tls": {"ca": "", "cert": "", "key": "", "server_name": "", "reload_seconds": 5.0},
        "batch_size": 1000,
    },
    "pipeline": {
        # Shipped with the package; a deployment points these at the compiled artefacts.
        "p4info": "",
        "device_config": "",
        # Push our pipeline when the device has none or a different one.
        "push": True,
    },
    "ports": {
        # static: only `map`; netlink: interface ifindex; target: the embedded target's
        # port service; auto: netlink, then the target's service where it has one.
        "mode": "auto",
        "map": {},
        "host": "host",
    },
    "forwarding": {"gateway_mac": "ee:ee:ee:ee:ee:ee"},
    "services": {
        # none: no services; file: `files`; kubernetes: watch the API server; auto:
        # kubernetes when running in a pod, else none.
        "source": "auto",
        "files": [],
        "poll_seconds": 2.0,
        "kubeconfig": "",
        # How long the first apply waits for the source's first complete list.
        "sync_timeout_seconds": 10,
        # Source address a pod sees when it reached itself through a service.
        "hairpin_v4": "169.254.1.1",
        "hairpin_v6": "fd00:a9fe:101::1",
    },
    # coalesce_ms: extra wait before an apply; 0 applies at once, and whatever arrives while
    # an apply runs is applied together by the next one.
    "felix": {"max_frame_bytes": 64 * 1024 * 1024, "coalesce_ms": 0},
    "metrics": {"address": ""},
    # Append every frame Felix sends to this file (owner-only), for `felix-p4 replay`.
    "record": "",
    "log_level": "",
}


class ConfigError(Exception):
    """A setting that cannot be used; the message names it."""


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> None:
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown setting {path}{key}")
        if isinstance(base[key], dict) and key not in ("map",):
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting {path}{key} must be a mapping")
            _merge(base[key], value, f"{path}{key}.")
        else:
            base[key] = value


def _coerce(current: Any, text: str, name: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r} is not a boolean")
    if isinstance(current, int):
        try:
            return int(text, 0)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not an integer") from None
    if isinstance(current, dict):
        loaded = yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{name} must be a YAML mapping")
        return loaded
    return text


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """FELIX_P4_P4RUNTIME_ADDRESS -> {"p4runtime": {"address": ...}}, typed like the default."""
    out: dict[str, Any] = {}
    for name, text in env.items():
        if not name.startswith("FELIX_P4_") or name == "FELIX_P4_CONFIG":
            continue
        parts = name[len("FELIX_P4_") :].lower().split("_")
        # Walk the defaults greedily so keys with underscores (device_id) resolve.
        node: Any = DEFAULTS
        target = out
        path: list[str] = []
        i = 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                key = "_".join(parts[i:j])
                if isinstance(node, dict) and key in node:
                    break
            else:
                raise ConfigError(f"environment variable {name} names no setting")
            path.append(key)
            i = j
            if i < len(parts) and isinstance(node[key], dict) and key != "map":
                target = target.setdefault(key, {})
                node = node[key]
            else:
                if i < len(parts):
                    raise ConfigError(f"environment variable {name} names no setting")
                target[key] = _coerce(node[key], text, name)
    return out


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """Defaults, then the YAML file, then the environment, then explicit overrides (flags)."""
    env = os.environ if env is None else env
    settings = copy.deepcopy(DEFAULTS)
    config_path = Path(path or env.get("FELIX_P4_CONFIG", DEFAULT_CONFIG_PATH))
    if config_path.exists():
        loaded = yaml.safe_load(config_path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: top level must be a mapping")
        _merge(settings, loaded)
    elif path:
        raise ConfigError(f"config file {config_path} does not exist")
    _merge(settings, _from_env(env))
    if overrides:
        _merge(settings, overrides)
    return settings
