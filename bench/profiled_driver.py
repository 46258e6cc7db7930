"""The driver under cProfile with one profile per phase: SIGUSR1 ends the current phase.

`python -m bench.profiled_driver PREFIX` runs `felix-p4` exactly as Felix does (no arguments,
fds 3/4) and writes PREFIX-0.prof, PREFIX-1.prof, ...: each SIGUSR1 writes the phase so far
and starts the next; exit writes the last. Only the event loop's thread is profiled (gRPC's
C-core threads are not Python).
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType


def main(prefix: str) -> int:
    phase = 0
    profiler = cProfile.Profile()

    def next_phase(signum: int, frame: FrameType | None) -> None:
        nonlocal phase, profiler
        profiler.disable()
        profiler.dump_stats(f"{prefix}-{phase}.prof")
        phase += 1
        profiler = cProfile.Profile()
        profiler.enable()

    signal.signal(signal.SIGUSR1, next_phase)
    profiler.enable()
    try:
        from felix_p4.cli import main as felix_p4

        return felix_p4([])
    finally:
        profiler.disable()
        profiler.dump_stats(f"{prefix}-{phase}.prof")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
