#!/usr/bin/env python3
"""Proxy memory (VmRSS) per idle keep-alive client connection.

Starts its own redis-server, `unstick demo-app` and `unstick serve` on free 127.0.0.1 ports,
opens N keep-alive connections to the proxy that each make one request (`GET /healthz`,
proxied to the demo app) and then stay open and idle, and reports the proxy's VmRSS before
and after, and the difference per connection. Raises its own open-file limit (as `ulimit -n`
would) to the hard limit. Stops everything it started.

    python3 bench/idle_connections.py [--connections 10000] [--unstick target/release/unstick]
"""

import argparse
import asyncio
import resource
import sys

from stack import HOST, Stack

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one_request(port, held, limit):
    """Opens a connection, makes one request, reads the whole answer, keeps it open."""
    async with limit:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(REQUEST)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        held.append(writer)


async def open_idle(port, count):
    held = []
    limit = asyncio.Semaphore(100)
    await asyncio.gather(*(one_request(port, held, limit) for _ in range(count)))
    return held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--unstick", default="target/release/unstick")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before reading VmRSS")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        sys.exit(f"open-file hard limit {hard} is below {args.connections} connections")

    extra = f"idle_timeout = \"10m\"\nmax_connections = {args.connections + 1000}"
    with Stack(args.unstick, listener_extra=extra) as stack:
        proxy, proxy_port = stack.proxy, stack.proxy_port

        async def measure():
            # A few connections first: the upstream pool, Redis and the runtime are warm.
            for writer in await open_idle(proxy_port, 100):
                writer.close()
            await asyncio.sleep(args.settle)
            before = rss_kib(proxy.pid)
            held = await open_idle(proxy_port, args.connections)
            await asyncio.sleep(args.settle)
            after = rss_kib(proxy.pid)
            for writer in held:
                writer.close()
            return before, len(held), after

        before, opened, after = asyncio.run(measure())
        if proxy.poll() is not None:
            sys.exit("unstick exited during the run")
        per = (after - before) * 1024 / opened
        print(f"binary: {args.unstick}")
        print(f"idle keep-alive connections: {opened}")
        print(f"VmRSS before: {before / 1024:.1f} MiB, with the connections open: "
              f"{after / 1024:.1f} MiB")
        print(f"per connection: {per:.0f} bytes")


if __name__ == "__main__":
    main()
