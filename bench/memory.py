#!/usr/bin/env python3
"""Redis bytes per session, as `MEMORY USAGE` reports them.

Starts its own redis-server, `unstick demo-app` and `unstick serve` on free 127.0.0.1 ports,
logs N users in through the proxy (`POST /login`, one request each, with a browser's
User-Agent), then reports MEMORY USAGE of every key the proxy wrote: session keys, user
index keys and any other kind, and the total per session. Stops everything it started.

    python3 bench/memory.py [--sessions 1000] [--per-user 1] [--unstick target/debug/unstick]

--per-user N logs each user in N times (N sessions in one index). --user-agent sets the
User-Agent header (default: Chrome on Windows, 111 bytes).
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

HOST = "127.0.0.1"  # loopback only, by design
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
PREFIX = "bench:"


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


def redis(port, *commands):
    """Runs commands through one redis-cli, returns one output line per command."""
    text = "".join(" ".join(c) + "\n" for c in commands)
    out = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port)],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
    return out.splitlines()


CONFIG = """
[listener]
address = "{host}:{proxy}"

[redis]
url = "redis://{host}:{redis}"
key_prefix = "{prefix}"

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=1)
    parser.add_argument("--user-agent", default=CHROME)
    parser.add_argument("--unstick", default="target/debug/unstick")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="unstick-memory-")
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
            f.write(CONFIG.format(host=HOST, proxy=proxy_port, redis=redis_port,
                                  app=app_port, prefix=PREFIX))
        proc = start("unstick", [args.unstick, "serve", "--config", config])
        wait_for_port(proxy_port, proc, "unstick")

        conn = http.client.HTTPConnection(HOST, proxy_port, timeout=10)
        users = max(1, args.sessions // args.per_user)
        made = 0
        for u in range(users):
            for _ in range(args.per_user):
                conn.request("POST", "/login", body=f"user=user{u:05d}", headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "User-Agent": args.user_agent,
                })
                resp = conn.getresponse()
                resp.read()
                if resp.status >= 400 or "demo.sid=" not in (resp.getheader("Set-Cookie") or ""):
                    sys.exit(f"login {made} failed: {resp.status}")
                made += 1
        conn.close()
        time.sleep(0.5)  # index writes are sent beside the response

        keys = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(redis_port), "--scan", "--pattern", PREFIX + "*"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        sizes = redis(redis_port, *[["MEMORY", "USAGE", k, "SAMPLES", "0"] for k in keys])
        encodings = redis(redis_port, *[["OBJECT", "ENCODING", k] for k in keys])
        by_kind = defaultdict(list)
        kinds_enc = defaultdict(set)
        for key, size, enc in zip(keys, sizes, encodings):
            kind = key[len(PREFIX):].split(":", 1)[0]
            by_kind[kind].append(int(size))
            kinds_enc[kind].add(enc)
        print(f"sessions: {made} ({users} users x {args.per_user}), "
              f"User-Agent {len(args.user_agent)} bytes")
        total = 0
        for kind, values in sorted(by_kind.items()):
            total += sum(values)
            print(f"  {PREFIX}{kind}:*  keys {len(values):6d}  bytes/key {sum(values) / len(values):7.1f}"
                  f"  total {sum(values):9d}  encoding {','.join(sorted(kinds_enc[kind]))}")
        print(f"bytes per session (all keys / sessions): {total / made:.1f}")
        sample = next((k for k in keys if k.startswith(PREFIX + "s:")), None)
        if sample:
            print(f"sample session key: {sample}")
            kind = redis(redis_port, ["TYPE", sample])[0]
            if kind == "hash":
                print("\n".join(redis(redis_port, ["HGETALL", sample])))
            else:
                length = redis(redis_port, ["STRLEN", sample])[0]
                print(f"({length} bytes) " + redis(redis_port, ["GET", sample])[0])
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
