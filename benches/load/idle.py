#!/usr/bin/env python3
"""Idle connections for benches/load/run.sh: the memory each proxy holds per
idle proxied connection.

    idle.py --target HOST:PORT --sink-port PORT --conns N [--pids "PID ..."]

Forks a sink that listens on 127.0.0.1:SINK_PORT (the backend the proxy under
test points at) and accepts every connection without reading or writing.
Then opens N connections to --target (the proxy, or the sink itself for the
direct baseline), sends nothing, and waits until every one is connected and
the sink has accepted N (so the proxy has made all its backend connections).
It reads the resident memory (VmRSS) of --pids and the kernel's slab memory
(/proc/slabinfo, without the caches in NOT_COUNTED) before the first connection
and once the N are up and have settled, then closes: the sink side first (so
that TIME_WAIT lands on the listening sides, not on the client's or proxy's
ephemeral ports, and a second run can follow at once), then the client side
once the proxy has passed the close on.

Prints one line: "conns rss_before_kib rss_after_kib slab_before_kib
slab_after_kib open_seconds", or an error on stderr and exit status 1.
Needs an open-file limit above N + 100 (run.sh raises it).
"""

import argparse
import errno
import os
import selectors
import signal
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


PAGE = os.sysconf("SC_PAGE_SIZE")


def slab_caches():
    """Bytes held by each slab cache (its slabs, full or partial), from
    /proc/slabinfo."""
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            name, rest = line.split(None, 1)
            fields = rest.split()
            pages_per_slab = int(fields[4])
            num_slabs = int(rest.split(":")[2].split()[2])
            caches[name] = num_slabs * pages_per_slab * PAGE
    return caches


# Left out of the kernel figure: the TIME_WAIT and SYN-queue caches (earlier
# short-connection runs leave up to a minute of TIME_WAIT sockets behind,
# which expire while this runs), and /proc inodes, which appear when some
# other process lists /proc/PID/fd of the proxy (a monitoring agent does on
# the project's machines) and are no part of what a connection costs.
NOT_COUNTED = ("tw_sock_", "request_sock_", "proc_inode_cache")


def slab_kib(caches):
    """Slab memory in KiB, without the NOT_COUNTED caches."""
    return sum(v for k, v in caches.items() if not k.startswith(NOT_COUNTED)) // 1024


def sink(lsock, ctl_r, ready_w, n):
    """Accepts connections and holds them; reports the count on ready_w
    whenever it changes; closes them all when ctl_r becomes readable."""
    sel = selectors.DefaultSelector()
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, "listen")
    sel.register(ctl_r, selectors.EVENT_READ, "ctl")
    held = []
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "listen":
                while True:
                    try:
                        c, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    held.append(c)
                os.write(ready_w, f"{len(held)}\n".encode())
            else:
                os.read(ctl_r, 64)
                for c in held:
                    c.close()
                os.write(ready_w, b"closed\n")
                os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--sink-port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--pids", default="")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--inflight", type=int, default=64,
                    help="connections opened but not yet accepted by the sink, at most "
                    "(below the smallest listen backlog on the way: 128)")
    ap.add_argument("--slab-detail", action="store_true",
                    help="print the slab caches that grew most, per connection, on stderr")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    target = (host, int(port))
    pids = [int(p) for p in a.pids.split()]
    n = a.conns

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", a.sink_port))
    lsock.listen(4096)
    ctl_r, ctl_w = os.pipe()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ctl_w)
        os.close(ready_r)
        try:
            sink(lsock, ctl_r, ready_w, n)
        finally:
            os._exit(1)
    lsock.close()
    os.close(ctl_r)
    os.close(ready_w)
    os.set_blocking(ready_r, False)

    def fail(msg):
        print(f"idle.py: {msg}", file=sys.stderr)
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
        sys.exit(1)

    accepted = 0
    buf = b""

    def poll_sink():
        nonlocal accepted, buf
        try:
            buf += os.read(ready_r, 65536)
        except BlockingIOError:
            return
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.isdigit():
                accepted = int(line)

    time.sleep(0.2)
    rss0 = rss_kib(pids)
    caches0 = slab_caches()
    slab0 = slab_kib(caches0)

    # Open N connections, at most `inflight` of them not yet through to the
    # sink, so that no listen backlog on the way overflows.
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    sel.register(ready_r, selectors.EVENT_READ, "sink")
    socks = []
    connected = 0
    opened = 0
    deadline = t0 + a.timeout
    while connected < n or accepted < n:
        while opened < n and opened - accepted < a.inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(target)
            if rc not in (0, errno.EINPROGRESS):
                fail(f"connect {opened + 1}/{n} to {a.target}: {os.strerror(rc)}")
            socks.append(s)
            opened += 1
            if rc == 0:
                connected += 1
            else:
                sel.register(s, selectors.EVENT_WRITE, "client")
        for key, _ in sel.select(timeout=0.5):
            if key.data == "sink":
                poll_sink()
                continue
            s = key.fileobj
            sel.unregister(s)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(f"connect to {a.target} failed after {connected} connections: {os.strerror(err)}")
            connected += 1
        if time.monotonic() > deadline:
            fail(f"after {a.timeout:.0f} s: {connected}/{n} connections up, "
                 f"{accepted} of them through to the sink")
    sel.unregister(ready_r)
    open_s = time.monotonic() - t0
    # A proxy that closed a connection would show up as a readable client socket.
    time.sleep(1.0)
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    gone = len(sel.select(timeout=0))
    if gone:
        fail(f"{gone} of {n} connections were closed or answered while idle")
    rss1 = rss_kib(pids)
    caches1 = slab_caches()
    slab1 = slab_kib(caches1)
    if a.slab_detail:
        grown = sorted(((caches1.get(k, 0) - caches0.get(k, 0), k) for k in caches1), reverse=True)
        print("slab growth per connection: " + ", ".join(
            f"{k} {d / n:.0f} B" for d, k in grown[:8] if d > 0), file=sys.stderr)

    # Close: the sink first, then each client socket once the proxy passed the FIN on.
    os.write(ctl_w, b"close\n")
    open_left = n
    t1 = time.monotonic()
    while open_left and time.monotonic() - t1 < 20:
        for key, _ in sel.select(timeout=0.5):
            sel.unregister(key.fileobj)
            key.fileobj.close()
            open_left -= 1
    for s in socks:
        if s.fileno() >= 0:
            s.close()
    os.set_blocking(ready_r, True)
    os.waitpid(child, 0)
    print(n, rss0, rss1, slab0, slab1, f"{open_s:.2f}")


if __name__ == "__main__":
    main()
