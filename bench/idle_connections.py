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
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"  # loopback only, by design

CONFIG = """
[listener]
address = "{host}:{proxy}"
idle_timeout = "10m"
max_connections = {max_connections}

[redis]
url = "redis://{host}:{redis}"
key_prefix = "bench:"

[session]
cookie = "demo.sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[identity.capture]
source = "whoami"
whoami_path = "/me"
user = "/user"

[[upstreams]]
name = "app"
instances = [ {{ name = "a", url = "http://{host}:{app}" }} ]

[[routes]]
path_prefix = "/"
upstream = "app"
mode = "redis"
"""

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-bench\r\n\r\n"


def free_ports(count):
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for_port(port, proc, name):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{name} exited before listening on {HOST}:{port}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {HOST}:{port} within 10 s")


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

    work = tempfile.mkdtemp(prefix="unstick-idle-")
    procs = []

    def start(name, cmd):
        log = open(os.path.join(work, name + ".log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        redis_port, app_port, proxy_port = free_ports(3)
        proc = start("redis", ["redis-server", "--bind", HOST, "--port", str(redis_port),
                               "--save", "", "--appendonly", "no"])
        wait_for_port(redis_port, proc, "redis-server")
        proc = start("app", [args.unstick, "demo-app", "--listen", f"{HOST}:{app_port}",
                             "--name", "a"])
        wait_for_port(app_port, proc, "demo-app")
        config = os.path.join(work, "unstick.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(host=HOST, proxy=proxy_port, redis=redis_port, app=app_port,
                                  max_connections=args.connections + 1000))
        proxy = start("unstick", [args.unstick, "serve", "--config", config])
        wait_for_port(proxy_port, proxy, "unstick")

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
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
