# bench/nginx_conf.sh: the nginx that unstick is measured against, one config for
# bench/run.sh and bench/callgrind.sh (sourced by both). Uses HOST, PROXY_WORKERS and
# BENCH_USER; NGINX_MASTER=off runs nginx as one process (for valgrind).

# nginx config in its own prefix: pid, logs and every temp path live in $WORK_DIR,
# so the system service and its files are never touched.
#   mode=proxy: the benchmarked keep-alive reverse proxy to the upstream.
#   mode=stub : stand-in upstream answering 200 with a fixed JSON (harness testing only).
write_nginx_conf() { # dir mode listen_port upstream_port
    local dir="$1" mode="$2" port="$3" app_port="${4:-}"
    mkdir -p "$dir"
    local user_line=""
    # As root, nginx would drop workers to 'nobody', who cannot enter our 0700
    # temp dir; keep them as the current user instead.
    if ((EUID == 0)); then user_line="user root;"; fi
    local location
    if [[ "$mode" == proxy ]]; then
        location="
        upstream app {
            server $HOST:$app_port;
            keepalive 64;
            # nginx closes an upstream keep-alive connection after 1000 requests
            # by default; raise it so nginx is measured at its best.
            keepalive_requests 1000000;
        }
        server {
            listen $HOST:$port;
            location / {
                proxy_pass http://app;
                proxy_http_version 1.1;
                proxy_set_header Connection \"\";
            }
        }"
    else
        location="
        server {
            listen $HOST:$port;
            default_type application/json;
            location / { return 200 '{\"user\":\"$BENCH_USER\",\"instance\":\"stub\"}'; }
        }"
    fi
    cat >"$dir/nginx.conf" <<EOF
$user_line
daemon off;
master_process ${NGINX_MASTER:-on};
worker_processes $PROXY_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    # No access log: unstick is run with RUST_LOG=warn, so neither side logs per request.
    access_log off;
    # Same client keep-alive treatment on both proxies (default closes after 1000 requests).
    keepalive_requests 1000000;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$location
}
EOF
}
