#!/usr/bin/env bash
# Publish-to-applied time at each POP of the three-POP lab, as one command:
#
#   benches/fleet/publish.sh
#
# Builds geoedge in release (or takes GEOEDGE=/path/to/geoedge), brings up
# the lab (deploy/lab/lab.sh: three POPs in network namespaces joined by
# geoedge's WireGuard, a three-node NATS JetStream cluster on the overlay,
# every POP following it), then publishes PUBLISHES (default 50) edits of
# the master routing.db one after the other with `lab.sh push` (each
# flips one backend's soft_limit, so each is a new revision), waiting after
# each until all three POPs have applied it. For each publish and POP it
# takes the time from the publish command's start to that POP's
# `routing.db reloaded` log line (the edge serves the new table from then
# on), and reports p50, p99 and the maximum per POP and over all of them,
# and the publish command's own time. Log times and the start time come
# from the same clock (one machine).
#
# Run as root (the lab's namespaces). Needs what the lab needs (iproute2,
# sqlite3, socat, nats-server) and python3. The lab is named gebench and
# removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

PUBLISHES=${PUBLISHES:-50}
if [[ -z ${GEOEDGE:-} ]]; then
    cargo build --release --quiet
    GEOEDGE=$PWD/target/release/geoedge
fi
export GEOEDGE
export GELAB_NAME=${GELAB_NAME:-gebench}
work=$(mktemp -d)
export GELAB_DIR=$work/lab
lab=deploy/lab/lab.sh
trap 'bash $lab down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

bash "$lab" up >/dev/null 2>"$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
master=$GELAB_DIR/master/routing.db
: >"$work/publishes"
for i in $(seq 1 "$PUBLISHES"); do
    sqlite3 "$master" "UPDATE backends SET soft_limit = $((90 + i % 2)) WHERE id = 'eu-2';"
    start=$(date +%s.%N)
    revision=$(bash "$lab" push -m "bench $i" | tail -n 1)
    end=$(date +%s.%N)
    echo "$revision $start $end" >>"$work/publishes"
    for pop in eu us sa; do
        deadline=$((SECONDS + 60))
        until awk -v r="installed routing.db revision $revision " \
            'index($0, r) { found = 1 } found && /routing.db reloaded/ { ok = 1 } END { exit !ok }' \
            "$GELAB_DIR/$pop/geoedge.log"; do
            [ $SECONDS -lt $deadline ] || { echo "POP $pop did not apply revision $revision" >&2; exit 1; }
            sleep 0.01
        done
    done
done

python3 - "$work/publishes" "$GELAB_DIR" <<'PY'
import datetime, re, sys

publishes = [l.split() for l in open(sys.argv[1])]
lab = sys.argv[2]

def when(line):
    stamp = line[:27]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]

applied = {}
for pop in ("eu", "us", "sa"):
    lines = open(f"{lab}/{pop}/geoedge.log", errors="replace").read().splitlines()
    times = {}
    pending = None
    for l in lines:
        m = re.search(r"installed routing\.db revision (\d+) ", l)
        if m:
            pending = int(m.group(1))
        elif pending is not None and "routing.db reloaded" in l:
            times[pending] = when(l)
            pending = None
    applied[pop] = times

rows = []
everything = []
for pop in ("eu", "us", "sa"):
    ms = [(applied[pop][int(r)] - float(s)) * 1000 for r, s, _ in publishes]
    everything += ms
    rows.append((pop, ms))
rows.append(("all", everything))
took = [(float(e) - float(s)) * 1000 for _, s, e in publishes]
rows.append(("publish command", took))
print(f"{len(publishes)} publishes; ms from the publish command's start to the POP's 'routing.db reloaded'")
print(f"{'':16} {'p50':>7} {'p99':>7} {'max':>7}")
for name, ms in rows:
    print(f"{name:16} {pct(ms, 50):7.1f} {pct(ms, 99):7.1f} {max(ms):7.1f}")
PY
