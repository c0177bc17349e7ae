#!/usr/bin/env bash
# WireGuard backhaul throughput (issue 4), as one command:
#
#   sudo benches/wireguard/run.sh
#
# Builds geoedge in release, joins two network namespaces with a veth pair
# (underlay 172.29.0.0/24) and measures, side by side in one run, iperf3
# single-stream TCP over a WireGuard overlay (10.80.0.0/24) for
#   (a) wireguard-go <-> wireguard-go
#   (b) geoedge      <-> wireguard-go
#   (c) geoedge      <-> geoedge
# in both directions. The configurations are alternated (a b c, a b c, ...),
# each is set up afresh for every round, and the median of the rounds is
# reported. Namespace A (underlay .1, overlay 10.80.0.1) runs the iperf3
# client, namespace B (underlay .2, overlay 10.80.0.2) the iperf3 server;
# "A->B" is the plain run, "B->A" the run with -R.
#
# Everything it creates (namespaces, veth, TUN devices, processes,
# /var/run/wireguard/<name>.sock, its temporary directory) is removed on
# exit, on failure and on Ctrl-C. No traffic leaves the two namespaces.
#
# With BASELINE=/path/to/another/geoedge (say, a build of an earlier
# commit), configuration (d) runs that binary at both ends, so that a change
# is measured against what it replaces in the same run:
#
#   sudo BASELINE=/tmp/geoedge-before CONFIGS="a c d" benches/wireguard/run.sh
#
# Configuration (f) is (c) while one source floods B's WireGuard port with
# handshake initiations that carry a valid cookie (for a random key that is
# no peer's; benches/wireguard/wg_handshake_flood.rs, FLOOD_RATE a second, from a
# second address 172.29.0.3 in A's namespace), from the handshake to the
# end of both measurements; the report gives (f)/(c), the share of its
# unloaded throughput the tunnel keeps under the flood. Configuration (g)
# is the same flood against BASELINE at both ends, for (g)/(d):
#
#   sudo CONFIGS="c f" benches/wireguard/run.sh
#   sudo BASELINE=/tmp/geoedge-before CONFIGS="c f d g" benches/wireguard/run.sh
#
# Environment: REPS (default 3), DURATION in seconds (default 8), CONFIGS
# (default "a b c", or "a b c d" with BASELINE: the configurations to run,
# in this order), FLOOD_RATE (default 30000 initiations a second),
# FLOOD_NICE (default 19: the flooder's niceness; an attacker's sending
# CPU is on another host in reality, here it shares the 2 cores, and at
# nice 19 it yields them to the tunnel while keeping its rate), IDLE_WAIT
# (default 600: seconds to wait for an idle machine before each
# configuration; the cores are shared with whatever else runs here).
#
# A sample during which other processes used more than 25% of a core is
# marked with * (contended); the medians include it.
set -uo pipefail

REPS=${REPS:-3}
DURATION=${DURATION:-8}
PORT=51820
IPERF_PORT=5201
IDLE_WAIT=${IDLE_WAIT:-600}
OTHER_MAX=25 # % of one core used by other processes that marks a sample as contended

die() {
    echo "run.sh: $*" >&2
    exit 1
}

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds)"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a number of seconds"
BASELINE=${BASELINE:-}
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable"
    BASELINE=$(realpath "$BASELINE")
    read -ra CONFIGS <<<"${CONFIGS:-a b c d}"
else
    read -ra CONFIGS <<<"${CONFIGS:-a b c}"
fi
for cfg in "${CONFIGS[@]}"; do
    [[ $cfg == [abcdfg] ]] || die "CONFIGS takes a, b, c, d, f and g (default: \"a b c\")"
    [[ $cfg != [dg] || -n $BASELINE ]] || die "configurations d and g need BASELINE=/path/to/geoedge"
done

if [[ $EUID -ne 0 ]]; then
    die "must run as root (it creates network namespaces, veth and TUN devices): sudo $0"
