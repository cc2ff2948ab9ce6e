#!/usr/bin/env bash
# bench/run.sh — throughput/latency of unstick vs. nginx vs. the bare upstream.
#
# In ONE run, on 127.0.0.1 only, this script starts:
#   * the upstream: unstick's bundled demo app (`unstick demo-app`),
#   * nginx as a keep-alive reverse proxy in front of it,
#   * a private redis-server and unstick (`unstick serve`) in front of the same upstream,
# then runs wrk against the targets in interleaved rounds, all with the same
# request (GET /me + a valid demo.sid session cookie; `many` spreads it over
# SESSIONS distinct sessions), and prints a table plus throughput ratios, then the
# revocation latency across two unstick processes on one Redis. Everything it starts
# is stopped by the EXIT trap.
#
# Knobs (environment variables):
#   ROUNDS=3          interleaved rounds (each round runs every target once)
#   DURATION=8        seconds per wrk run
#   CONNECTIONS=64    wrk connections
#   THREADS=2         wrk threads
#   WARMUP=2          seconds of unrecorded warm-up per target before round 1 (0 = none)
#   PROXY_WORKERS=1   nginx worker_processes and unstick's TOKIO_WORKER_THREADS
#   PIN=1             on 2+ cores: the proxy under test on its own core (taskset -c 1), wrk,
#                     the upstream and redis on core 0, so runs do not depend on where the
#                     scheduler happened to put them (PIN=0 to let it choose)
#   TARGETS="direct nginx unstick nosession nocache many percore"   subset/order of targets:
#                     nosession  unstick again with a cookie of another name: no session at all,
#                                so the table splits unstick's cost into proxying and the lookup
#                     nocache    a second unstick with [redis.near_cache] enabled = false: one
#                                Redis lookup per request
#                     many       unstick with SESSIONS distinct sessions, Zipf-distributed (wrk Lua
#                                script); reports the near-cache hit rate
#                     percore    a third unstick with [listener] runtime = "per-core"
#   SESSIONS=10000    distinct sessions of `many`, logged in through unstick before round 1
#   ZIPF_S=1.0        Zipf exponent of `many` (rank k is chosen with weight 1/k^s)
#   REVOCATIONS=200   logins revoked through one unstick and polled on another (0 = skip)
#   UNSTICK_BIN=target/dist/unstick   binary to use; NO_BUILD=1 skips `cargo build --profile dist`
#                     (the shipped build: fat LTO, about 10 minutes on 2 cores the first time)
#   KEEP_TMP=1        keep the temp dir (configs, logs, raw wrk output) after the run
#   BENCH_UPSTREAM=demo   `stub` = nginx `return 200` stand-in upstream. Only for testing
#                         this harness while the binary is unavailable; implies no unstick target.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2}"
PROXY_WORKERS="${PROXY_WORKERS:-1}"
BENCH_UPSTREAM="${BENCH_UPSTREAM:-demo}"
UNSTICK_BIN="${UNSTICK_BIN:-$REPO_DIR/target/dist/unstick}"
NO_BUILD="${NO_BUILD:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
if [[ "$BENCH_UPSTREAM" == stub ]]; then
    TARGETS="${TARGETS:-direct nginx}"
else
    TARGETS="${TARGETS:-direct nginx unstick nosession nocache many percore}"
fi
SESSIONS="${SESSIONS:-10000}"
ZIPF_S="${ZIPF_S:-1.0}"
REVOCATIONS="${REVOCATIONS:-200}"
read -r -a TARGET_LIST <<<"$TARGETS"

HOST=127.0.0.1 # loopback only, by design: never point this at another address
COOKIE_NAME=demo.sid
BENCH_USER=bench
BENCH_PATH=/me

PIDS=()     # every background process we start, in start order
NAMES=()    # a label per PID, for logs and cleanup messages
WORK_DIR="" # mktemp dir holding configs, pid files, logs, raw wrk output

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- cleanup ----

