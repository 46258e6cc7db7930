"""Coverage-guided fuzzing (atheris) of the driver's Felix input: framing, then every frame
through the payload handlers. A crash is any exception escaping them.

    make fuzz                         # a bounded run (FUZZ_RUNS, default 200000 inputs)
    .venv/bin/python fuzz/fuzz_felix.py -runs=0 fuzz/corpus   # replay a corpus
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import atheris

with atheris.instrument_imports():
    from calico_proto import felixbackend_pb2 as fb
    from felix_p4.felix import wire
    from felix_p4.felix.session import FelixSession
    from felix_p4.model.state import DataplaneState

logging.disable(logging.CRITICAL)  # bad input logs by design; keep the fuzzer fast

_out_r, _out_w = os.pipe()
os.set_blocking(_out_r, False)
LOOP = asyncio.new_event_loop()


def _drain() -> None:
    try:
        while os.read(_out_r, 1 << 16):
            pass
    except BlockingIOError:
        pass


def test_one_input(data: bytes) -> None:
    out = os.fdopen(os.dup(_out_w), "wb", buffering=0)
    session = FelixSession(DataplaneState(), out)

    async def feed() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        try:
            while (body := await wire.read_frame(reader, 1 << 16)) is not None:
                session.handle_frame(body)
        except (wire.FrameTooLarge, wire.TruncatedFrame):
            pass

    LOOP.run_until_complete(feed())
    out.close()
    _drain()


def seed_corpus(directory: str) -> None:
    """A few real frames so the fuzzer starts from valid Felix messages."""
    os.makedirs(directory, exist_ok=True)
    endpoint = fb.ToDataplane(
        workload_endpoint_update=fb.WorkloadEndpointUpdate(
            id=fb.WorkloadEndpointID(orchestrator_id="k8s", workload_id="ns/p", endpoint_id="e"),
            endpoint=fb.WorkloadEndpoint(
                name="cali-a", mac="0a:00:00:00:00:01", ipv4_nets=["10.0.0.1/32"], state="active"
            ),
        )
    )
    policy = fb.ToDataplane(
        active_policy_update=fb.ActivePolicyUpdate(
            id=fb.PolicyID(name="p", namespace="ns", kind="NetworkPolicy"),
            policy=fb.Policy(inbound_rules=[fb.Rule(action="allow", src_ip_set_ids=["s:a"])]),
        )
    )
    ipset = fb.ToDataplane(ipset_update=fb.IPSetUpdate(id="s:a", members=["10.0.0.1/32"]))
    for name, message in (("endpoint", endpoint), ("policy", policy), ("ipset", ipset)):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(wire.encode_frame(message))


if __name__ == "__main__":
    corpus = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    if corpus:
        seed_corpus(corpus)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