fi
missing=()
for tool in wireguard-go wg iperf3 ip sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]}; install with:
  apt-get install -y --no-install-recommends wireguard-go wireguard-tools iperf3 iproute2 sqlite3"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found in PATH (under sudo, try: sudo env \"PATH=\$PATH\" $0)"
[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing: TUN devices are not available here"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GEOEDGE=$REPO/target/release/geoedge

echo "== building geoedge (cargo build --release)"
(cd "$REPO" && cargo build --release) || die "cargo build --release failed"
[[ -x $GEOEDGE ]] || die "$GEOEDGE not found after the build"
FLOOD_RATE=${FLOOD_RATE:-30000}
[[ $FLOOD_RATE =~ ^[1-9][0-9]*$ ]] || die "FLOOD_RATE must be a positive integer"
FLOOD_NICE=${FLOOD_NICE:-19}
[[ $FLOOD_NICE =~ ^-?[0-9]+$ ]] || die "FLOOD_NICE must be an integer"
FLOODER=$REPO/target/release/examples/wg_handshake_flood
FLOOD_FROM=172.29.0.3
if [[ " ${CONFIGS[*]} " == *" f "* || " ${CONFIGS[*]} " == *" g "* ]]; then
    echo "== building the handshake flooder (cargo build --release --example wg_handshake_flood)"
    (cd "$REPO" && cargo build --release --example wg_handshake_flood) ||
        die "building the flooder failed"
fi

# --- names and state -------------------------------------------------------
ID=$$
NS_A=gewg-a-$ID
NS_B=gewg-b-$ID
VETH_A=gwva$ID
VETH_B=gwvb$ID
UNDER_A=172.29.0.1
UNDER_B=172.29.0.2
OVER_A=10.80.0.1
OVER_B=10.80.0.2
WORK=
PIDS=()      # every process started, by pid
SOCKS=()     # every /var/run/wireguard/<name>.sock that may appear
IFACES=()    # "ns iface" of every WireGuard interface created
CUR_PIDS=()  # processes of the configuration that is up now
CUR_IFACES=()

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$? pid entry sock
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for entry in "${IFACES[@]}"; do
        # shellcheck disable=SC2086
        set -- $entry
        ip -n "$1" link del "$2" >/dev/null 2>&1
    done
    for sock in "${SOCKS[@]}"; do rm -f "$sock"; done
    ip netns del "$NS_A" >/dev/null 2>&1
    ip netns del "$NS_B" >/dev/null 2>&1
    ip link del "$VETH_A" >/dev/null 2>&1
    ip link del "$VETH_B" >/dev/null 2>&1
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted, cleaning up" >&2; exit 130' INT
trap 'echo "run.sh: terminated, cleaning up" >&2; exit 143' TERM

WORK=$(mktemp -d /tmp/geoedge-wg-bench.XXXXXX)

# --- keys ------------------------------------------------------------------
(
    umask 077
    "$GEOEDGE" wg genkey >"$WORK/a.key" && "$GEOEDGE" wg pubkey <"$WORK/a.key" >"$WORK/a.pub" &&
        "$GEOEDGE" wg genkey >"$WORK/b.key" && "$GEOEDGE" wg pubkey <"$WORK/b.key" >"$WORK/b.pub"
) || die "generating keys with geoedge wg genkey/pubkey failed"
chmod 600 "$WORK"/*.key
PUB_A=$(<"$WORK/a.pub")
PUB_B=$(<"$WORK/b.pub")

# --- underlay: two namespaces joined by a veth pair --------------------------
echo "== namespaces $NS_A, $NS_B; veth $VETH_A <-> $VETH_B (172.29.0.0/24)"
ip netns add "$NS_A" || die "ip netns add $NS_A failed"
ip netns add "$NS_B" || die "ip netns add $NS_B failed"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B" ||
    die "creating the veth pair failed"
ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A" &&
    ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B" &&
    ip -n "$NS_A" link set "$VETH_A" up && ip -n "$NS_B" link set "$VETH_B" up &&
    ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up &&
    ip -n "$NS_A" addr add "$FLOOD_FROM/24" dev "$VETH_A" ||
    die "configuring the underlay failed"

# --- one end of a tunnel ---------------------------------------------------
wait_sock() { # pid sock: wait up to 10 s for the configuration socket
    local pid=$1 sock=$2 i
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# side: A or B; kind: wggo, geoedge or baseline; iface: interface name
start_end() {
    local side=$1 kind=$2 iface=$3 ns key peer_pub my_over peer_over peer_under log pid bin=$GEOEDGE
    [[ $kind == baseline ]] && bin=$BASELINE
    if [[ $side == A ]]; then
        ns=$NS_A key=$WORK/a.key peer_pub=$PUB_B my_over=$OVER_A peer_over=$OVER_B peer_under=$UNDER_B
    else
        ns=$NS_B key=$WORK/b.key peer_pub=$PUB_A my_over=$OVER_B peer_over=$OVER_A peer_under=$UNDER_A
    fi
    log=$WORK/$iface.log
    SOCKS+=("/var/run/wireguard/$iface.sock")
    IFACES+=("$ns $iface")
    CUR_IFACES+=("$ns $iface")
    if [[ $kind == wggo ]]; then
        ip netns exec "$ns" wireguard-go -f "$iface" >"$log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        CUR_PIDS+=("$pid")
        if ! wait_sock "$pid" "/var/run/wireguard/$iface.sock"; then
            echo "   wireguard-go $iface did not come up" >&2
            return 1
        fi
        ip netns exec "$ns" wg set "$iface" listen-port "$PORT" private-key "$key" \
            peer "$peer_pub" allowed-ips "$peer_over/32" endpoint "$peer_under:$PORT" &&
            ip -n "$ns" addr add "$my_over/24" dev "$iface" &&
            ip -n "$ns" link set "$iface" mtu 1420 up || {
            echo "   configuring wireguard-go $iface failed" >&2
            return 1
        }
    else
        local db=$WORK/$iface.db
        "$GEOEDGE" db init --empty "$db" >>"$log" 2>&1 &&
            sqlite3 "$db" "INSERT INTO wg_peers (public_key, endpoint, allowed_ips)
                           VALUES ('$peer_pub', '$peer_under:$PORT', '$peer_over/32');" || {
            echo "   creating $db failed" >&2
            return 1
        }
        ip netns exec "$ns" "$bin" wg up --routing-db "$db" --wg-interface "$iface" \
            --wg-private-key-file "$key" --wg-address "$my_over/24" --wg-listen-port "$PORT" \
            >>"$log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        CUR_PIDS+=("$pid")
        if ! wait_sock "$pid" "/var/run/wireguard/$iface.sock"; then
            echo "   geoedge wg up $iface did not come up" >&2
            return 1
        fi
    fi
    return 0
}

# Tears down the configuration that is up (processes, interfaces, sockets).
stop_config() {
    local pid entry
    for pid in "${CUR_PIDS[@]}"; do stop_pid "$pid"; done
    for entry in "${CUR_IFACES[@]}"; do
        # shellcheck disable=SC2086
        set -- $entry
        ip -n "$1" link del "$2" >/dev/null 2>&1
        rm -f "/var/run/wireguard/$2.sock"
    done
    CUR_PIDS=()
    CUR_IFACES=()
}

show_logs() {
    local entry
    for entry in "${CUR_IFACES[@]}"; do
        # shellcheck disable=SC2086
        set -- $entry
        echo "   --- last lines of $2's log ($1):" >&2
        tail -n 15 "$WORK/$2.log" 2>/dev/null | sed 's/^/   | /' >&2
    done
}

# cpu ticks (user+system) of a process, 0 when gone
ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo 0
        return
    }
    stat=${stat##*) }
    # fields after "(comm) ": state is 1st, utime 12th, stime 13th
    awk '{print $12 + $13}' <<<"$stat"
}
child_ticks() { # pid of a shell: user+system time of its reaped children
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    awk '{print $14 + $15}' <<<"$stat"
}
busy_ticks() { # whole machine: busy idle process-context(user+nice+system) softirq
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6, $2+$3+$4, $8}' /proc/stat
}
HZ=$(getconf CLK_TCK)
SERVER_PID=
BUSY_STARTS=0
CONTENDED=0
NPROC=$(nproc)

# Measures one direction; prints
#   "mbps retr cpuA cpuB cpu_client cpu_server machine other softirq"
# (CPU in % of one core; machine in % of all cores; other: process time of
# everything else on the machine, kernel threads included), or returns 1.
measure() {
    local rev=$1 out t0 t1 a0 a1 b0 b1 m0 m1 s0 s1 c0 c1 mbps retr
    local pa=${CUR_PIDS[0]} pb=${CUR_PIDS[1]} me=$BASHPID
    # The client's CPU: this (sub)shell's reaped children's time (field cutime +
    # cstime), which grows by the client's once it is reaped; the daemons
    # are only reaped later, when they are stopped.
    c0=$(child_ticks "$me") s0=$(ticks "$SERVER_PID")
    a0=$(ticks "$pa") b0=$(ticks "$pb") m0=$(busy_ticks) t0=$EPOCHREALTIME
    out=$(ip netns exec "$NS_A" timeout $((DURATION + 30)) \
        iperf3 -c "$OVER_B" -p "$IPERF_PORT" -t "$DURATION" -f m $rev 2>&1)
    local rc=$?
    t1=$EPOCHREALTIME a1=$(ticks "$pa") b1=$(ticks "$pb") m1=$(busy_ticks)
    s1=$(ticks "$SERVER_PID") c1=$(child_ticks "$me")
    if ((rc != 0)); then
        echo "   iperf3 failed (exit $rc):" >&2
        tail -n 5 <<<"$out" | sed 's/^/   | /' >&2
        return 1
    fi
    mbps=$(awk '/receiver$/ && /bits\/sec/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i-1)} END {print v}' <<<"$out")
    retr=$(awk '/sender$/ && /bits\/sec/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i+1)} END {print (v ~ /^[0-9]+$/) ? v : "-"}' <<<"$out")
    [[ -n $mbps ]] || {
        echo "   could not parse iperf3 output" >&2
        return 1
    }
    awk -v mbps="$mbps" -v retr="$retr" -v a="$((a1 - a0))" -v b="$((b1 - b0))" \
        -v cl="$((c1 - c0))" -v sv="$((s1 - s0))" -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
        -v m0="$m0" -v m1="$m1" -v n="$NPROC" 'BEGIN {
            w = t1 - t0; split(m0, x, " "); split(m1, y, " ")
            busy = y[1] - x[1]; idle = y[2] - x[2]
            other = (y[3] - x[3]) - (a + b + cl + sv); if (other < 0) other = 0
            printf "%s %s %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", mbps, retr,
                100 * a / hz / w, 100 * b / hz / w, 100 * cl / hz / w, 100 * sv / hz / w,
                (busy + idle > 0) ? 100 * busy / (busy + idle) : 0,
                100 * other / hz / w, 100 * (y[4] - x[4]) / hz / w
        }'
}

declare -A NAMES KIND_A KIND_B RESULTS CPU FAILS
NAMES=([a]="wireguard-go <-> wireguard-go" [b]="geoedge <-> wireguard-go" [c]="geoedge <-> geoedge"
    [d]="baseline <-> baseline" [f]="geoedge <-> geoedge, B flooded"
    [g]="baseline <-> baseline, B flooded")
KIND_A=([a]=wggo [b]=geoedge [c]=geoedge [d]=baseline [f]=geoedge [g]=baseline)
KIND_B=([a]=wggo [b]=wggo [c]=geoedge [d]=baseline [f]=geoedge [g]=baseline)

# A round trip from A to B's overlay address: a ping when ping is installed,
# otherwise a TCP connection to a closed port that B's kernel refuses (the
# RST proves the round trip just as well).
if command -v ping >/dev/null 2>&1; then
    probe() { ip netns exec "$NS_A" ping -c 1 -W 1 -q "$OVER_B" >/dev/null 2>&1; }
else
    probe() {
        local out
        out=$(ip netns exec "$NS_A" timeout 1 bash -c "exec 3<>/dev/tcp/$OVER_B/9" 2>&1)
        [[ $out == *"Connection refused"* ]]
    }
fi

# The machine's busy share of all cores over 1 s, in percent.
busy_share() {
    local m0 m1
    m0=$(busy_ticks)
    sleep 1
    m1=$(busy_ticks)
    awk -v m0="$m0" -v m1="$m1" 'BEGIN { split(m0, x, " "); split(m1, y, " ")
        b = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f\n", (b + i > 0) ? 100 * b / (b + i) : 0 }'
}

# These machines are shared: before each configuration, waits (up to
# IDLE_WAIT seconds) until the machine is idle (under 15% busy for 3 s in a
# row); past that, goes on and counts the configuration as contended.
wait_idle() {
    local start=$SECONDS quiet=0 said=0 share
    while ((quiet < 3)); do
        share=$(busy_share)
        if ((share < 15)); then
            quiet=$((quiet + 1))
            continue
        fi
        quiet=0
        if ((!said)); then
            echo "   waiting for the machine to be idle (now ${share}% busy; up to ${IDLE_WAIT} s):" >&2
            # the busiest processes over the last half second (top's 2nd frame)
            top -b -n 2 -d 0.5 -o %CPU 2>/dev/null | awk '/^top -/ {f++} f == 2 && /^ *PID/ {p = 1; next}
                p && n < 3 {print; n++}' | sed 's/^/   | /' >&2
            said=1
        fi
        if ((SECONDS - start >= IDLE_WAIT)); then
            echo "   WARNING: still ${share}% busy after ${IDLE_WAIT} s; measuring anyway" >&2
            BUSY_STARTS=$((BUSY_STARTS + 1))
            return
        fi
    done
    ((said)) && echo "   idle after $((SECONDS - start)) s" >&2
    return 0
}

# One configuration, one round: set up, handshake, both directions, tear down.
run_config() {
    local cfg=$1 round=$2 ia ib i ok=0 dir rev line spid f0 ft0
    ia=gw${cfg}${round}a$ID
    ib=gw${cfg}${round}b$ID
    echo "-- round $round/$REPS, ($cfg) ${NAMES[$cfg]}: A=${KIND_A[$cfg]} $ia, B=${KIND_B[$cfg]} $ib"
    wait_idle
    if ! start_end A "${KIND_A[$cfg]}" "$ia" || ! start_end B "${KIND_B[$cfg]}" "$ib"; then
        show_logs
        stop_config
        FAILS[$cfg]+="round $round: start failed; "
        return 1
    fi
    # handshake: probe the far overlay address until it answers (up to ~20 s)
    for ((i = 0; i < 20; i++)); do
        if probe; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if ((!ok)); then
        echo "   no reply from $OVER_B through the tunnel in 20 s" >&2
        ip netns exec "$NS_A" wg show "$ia" >&2 2>&1
        ip netns exec "$NS_B" wg show "$ib" >&2 2>&1
        show_logs
        stop_config
        FAILS[$cfg]+="round $round: no handshake/ping; "
        return 1
    fi
    for ((i = 0; i < 3; i++)); do probe; done
    local fpid=
    if [[ $cfg == [fg] ]]; then
        # Until stopped (it prints what it did on SIGTERM); 2 s to take
        # the cookie and settle before the first measurement.
        ip netns exec "$NS_A" nice -n "$FLOOD_NICE" "$FLOODER" "$FLOOD_FROM:0" "$UNDER_B:$PORT" \
            "$PUB_B" "$FLOOD_RATE" 3600 >"$WORK/flood-$round.log" 2>&1 &
        fpid=$!
        PIDS+=("$fpid")
        sleep 2
        f0=$(ticks "$fpid") ft0=$EPOCHREALTIME
    fi
    ip netns exec "$NS_B" iperf3 -s -B "$OVER_B" -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
    spid=$!
    SERVER_PID=$spid
    PIDS+=("$spid")
    for ((i = 0; i < 50; i++)); do
        ip netns exec "$NS_B" ss -Hltn "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    for dir in fwd rev; do
        [[ $dir == rev ]] && rev=-R || rev=
        if line=$(measure "$rev"); then
            CPU[$cfg,$dir]+="$line;"
            # shellcheck disable=SC2086
            set -- $line
            local mark=
            if (($8 > OTHER_MAX)); then
                mark='*'
                CONTENDED=$((CONTENDED + 1))
            fi
            RESULTS[$cfg,$dir]+="$1$mark "
            printf '   %-4s %8s Mbit/s%-1s retr %-6s  CPU%%: A-end %s, B-end %s, iperf3 client %s, server %s, softirq %s, others %s; machine %s%% of %s cores\n' \
                "$([[ $dir == fwd ]] && echo "A->B" || echo "B->A")" "$1" "$mark" "$2" "$3" "$4" "$5" "$6" "$9" "$8" "$7" "$NPROC"
        else
            FAILS[$cfg]+="round $round $dir: iperf3 failed; "
            show_logs
        fi
        sleep 1
    done
    stop_pid "$spid"
    if [[ -n $fpid ]]; then
        local fcpu
        fcpu=$(awk -v t="$(($(ticks "$fpid") - f0))" -v hz="$HZ" -v a="$ft0" -v b="$EPOCHREALTIME" \
            'BEGIN {printf "%.0f", 100 * t / hz / (b - a)}')
        stop_pid "$fpid"
        echo "   flooder: $(tail -n 1 "$WORK/flood-$round.log"); CPU ${fcpu}% of a core (nice $FLOOD_NICE) while measured"
    fi
    stop_config
}

median() { # numbers on stdin, one a line
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== $REPS rounds of$(printf ' (%s)' "${CONFIGS[@]}"), iperf3 -t $DURATION single stream, both directions"
for ((round = 1; round <= REPS; round++)); do
    for cfg in "${CONFIGS[@]}"; do
        run_config "$cfg" "$round"
    done
done

# --- report ------------------------------------------------------------------
declare -A MED
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "== machine"
echo "nproc $NPROC; CPU $cpu_model; $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)"
echo "kernel $(uname -r); $(wireguard-go --version 2>&1 | head -n 1); $(iperf3 --version 2>&1 | head -n 1 | sed 's/ (cJSON.*//')"
echo "TCP congestion control in the namespaces $(ip netns exec "$NS_A" sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo '?'); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "geoedge $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'); $(wg --version 2>&1 | head -n 1 | sed 's/ - https.*//')"
[[ -n $BASELINE ]] && echo "baseline (d): $BASELINE"
echo
echo "== results: iperf3 single TCP stream, $DURATION s, Mbit/s, median of $REPS (samples in brackets)"
echo "A runs the iperf3 client (10.80.0.1), B the server (10.80.0.2); B->A is iperf3 -R"
echo
printf '| %-34s | %-24s | %-24s |\n' "A <-> B" "A->B Mbit/s" "B->A Mbit/s"
printf '|%s|%s|%s|\n' "------------------------------------" "--------------------------" "--------------------------"
for cfg in "${CONFIGS[@]}"; do
    row=()
    for dir in fwd rev; do
        samples=${RESULTS[$cfg,$dir]:-}
        if [[ -z $samples ]]; then
            MED[$cfg,$dir]=-
            row+=("failed")
        else
            MED[$cfg,$dir]=$(tr -d '*' <<<"$samples" | tr ' ' '\n' | grep . | median)
            row+=("$(printf '%s [%s]' "$(printf '%.0f' "${MED[$cfg,$dir]}")" "$(echo $samples | sed 's/ /, /g')")")
        fi
    done
    printf '| (%s) %-30s | %-24s | %-24s |\n' "$cfg" "${NAMES[$cfg]}" "${row[0]}" "${row[1]}"
done
ratio() { # dir over under
    [[ ${MED[$2,$1]:--} == - || ${MED[$3,$1]:--} == - ]] && {
        echo "-"
        return
    }
    awk -v c="${MED[$2,$1]}" -v a="${MED[$3,$1]}" 'BEGIN {printf "%.2f", c / a}'
}
printf '| %-34s | %-24s | %-24s |\n' "ratio (c)/(a)" "$(ratio fwd c a)" "$(ratio rev c a)"
if [[ -n ${MED[f,fwd]:-} ]]; then
    printf '| %-34s | %-24s | %-24s |\n' "ratio (f)/(c), flooded over unloaded" "$(ratio fwd f c)" "$(ratio rev f c)"
fi
if [[ -n ${MED[g,fwd]:-} ]]; then
    printf '| %-34s | %-24s | %-24s |\n' "ratio (g)/(d), baseline flooded" "$(ratio fwd g d)" "$(ratio rev g d)"
fi
if [[ -n ${MED[d,fwd]:-} ]]; then
    printf '| %-34s | %-24s | %-24s |\n' "ratio (c)/(d), geoedge over baseline" "$(ratio fwd c d)" "$(ratio rev c d)"
fi
echo
echo "== CPU, mean over the rounds, % of one core (A-end, B-end = the WireGuard process on each side)"
printf '| %-34s | %-4s | %6s | %6s | %7s | %7s | %7s | %6s | %8s | %6s |\n' "A <-> B" "dir" "A-end" "B-end" "iperf3c" "iperf3s" "softirq" "others" "machine" "retr"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "------" "-------:" "-------:" "--------:" "--------:" "--------:" "-------:" "---------:" "-------:"
for cfg in "${CONFIGS[@]}"; do
    for dir in fwd rev; do
        [[ -n ${CPU[$cfg,$dir]:-} ]] || continue
        tr ';' '\n' <<<"${CPU[$cfg,$dir]}" | grep . | awk -v name="($cfg) ${NAMES[$cfg]}" \
            -v d="$([[ $dir == fwd ]] && echo "A->B" || echo "B->A")" '
            {n++; for (i = 3; i <= 9; i++) s[i] += $i; if ($2 ~ /^[0-9]+$/) {r += $2; rn++}}
            END {printf "| %-34s | %-4s | %6.0f | %6.0f | %7.0f | %7.0f | %7.0f | %6.0f | %7.0f%% | %6s |\n",
                name, d, s[3]/n, s[4]/n, s[5]/n, s[6]/n, s[9]/n, s[8]/n, s[7]/n, rn ? sprintf("%.0f", r/rn) : "-"}'
    done
done
echo "(softirq: kernel softirq time, network receive mostly; others: every other process and"
echo " kernel thread; machine: busy share of all $NPROC cores; retr: TCP retransmits per run, mean)"

((BUSY_STARTS)) && echo "WARNING: $BUSY_STARTS configuration(s) started while other work loaded the machine: figures may be low" >&2
((CONTENDED)) && echo "WARNING: $CONTENDED sample(s) marked * ran while other processes used more than $OTHER_MAX% of a core" >&2
status=0
for cfg in "${CONFIGS[@]}"; do
    if [[ -n ${FAILS[$cfg]:-} ]]; then
        echo "FAILED ($cfg) ${NAMES[$cfg]}: ${FAILS[$cfg]}" >&2
        status=1
    fi
done
exit $status
