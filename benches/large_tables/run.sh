#!/usr/bin/env bash
# What a large routing table costs a running edge, at 1k, 10k and 100k
# backends (or SIZES), as one command:
#
#   benches/large_tables/run.sh
#
# Builds geoedge in release (or takes GEOEDGE=/path/to/geoedge), and for each
# size writes a routing.db with that many backends (all in region eu, each
# on its own loopback address at a port nothing listens on, so every
# active check and connect is refused at once) with the real `sqlite3`
# CLI, starts `geoedge run` on it with the defaults (active checks every
# 2 s, at most 1,000 a second) and reports:
#   load     the time from start to `listening` (the first load of the table)
#   reload   the time from an `UPDATE` of one row to the edge's log line
#            saying it applied it, median of RELOADS (default 5)
#   scrape   /metrics: bytes, lines, and the time of one scrape (median of 5)
#   checks   active health checks a second over WINDOW seconds (default 10)
#   cpu      geoedge's CPU over that window, % of one core
#   rss      geoedge's resident memory at the end, MB
#   logs     log lines written over the window (all levels at info and above)
#
# With BASELINE=/path/to/another/geoedge (a build of an earlier commit) each
# size is run with that binary too, right after, so both are measured in
# one run. No root needed; everything runs on 127.0.0.0/8 and is removed on
# exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${SIZES:-"1000 10000 100000"}
RELOADS=${RELOADS:-5}
WINDOW=${WINDOW:-10}
BASELINE=${BASELINE:-}
if [[ -z ${GEOEDGE:-} ]]; then
    cargo build --release --quiet
    GEOEDGE=$PWD/target/release/geoedge
fi
command -v sqlite3 >/dev/null || { echo "run.sh: needs the sqlite3 CLI" >&2; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One routing.db per size, written once.
db_for() {
    local n=$1 db=$tmp/routing-$1.db
    if [[ ! -s $db ]]; then
        "$GEOEDGE" db init "$db" >/dev/null
        sqlite3 "$db" "DELETE FROM backends;
          WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < $n)
          INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit)
          SELECT printf('b%06d', i), 'eu', 'DE',
                 printf('127.%d.%d.%d', 1 + i / 65536, (i / 256) % 256, i % 256), 9, 100, 200
          FROM k;"
    fi
    echo "$db"
}

measure() {
    local label=$1 bin=$2 n=$3 db
    db=$(db_for "$n")
    local log=$tmp/log-$label-$n
    local t0
    t0=$(now)
    "$bin" run --routing-db "$db" --region eu --listen 127.0.0.1:0 \
        --metrics-listen 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    pid=$!
    metrics=
    for _ in $(seq 600); do
        grep -q '^listening ' "$log.out" 2>/dev/null && break
        sleep 0.05
    done
    local t1
    t1=$(now)
    metrics=$(awk '/^metrics / { print $2; exit }' "$log.out")
    [[ -n $metrics ]] || { echo "no metrics listener: $(cat "$log.err")" >&2; exit 1; }
    # Reloads: one row's weight changed each time.
    local reload_ms=()
    # Each applied reload logs one `routing.db reloaded` line: watching the
    # log costs the edge nothing (polling /metrics would, with a large
    # table and every backend's series).
    for r in $(seq "$RELOADS"); do
        local seen a
        seen=$(grep -c 'routing.db reloaded' "$log.err" || true)
        a=$(now)
        sqlite3 -cmd ".timeout 10000" "$db" "UPDATE backends SET weight = $((r % 5 + 1)) WHERE id = 'b000000';"
        for _ in $(seq 6000); do
            [[ $(grep -c 'routing.db reloaded' "$log.err" || true) -gt $seen ]] && break
            sleep 0.005
        done
        reload_ms+=("$(ms "$a" "$(now)")")
    done
    local scrape_ms=() bytes=failed lines=failed
    for _ in 1 2 3 4 5; do
        local a
        a=$(now)
        if curl -sf --max-time 60 "http://$metrics/metrics" >"$tmp/scrape"; then
            scrape_ms+=("$(ms "$a" "$(now)")")
            bytes=$(wc -c <"$tmp/scrape")
            lines=$(wc -l <"$tmp/scrape")
        else
            # An answer other than 200 (a scrape refused), or none in 60 s.
            scrape_ms+=("failed:$(ms "$a" "$(now)")")
        fi
    done
    local checks0 ticks0 logs0
    checks0=$(awk '/^edge_health_checks_total/ { s += $2 } END { print s + 0 }' "$tmp/scrape")
    ticks0=$(ticks "$pid")
    logs0=$(wc -l <"$log.err")
    sleep "$WINDOW"
    curl -sf --max-time 60 "http://$metrics/metrics" >"$tmp/scrape" || true
    local checks1 ticks1 logs1 rss
    checks1=$(awk '/^edge_health_checks_total/ { s += $2 } END { print s + 0 }' "$tmp/scrape")
    ticks1=$(ticks "$pid")
    logs1=$(wc -l <"$log.err")
    rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    local hz
    hz=$(getconf CLK_TCK)
    printf '%-9s %7d %8s %9s %11s %9s %9s %8s %6s %7s %6s\n' "$label" "$n" \
        "$(ms "$t0" "$t1")" \
        "$(printf '%s\n' "${reload_ms[@]}" | median)" \
        "$bytes" "$lines" \
        "$(printf '%s\n' "${scrape_ms[@]}" | sort -t: -k2 -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')" \
        "$(awk -v a="$checks0" -v b="$checks1" -v w="$WINDOW" 'BEGIN { printf "%.0f", (b - a) / w }')" \
        "$(awk -v a="$ticks0" -v b="$ticks1" -v w="$WINDOW" -v hz="$hz" 'BEGIN { printf "%.0f", (b - a) / hz / w * 100 }')" \
        "$rss" "$((logs1 - logs0))"
}

echo "geoedge: $GEOEDGE${BASELINE:+; baseline: $BASELINE}; window ${WINDOW}s; $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-9s %7s %8s %9s %11s %9s %9s %8s %6s %7s %6s\n' binary backends load_ms reload_ms scrape_B lines scrape_ms checks/s cpu% rss_MB logs
for n in $SIZES; do
    measure geoedge "$GEOEDGE" "$n"
    [[ -n $BASELINE ]] && measure baseline "$BASELINE" "$n"
done
