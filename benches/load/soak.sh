#!/usr/bin/env bash
# A soak: one geoedge (the engine GEOEDGE_ENGINE says, default epoll) under
# mixed load for DURATION seconds, its memory and descriptors sampled all
# along. The load cycles through keep-alive requests (wrk), new connections
# (wrk with `Connection: close`) and a bulk transfer (iperf3, both ways)
# against an nginx backend and an iperf3 server on loopback, SLICE seconds
# each. At the end it prints each sample, the connection results geoedge
# counted, and fails when geoedge died, when any connection ended in
# another result than ok, or when its memory after the last slice is more
# than GROWTH_PCT above its memory after the first cycle.
#
#   GEOEDGE=target/release/geoedge DURATION=600 benches/load/soak.sh
#
# Environment: GEOEDGE (a geoedge binary; default target/release/geoedge),
# GEOEDGE_ENGINE (default epoll), DURATION (600), SLICE (20), CONNS (100
# wrk connections), WORKERS (2), GROWTH_PCT (10), PORT_BASE (27600: ports
# PORT_BASE..PORT_BASE+4 on 127.0.0.1).
# Needs: wrk, iperf3, nginx, sqlite3, curl. Everything it starts is stopped
# and its temporary directory removed on exit.
set -uo pipefail

GEOEDGE=${GEOEDGE:-target/release/geoedge}
export GEOEDGE_ENGINE=${GEOEDGE_ENGINE:-epoll}
DURATION=${DURATION:-600}
SLICE=${SLICE:-20}
CONNS=${CONNS:-100}
WORKERS=${WORKERS:-2}
GROWTH_PCT=${GROWTH_PCT:-10}
PORT_BASE=${PORT_BASE:-27600}
P_HTTP=$PORT_BASE P_IPERF=$((PORT_BASE + 1)) P_EDGE_HTTP=$((PORT_BASE + 2))
P_EDGE_IPERF=$((PORT_BASE + 3)) P_METRICS=$((PORT_BASE + 4))

die() { echo "soak.sh: $*" >&2; exit 1; }
for tool in wrk iperf3 nginx sqlite3 curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk iperf3 nginx sqlite3 curl)"
done
[[ -x $GEOEDGE ]] || die "no geoedge binary at $GEOEDGE (cargo build --release -p geoedge)"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$P_HTTP; location / { return 200 "hello world\n"; } }
}
EOF
nginx -c "$WORK/nginx.conf" & PIDS+=($!)
iperf3 -s -B 127.0.0.1 -p "$P_IPERF" >/dev/null 2>&1 & PIDS+=($!)

db=$WORK/routing.db
"$GEOEDGE" db init --empty "$db" >/dev/null || die "db init failed"
sqlite3 "$db" "INSERT INTO regions (id, name, latitude, longitude) VALUES ('eu', 'Europe', 50.11, 8.68);
INSERT INTO backends (id, app, region, wg_ip, port, soft_limit, hard_limit)
  VALUES ('http', 'http', 'eu', '127.0.0.1', $P_HTTP, 1000000, 1000000),
         ('iperf', 'iperf', 'eu', '127.0.0.1', $P_IPERF, 1000000, 1000000);" || die "writing $db failed"
"$GEOEDGE" run --routing-db "$db" --region eu --workers "$WORKERS" \
    --listen "http=127.0.0.1:$P_EDGE_HTTP" --listen "iperf=127.0.0.1:$P_EDGE_IPERF" \
    --metrics-listen "127.0.0.1:$P_METRICS" --health-check-interval off \
    >"$WORK/geoedge.log" 2>&1 & GE=$!
PIDS+=("$GE")
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$P_METRICS/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$P_METRICS/readyz" >/dev/null || { cat "$WORK/geoedge.log"; die "geoedge never got ready"; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$GE/status" 2>/dev/null; }
fds() { ls "/proc/$GE/fd" 2>/dev/null | wc -l; }
metric() { curl -sf "http://127.0.0.1:$P_METRICS/metrics" | awk -v s="$1" '$1 == s {print $2}'; }

URL=http://127.0.0.1:$P_EDGE_HTTP/
echo "soak: $GEOEDGE (engine $GEOEDGE_ENGINE, $WORKERS workers), ${DURATION}s in slices of ${SLICE}s"
printf '%6s  %-10s %12s %10s %6s\n' elapsed slice result RSS_KiB fds
start=$SECONDS
slice=0
first_cycle_rss=
while ((SECONDS - start < DURATION)); do
    case $((slice % 3)) in
        0) kind=keep-alive
           result=$(wrk -t 2 -c "$CONNS" -d "${SLICE}s" "$URL" | awk '/Requests\/sec/ {print $2 " req/s"}') ;;
        1) kind=new-conn
           result=$(wrk -t 2 -c "$CONNS" -d "${SLICE}s" -H 'Connection: close' "$URL" | awk '/Requests\/sec/ {print $2 " req/s"}') ;;
        2) kind=bulk
           up=$(iperf3 -c 127.0.0.1 -p "$P_EDGE_IPERF" -t $((SLICE / 2)) -P 4 -f m 2>&1 | awk '/SUM.*receiver/ {print $6}')
           down=$(iperf3 -c 127.0.0.1 -p "$P_EDGE_IPERF" -t $((SLICE / 2)) -P 4 -R -f m 2>&1 | awk '/SUM.*receiver/ {print $6}')
           result="${up:-?}/${down:-?} Mbit/s" ;;
    esac
    kill -0 "$GE" 2>/dev/null || { tail -20 "$WORK/geoedge.log"; die "geoedge died during slice $slice ($kind)"; }
    rss=$(rss_kib)
    ((slice == 2)) && first_cycle_rss=$rss
    printf '%6s  %-10s %12s %10s %6s\n' "$((SECONDS - start))" "$kind" "$result" "$rss" "$(fds)"
    slice=$((slice + 1))
done
# The last connections close.
sleep 2
end_rss=$(rss_kib)
echo "connections by result:"
curl -sf "http://127.0.0.1:$P_METRICS/metrics" | grep '^edge_connections_total' | sed 's/^/  /'
ok=$(metric 'edge_connections_total{result="ok"}')
all=$(curl -sf "http://127.0.0.1:$P_METRICS/metrics" | awk '/^edge_connections_total/ {s += $2} END {print s}')
echo "RSS after the first cycle ${first_cycle_rss:-?} KiB, at the end $end_rss KiB; descriptors at the end $(fds)"
status=0
if [[ ${ok%.*} != "${all%.*}" ]]; then
    echo "FAIL: $((${all%.*} - ${ok%.*})) connections did not end ok"
    status=1
fi
if [[ -n $first_cycle_rss ]] && ((end_rss * 100 > first_cycle_rss * (100 + GROWTH_PCT))); then
    echo "FAIL: memory grew more than ${GROWTH_PCT}% after the first cycle"
    status=1
fi
((status == 0)) && echo "soak passed"
exit "$status"
