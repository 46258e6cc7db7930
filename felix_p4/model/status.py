"""The status vocabulary Felix hears for a workload endpoint (EndpointStatus.status)."""

from __future__ import annotations

UP = "up"  # every entry it needs is on the device
DOWN = "down"  # its interface has no P4 port (yet)
ERROR = "error"  # it cannot be programmed as Felix asks; the reason is logged
