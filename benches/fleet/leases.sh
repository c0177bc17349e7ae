#!/usr/bin/env bash
# Fleet traffic per edge on core NATS (issue 19): lease requests and
# replies (`geoedge.lease.>`) and load reports (`geoedge.load.>`), counted
# by a subscriber of its own on the NATS server:
#
#   benches/fleet/leases.sh            # about 1 minute, plus the build
#
# Three edges on loopback, POPs eu, us and sa (--pop = --region), one
# nats-server with JetStream (started here, in a temporary directory),
# routing.db from `geoedge db init` with three backends of its own (one a
# region: eu-lhr-1 in GB, us-iad-1, sa-gru-1; limits 1,000), published with
# `geoedge db publish --nats`. First IDLE seconds (default 10) with no
# client; then CLIENTS (default 10) clients from London (81.2.69.160, in a
# PROXY header) at each of us and sa, held for the whole run: they go to
# eu-lhr-1, owned by eu, so us and sa each hold a lease of it and renew it;
# after WARMUP seconds (default 5) the messages are counted for SECONDS
# (default 30). Reports per second, and the NATS server's own message
# counters (/varz) over the same window.
#
# Settings: CLIENTS, IDLE, WARMUP, SECONDS_COUNTED, GEOEDGE.
source "$(dirname "$0")/lib.sh"

CLIENTS=${CLIENTS:-10}
IDLE=${IDLE:-10}
WARMUP=${WARMUP:-5}
COUNTED=${SECONDS_COUNTED:-30}

start_nats
start_backends eu-lhr-1 us-iad-1 sa-gru-1
make_db "$work/master.db" "
    ('eu-lhr-1', 'eu', 'GB', ${BACKEND_PORT[eu-lhr-1]}, 1000, 1000),
    ('us-iad-1', 'us', 'US', ${BACKEND_PORT[us-iad-1]}, 1000, 1000),
    ('sa-gru-1', 'sa', 'BR', ${BACKEND_PORT[sa-gru-1]}, 1000, 1000)"
publish "$work/master.db"
start_edges "$work/master.db" --nats "$NATS_URL"
wait_fleet

varz() { curl -fs "$NATS_MON/varz" | python3 -c 'import json, sys; v = json.load(sys.stdin); print(v["in_msgs"], v["out_msgs"], v["in_bytes"])'; }

# count SECONDS: the subscriber's counts and the server's, as one JSON line.
count() {
    local before after
    before=$(varz)
    $FLEETBENCH count --seconds "$1" "$NATS_HOSTPORT" >"$work/count.json"
    after=$(varz)
    python3 - "$work/count.json" "$before" "$after" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
b, a = [list(map(int, x.split())) for x in sys.argv[2:4]]
c["server_in_msgs"], c["server_out_msgs"], c["server_in_bytes"] = (y - x for x, y in zip(b, a))
print(json.dumps(c))
PY
}

idle=$(count "$IDLE")

$FLEETBENCH clients --as 81.2.69.160 --count "$CLIENTS" --hold $((WARMUP + COUNTED + 3)) \
    "${EDGE[us]}" "${EDGE[sa]}" >"$work/clients.json" &
clients=$!
pids+=($clients)
sleep "$WARMUP"
stats=$($FLEETBENCH stats "$STATS_PORT")
held=$(count "$COUNTED")
wait "$clients"
slots=""
for pop in us sa; do
    slots+="$pop: lease slots $(metric "$pop" edge_fleet_lease_slots), requests granted $(metric "$pop" 'edge_fleet_lease_requests_total{result="granted"}'), partial $(metric "$pop" 'edge_fleet_lease_requests_total{result="partial"}'), unanswered $(metric "$pop" 'edge_fleet_lease_requests_total{result="unanswered"}'); "
done

python3 - "$idle" "$held" "$stats" "$(cat "$work/clients.json")" "$CLIENTS" "$slots" <<'PY'
import json, sys
idle, held, stats, clients = (json.loads(x) for x in sys.argv[1:5])
n, slots = sys.argv[5], sys.argv[6]
print(f"clients: {json.dumps(clients)}; at the backends after the warm-up: "
      + ", ".join(f"{k} {v['open']}" for k, v in stats.items()))
print(f"edges: {slots}")
for name, c in (("idle, no client", idle), (f"{n} clients held at each of us and sa (to eu-lhr-1, owned by eu)", held)):
    s = c["seconds"]
    req = c["lease_requests"]
    print(f"{name}: {s:g} s counted")
    for k in sorted(req):
        print(f"  lease requests {k}: {req[k] / s:.2f}/s")
    print(f"  lease requests in all {sum(req.values()) / s:.2f}/s, replies {c['lease_replies'] / s:.2f}/s, "
          f"{c['lease_bytes'] / s:.0f} B/s")
    for pop in sorted(c["load_reports"]):
        print(f"  load reports from {pop}: {c['load_reports'][pop] / s:.2f}/s")
    print(f"  load reports in all {sum(c['load_reports'].values()) / s:.2f}/s, {c['load_bytes'] / s:.0f} B/s")
    print(f"  nats-server: in {c['server_in_msgs'] / s:.1f} msgs/s, out {c['server_out_msgs'] / s:.1f} msgs/s, "
          f"in {c['server_in_bytes'] / s:.0f} B/s (every client, this counter's subscriptions included)")
PY
