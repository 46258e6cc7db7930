"""Our pipeline's artefacts and getting them onto the device (or adopting what is there)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from finsy.proto import p4i

from felix_p4.p4.client import P4RuntimeClient, P4RuntimeClientError
from felix_p4.p4.schema import load_p4info

log = logging.getLogger(__name__)

PIPELINE_DIR = Path(__file__).resolve().parents[2] / "pipeline"
DEFAULT_P4INFO = PIPELINE_DIR / "felix_pna.p4info.txtpb"


def pipeline_cookie(p4info: p4i.P4Info, device_config: bytes) -> int:
    digest = hashlib.sha256(p4info.SerializeToString(deterministic=True) + device_config).digest()
    return int.from_bytes(digest[:8], "big")


def load_pipeline(p4info_path: str, device_config_path: str) -> tuple[p4i.P4Info, bytes]:
    p4info = load_p4info(Path(p4info_path) if p4info_path else DEFAULT_P4INFO)
    device_config = Path(device_config_path).read_bytes() if device_config_path else b""
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
