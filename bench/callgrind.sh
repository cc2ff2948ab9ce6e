#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request, repeatable on a busy machine.
#
# Starts redis-server, the demo app and `unstick serve` under callgrind (one worker thread) on
# free loopback ports, logs in once, then sends N requests with the session cookie and N
# without any session over one keep-alive connection, and stops everything. Run twice (N=100
# and N=600) and the difference divided by 500 is the cost of one pair of requests, without
# the start-up and shutdown work.
#
#   bash bench/callgrind.sh               # cost per request pair, from two runs
#   OUT_DIR=/tmp/cg bash bench/callgrind.sh   # keep the callgrind files for callgrind_annotate
#
# Knobs: UNSTICK_BIN (default target/release/unstick, built with `cargo build --release`),
# RUNTIME (listener.runtime: multi-thread or per-core), N_SMALL=100, N_LARGE=600, NGINX=1 (0:
# skip the baseline: the same requests through nginx `proxy_pass`, also under callgrind),
# NEAR_CACHE=1 (0: `[redis.near_cache] enabled = false`, a Redis GET per session request).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNSTICK_BIN="${UNSTICK_BIN:-$REPO_DIR/target/release/unstick}"
RUNTIME="${RUNTIME:-multi-thread}"
N_SMALL="${N_SMALL:-100}"
N_LARGE="${N_LARGE:-600}"
NGINX="${NGINX:-1}"
NEAR_CACHE="${NEAR_CACHE:-1}"
HOST=127.0.0.1
BENCH_USER=bench
# write_nginx_conf: bench/run.sh's nginx config.
source "$REPO_DIR/bench/nginx_conf.sh"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/unstick-callgrind.XXXXXX")"
OUT_DIR="${OUT_DIR:-$WORK_DIR}"
mkdir -p "$OUT_DIR"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[callgrind] %s\n' "$*" >&2; }
die() {
    printf '[callgrind] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ -x "$UNSTICK_BIN" ]] || die "no unstick binary at $UNSTICK_BIN (cargo build --release)"
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install -y valgrind)"

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for_port() { # port seconds [pid]
    for _ in $(seq $(($2 * 10))); do
        (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null && return 0
        if [[ -n "${3:-}" ]] && ! kill -0 "$3" 2>/dev/null; then
            log "the process that should listen on $HOST:$1 exited"
            return 1
        fi
        sleep 0.1
    done
    log "nothing listens on $HOST:$1 after $2 s"
    return 1
}

read -r APP_PORT REDIS_PORT <<<"$(free_ports 2)"
redis-server --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK_DIR" \
    >"$WORK_DIR/redis.log" 2>&1 &
PIDS+=("$!")
"$UNSTICK_BIN" demo-app --listen "$HOST:$APP_PORT" --name a >"$WORK_DIR/app.log" 2>&1 &
PIDS+=("$!")
wait_for_port "$REDIS_PORT" 10 || exit 1
wait_for_port "$APP_PORT" 10 || exit 1

# One run: unstick under callgrind for N session and N no-session requests; prints its Ir.
measure() { # n
    local n="$1" port out pid
    port="$(free_ports 1)"
    out="$OUT_DIR/callgrind.$RUNTIME.$n.out"
    # The default runtime is left unnamed, so that older binaries can be measured too.
    local runtime_line=""
    [[ "$RUNTIME" == multi-thread ]] || runtime_line="runtime = \"$RUNTIME\""
    local near_cache_lines=""
    [[ "$NEAR_CACHE" == 1 ]] || near_cache_lines=$'[redis.near_cache]\nenabled = false'
    cat >"$WORK_DIR/unstick.toml" <<EOF
[listener]
address = "$HOST:$port"
$runtime_line

[redis]
url = "redis://$HOST:$REDIS_PORT"
key_prefix = "cg$n:"

$near_cache_lines

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
instances = [ { name = "a", url = "http://$HOST:$APP_PORT" } ]

[[routes]]
path_prefix = "/"
upstream = "app"
mode = "redis"
EOF
    RUST_LOG=warn TOKIO_WORKER_THREADS=1 under_callgrind "$out" "$port" "$n" TERM \
        "$UNSTICK_BIN" serve --config "$WORK_DIR/unstick.toml"
}

# Runs COMMAND under callgrind (output OUT, log OUT.log), sends it the N + N requests once it
# listens on PORT, stops it with SIGNAL and prints its instruction count.
under_callgrind() { # out port n signal command...
    local out="$1" port="$2" n="$3" signal="$4" pid
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$out.log" 2>&1 &
    pid=$!
    wait_for_port "$port" 300 "$pid" || {
        tail -n 20 "$out.log" >&2
        exit 1
    }
    send_requests "$port" "$n"
    kill -"$signal" "$pid"
    wait "$pid" || true
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

# N requests with the session cookie, then N with the same bytes under another cookie name,
# over one keep-alive connection (a login first, through the proxy on PORT).
send_requests() { # port n
    python3 - "$1" "$2" <<'PY' || die "requests failed"
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
c.request("POST", "/login", body="user=bench",
          headers={"Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse(); r.read()
sid = next(v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie" and v.startswith("demo.sid="))
for cookie in (sid, "other.sid=" + sid.split("=", 1)[1]):
    for _ in range(n):
        c.request("GET", "/me", headers={"Cookie": cookie})
        r = c.getresponse(); body = r.read()
        assert r.status == 200, (r.status, body)
    if cookie == sid:
        assert b'"bench"' in body, body
c.close()
PY
}

# The same N + N requests through nginx (`proxy_pass` with upstream keep-alive, bench/run.sh's
# config, as one process) under callgrind: the baseline of the same run.
measure_nginx() { # n
    local n="$1" port dir="$WORK_DIR/nginx"
    port="$(free_ports 1)"
    PROXY_WORKERS=1 NGINX_MASTER=off write_nginx_conf "$dir" proxy "$port" "$APP_PORT"
    under_callgrind "$OUT_DIR/callgrind.nginx.$n.out" "$port" "$n" QUIT \
        nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
}

small="$(measure "$N_SMALL")"
large="$(measure "$N_LARGE")"
log "Ir at N=$N_SMALL: $small, at N=$N_LARGE: $large"
awk -v a="$large" -v b="$small" -v d="$((N_LARGE - N_SMALL))" -v r="$RUNTIME" \
    -v c="$NEAR_CACHE" 'BEGIN { printf "instructions per request pair (session + no session), %s, near cache %s: %.0f\n", r, (c == 1 ? "on" : "off"), (a - b) / d }'
if [[ "$NGINX" == 1 ]]; then
    nginx_small="$(measure_nginx "$N_SMALL")"
    nginx_large="$(measure_nginx "$N_LARGE")"
    log "nginx Ir at N=$N_SMALL: $nginx_small, at N=$N_LARGE: $nginx_large"
    awk -v a="$large" -v b="$small" -v na="$nginx_large" -v nb="$nginx_small" \
        -v d="$((N_LARGE - N_SMALL))" 'BEGIN {
            printf "nginx, the same requests: %.0f\n", (na - nb) / d
            printf "unstick/nginx instructions: %.2f\n", (a - b) / (na - nb) }'
fi
