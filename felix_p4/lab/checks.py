"""What the lab's pods do with real tools (ping, an HTTP server and client), each run inside a
pod's or the node's namespace with a bound time, and what came of it in one line."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from typing import Literal

import attrs

from felix_p4.lab.node import Completed, run
from felix_p4.lab.topology import GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6, Lab, Pod, set_sysctls

PING_TIMEOUT = 10.0
NTF_ROUTER = 0x80
HTTP_TIMEOUT_SECONDS = 3.0  # a connection a policy denies times out after this

# An HTTP GET with the standard library: prints the status and the body's first line, or the
# error (a timeout is how a denied connection looks to the client).
_GET = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as reply:
        body = reply.read().decode(errors="replace").strip().splitlines()
        print(reply.status, body[0] if body else "")
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "reason", exc))
    sys.exit(1)
"""


@attrs.frozen(slots=True)
class Outcome:
    """One command's result: whether it did what was expected, and what it printed."""

    where: str
    command: str
    ok: bool
    summary: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.where + '$':<9} {self.command:<40} {self.summary}"


async def ping(lab: Lab, where: str, address: str, count: int = 2) -> Outcome:
    """`ping` (or `ping -6`) from a pod or "node"; ok when every echo came back."""
    six = ":" in address
    argv = ["ping", *(["-6"] if six else []), "-c", str(count), "-i", "0.2", "-W", "2", address]
    done = await run(_namespace(lab, where), argv, PING_TIMEOUT)
    match = re.search(r"(\d+) packets transmitted, (\d+) received", done.stdout)
    if match:
        summary = f"{match.group(2)}/{match.group(1)} replies"
        ok = done.ok and match.group(1) == match.group(2)
    else:
        summary, ok = _failure(done), False
    command = " ".join(["ping", *(["-6"] if six else []), "-c", str(count), address])
    return Outcome(where, command, ok, summary)


async def http_get(
    lab: Lab,
    where: str,
    url: str,
    expect: Literal["reply", "timeout"] = "reply",
    body: str | None = None,
) -> Outcome:
    """An HTTP GET from a pod: ok when it was answered (with `body`, if given), or, with
    expect "timeout", when it timed out as a connection a policy drops does."""
    argv = [sys.executable, "-c", _GET, url, str(HTTP_TIMEOUT_SECONDS)]
    done = await run(_namespace(lab, where), argv, HTTP_TIMEOUT_SECONDS + 10)
    printed = done.stdout.strip() or _failure(done)
    if expect == "timeout":
        ok = not done.ok and "timed out" in printed.lower()
        summary = f"timed out (expected): {printed}" if ok else printed
    else:
        ok = done.ok and printed.startswith("200") and (body is None or body in printed)
        summary = printed
    return Outcome(where, f"GET {url}", ok, summary)


# An HTTP GET of a large body: prints its length and SHA-256.
_DIGEST = """
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as reply:
    body = reply.read()
print(len(body), hashlib.sha256(body).hexdigest())
"""


async def http_digest(lab: Lab, where: str, url: str, want: bytes) -> Outcome:
    """GET a large body (many full-size segments); ok when it arrives whole and intact."""
    argv = [sys.executable, "-c", _DIGEST, url, "20"]
    done = await run(_namespace(lab, where), argv, 30)
    printed = done.stdout.strip() or _failure(done)
    ok = printed == f"{len(want)} {hashlib.sha256(want).hexdigest()}"
    return Outcome(where, f"GET {url}", ok, printed)


@attrs.frozen(slots=True)
class Neighbour:
    """A pod kernel's neighbour entry for one of its gateways."""

    mac: str
    state: str  # REACHABLE, STALE, DELAY, PROBE, FAILED, ...
    router: bool  # only a neighbour advertisement with the router flag sets it


NUD_STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}
NUD_STALE = 0x04


async def gateway_neighbours(lab: Lab, pod: Pod) -> dict[str, Neighbour]:
    """The pod kernel's neighbour entries for 169.254.1.1 and fe80::ecee:eeff:feee:eeee."""
    return await asyncio.to_thread(_gateway_neighbours, lab.pod_ns(pod))


def _gateway_neighbours(namespace: str) -> dict[str, Neighbour]:
    from pyroute2 import IPRoute

    found = {}
    with IPRoute(netns=namespace) as ipr:
        for entry in ipr.get_neighbours():
            address = entry.get_attr("NDA_DST")
            if address in (GATEWAY_V4, GATEWAY_V6):
                found[address] = Neighbour(
                    str(entry.get_attr("NDA_LLADDR")),
                    NUD_STATES.get(entry["state"], hex(entry["state"])),
                    bool(entry["flags"] & NTF_ROUTER),
                )
    return found


async def age_gateway_neighbours(lab: Lab, pod: Pod) -> None:
    """Mark the pod's gateway entries stale, as the kernel does once they age, and let it
    probe after one second (not five): its next packet then makes it confirm each gateway
    with a unicast ARP request / neighbour solicitation."""
    namespace = lab.pod_ns(pod)
    set_sysctls(
        namespace,
        {
            "net/ipv4/neigh/eth0/delay_first_probe_time": "1",
            "net/ipv6/neigh/eth0/delay_first_probe_time": "1",
        },
    )
    await asyncio.to_thread(_mark_stale, namespace)


def _mark_stale(namespace: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=namespace) as ipr:
        (eth0,) = ipr.link_lookup(ifname="eth0")
        for address, family in ((GATEWAY_V4, 2), (GATEWAY_V6, 10)):
            ipr.neigh(
                "change",
                dst=address,
                lladdr=GATEWAY_MAC,
                ifindex=eth0,
                state=NUD_STALE,
                family=family,
            )


# One UDP exchange: prints the reply's length and source, or the error.
_UDP = """
import socket, sys
address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(float(sys.argv[4]))
client.sendto(b"x" * size, (address, port))
try:
    data, peer = client.recvfrom(65536)
except OSError as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
print(len(data), "bytes from", peer[0], peer[1])
"""


async def udp_exchange(lab: Lab, where: str, address: str, port: int, size: int) -> Outcome:
    """A datagram of `size` bytes to an echo server; ok when the echo comes back from the
    address and port it was sent to (for a service: translated back)."""
    argv = [sys.executable, "-c", _UDP, address, str(port), str(size), str(HTTP_TIMEOUT_SECONDS)]
    done = await run(_namespace(lab, where), argv, HTTP_TIMEOUT_SECONDS + 10)
    printed = done.stdout.strip() or _failure(done)
    want = f"{size + len('echo ')} bytes from {address} {port}"
    return Outcome(where, f"UDP {size} bytes to {address} port {port}", printed == want, printed)


def _namespace(lab: Lab, where: str) -> str:
    return lab.node_ns if where == "node" else lab.pod_ns(lab.pod(where))


def _failure(done: Completed) -> str:
    if done.returncode is None:
        return "no answer (killed at its time limit)"
    text = (done.stderr or done.stdout).strip().splitlines()
    return text[-1] if text else f"exit status {done.returncode}"
