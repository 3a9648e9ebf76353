#!/bin/sh
# The fault suite's deployment (tests/it/common/deployment.rs), started by
# hand on one machine, every server on 127.0.0.1:
#
#   issuer balancer  nginx         :18080  -> issuer-a :18081, issuer-b :18082
#                                             (metrics :18091, :18092)
#   issuers          keybound serve, one PostgreSQL database, one root
#                    secret file, one Redis replay store (:18379)
#   service balancer nginx         :18100  -> gateway-a :18101, gateway-b :18102
#                                             (ops /healthz /readyz /metrics :18111, :18112)
#   gateways         keybound gateway proxy, one Redis replay store (:18380),
#                    in front of an upstream (python3 -m http.server :18120)
#
# The issuer id is the issuer balancer's URL, the service's external URL
# (the audience) the service balancer's. Then it logs admin@default in
# with the CLI, registers the service and sends one signed request
# through both balancers. It stays up until Ctrl-C, which stops it all.
#
# Needs: keybound (KEYBOUND=path, default: on the PATH), nginx, redis-server,
# psql and createdb/dropdb reaching PostgreSQL (PGURL, default
# postgres://postgres@127.0.0.1:5432), python3. Everything it writes is in
# WORK (default: a new temporary directory); the database is
# keybound_loopback (DB=...), dropped at the end.
#
# Faults by hand, while it runs (pids are in $WORK/pids):
#   kill -9 "$(cat $WORK/pids/issuer-a)"           # FL-01: an issuer replica dies
#   kill -9 "$(cat $WORK/pids/redis-gateways)"     # FL-07: the gateways' Redis dies
#   kill -STOP "$(cat $WORK/pids/redis-gateways)"  # FL-08: ... or pauses (-CONT resumes)
#   curl -s 127.0.0.1:18111/readyz; curl -s 127.0.0.1:18111/metrics
set -eu

KEYBOUND=${KEYBOUND:-keybound}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-keybound_loopback}
WORK=${WORK:-$(mktemp -d /tmp/keybound-loopback.XXXXXX)}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-loopback admin password}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ISSUER=http://127.0.0.1:18080
SERVICE=http://127.0.0.1:18100

mkdir -p "$WORK/pids"
cd "$WORK"
echo "working in $WORK"

stop() {
    trap - EXIT INT TERM
    for pid in "$WORK"/pids/*; do
        kill -CONT "$(cat "$pid")" 2>/dev/null || true
        kill "$(cat "$pid")" 2>/dev/null || true
    done
    sleep 1
    psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    exit 0
}
trap stop EXIT INT TERM

# start NAME COMMAND...: runs it in the background, its log in NAME.log.
start() {
    name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/pids/$name"
}

# wait_for PORT [PATH]: until the port answers (200 at PATH when given).
wait_for() {
    i=0
    until if [ -n "${2:-}" ]; then curl -fs -o /dev/null "http://127.0.0.1:$1$2"; else curl -s -o /dev/null "http://127.0.0.1:$1/"; fi; do
        i=$((i + 1))
        [ $i -lt 300 ] || { echo "nothing answers on port $1" >&2; exit 1; }
        sleep 0.1
    done
}

# Two private Redis servers: nothing persisted, noeviction (the issuer
# refuses any other setting).
for r in issuers:18379 gateways:18380; do
    start "redis-${r%%:*}" redis-server --bind 127.0.0.1 --port "${r##*:}" --save "" --appendonly no
done

# One database, one root secret (32 random bytes, mode 0600) for both replicas.
psql "$PGURL/postgres" -qc "CREATE DATABASE $DB"
umask 077
head -c 32 /dev/urandom >root.key
umask 022
for replica in a:18081:18091 b:18082:18092; do
    name=issuer-${replica%%:*}
    rest=${replica#*:}
    mkdir -p -m 0700 "$name"
    cat >"$name.toml" <<EOF
issuer_id = "$ISSUER"
listen = "127.0.0.1:${rest%%:*}"
metrics_listen = "127.0.0.1:${rest##*:}"
data_dir = "$WORK/$name"
database_url = "$PGURL/$DB"
root_secret_file = "$WORK/root.key"
replay_redis_url = "redis://127.0.0.1:18379/"
trusted_proxies = ["127.0.0.1"]
EOF
done
printf '%s\n' "$ADMIN_PASSWORD" | "$KEYBOUND" admin bootstrap --config issuer-a.toml
start issuer-a "$KEYBOUND" serve --config issuer-a.toml
start issuer-b "$KEYBOUND" serve --config issuer-b.toml
wait_for 18081 /healthz
wait_for 18082 /healthz

# balancer NAME PORT BACKEND...: an nginx upstream, as the harness writes it.
balancer() {
    name=$1 port=$2
    shift 2
    mkdir -p "$name"
    {
        echo "daemon off; master_process off; pid $WORK/$name/nginx.pid; error_log $WORK/$name/error.log error;"
        echo "events { worker_connections 1024; }"
        echo "http { access_log off; client_body_temp_path $WORK/$name/body; proxy_temp_path $WORK/$name/proxy;"
        echo "  fastcgi_temp_path $WORK/$name/fastcgi; uwsgi_temp_path $WORK/$name/uwsgi; scgi_temp_path $WORK/$name/scgi;"
        echo "  upstream backends {"
        for backend in "$@"; do echo "    server 127.0.0.1:$backend max_fails=1 fail_timeout=1s;"; done
        echo "    keepalive 32; }"
        echo "  server { listen 127.0.0.1:$port; location / {"
        echo "    proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\";"
        echo "    proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$remote_addr;"
        echo "    proxy_next_upstream error timeout; proxy_connect_timeout 1s; proxy_read_timeout 10s; } } }"
    } >"$name/nginx.conf"
    start "$name" "$NGINX" -p "$WORK/$name" -c "$WORK/$name/nginx.conf" -e "$WORK/$name/error.log"
    wait_for "$port"
}
balancer issuer-lb 18080 18081 18082

# The upstream, and two gateways sharing one Redis.
mkdir -p upstream/v2 && echo ok >upstream/v2/servers
# The interpreter itself, not a wrapper (pyenv's shims), so that its pid is the server's.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
start upstream "$PYTHON" -m http.server --bind 127.0.0.1 --directory upstream 18120
(umask 077 && head -c 32 /dev/urandom >identity.secret)
for g in a:18101:18111 b:18102:18112; do
    rest=${g#*:}
    start "gateway-${g%%:*}" "$KEYBOUND" gateway proxy --issuer "$ISSUER" --external-url "$SERVICE" \
        --upstream http://127.0.0.1:18120 --identity-secret-file identity.secret \
        --listen "127.0.0.1:${rest%%:*}" --ops-listen "127.0.0.1:${rest##*:}" \
        --replay-redis-url redis://127.0.0.1:18380/
done
wait_for 18111 /readyz
wait_for 18112 /readyz
balancer service-lb 18100 18101 18102

# A client: log in through the issuer balancer, register the service, and
# call it through the service balancer.
export KEYBOUND_CONFIG_DIR="$WORK/cli"
printf '%s\n' "$ADMIN_PASSWORD" | "$KEYBOUND" login --issuer "$ISSUER" --user admin@default --password-stdin
"$KEYBOUND" admin service create "$SERVICE" >/dev/null
"$KEYBOUND" request "$SERVICE/v2/servers" --project admin --domain default

echo "up: issuer $ISSUER, service $SERVICE; KEYBOUND_CONFIG_DIR=$KEYBOUND_CONFIG_DIR; Ctrl-C stops it all"
wait
