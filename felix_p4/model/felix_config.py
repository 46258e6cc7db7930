"""The Felix configuration keys felix-p4 honours, parsed from ConfigUpdate's string map."""

from __future__ import annotations

import logging

import attrs

log = logging.getLogger(__name__)

# Felix's LogSeverityScreen values mapped onto stdlib levels.
_SEVERITY = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}


@attrs.frozen(slots=True)
class FelixConfig:
    hostname: str = ""
    reporting_interval_secs: float = 30.0
    log_level: int | None = None
    raw: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_map(cls, config: dict[str, str]) -> FelixConfig:
        return cls(
            hostname=config.get("FelixHostname", ""),
            reporting_interval_secs=_seconds(config.get("ReportingIntervalSecs"), 30.0),
            log_level=_SEVERITY.get(config.get("LogSeverityScreen", "").upper()),
            raw=config,
        )


def _seconds(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        # Felix renders durations either as a bare number of seconds or Go-style ("30s").
        value = float(text[:-1]) if text.endswith("s") else float(text)
    except ValueError:
        log.error("ignoring unparseable ReportingIntervalSecs=%r", text)
        return default
    return value if value >= 0 else default