# Stop everything we started (reverse order, TERM then KILL) and drop the temp dir.
# On failure, show the tail of each service log first: it is the only clue left.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    if ((rc != 0)) && [[ -n "$WORK_DIR" ]]; then
        for ((i = 0; i < ${#NAMES[@]}; i++)); do
            if [[ -s "$WORK_DIR/${NAMES[i]}.log" ]]; then
                log "--- last lines of ${NAMES[i]}.log ---"
                tail -n 20 "$WORK_DIR/${NAMES[i]}.log" >&2 || true
            fi
        done
    fi
    if [[ -n "${WRK_PID:-}" ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        # Bounded wait (~5 s) for a graceful exit, then force it.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${NAMES[i]} (pid $pid) did not stop on TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        if [[ "$KEEP_TMP" == 1 ]]; then
            log "kept temp dir: $WORK_DIR"
        else
            rm -rf "$WORK_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
# Background children of a non-interactive shell ignore SIGINT, so turn signals
# into a normal exit: the EXIT trap then stops the children.
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup ----

require_uint() { # name value
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"
}

# Install a tool through apt only when it is missing (the machine may be fresh).
ensure_tool() { # command apt-package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "$1 missing: installing apt package $2"
    if [[ -z "${APT_UPDATED:-}" ]]; then
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
    command -v "$1" >/dev/null 2>&1 || die "could not install $2"
}

# Print N distinct free TCP ports on 127.0.0.1. All sockets are held open until
# every port is chosen, so the N ports are distinct (the usual bind-then-close
# race with other programs remains, but nothing else should grab them here).
free_ports() { # count
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# Start a long-running process in the background, logging to $WORK_DIR/NAME.log,
# and remember its PID for cleanup.
start_bg() { # name cmd args...
    local name="$1"
    shift
    "$@" >"$WORK_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

# Wait (bounded, ~10 s) until something accepts TCP connections on PORT, and fail
# fast if the process that should serve it has already died.
wait_for_port() { # name port
    local name="$1" port="$2" pid="${PIDS[${#PIDS[@]} - 1]}"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before listening on $HOST:$port"
        sleep 0.1
    done
    die "$name did not listen on $HOST:$port within 10 s"
}

# write_nginx_conf: the nginx config (bench/nginx_conf.sh).
source "$(dirname "${BASH_SOURCE[0]}")/nginx_conf.sh"

start_nginx() { # name mode listen_port [upstream_port]
    local name="$1" dir="$WORK_DIR/$1"
    write_nginx_conf "$dir" "$2" "$3" "${4:-}"
    # -e: the compiled-in error log path is outside our prefix; -t fails fast on typos.
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -t >"$WORK_DIR/$name.log" 2>&1 ||
        die "nginx config test failed: $(cat "$WORK_DIR/$name.log")"
    local cpu=("${LOAD_CPU[@]}")
    [[ "$2" == proxy ]] && cpu=("${PROXY_CPU[@]}")
    start_bg "$name" "${cpu[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    wait_for_port "$name" "$3"
}

# The unstick config, in one heredoc so the schema is easy to adjust. Every unstick process
# shares one Redis and one key prefix, so a session logged in through one is valid on all.
write_unstick_conf() { # path proxy_port redis_port app_port admin_port listener_extra redis_extra
    cat >"$1" <<EOF
[listener]
address = "$HOST:$2"
$6

[redis]
url = "redis://$HOST:$3"
key_prefix = "bench:"
$7

[session]
cookie = "$COOKIE_NAME"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[identity.capture]
source = "whoami"
whoami_path = "/me"
user = "/user"

[[upstreams]]
name = "app"
instances = [ { name = "a", url = "http://$HOST:$4" } ]

[[routes]]
path_prefix = "/"
upstream = "app"
mode = "redis"
logout_paths = ["/logout"]

[admin]
address = "$HOST:$5"
EOF
}

# The listener line of UNSTICK_RUNTIME for the targets that do not set their own.
runtime_line() { # runtime
    [[ -n "$1" ]] && printf 'runtime = "%s"\n' "$1"
    return 0
}

# Start one unstick process (config NAME.toml, log NAME.log) and wait until it listens. A
# binary that rejects the config (a key it does not know yet) stops the run with its message.
start_unstick() { # name proxy_port admin_port listener_extra redis_extra
    local name="$1"
    write_unstick_conf "$WORK_DIR/$name.toml" "$2" "$REDIS_PORT" "$APP_PORT" "$3" "$4" "$5"
    # RUST_LOG=warn: no per-request logging, as nginx runs with access_log off.
    start_bg "$name" "${PROXY_CPU[@]}" env RUST_LOG="${RUST_LOG:-warn}" TOKIO_WORKER_THREADS="$PROXY_WORKERS" \
        UNSTICK_ADMIN_TOKEN="$ADMIN_TOKEN" "$UNSTICK_BIN" serve --config "$WORK_DIR/$name.toml"
    wait_for_port "$name" "$2"
}

# Whether the binary knows a config key: `check` on a config with it names an unknown key.
config_key_known() { # listener_extra redis_extra
    local probe="$WORK_DIR/probe.toml"
    write_unstick_conf "$probe" 1 "$REDIS_PORT" "$APP_PORT" 2 "$1" "$2"
    local said
    said="$("$UNSTICK_BIN" check --config "$probe" 2>&1 || true)"
    [[ "$said" != *"unknown field"* && "$said" != *"unknown variant"* ]]
}

# Log in through unstick and print the demo.sid value it hands back.
obtain_session() { # proxy_port
    local headers sid
    headers="$(curl -s -i --max-time 5 -X POST -d "user=$BENCH_USER" "http://$HOST:$1/login")" ||
        die "POST /login through unstick failed"
    sid="$(printf '%s\n' "$headers" | tr -d '\r' | awk -v name="$COOKIE_NAME" '
        tolower($1) == "set-cookie:" {
            c = $2; sub(/;.*/, "", c)
            if (index(c, name "=") == 1) { print substr(c, length(name) + 2); exit }
        }')"
    [[ -n "$sid" ]] || die "no $COOKIE_NAME cookie in the /login response:
$headers"
    printf '%s\n' "$sid"
}

# Print the JSON "user" field of a /me body (empty if absent or not JSON).
json_user() {
    python3 -c 'import json,sys
try: u = json.load(sys.stdin).get("user")
except Exception: u = None
print("" if u is None else u)'
}

# Show what one bench request returns on a target. unstick must say user=bench
# (else every unstick number would measure an error path); for the others a
# mismatch is only a warning, since the upstream may not know the unstick session.
check_target() { # target port strict(0|1)
    local target="$1" port="$2" strict="$3" out code body user
    out="$(curl -s --max-time 5 -w '\n%{http_code}' -H "Cookie: $(target_cookie "$target")" \
        "http://$HOST:$port$BENCH_PATH")" || die "GET $BENCH_PATH on $target failed"
    code="${out##*$'\n'}"
    body="${out%$'\n'*}"
    user="$(printf '%s' "$body" | json_user)"
    log "check $target: HTTP $code, body ${body:0:120}"
    if [[ "$target" == many ]]; then
        [[ "$code" == 200 && "$user" == "$BENCH_USER" ]] ||
            die "many: its first session did not answer as user '$BENCH_USER' (HTTP $code)"
        return 0
    fi
    if [[ "$target" == nosession ]]; then
        [[ "$code" == 200 && -z "$user" ]] || die "nosession did not answer anonymously (HTTP $code)"
        return 0
    fi
    if [[ "$code" != 200 || "$user" != "$BENCH_USER" ]]; then
        if [[ "$strict" == 1 ]]; then
            die "$target did not answer $BENCH_PATH as user '$BENCH_USER' (HTTP $code)"
        fi
        log "WARNING: $target does not answer as user '$BENCH_USER'; its per-request work may differ"
    fi
}

# Redis commands processed so far (to report unstick's Redis calls per request).
redis_commands() {
    redis-cli -h "$HOST" -p "$REDIS_PORT" INFO stats 2>/dev/null |
        tr -d '\r' | awk -F: '$1 == "total_commands_processed" { print $2 }'
}

# "hits misses" of the near cache of the unstick process with this admin port, from its
# /metrics; nothing when the metrics are absent (a binary without the near cache).
near_cache_counts() { # admin_port
    curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://$HOST:$1/metrics" 2>/dev/null |
        awk '
            $1 ~ /^unstick_near_cache_hits_total($|\{)/ { hits += $2; seen_hits = 1 }
            $1 ~ /^unstick_near_cache_misses_total($|\{)/ { misses += $2; seen_misses = 1 }
            END { if (seen_hits && seen_misses) printf "%d %d\n", hits, misses }'
}

# Hit rate in percent between two "hits misses" readings, "-" without both or without lookups.
hit_rate() { # before after
    [[ -n "$1" && -n "$2" ]] || {
        echo "-"
        return 0
    }
    awk -v b="$1" -v a="$2" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        h = y[1] - x[1]; m = y[2] - x[2]
        if (h + m > 0) printf "%.1f", 100 * h / (h + m); else print "-" }'
}

# Log in COUNT distinct users through unstick (a few connections in parallel) and write
# their session cookie values to FILE, one a line; the first is BENCH_USER's.
create_sessions() { # proxy_port count file
    python3 - "$HOST" "$1" "$2" "$3" "$COOKIE_NAME" "$BENCH_USER" <<'PY'
import http.client, sys, threading
host, port, count, path, cookie, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
ids = [None] * count
errors = []
def worker(start, step):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for i in range(start, count, step):
            user = first if i == 0 else "zipf%d" % i
            conn.request("POST", "/login", body="user=" + user,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            r.read()
            for k, v in r.getheaders():
                if k.lower() == "set-cookie" and v.startswith(cookie + "="):
                    ids[i] = v.split(";", 1)[0].split("=", 1)[1]
            if r.status >= 400 or ids[i] is None:
                raise RuntimeError("login %d: HTTP %d without a %s cookie" % (i, r.status, cookie))
    except Exception as e:
        errors.append(str(e))
    finally:
        conn.close()
threads = [threading.Thread(target=worker, args=(k, 8)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    sys.exit("session creation failed: " + errors[0])
with open(path, "w") as f:
    f.write("\n".join(ids) + "\n")
PY
}

# The wrk script of `many`: every thread reads the session file, precomputes one request per
# session and the Zipf CDF over their ranks, and picks a session per request by binary search.
write_zipf_script() { # file
    cat >"$1" <<'LUA'
local requests, cdf, n = {}, {}, 0
local next_id = 0
function setup(thread)
    next_id = next_id + 1
    thread:set("thread_id", next_id)
end
function init(args)
    local path, s, cookie = args[1], tonumber(args[2]), args[3]
    local total = 0
    for line in io.lines(path) do
        if #line > 0 then
            n = n + 1
            total = total + 1 / n ^ s
            cdf[n] = total
            requests[n] = wrk.format("GET", wrk.path, { ["Cookie"] = cookie .. "=" .. line })
        end
    end
    for k = 1, n do cdf[k] = cdf[k] / total end
    math.randomseed(os.time() * 1000 + (thread_id or 0))
end
function request()
    local u, lo, hi = math.random(), 1, n
    while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return requests[lo]
end
LUA
}

# -------------------------------------------------------------- measuring ----

# Run wrk once; raw output goes to FILE. `timeout` is a backstop so a wedged
# target cannot keep the script from stopping by itself.
# wrk runs in the background + `wait` because bash defers traps while a foreground
# child runs: this way INT/TERM stop the script (and wrk) at once.
WRK_PID=""
run_wrk() { # target seconds file
    # The request's options, and the script's arguments (after the URL).
    local request=(-H "Cookie: $(target_cookie "$1")") script_args=()
    if [[ "$1" == many ]]; then
        request=(-s "$WORK_DIR/zipf.lua")
        script_args=("$WORK_DIR/sessions.txt" "$ZIPF_S" "$COOKIE_NAME")
    fi
    timeout $(($2 + 30)) "${LOAD_CPU[@]}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --latency \
        "${request[@]}" "http://$HOST:$(target_port "$1")$BENCH_PATH" "${script_args[@]}" >"$3" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed: $(cat "$3")"
    WRK_PID=""
}

# Parse wrk --latency output into "rps p50_ms p99_ms errors requests".
# errors = non-2xx/3xx responses + socket errors; latencies normalised to ms.
parse_wrk() { # file
    awk '
        function ms(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return -1
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ { gsub(",", ""); errs += $4 + $6 + $8 + $10 }
        END {
            if (rps == "" || p50 == "" || p99 == "") exit 1
            printf "%.1f %.3f %.3f %d %d\n", rps, p50, p99, errs, reqs
        }' "$1"
}

target_port() {
    case "$1" in
    direct) echo "$APP_PORT" ;;
    nginx) echo "$NGINX_PORT" ;;
    unstick | nosession | many) echo "$PROXY_PORT" ;;
    nocache) echo "$NOCACHE_PORT" ;;
    percore) echo "$PERCORE_PORT" ;;
    *) die "unknown target '$1'" ;;
    esac
}

# The admin port of the unstick process behind a target; nothing for the others.
target_admin_port() {
    case "$1" in
    unstick | nosession | many) echo "$ADMIN_PORT" ;;
    nocache) echo "$NOCACHE_ADMIN_PORT" ;;
    percore) echo "$PERCORE_ADMIN_PORT" ;;
    esac
}

is_unstick_target() {
    case "$1" in unstick | nosession | nocache | many | percore) return 0 ;; *) return 1 ;; esac
}

# The same cookie header for every target, but under another name for `nosession`, so
# unstick finds no session to look up and the request size stays the same (`many` sends the
# cookies of its wrk script; its first session is the one checked).
target_cookie() {
    if [[ "$1" == many ]]; then
        echo "$COOKIE_NAME=$(head -n 1 "$WORK_DIR/sessions.txt")"
    elif [[ "$1" == nosession ]]; then
        echo "other.sid=$SESSION_ID"
    else
        echo "$COOKIE_NAME=$SESSION_ID"
    fi
}

# Median of the numbers on stdin (mean of the middle two for an even count).
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ------------------------------------------------------------------- main ----

for v in ROUNDS DURATION CONNECTIONS THREADS WARMUP PROXY_WORKERS SESSIONS REVOCATIONS; do
    require_uint "$v" "${!v}"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && THREADS >= 1 && PROXY_WORKERS >= 1)) ||
    die "ROUNDS, DURATION, CONNECTIONS, THREADS and PROXY_WORKERS must be >= 1"
