#!/usr/bin/env bash
# How far a burst of new connections from three edges takes one backend
# past its hard limit (issue 19), counted at the backend itself:
#
#   benches/fleet/overshoot.sh          # about 4 minutes, plus the build
#
# Three edges on loopback, POPs eu, us and sa (--pop = --region);
# routing.db from `geoedge db init` with four backends of its own:
# eu-lhr-1 (region eu, GB) with soft_limit = hard_limit = LIMIT (default
# 30), which every edge prefers for a client in London, and eu-fra-1 (DE),
# us-iad-1 and sa-gru-1 with room for everyone. Each round sends CLIENTS
# (default 30) clients to each edge, from one asyncio loop, each claiming
# its own London address (81.2.69.1, .2, ...) in a PROXY header, each held
# HOLD seconds (default 4) once connected; they arrive
#
#   burst      all at once;
#   ramp       the j-th at each edge RAMP * j / CLIENTS seconds after the
#              first (RAMP default 3): leases are asked for, granted and
#              used while clients keep arriving everywhere.
#
# fleetbench.py's backends count the most connections open at once at
# eu-lhr-1. Configurations, each with ROUNDS rounds (default 3) of each
# arrival, PAUSE seconds (default 5) before each, so that each starts with
# no lease and no binding (--binding-ttl 1s):
#
#   per-edge   the three edges without --nats (each holds the limit alone)
#   strict     --nats, --lease-fallback strict
#   share      --nats, --lease-fallback share (the default)
#
# Settings: LIMIT, CLIENTS, HOLD, RAMP, ROUNDS, PAUSE, CONFIGS (default
# "per-edge strict share"), ARRIVALS (default "burst ramp"), GEOEDGE.
source "$(dirname "$0")/lib.sh"

LIMIT=${LIMIT:-30}
CLIENTS=${CLIENTS:-30}
HOLD=${HOLD:-4}
RAMP=${RAMP:-3}
ROUNDS=${ROUNDS:-3}
PAUSE=${PAUSE:-5}
CONFIGS=${CONFIGS:-per-edge strict share}
ARRIVALS=${ARRIVALS:-burst ramp}

start_nats
start_backends eu-lhr-1 eu-fra-1 us-iad-1 sa-gru-1
make_db "$work/master.db" "
    ('eu-lhr-1', 'eu', 'GB', ${BACKEND_PORT[eu-lhr-1]}, $LIMIT, $LIMIT),
    ('eu-fra-1', 'eu', 'DE', ${BACKEND_PORT[eu-fra-1]}, 1000, 1000),
    ('us-iad-1', 'us', 'US', ${BACKEND_PORT[us-iad-1]}, 1000, 1000),
    ('sa-gru-1', 'sa', 'BR', ${BACKEND_PORT[sa-gru-1]}, 1000, 1000)"
publish "$work/master.db"

# Every client's connection closed at the backends.
backends_idle() {
    $FLEETBENCH stats "$STATS_PORT" |
        python3 -c 'import json, sys; sys.exit(any(c["open"] for c in json.load(sys.stdin).values()))'
}

echo "hard_limit $LIMIT at eu-lhr-1 (owner eu); $CLIENTS clients from London at each of eu, us and sa a round, each held ${HOLD}s"
summary=()
for config in $CONFIGS; do
    case $config in
        per-edge) args=() ;;
        strict | share) args=(--nats "$NATS_URL" --lease-fallback "$config") ;;
        *) echo "unknown configuration $config" >&2; exit 2 ;;
    esac
    start_edges "$work/master.db" --binding-ttl 1s "${args[@]}"
    if [[ $config != per-edge ]]; then
        wait_fleet
    fi
    for arrival in $ARRIVALS; do
        case $arrival in
            burst) ramp=0 ;;
            ramp) ramp=$RAMP ;;
            *) echo "unknown arrival $arrival" >&2; exit 2 ;;
        esac
        peaks=()
        for round in $(seq 1 "$ROUNDS"); do
            sleep "$PAUSE"
            $FLEETBENCH stats "$STATS_PORT" reset >/dev/null
            got=$($FLEETBENCH clients --as 81.2.69.1 --distinct --ramp "$ramp" --count "$CLIENTS" \
                --hold "$HOLD" "${EDGE[eu]}" "${EDGE[us]}" "${EDGE[sa]}")
            stats=$($FLEETBENCH stats "$STATS_PORT")
            line=$(python3 - "$got" "$stats" "${EDGE[eu]}" "${EDGE[us]}" "${EDGE[sa]}" <<'PY'
import json, sys
got, stats = json.loads(sys.argv[1]), json.loads(sys.argv[2])
edges = dict(zip(sys.argv[3:6], ("eu", "us", "sa")))
print(stats["eu-lhr-1"]["max"], "; ".join(
    f"{edges[e]}: " + ", ".join(f"{k} {v}" for k, v in sorted(g.items())) for e, g in got.items()))
PY
)
            read -r peak rest <<<"$line"
            peaks+=("$peak")
            printf '%-8s %-5s round %d: most at eu-lhr-1 at once %3d, over the limit %3d  (%s)\n' \
                "$config" "$arrival" "$round" "$peak" $((peak > LIMIT ? peak - LIMIT : 0)) "$rest"
            wait_for backends_idle
        done
        top=$(printf '%s\n' "${peaks[@]}" | sort -n | tail -1)
        summary+=("$(printf '%-8s %-5s peaks %-12s largest overshoot %d' "$config" "$arrival" \
            "${peaks[*]}" $((top > LIMIT ? top - LIMIT : 0)))")
    done
    if [[ $config != per-edge ]]; then
        for pop in us sa; do
            r=edge_fleet_lease_requests_total
            a=edge_fleet_lease_admissions_total
            echo "         $pop: lease requests granted $(metric "$pop" "$r{result=\"granted\"}"), partial $(metric "$pop" "$r{result=\"partial\"}"), refused $(metric "$pop" "$r{result=\"refused\"}"), unanswered $(metric "$pop" "$r{result=\"unanswered\"}"); clients admitted by lease $(metric "$pop" "$a{result=\"lease\"}"), by fallback $(metric "$pop" "$a{result=\"fallback\"}"), refused $(metric "$pop" "$a{result=\"refused\"}")"
        done
    fi
    stop_edges
done
echo "hard_limit $LIMIT:"
printf '  %s\n' "${summary[@]}"
