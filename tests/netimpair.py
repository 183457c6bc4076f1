"""A lossy, slow link between two network namespaces, for sync tests.

The kernel here may lack tc's netem, so the link is a user-space switch: this module
run as a script creates two TUN devices, and forwards every IP packet from one to the
other after ``delay`` seconds, dropping each with probability ``loss`` and sending at
most ``rate`` bytes per second (both directions, each on its own), so the nodes' real
TCP stacks see real latency, loss and a thin pipe. ``lossy_link``
puts one device in each of two fresh namespaces and yields their addresses; a test
runs a node in each with ``ip netns exec``. Needs root, ``ip`` and /dev/net/tun;
``skip_reason()`` says what is missing.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU = 1500
QUEUE_S = 1.0  # a rate-limited direction queues at most this many seconds of packets


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "no `ip` command"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    name = f"p2pchk{os.getpid() % 100000}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        return "cannot create network namespaces here"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def switch(a: str, b: str, delay: float, loss: float, rate: float, seed: int) -> None:
    """Forward packets between TUN devices ``a`` and ``b`` until stdin closes."""
    rng = random.Random(seed)
    fds = {_tun(a): None, _tun(b): None}
    fa, fb = list(fds)
    other = {fa: fb, fb: fa}
    print("ready", flush=True)
    queue: list[tuple[float, int, int, bytes]] = []  # (due, seq, fd, packet)
    free_at = {fa: 0.0, fb: 0.0}  # when each direction's pipe is free again
    seq = 0
    stdin = sys.stdin.fileno()
    while True:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        ready, _, _ = select.select([fa, fb, stdin], [], [], wait)
        if stdin in ready and not os.read(stdin, 1):
            return
        for fd in (fa, fb):
            if fd not in ready:
                continue
            while True:
                try:
                    pkt = os.read(fd, 65536)
                except OSError:  # nothing to read, or the device is not up (yet)
                    break
                if rng.random() < loss:
                    continue
                now = time.monotonic()
                out = other[fd]
                if rate > 0:
                    if free_at[out] - now > QUEUE_S:
                        continue  # the pipe's queue is full: tail drop
                    free_at[out] = max(now, free_at[out]) + len(pkt) / rate
                    now = free_at[out]
                seq += 1
                heapq.heappush(queue, (now + delay, seq, out, pkt))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, pkt = heapq.heappop(queue)
            try:
                os.write(fd, pkt)
            except (BlockingIOError, OSError):
                pass  # a full device drops the packet, as a switch would


@dataclass
class Link:
    ns_a: str
    ip_a: str
    ns_b: str
    ip_b: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def lossy_link(delay: float, loss: float, rate: float = 0.0, seed: int = 15) -> Iterator[Link]:
    tag = f"p2p{os.getpid() % 100000}"
    link = Link(f"{tag}a", "10.215.0.1", f"{tag}b", "10.215.0.2")
    dev_a, dev_b = f"{tag}ta", f"{tag}tb"
    proc = subprocess.Popen(
        [sys.executable, __file__, dev_a, dev_b, str(delay), str(loss), str(rate), str(seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    made: list[str] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        for ns, dev, ip, peer in (
            (link.ns_a, dev_a, link.ip_a, link.ip_b),
            (link.ns_b, dev_b, link.ip_b, link.ip_a),
        ):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", ip, "peer", peer, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "mtu", str(MTU), "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield link
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    a, b, delay, loss, rate, seed = sys.argv[1:7]
    switch(a, b, float(delay), float(loss), float(rate), int(seed))
