"""P4 ports bound to Linux interfaces: one raw AF_PACKET socket per interface carries its frames
to and from the target's engine, inside the target's asyncio loop.

A bound interface is a wire: the socket sees every frame that arrives on it (not the ones the
kernel sends out of it: PACKET_IGNORE_OUTGOING) and sends the frames the pipeline puts on that
port. A classic BPF filter on each socket is the port's input check (`ingress_drop_reason` in
felix_p4/softswitch/dpdk.py): a frame longer than the port's limit or shorter than its headers
claim is dropped in the kernel, before either engine reads it, since P4-DPDK's fd port reads
the socket itself.

A wire carries complete frames: a veth's peer that leaves checksums or segmentation to
"hardware" (transmit offload, a veth's default) sends frames no receiver accepts once forwarded,
so it must have it off (`ethtool -K PEER tx off`); the model engine says so in the log when such
a frame arrives (PACKET_AUXDATA). An interface whose MTU allows longer frames than the ports
take is refused.

- Model engine: each socket is an event-loop reader; its frames go through the behavioural model
  (committing, like a real packet) and out of the socket of the port the pipeline chose.
- DPDK engine: the sockets are SWX fd ports (DpdkSettings.port_fds). SWX moves frames only while
  it runs, so a readable socket wakes the loop, which runs the pipeline in bounded slices until
  it is idle (everything read has left): no polling while nothing arrives, and other callbacks
  (the gRPC server) run between slices.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from felix_p4.softswitch.behavioural import FelixPipeline
    from felix_p4.softswitch.dpdk import DpdkEngine

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 8
SO_ATTACH_FILTER = 26
SIOCGIFMTU = 0x8921
ETHERNET_HEADER = 14
AUXDATA_SPACE = socket.CMSG_SPACE(20)  # struct tpacket_auxdata
ETH_ARP, ETH_IPV4, ETH_IPV6 = 0x0806, 0x0800, 0x86DD

# The longest frame a bound port takes (the DPDK engine's default MTU: DpdkSettings.mtu).
DEFAULT_MAX_FRAME = 2048
# Frames read per readable socket before other callbacks get the loop (model engine).
MODEL_BURST = 64
# SWX instructions per slice (DPDK engine). A frame of the packaged pipeline takes about 50, so
# a slice moves about 400 frames in a few milliseconds. A gRPC call takes several turns of the
# loop, each waiting for a slice: under a pod's UDP flood on two shared cores P4Runtime answered
# within 0.25 s with this, within 0.9 s with slices of 200,000.
DPDK_SLICE = 20_000
SOCKET_BUFFER = 4 << 20


class InterfaceError(Exception):
    """An interface that cannot be bound; the message names it."""


@attrs.frozen(slots=True)
class PortBinding:
    """`--port NAME=N`: the Linux interface NAME is P4 port N."""

    interface: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PortBinding:
        name, _, number = text.partition("=")
        if not name or not number.isdigit():
            raise InterfaceError(f"{text!r} is not NAME=N (an interface and a port number)")
        if len(name) > 15 or "/" in name or name in (".", ".."):
            raise InterfaceError(f"{name!r} is not a Linux interface name")
        return cls(name, int(number))


def check_bindings(bindings: Iterable[PortBinding]) -> list[PortBinding]:
    """The bindings, refusing an interface or a port given twice (naming both)."""
    out: list[PortBinding] = []
    by_name: dict[str, int] = {}
    by_port: dict[int, str] = {}
    for binding in bindings:
        if binding.interface in by_name:
            raise InterfaceError(
                f"interface {binding.interface} is bound twice "
                f"(ports {by_name[binding.interface]} and {binding.port})"
            )
        if binding.port in by_port:
            raise InterfaceError(
                f"port {binding.port} is bound to both {by_port[binding.port]} and "
                f"{binding.interface}"
            )
        by_name[binding.interface] = binding.port
        by_port[binding.port] = binding.interface
        out.append(binding)
    return out


# --- the port's input check as a classic BPF socket filter ---------------------------------

_LD_LEN, _LDH_ABS, _LD_IMM, _ADD_K, _TAX = 0x80, 0x28, 0x00, 0x04, 0x07
_JGT_K, _JGE_K, _JEQ_K, _JGE_X, _RET_K = 0x25, 0x35, 0x15, 0x3D, 0x06
_ACCEPT, _DROP = "accept", "drop"


def length_filter(max_frame: int) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions accepting a frame unless `ingress_drop_reason` refuses
    it: longer than max_frame, shorter than Ethernet, ARP shorter than 42 bytes, IPv4 shorter
    than 14 + max(20, total length), IPv6 shorter than 54 + payload length. A load past the
    frame's end ends a classic BPF program with 0 (drop), as a frame too short to hold the
    length field should be."""
    # Labels are resolved below; a jump names its targets, None meaning the next instruction.
    program: list[tuple[str | None, int, str | None, str | None, int]] = [
        (None, _LD_LEN, None, None, 0),
        (None, _JGT_K, _DROP, None, max_frame),
        (None, _JGE_K, None, _DROP, 14),
        (None, _LDH_ABS, None, None, 12),
        (None, _JEQ_K, "arp", None, ETH_ARP),
        (None, _JEQ_K, "ipv4", None, ETH_IPV4),
        (None, _JEQ_K, "ipv6", _ACCEPT, ETH_IPV6),
        ("arp", _LD_LEN, None, None, 0),
        (None, _JGE_K, _ACCEPT, _DROP, 42),
        ("ipv4", _LDH_ABS, None, None, 16),
        (None, _JGE_K, "ipv4_need", None, 20),
        (None, _LD_IMM, None, None, 20),
        ("ipv4_need", _ADD_K, None, None, 14),
        (None, _TAX, None, None, 0),
        (None, _LD_LEN, None, None, 0),
        (None, _JGE_X, _ACCEPT, _DROP, 0),
        ("ipv6", _LDH_ABS, None, None, 18),
        (None, _ADD_K, None, None, 54),
        (None, _TAX, None, None, 0),
        (None, _LD_LEN, None, None, 0),
        (None, _JGE_X, _ACCEPT, _DROP, 0),
        (_ACCEPT, _RET_K, None, None, 0xFFFFFFFF),
        (_DROP, _RET_K, None, None, 0),
    ]
    at = {label: i for i, (label, *_) in enumerate(program) if label is not None}

    def offset(i: int, target: str | None) -> int:
        return 0 if target is None else at[target] - i - 1

    return [
        (code, offset(i, jt), offset(i, jf), k) for i, (_, code, jt, jf, k) in enumerate(program)
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_port_socket(interface: str, max_frame: int) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to `interface`: every frame arriving there (not
    leaving it), through the port's input check; sending puts a frame on the interface.
    Refused (InterfaceError) when the interface's MTU allows frames longer than max_frame."""
    # Protocol 0 receives nothing until bind, so no frame of another interface or from before
    # the filter is queued.
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise InterfaceError(f"cannot bind interface {interface}: {exc.strerror or exc}") from exc
    try:
        mtu = interface_mtu(sock, interface)
        if mtu + ETHERNET_HEADER > max_frame:
            raise InterfaceError(
                f"interface {interface} has MTU {mtu}: its frames (up to "
                f"{mtu + ETHERNET_HEADER} bytes) are longer than this target's ports take "
                f"({max_frame} bytes); lower its MTU"
            )
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        _attach_filter(sock, length_filter(max_frame))
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise InterfaceError(f"cannot bind interface {interface}: {exc.strerror or exc}") from exc
    except InterfaceError:
        sock.close()
        raise
    return sock


def interface_mtu(sock: socket.socket, interface: str) -> int:
    """The MTU of `interface` (in the socket's network namespace); OSError if there is none."""
    request = struct.pack("16si", interface.encode(), 0)
    reply = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, request)
    return int(struct.unpack_from("i", reply, 16)[0])


