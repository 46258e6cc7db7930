"""Input Felix could send that is not a plain address is refused, naming the member; a refused
update leaves the held state as it was."""

import io

import pytest

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.session import FelixSession
from felix_p4.model.policy import parse_member
from felix_p4.model.state import DataplaneState
from felix_p4.model.values import InvalidObject, parse_net


@pytest.mark.parametrize(
    "text",
    [
        "fe80::1%eth0",
        "fe80::1%eth0/128",
        "10.0.0.1/255.255.255.0",
        " 10.0.0.1",
        "10.0.0.1 ",
        "10.0.0.1/24\n",
        "0x0a000001",
        "10.0.0.1/-1",
    ],
)
def test_non_plain_addresses_are_refused_naming_them(text):
    with pytest.raises(InvalidObject, match=r"not a plain IP address or CIDR|invalid"):
        parse_member(text, "NET")
    with pytest.raises(InvalidObject):
        parse_net(text, "ipv4_nets")


def test_scoped_port_member_is_refused():
    with pytest.raises(InvalidObject, match="fe80::1%eth0"):
        parse_member("fe80::1%eth0,tcp:80", "IP_AND_PORT")


def test_plain_addresses_pass():
    assert parse_member("fe80::1", "NET") == (6, 0xFE80 << 112 | 1, 128)
    assert parse_member("10.0.0.0/8", "NET") == (4, 0x0A000000, 8)


def test_a_set_update_with_a_scoped_member_is_refused_and_the_set_kept():
    state = DataplaneState()
    session = FelixSession(state, io.BytesIO())
    good = fb.ToDataplane(ipset_update=fb.IPSetUpdate(id="s", members=["fd00::1/128"]))
    bad = fb.ToDataplane(
        ipset_update=fb.IPSetUpdate(id="s", members=["fd00::2/128", "fe80::1%eth0"])
    )
    session.handle_frame(good.SerializeToString())
    session.handle_frame(bad.SerializeToString())
    assert state.ipsets["s"].members == {(6, 0xFD00 << 112 | 1, 128)}
