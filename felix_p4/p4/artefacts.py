"""Our pipeline's artefacts and getting them onto the device (or adopting what is there)."""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from finsy.proto import p4i
from google.protobuf import text_format

from felix_p4.p4.client import P4RuntimeClient, P4RuntimeClientError
from felix_p4.settings import PipelineSettings

log = logging.getLogger(__name__)

# The P4 program and its artefacts, shipped with the package (pipeline/ in the source tree).
PACKAGE_DATA = "felix_p4.p4src"
P4SRC: Traversable = resources.files(PACKAGE_DATA)
DEFAULT_P4INFO: Traversable = P4SRC / "felix_pna.p4info.txtpb"


class ArtefactError(Exception):
    """A pipeline artefact that cannot be read; the message names the path and the setting."""


def load_p4info(path: Path | Traversable) -> p4i.P4Info:
    """A P4Info in text (.txtpb, .txt, .pbtxt) or binary form."""
    info = p4i.P4Info()
    data = path.read_bytes()
    if Path(path.name).suffix in (".txtpb", ".txt", ".pbtxt"):
        text_format.Parse(data.decode(), info)
    else:
        info.ParseFromString(data)
    return info


def pipeline_cookie(p4info: p4i.P4Info, device_config: bytes) -> int:
    digest = hashlib.sha256(p4info.SerializeToString(deterministic=True) + device_config).digest()
    return int.from_bytes(digest[:8], "big")


def load_pipeline(settings: PipelineSettings) -> tuple[p4i.P4Info, bytes]:
    """The P4Info and device config the settings name (the packaged P4Info by default)."""
    p4info_path: Path | Traversable = Path(settings.p4info) if settings.p4info else DEFAULT_P4INFO
    try:
        p4info = load_p4info(p4info_path)
    except (OSError, text_format.ParseError, ValueError) as exc:
        where = (
            "setting pipeline.p4info"
            if settings.p4info
            else f"packaged with felix-p4 ({PACKAGE_DATA})"
        )
        raise ArtefactError(f"cannot load the P4Info {p4info_path} ({where}): {exc}") from None
    device_config = b""
    if settings.device_config:
        try:
            device_config = Path(settings.device_config).read_bytes()
        except OSError as exc:
            raise ArtefactError(
                f"cannot read the device config {settings.device_config} "
                f"(setting pipeline.device_config): {exc.strerror}"
            ) from None
    return p4info, device_config


async def ensure_pipeline(
    client: P4RuntimeClient, p4info: p4i.P4Info, device_config: bytes, push: bool
) -> bool:
    """Make the device run our pipeline; True if it was pushed, False if already there.

    Pushing a pipeline wipes the device's entries, so an identical one is left alone:
    that is what lets a restarted driver keep traffic flowing.
    """
    cookie = pipeline_cookie(p4info, device_config)
    current, current_cookie = await client.get_pipeline()
    if current is not None and (current_cookie == cookie or current == p4info):
        log.info("device already runs our pipeline (cookie %#x)", current_cookie)
        return False
    if not push:
        raise P4RuntimeClientError(
            "device runs another pipeline and pipeline.push is false; refusing to program it"
        )
    log.info("pushing pipeline (cookie %#x) to device %d", cookie, client.device_id)
    await client.set_pipeline(p4info, device_config, cookie)
    return True
