"""Endpoint fields Felix sets that felix-p4 does not program (floating IPs, QoS) are said once
per change, counted, and do not keep the endpoint from being programmed."""

import io
import logging

from calico_proto import felixbackend_pb2 as fb
from felix_p4 import metrics
from felix_p4.felix.session import FelixSession
from felix_p4.model.state import DataplaneState


def _update(**extra) -> bytes:
    endpoint = fb.WorkloadEndpoint(
        state="active", name="cali-a", mac="0a:58:0a:41:00:02", ipv4_nets=["10.65.0.2/32"], **extra
    )
    ident = fb.WorkloadEndpointID(
        orchestrator_id="k8s", workload_id="default/a", endpoint_id="eth0"
    )
    return fb.ToDataplane(
        workload_endpoint_update=fb.WorkloadEndpointUpdate(id=ident, endpoint=endpoint)
    ).SerializeToString()


def _count(field: str) -> float:
    return metrics.UNSUPPORTED_FIELDS.labels(field)._value.get()


def test_floating_ips_and_qos_are_logged_once_per_change_and_counted(caplog):
    state = DataplaneState()
    session = FelixSession(state, io.BytesIO())
    nat = fb.NatInfo(ext_ip="172.16.0.4", int_ip="10.65.0.2")
    qos = fb.QoSControls(IngressBandwidth=1000000)
    before = _count("ipv4_nat"), _count("qos_controls")
    with caplog.at_level(logging.WARNING, logger="felix_p4.felix.session"):
        session.handle_frame(_update(ipv4_nat=[nat], qos_controls=qos))
        session.handle_frame(_update(ipv4_nat=[nat], qos_controls=qos))  # unchanged: quiet
        session.handle_frame(_update(ipv4_nat=[nat]))  # QoS gone: said again
        session.handle_frame(_update())  # nothing unsupported left: quiet
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "workload endpoint k8s/default/a/eth0: ipv4_nat (floating IPs), qos_controls "
        "(bandwidth, packet-rate and connection limits) not programmed by felix-p4 (ignored)",
        "workload endpoint k8s/default/a/eth0: ipv4_nat (floating IPs) not programmed by "
        "felix-p4 (ignored)",
    ]
    assert (_count("ipv4_nat"), _count("qos_controls")) == (before[0] + 2, before[1] + 1)
    # The endpoint itself is taken as usual.
    assert len(state.endpoints) == 1
