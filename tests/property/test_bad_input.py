"""Random and malformed Felix input: the framing and every payload handler never crash, and a
bad object never replaces a good one the driver already holds."""

from __future__ import annotations

import asyncio
import os

from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix import wire
from felix_p4.felix.convert import workload_endpoint
from felix_p4.felix.session import FelixSession
from felix_p4.model.state import DataplaneState

# Values that collide with what handlers parse: good and bad CIDRs, MACs, protocols, ids.
STRINGS = [
    "",
    "10.65.0.2/32",
    "10.65.0.0/16",
    "fd00::2/128",
    "::/0",
    "10.65.0.300/32",
    "not-a-cidr",
    "10.65.0.2",
    "0a:58:0a:41:00:02",
    "zz:zz",
    "ee:ee:ee:ee:ee:ee",
    "tcp",
    "TCP",
    "icmpv6",
    "sctp",
    "bogus",
    "allow",
    "deny",
    "next-tier",
    "log",
    "Pass",
    "Deny",
    "s:one",
    "n:one",
    "10.0.0.1,tcp:8080",
    "fd00::1,udp:53",
    "10.0.0.1,xyz:1",
    "kns.default",
    "default",
    "cali-a",
    "k8s",
    "default/pod-a",
    "eth0",
    "NetworkPolicy",
    "StagedNetworkPolicy",
    "30",
    "ClusterIP",
    "NodePort",
    "\x00\xff",
    "a" * 300,
]
INTS = [0, 1, 4, 6, 8, 53, 80, 65535, 65536, 70000, -1, 2**31 - 1]


def _message(descriptor, depth: int) -> st.SearchStrategy:
    fields = {}
    for field in descriptor.fields:
        value = _field(field, depth)
        if value is None:
            continue
        is_map = bool(field.message_type and field.message_type.GetOptions().map_entry)
        if field.is_repeated and not is_map:
            fields[field.name] = st.lists(value, max_size=3)
        elif is_map:
            fields[field.name] = st.dictionaries(
                st.sampled_from(STRINGS[:12]), st.sampled_from(STRINGS), max_size=2
            )
        else:
            fields[field.name] = value
    names = sorted(fields)

    @st.composite
    def build(draw):
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=6)) if names else []
        message = descriptor._concrete_class()
        for name in chosen:
            value = draw(fields[name])
            field = descriptor.fields_by_name[name]
            try:
                if isinstance(value, dict):
                    getattr(message, name).update(value)
                elif isinstance(value, list):
                    if field.message_type:
                        for item in value:
                            getattr(message, name).add().CopyFrom(item)
                    else:
                        getattr(message, name).extend(value)
                elif field.message_type:
                    getattr(message, name).CopyFrom(value)
                else:
                    setattr(message, name, value)
            except (ValueError, TypeError):
                pass  # out of range for the field's type: protobuf refuses it, as on the wire
        return message

    return build()


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy | None:
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return st.just({})
        if depth >= 3:
            return None
        return _message(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(STRINGS)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True)
    return st.sampled_from(INTS)


PAYLOADS = [f for f in fb.ToDataplane.DESCRIPTOR.oneofs_by_name["payload"].fields]


@st.composite
def to_dataplane(draw) -> fb.ToDataplane:
    field = draw(st.sampled_from(PAYLOADS))
    message = fb.ToDataplane(sequence_number=draw(st.integers(0, 2**63)))
    getattr(message, field.name).CopyFrom(draw(_message(field.message_type, 0)))
    return message


def _session() -> tuple[FelixSession, list[int]]:
    out_r, out_w = os.pipe()
    os.set_blocking(out_r, False)
    os.set_blocking(out_w, False)
    return FelixSession(DataplaneState(), os.fdopen(out_w, "wb", buffering=0)), [out_r]


GOOD_ENDPOINT = fb.ToDataplane(
    workload_endpoint_update=fb.WorkloadEndpointUpdate(
        id=fb.WorkloadEndpointID(
            orchestrator_id="k8s", workload_id="default/pod-a", endpoint_id="eth0"
        ),
        endpoint=fb.WorkloadEndpoint(
            name="cali-a", mac="0a:58:0a:41:00:02", ipv4_nets=["10.65.0.2/32"], state="active"
        ),
    )
)


@settings(max_examples=300)
@given(st.lists(to_dataplane(), min_size=1, max_size=12))
def test_random_payloads_never_crash_and_keep_good_state(messages):
    session, fds = _session()
    try:
        session.handle_frame(GOOD_ENDPOINT.SerializeToString())
        for message in messages:
            session.handle_frame(message.SerializeToString())
        for key, endpoint in session.state.endpoints.items():
            # Whatever is held was valid when it was accepted, and is what Felix sent last.
            assert workload_endpoint(key, session.endpoint_protos[key]) == endpoint
    finally:
        for fd in fds:
            os.close(fd)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_undecodable_bodies_are_dropped_not_raised(body):
    session, fds = _session()
    try:
        session.handle_frame(body)
    finally:
        for fd in fds:
            os.close(fd)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_frame_reader_only_yields_frames_or_framing_errors(stream, cap):
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(stream)
        reader.feed_eof()
        frames = []
        try:
            while (body := await wire.read_frame(reader, cap)) is not None:
                assert len(body) <= cap
                frames.append(body)
        except (wire.FrameTooLarge, wire.TruncatedFrame):
            return
        assert sum(len(f) + 8 for f in frames) == len(stream)

    asyncio.run(main())
