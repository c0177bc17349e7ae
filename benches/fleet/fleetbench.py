#!/usr/bin/env python3
"""Helpers of benches/fleet/leases.sh and benches/fleet/overshoot.sh.

  fleetbench.py backend --stats PORT NAME=PORT...
      TCP backends on 127.0.0.1, one per NAME=PORT, all in one asyncio
      loop: each sends its NAME and a newline to every connection, then
      holds it until the client closes, and counts connections open now,
      the most open at once, and in all. Connecting to the stats port and
      sending `get` or `reset` (the most at once back to those open now)
      returns these counts as one JSON line.
  fleetbench.py stats PORT [reset]
      Prints the backends' counts (and resets the maxima).
  fleetbench.py clients --as IP [--distinct] [--ramp R] --count N --hold S EDGE...
      N clients at each EDGE (host:port) at once (with --ramp, the j-th of
      each edge R * j / N seconds after the first), each claiming IP in a
      PROXY v1 header (with --distinct, IP, IP+1, ... one each, so that no
      two share a binding), reading the backend's name, holding the
      connection S seconds and closing it. Prints, as JSON, the backends
      each edge's clients got (`closed`: closed by the edge without a
      backend).
  fleetbench.py count --seconds S NATS_HOST:PORT
      A bare core-NATS client (the text protocol; no client library needed)
      counting for S seconds the messages on geoedge.lease.> (requests, by
      owner and asking POP), their replies (the reply subjects the requests
      named) and geoedge.load.> (by POP), with their bytes. Prints JSON.
"""

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
import time


# ---- backends -------------------------------------------------------------


def backend(args):
    counts = {}

    async def serve(name, reader, writer):
        c = counts[name]
        c["open"] += 1
        c["total"] += 1
        c["max"] = max(c["max"], c["open"])
        try:
            writer.write(name.encode() + b"\n")
            await writer.drain()
            while await reader.read(4096):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            c["open"] -= 1
            writer.close()

    async def stats(reader, writer):
        line = (await reader.readline()).decode().strip()
        if line == "reset":
            for c in counts.values():
                c["max"] = c["open"]
        writer.write(json.dumps(counts).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def main():
        servers = []
        for spec in args.backends:
            name, port = spec.split("=")
            counts[name] = {"open": 0, "max": 0, "total": 0}
            servers.append(
                await asyncio.start_server(
                    lambda r, w, n=name: serve(n, r, w), "127.0.0.1", int(port), backlog=1024
                )
            )
        servers.append(await asyncio.start_server(stats, "127.0.0.1", args.stats))
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def stats(args):
    with socket.create_connection(("127.0.0.1", args.port), timeout=5) as s:
        s.sendall(b"reset\n" if args.reset else b"get\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    print(data.decode().strip())


# ---- clients --------------------------------------------------------------


def clients(args):
    async def one(host, port, ip, delay):
        await asyncio.sleep(delay)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return "refused"
        try:
            writer.write(f"PROXY TCP4 {ip} 127.0.0.1 1111 2222\r\n".encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            got = line.decode().strip() or "closed"
            if got != "closed":
                await asyncio.sleep(args.hold)
            return got
        except (asyncio.TimeoutError, ConnectionError, OSError):
            return "closed"
        finally:
            writer.close()

    async def main():
        tasks = {edge: [] for edge in args.edges}
        base = ipaddress.IPv4Address(args.as_ip)
        k = 0
        for j in range(args.count):
            for edge in args.edges:
                host, port = edge.rsplit(":", 1)
                ip = base + k if args.distinct else base
                k += 1
                delay = args.ramp * j / args.count
                tasks[edge].append(asyncio.ensure_future(one(host, int(port), ip, delay)))
        out = {}
        for edge, ts in tasks.items():
            got = {}
            for r in await asyncio.gather(*ts):
                got[r] = got.get(r, 0) + 1
            out[edge] = got
        print(json.dumps(out))

    asyncio.run(main())


# ---- NATS counter ---------------------------------------------------------


def count(args):
    host, port = args.server.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    buf = bytearray()

    def fill(deadline):
        """Reads more into buf; False once the deadline has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return False
        if not chunk:
            raise ConnectionError("the NATS server closed the connection")
        buf.extend(chunk)
        return True

    def line(deadline):
        while b"\r\n" not in buf:
            if not fill(deadline):
                return None
        i = buf.index(b"\r\n")
        out = bytes(buf[:i])
        del buf[: i + 2]
        return out

    def block(n, deadline):
        while len(buf) < n + 2:
            if not fill(deadline):
                return None
        out = bytes(buf[:n])
        del buf[: n + 2]
        return out

    setup = time.monotonic() + 10
    line(setup)  # INFO
    s.sendall(
        b'CONNECT {"verbose":false,"pedantic":false,"name":"fleetbench-count"}\r\n'
        b"SUB geoedge.lease.> 1\r\nSUB geoedge.load.> 2\r\nSUB _INBOX.> 3\r\nPING\r\n"
    )
    # Wait for the PONG: the subscriptions are in place.
    while (l := line(setup)) != b"PONG":
        if l is None:
            raise TimeoutError("no PONG from the NATS server")
    out = {
        "seconds": args.seconds,
        "lease_requests": {},  # "owner<-from": n
        "lease_replies": 0,
        "lease_bytes": 0,
        "load_reports": {},  # pop: n
        "load_bytes": 0,
    }
    replies = set()
    end = time.monotonic() + args.seconds
    while (l := line(end)) is not None:
        parts = l.split()
        if not parts:
            continue
        op = parts[0].upper()
        if op == b"PING":
            s.sendall(b"PONG\r\n")
            continue
        if op not in (b"MSG", b"HMSG"):
            continue
        subject = parts[1].decode()
        reply = parts[3].decode() if len(parts) == (6 if op == b"HMSG" else 5) else None
        size = int(parts[-1])
        # A message that began before the end is read whole.
        payload = block(size, time.monotonic() + 5)
        if payload is None:
            break
        if op == b"HMSG":
            payload = payload[int(parts[-2]) :]
        if subject.startswith("geoedge.lease."):
            owner = subject[len("geoedge.lease.") :]
            try:
                frm = json.loads(payload).get("from", "?")
            except ValueError:
                frm = "?"
            key = f"{owner}<-{frm}"
            out["lease_requests"][key] = out["lease_requests"].get(key, 0) + 1
            out["lease_bytes"] += size
            if reply:
                replies.add(reply)
        elif subject.startswith("geoedge.load."):
            pop = subject[len("geoedge.load.") :]
            out["load_reports"][pop] = out["load_reports"].get(pop, 0) + 1
            out["load_bytes"] += size
        elif subject in replies:
            replies.discard(subject)
            out["lease_replies"] += 1
            out["lease_bytes"] += size
    s.close()
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--stats", type=int, required=True)
    b.add_argument("backends", nargs="+")
    st = sub.add_parser("stats")
    st.add_argument("port", type=int)
    st.add_argument("reset", nargs="?", const=True, default=False)
    c = sub.add_parser("clients")
    c.add_argument("--as", dest="as_ip", required=True)
    c.add_argument("--distinct", action="store_true")
    c.add_argument("--ramp", type=float, default=0.0)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--hold", type=float, required=True)
    c.add_argument("edges", nargs="+")
    n = sub.add_parser("count")
    n.add_argument("--seconds", type=float, required=True)
    n.add_argument("server")
    args = p.parse_args()
    {"backend": backend, "stats": stats, "clients": clients, "count": count}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
