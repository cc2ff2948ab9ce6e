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
import subprocess
import sys
import time
from collections import defaultdict

from stack import HOST, PREFIX, Stack

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def redis(port, *commands):
    """Runs commands through one redis-cli, returns one output line per command."""
    text = "".join(" ".join(c) + "\n" for c in commands)
    out = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port)],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
    return out.splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=1)
    parser.add_argument("--user-agent", default=CHROME)
    parser.add_argument("--unstick", default="target/debug/unstick")
    args = parser.parse_args()

    with Stack(args.unstick) as stack:
        redis_port, proxy_port = stack.redis_port, stack.proxy_port
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


if __name__ == "__main__":
    main()