def checksum_not_ready(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """PACKET_AUXDATA says the sender left the frame's checksum to offload: it is not
    complete, and a receiving kernel drops the frame."""
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
            return bool(struct.unpack_from("I", data)[0] & TP_STATUS_CSUMNOTREADY)
    return False


class InterfacePorts:
    """The target's ports that are bound to interfaces, and the loop that serves them."""

    def __init__(self, bindings: Iterable[PortBinding], max_frame: int) -> None:
        self.bindings = check_bindings(bindings)
        self.max_frame = max_frame
        self.sockets: dict[int, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dpdk: DpdkEngine | None = None
        self._dpdk_scheduled = False
        self._reported: set[tuple[int, str]] = set()
        try:
            for binding in self.bindings:
                self.sockets[binding.port] = open_port_socket(binding.interface, max_frame)
        except InterfaceError:
            self.close()
            raise

    @property
    def names(self) -> dict[str, int]:
        """Interface name -> P4 port (what the port service hands out for these names)."""
        return {b.interface: b.port for b in self.bindings}

    @property
    def fds(self) -> dict[int, int]:
        """P4 port -> socket fd, for SWX fd ports."""
        return {port: sock.fileno() for port, sock in self.sockets.items()}

    def serve_model(self, pipeline_of: Callable[[], FelixPipeline | None]) -> None:
        """Run every arriving frame through the behavioural model `pipeline_of()` returns
        (None: no pipeline yet, the frame is dropped)."""
        loop = self._start()
        for port, sock in self.sockets.items():
            loop.add_reader(sock.fileno(), self._model_receive, port, sock, pipeline_of)

    def serve_dpdk(self, engine: DpdkEngine) -> None:
        """Run SWX whenever a bound socket has frames (the sockets are its fd ports)."""
        loop = self._start()
        self._dpdk = engine
        for sock in self.sockets.values():
            loop.add_reader(sock.fileno(), self._dpdk_wake)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for sock in self.sockets.values():
                self._loop.remove_reader(sock.fileno())
        self._loop = None
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            raise RuntimeError("interface ports are already being served")
        self._loop = asyncio.get_running_loop()
        for binding in self.bindings:
            log.info("port %d is interface %s", binding.port, binding.interface)
        return self._loop

    def _model_receive(
        self,
        in_port: int,
        sock: socket.socket,
        pipeline_of: Callable[[], FelixPipeline | None],
    ) -> None:
        for _ in range(MODEL_BURST):
            try:
                frame, ancillary, _, _ = sock.recvmsg(self.max_frame, AUXDATA_SPACE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._report(in_port, "receive", f"receive failed: {exc}")
                return
            if checksum_not_ready(ancillary):
                self._report(
                    in_port,
                    "checksum",
                    "frames arrive with their checksum left to the sender's offload; their "
                    "receivers will drop them: turn transmit checksum offload off on the "
                    "interface's peer (ethtool -K PEER tx off)",
                )
            pipeline = pipeline_of()
            if pipeline is None:
                continue  # no pipeline set yet: the frame has nowhere to go
            try:
                result = pipeline.process(in_port, frame, commit=True)
            except Exception:
                if (in_port, "model") not in self._reported:
                    self._reported.add((in_port, "model"))
                    log.exception("port %d: the model failed on a frame (logged once)", in_port)
                continue
            if result.verdict == "drop" or result.egress_port is None:
                continue
            out = self.sockets.get(result.egress_port)
            if out is None:
                continue  # a test port: nothing is attached to it
            try:
                out.send(result.packet)
            except OSError as exc:
                self._report(result.egress_port, "send", f"send failed: {exc}")

    def _dpdk_wake(self) -> None:
        if not self._dpdk_scheduled and self._loop is not None:
            self._dpdk_scheduled = True
            self._loop.call_soon(self._dpdk_run)

    def _dpdk_run(self) -> None:
        self._dpdk_scheduled = False
        assert self._dpdk is not None
        pipeline = self._dpdk.pipeline
        if pipeline is None:
            # No pipeline reads the sockets yet: drop what arrived, or they stay readable.
            for sock in self.sockets.values():
                _discard(sock)
            return
        if not pipeline.run_until_idle(DPDK_SLICE):
            self._dpdk_wake()  # more to move: after the loop's other callbacks

    def _report(self, port: int, what: str, message: str) -> None:
        """One log line per port and kind of trouble, not one per frame."""
        if (port, what) not in self._reported:
            self._reported.add((port, what))
            name = next((b.interface for b in self.bindings if b.port == port), "?")
            log.warning("port %d (%s): %s (logged once)", port, name, message)


def _discard(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(1)
        except OSError:
            return