((${#TARGET_LIST[@]} >= 1)) || die "TARGETS is empty"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in direct | nginx | unstick | nosession | nocache | many | percore) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done
[[ "$ZIPF_S" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "ZIPF_S must be a non-negative number, got '$ZIPF_S'"
[[ "$BENCH_UPSTREAM" == demo || "$BENCH_UPSTREAM" == stub ]] ||
    die "BENCH_UPSTREAM must be 'demo' or 'stub'"
want_unstick=0
for t in "${TARGET_LIST[@]}"; do
    is_unstick_target "$t" && want_unstick=1
done
if [[ "$BENCH_UPSTREAM" == stub ]]; then
    ((want_unstick == 0)) || die "the unstick targets need the demo app upstream (BENCH_UPSTREAM=demo)"
    REVOCATIONS=0
fi
((REVOCATIONS > 0)) && want_unstick=1
if [[ " ${TARGET_LIST[*]} " == *" many "* ]]; then
    ((SESSIONS >= 1)) || die "SESSIONS must be >= 1 for the many target"
fi

ensure_tool wrk wrk
ensure_tool nginx nginx
ensure_tool curl curl
ensure_tool python3 python3
ensure_tool timeout coreutils
if ((want_unstick)); then
    ensure_tool redis-server redis-server
    ensure_tool redis-cli redis-tools
fi

if [[ "$BENCH_UPSTREAM" == demo ]]; then
    if [[ "$NO_BUILD" != 1 ]]; then
        # The dist profile is what ships (Dockerfile, cargo install): measure that binary.
        log "cargo build --profile dist (the shipped build; the first one takes about 10 minutes on 2 cores)"
        (cd "$REPO_DIR" && cargo build --profile dist --quiet) >&2 || die "cargo build --profile dist failed"
    fi
    [[ -x "$UNSTICK_BIN" ]] || die "no unstick binary at $UNSTICK_BIN"
    "$UNSTICK_BIN" demo-app --help >/dev/null 2>&1 ||
        die "$UNSTICK_BIN has no 'demo-app' subcommand yet (BENCH_UPSTREAM=stub tests the harness alone)"
fi

# CPU pinning: the proxy under test alone on core 1, the rest on core 0.
PROXY_CPU=()
LOAD_CPU=()
if [[ "${PIN:-1}" == 1 ]] && (($(nproc) >= 2)) && command -v taskset >/dev/null 2>&1; then
    PROXY_CPU=(taskset -c 1)
    LOAD_CPU=(taskset -c 0)
fi

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/unstick-bench.XXXXXX")"
ports="$(free_ports 11)" || die "could not pick free ports"
read -r APP_PORT NGINX_PORT PROXY_PORT REDIS_PORT ADMIN_PORT NOCACHE_PORT NOCACHE_ADMIN_PORT \
    PERCORE_PORT PERCORE_ADMIN_PORT PEER_PORT PEER_ADMIN_PORT <<<"$ports"
# The admin API (for /metrics) of the unstick processes; local to this run.
ADMIN_TOKEN="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

# --- header: the facts needed to read the numbers
echo "== unstick benchmark =="
echo "date:        $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
echo "machine:     nproc=$(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null), kernel $(uname -r)"
echo "wrk:         $(wrk -v 2>&1 | head -n 1 || true)"
echo "nginx:       $(nginx -v 2>&1 | head -n 1)"
if ((want_unstick)); then
    echo "redis:       $(redis-server --version | awk '{ print $3 }')"
fi
if [[ "$BENCH_UPSTREAM" == demo ]]; then
    echo "unstick:     $("$UNSTICK_BIN" --version 2>/dev/null || echo "$UNSTICK_BIN")"
    echo "upstream:    unstick demo-app ($HOST:$APP_PORT)"
else
    echo "upstream:    STUB nginx 'return 200' ($HOST:$APP_PORT) -- harness test only, not a real result"
fi
echo "load:        wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, GET $BENCH_PATH with a $COOKIE_NAME cookie"
if [[ " ${TARGET_LIST[*]} " == *" many "* ]]; then
    echo "many:        $SESSIONS sessions, Zipf s=$ZIPF_S (wrk Lua script)"
fi
echo "rounds:      $ROUNDS interleaved (${TARGET_LIST[*]}), warm-up ${WARMUP}s per target"
echo "cpu budget:  nginx worker_processes=$PROXY_WORKERS, unstick TOKIO_WORKER_THREADS=$PROXY_WORKERS"
if ((${#PROXY_CPU[@]})); then
    echo "pinning:     proxy under test on core 1; wrk, upstream and redis on core 0"
else
    echo "pinning:     none (wrk, redis, the upstream and the proxy share $(nproc) core(s))"
fi
echo

# --- start services (the upstream first: both proxies point at it)
if [[ "$BENCH_UPSTREAM" == demo ]]; then
    start_bg app "${LOAD_CPU[@]}" "$UNSTICK_BIN" demo-app --listen "$HOST:$APP_PORT" --name a
    wait_for_port app "$APP_PORT"
else
    start_nginx app stub "$APP_PORT"
fi

if [[ " ${TARGET_LIST[*]} " == *" nginx "* ]]; then
    start_nginx nginx proxy "$NGINX_PORT" "$APP_PORT"
fi

SESSION_ID=""
if ((want_unstick)); then
    mkdir -p "$WORK_DIR/redis"
    start_bg redis "${LOAD_CPU[@]}" redis-server --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$WORK_DIR/redis" --protected-mode yes
    wait_for_port redis "$REDIS_PORT"

    # UNSTICK_RUNTIME: the listener runtime of the unstick processes other than `percore`.
    default_runtime="$(runtime_line "${UNSTICK_RUNTIME:-}")"
    start_unstick unstick "$PROXY_PORT" "$ADMIN_PORT" "$default_runtime" ""
    if [[ -z "$(near_cache_counts "$ADMIN_PORT")" ]]; then
        log "NOTE: this unstick has no near-cache metrics (unstick_near_cache_hits_total): hit rates show '-'"
    fi

    SESSION_ID="$(obtain_session "$PROXY_PORT")"
    log "session: $COOKIE_NAME=${SESSION_ID:0:12}..."

    if [[ " ${TARGET_LIST[*]} " == *" nocache "* ]]; then
        no_cache=$'[redis.near_cache]\nenabled = false'
        if ! config_key_known "" "$no_cache"; then
            log "NOTE: this unstick does not know [redis.near_cache] (no near cache yet): nocache runs" \
                "without it, and every unstick target looks its session up in Redis"
            no_cache=""
        fi
        start_unstick nocache "$NOCACHE_PORT" "$NOCACHE_ADMIN_PORT" "$default_runtime" "$no_cache"
    fi
    if [[ " ${TARGET_LIST[*]} " == *" percore "* ]]; then
        config_key_known 'runtime = "per-core"' "" ||
            die "this unstick does not know [listener] runtime: drop percore from TARGETS"
        start_unstick percore "$PERCORE_PORT" "$PERCORE_ADMIN_PORT" 'runtime = "per-core"' ""
    fi
    if ((REVOCATIONS > 0)); then
        # The other proxy of the revocation figure, on the same Redis.
        start_unstick peer "$PEER_PORT" "$PEER_ADMIN_PORT" "$default_runtime" ""
    fi
    if [[ " ${TARGET_LIST[*]} " == *" many "* ]]; then
        log "many: logging in $SESSIONS users through unstick"
        started=$SECONDS
        create_sessions "$PROXY_PORT" "$SESSIONS" "$WORK_DIR/sessions.txt" || die "could not create the sessions of many"
        write_zipf_script "$WORK_DIR/zipf.lua"
        log "many: $SESSIONS sessions in $((SECONDS - started)) s"
    fi
else
    # No unstick: still send a cookie so the request looks the same.
    SESSION_ID="bench-no-unstick-session"
fi

for t in "${TARGET_LIST[@]}"; do
    strict=0
    [[ "$t" == unstick || "$t" == nocache || "$t" == percore ]] && strict=1
    check_target "$t" "$(target_port "$t")" "$strict"
done

if ((WARMUP > 0)); then
    for t in "${TARGET_LIST[@]}"; do
        log "warm-up $t ${WARMUP}s"
        run_wrk "$t" "$WARMUP" "$WORK_DIR/warmup-$t.txt"
    done
fi

# --- measure. Each round runs every target once; the start target rotates per
# round so no target always runs first/last (thermal, background drift).
RESULTS="$WORK_DIR/results.txt" # round target rps p50 p99 errors requests redis_cmds_per_req hit_rate
: >"$RESULTS"
n=${#TARGET_LIST[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
        t="${TARGET_LIST[$(((k + r - 1) % n))]}"
        raw="$WORK_DIR/wrk-r$r-$t.txt"
        log "round $r/$ROUNDS: $t (${DURATION}s)"
        before="" cache_before=""
        if is_unstick_target "$t"; then
            before="$(redis_commands)"
            cache_before="$(near_cache_counts "$(target_admin_port "$t")")"
        fi
        run_wrk "$t" "$DURATION" "$raw"
        parsed="$(parse_wrk "$raw")" || die "could not parse wrk output: $(cat "$raw")"
        read -r rps p50 p99 errs reqs <<<"$parsed"
        per_req="-" hits="-"
        if [[ -n "$before" ]]; then
            after="$(redis_commands)"
            if [[ -n "$after" ]] && ((reqs > 0)); then
                per_req="$(awk -v a="$after" -v b="$before" -v n="$reqs" 'BEGIN { printf "%.2f", (a - b) / n }')"
            fi
            hits="$(hit_rate "$cache_before" "$(near_cache_counts "$(target_admin_port "$t")")")"
        fi
        echo "$r $t $rps $p50 $p99 $errs $reqs $per_req $hits" >>"$RESULTS"
    done
done

# --- report
printf '%-7s %-9s %12s %10s %10s %8s %10s %7s\n' round target 'req/s' 'p50 ms' 'p99 ms' errors 'redis/req' 'hit %'
printf '%s\n' '----------------------------------------------------------------------------------'
while read -r r t rps p50 p99 errs _ per_req hits; do
    printf '%-7s %-9s %12.1f %10.3f %10.3f %8d %10s %7s\n' "$r" "$t" "$rps" "$p50" "$p99" "$errs" "$per_req" "$hits"
done <"$RESULTS"
printf '%s\n' '----------------------------------------------------------------------------------'
# Median over rounds of column C (3=req/s, 4=p50, 5=p99) for target T.
col() { awk -v t="$1" -v c="$2" '$2 == t { print $c }' "$RESULTS" | median; }
declare -A MED_RPS=()
for t in "${TARGET_LIST[@]}"; do
    MED_RPS[$t]="$(col "$t" 3)"
    errs_total="$(awk -v t="$t" '$2 == t { s += $6 } END { print s + 0 }' "$RESULTS")"
    per_req="-" hits="-"
    if is_unstick_target "$t"; then
        per_req="$(awk -v t="$t" '$2 == t && $8 != "-" { print $8 }' "$RESULTS" | median)"
        hits="$(awk -v t="$t" '$2 == t && $9 != "-" { print $9 }' "$RESULTS" | median)"
        [[ "$hits" == nan ]] && hits="-"
    fi
    printf '%-7s %-9s %12.1f %10.3f %10.3f %8d %10s %7s\n' median "$t" "${MED_RPS[$t]}" "$(col "$t" 4)" "$(col "$t" 5)" "$errs_total" "$per_req" "$hits"
done
echo

# Ratios of median throughput; all numbers come from this one run on this machine.
ratio() { # label numerator-target denominator-target
    if [[ -n "${MED_RPS[$2]:-}" && -n "${MED_RPS[$3]:-}" ]]; then
        awk -v a="${MED_RPS[$2]}" -v b="${MED_RPS[$3]}" -v l="$1" \
            'BEGIN { if (b > 0) printf "%-16s %6.3f\n", l, a / b; else printf "%-16s %6s\n", l, "n/a" }'
    fi
}
echo "throughput ratios (median req/s, same run):"
ratio "unstick/nginx" unstick nginx
ratio "unstick/direct" unstick direct
ratio "nginx/direct" nginx direct
ratio "nosession/nginx" nosession nginx
ratio "nocache/nginx" nocache nginx
ratio "many/nginx" many nginx
ratio "percore/nginx" percore nginx
ratio "percore/unstick" percore unstick
if [[ -n "${MED_RPS[many]:-}" ]]; then
    if awk '$2 == "many" && $9 != "-" { found = 1 } END { exit !found }' "$RESULTS"; then
        echo "near-cache hit rate of many (median): $(awk '$2 == "many" && $9 != "-" { print $9 }' "$RESULTS" | median)%"
    else
        echo "near-cache hit rate of many: not available (no unstick_near_cache_* metrics on /metrics)"
    fi
fi

# Revocation latency: a login through one unstick, its session used through the other, a
# logout through the first; then the other is asked until it no longer serves the session.
if ((REVOCATIONS > 0)); then
    echo
    log "revocation: $REVOCATIONS logins revoked through unstick and polled through peer"
    python3 - "$HOST" "$PROXY_PORT" "$PEER_PORT" "$REVOCATIONS" "$COOKIE_NAME" <<'PY' || die "revocation measurement failed"
import http.client, json, math, sys, time
host, port_a, port_b, count, cookie = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
GIVE_UP = 5.0  # seconds; a session still served after this counts as not revoked
a = http.client.HTTPConnection(host, port_a, timeout=10)
b = http.client.HTTPConnection(host, port_b, timeout=10)
def call(conn, method, path, cookie_header=None, body=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    if cookie_header:
        headers["Cookie"] = cookie_header
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r, r.read()
def user_of(body):
    try:
        return json.loads(body).get("user")
    except ValueError:
        return None
latencies, not_revoked = [], 0
for i in range(count):
    user = "revoke%d" % i
    r, _ = call(a, "POST", "/login", body="user=" + user)
    sid = next((v.split(";", 1)[0] for k, v in r.getheaders()
                if k.lower() == "set-cookie" and v.startswith(cookie + "=")), None)
    if sid is None:
        sys.exit("login through unstick gave no %s cookie (HTTP %d)" % (cookie, r.status))
    for _ in range(2):  # the session is now in the peer's near cache, if it has one
        r, body = call(b, "GET", "/me", sid)
        if user_of(body) != user:
            sys.exit("peer did not serve the new session (HTTP %d: %r)" % (r.status, body[:120]))
    started = time.perf_counter()
    r, _ = call(a, "POST", "/logout", sid, body="x=1")
    while True:
        r, body = call(b, "GET", "/me", sid)
        elapsed = time.perf_counter() - started
        if user_of(body) != user:
            latencies.append(elapsed * 1000)
            break
        if elapsed > GIVE_UP:
            not_revoked += 1
            break
latencies.sort()
def pct(p):
    return latencies[max(0, math.ceil(p / 100 * len(latencies)) - 1)] if latencies else float("nan")
print("revocation seen by the other unstick (ms from the logout request sent to the first refusal):")
print("  n=%d  p50 %.2f  p99 %.2f  max %.2f  not revoked within %.0f s: %d"
      % (len(latencies), pct(50), pct(99), latencies[-1] if latencies else float("nan"), GIVE_UP, not_revoked))
PY
fi

if awk '$6 > 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
    echo
    echo "WARNING: some runs had errors (non-2xx/3xx responses or socket errors); see the errors column."
fi
if [[ "$BENCH_UPSTREAM" == stub ]]; then
    echo
    echo "NOTE: stub upstream (harness test) -- these numbers say nothing about unstick."
fi
