"""The stack the memory scripts measure: a private redis-server, `unstick demo-app` and
`unstick serve` in front of it, on free 127.0.0.1 ports; everything is stopped on exit.

    with Stack(unstick_bin, listener_extra='max_connections = 11000') as stack:
        stack.proxy_port, stack.redis_port, stack.proxy (the Popen)
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"  # loopback only, by design
PREFIX = "bench:"

CONFIG = """
[listener]
address = "{host}:{proxy}"
{listener_extra}

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


class Stack:
    def __init__(self, unstick, listener_extra=""):
        self.unstick = unstick
        self.listener_extra = listener_extra
        self.work = tempfile.mkdtemp(prefix="unstick-bench-")
        self.procs = []

    def _start(self, name, cmd, port):
        log = open(os.path.join(self.work, name + ".log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for_port(port, proc, name)
        return proc

    def __enter__(self):
        try:
            self.redis_port, app_port, self.proxy_port = free_ports(3)
            self._start("redis-server", ["redis-server", "--bind", HOST, "--port",
                                         str(self.redis_port), "--save", "", "--appendonly", "no"],
                        self.redis_port)
            self._start("demo-app", [self.unstick, "demo-app", "--listen", f"{HOST}:{app_port}",
                                     "--name", "a"], app_port)
            config = os.path.join(self.work, "unstick.toml")
            with open(config, "w") as f:
                f.write(CONFIG.format(host=HOST, proxy=self.proxy_port, redis=self.redis_port,
                                      app=app_port, prefix=PREFIX,
                                      listener_extra=self.listener_extra))
            self.proxy = self._start("unstick", [self.unstick, "serve", "--config", config],
                                     self.proxy_port)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)
