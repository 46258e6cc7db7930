"""P4-DPDK engine: DPDK's SWX pipeline run in this process (C in felix_swx.c, ctypes in engine)."""

from felix_p4.swx.engine import (
    LearnerStats,
    PortStats,
    SwxError,
    SwxPipeline,
    SwxUnavailable,
    TableStats,
    availability,
)

__all__ = [
    "LearnerStats",
    "PortStats",
    "SwxError",
    "SwxPipeline",
    "SwxUnavailable",
    "TableStats",
    "availability",
]
