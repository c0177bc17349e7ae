# Shared by benches/fleet/leases.sh and benches/fleet/overshoot.sh (sourced,
# not run): three edges on loopback (POPs eu, us and sa, each run with
# --pop equal to --region), a nats-server with JetStream in a temporary
# directory, the backends of benches/fleet/fleetbench.py, and the cleanup
# of every process started here on exit, failure or Ctrl-C.
#
# Needs nats-server (2.10 or later) on the PATH, sqlite3, curl, python3.
# GEOEDGE=/path/to/geoedge uses that build instead of building one;
# KEEP_WORK=1 keeps the temporary directory (logs, routing.db) on exit.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ -z ${GEOEDGE:-} ]]; then
    cargo build --release --quiet
    GEOEDGE=$PWD/target/release/geoedge
fi
FLEETBENCH="python3 $PWD/benches/fleet/fleetbench.py"
POPS=(eu us sa)

work=$(mktemp -d)
pids=()      # every process started here but the edges
edge_pids=() # the edges
# stop PID...: SIGTERM to each, then waits for them.
stop() {
    local p
    for p in "$@"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "$@"; do
        wait "$p" 2>/dev/null || true
    done
}
stop_edges() {
    stop "${edge_pids[@]}"
    edge_pids=()
}
cleanup() {
    stop "${edge_pids[@]}" "${pids[@]}"
    if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 (not reserved: taken by the caller at once).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until COMMAND succeeds, up to 20 s.
wait_for() {
    local deadline=$((SECONDS + 20))
    until "$@" >/dev/null 2>&1; do
        [[ $SECONDS -lt $deadline ]] || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}

# start_nats: a nats-server with JetStream; sets NATS_URL and NATS_MON.
start_nats() {
    local port mon
    port=$(free_port)
    mon=$(free_port)
    nats-server -a 127.0.0.1 -p "$port" -m "$mon" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
    pids+=($!)
    wait_for grep -q "Server is ready" "$work/nats.log"
    NATS_URL=nats://127.0.0.1:$port
    NATS_HOSTPORT=127.0.0.1:$port
    NATS_MON=http://127.0.0.1:$mon
}

# start_backends NAME... : one fleetbench backend process listening for
# every NAME on a port of its own; sets BACKEND_PORT[NAME] and STATS_PORT.
declare -A BACKEND_PORT
start_backends() {
    local specs=() name
    for name in "$@"; do
        BACKEND_PORT[$name]=$(free_port)
        specs+=("$name=${BACKEND_PORT[$name]}")
    done
    STATS_PORT=$(free_port)
    $FLEETBENCH backend --stats "$STATS_PORT" "${specs[@]}" >"$work/backends.log" 2>&1 &
    pids+=($!)
    wait_for grep -q ready "$work/backends.log"
}

# make_db FILE ROWS: a routing.db with `geoedge db init`'s regions and
# country map and, instead of its backends, ROWS (SQL VALUES tuples of
# id, region, country, port, soft_limit, hard_limit).
make_db() {
    local db=$1 rows=$2
    "$GEOEDGE" db init "$db" >/dev/null
    sqlite3 "$db" "DELETE FROM backends;
        INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit)
        SELECT column1, column2, column3, '127.0.0.1', column4, column5, column6
        FROM (VALUES $rows);"
    "$GEOEDGE" db check "$db" >/dev/null
}

# publish DB: `geoedge db publish` of DB to the NATS server.
publish() {
    "$GEOEDGE" db publish --nats "$NATS_URL" "$1" >"$work/publish.log" 2>&1 ||
        { cat "$work/publish.log" >&2; return 1; }
}

# start_edges MASTER [ARGS...]: the three edges (stop_edges stops them),
# each with a copy of MASTER, POP = region, PROXY headers from loopback, no active health
# checks (they would be connections at the backends), and ARGS (e.g.
# --nats URL). Sets EDGE[POP] (host:port) and METRICS[POP].
declare -A EDGE METRICS
start_edges() {
    local master=$1 pop port mport
    shift
    for pop in "${POPS[@]}"; do
        rm -rf "${work:?}/$pop"
        mkdir -p "$work/$pop"
        cp "$master" "$work/$pop/routing.db"
        port=$(free_port)
        mport=$(free_port)
        "$GEOEDGE" run --listen "127.0.0.1:$port" --routing-db "$work/$pop/routing.db" \
            --region "$pop" --pop "$pop" --metrics-listen "127.0.0.1:$mport" \
            --proxy-protocol-from 127.0.0.0/8 --health-check-interval off --drain-timeout 1s "$@" \
            >"$work/$pop/geoedge.log" 2>&1 &
        edge_pids+=($!)
        EDGE[$pop]=127.0.0.1:$port
        METRICS[$pop]=http://127.0.0.1:$mport
    done
    for pop in "${POPS[@]}"; do
        wait_for curl -fs "${METRICS[$pop]}/readyz" || { cat "$work/$pop/geoedge.log" >&2; return 1; }
    done
}

# metric POP NAME_WITH_LABELS: the edge's value of one series (0 if absent).
metric() {
    curl -fs "${METRICS[$1]}/metrics" | awk -v s="$2" '$1 == s { v = $2 } END { print v + 0 }'
}

# wait_fleet: until every edge counts the other two's load reports.
hears_others() { test "$(metric "$1" edge_fleet_load_reporters)" -ge 2; }
wait_fleet() {
    local pop
    for pop in "${POPS[@]}"; do
        wait_for hears_others "$pop"
    done
}
