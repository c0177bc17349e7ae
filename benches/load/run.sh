#!/usr/bin/env bash
# Load harness (issue 6): geoedge against HAProxy (mode tcp) and nginx
# `stream` on the same machine, in the same run, as one command:
#
#   sudo benches/load/run.sh
#
# Builds geoedge in release (or takes GEOEDGE=/path/to/geoedge), starts the
# backends on 127.0.0.1 (nginx answering `return 200 "hello world\n"`, an
# iperf3 server, and for the idle test a sink that accepts and holds
# connections) and measures, for each worker count (WORKERS, default "1 2")
# and round (REPS), alternating the proxies in every round: direct (no
# proxy), geoedge, HAProxy `mode tcp` (`nbthread N`) and nginx `stream`
# (`worker_processes N`), each started afresh with its own configuration in
# a temporary directory:
#   idle  resident memory (VmRSS above the proxy's own baseline) and kernel
#         slab memory per idle proxied connection, IDLE_CONNS connections
#         that send nothing (benches/load/idle.py);
#   ka    keep-alive requests/s and p50/p99 latency: wrk, CONNS (100)
#         connections, DURATION (10) s;
#   conn  new connections/s: the same with `Connection: close`;
#   bulk  iperf3 throughput, one and four streams, both directions,
#         BULK_DURATION (4) s each;
# with the proxy's CPU seconds per 100,000 requests read from /proc around
# every wrk run. With BASELINE=/path/to/an/older/geoedge, one more proxy,
# `baseline`, is that binary started exactly like geoedge (same command
# line, its own copy of the same routing.db) and measured in the same rounds,
# so that one run compares a change with the build before it (the two swap
# places in even rounds, so that neither always runs first). Then, with
# TESTS containing wg, the WireGuard path: two network namespaces (edge and
# POP) joined by a veth pair, geoedge `wg up` and an iperf3 server in the
# POP, geoedge `run` with the backhaul in the edge; iperf3 through geoedge
# over WireGuard against geoedge over the bare veth, the veth with no proxy,
# and WireGuard with no proxy.
#
# Issue 20 (none of this is in the default run): three more proxies, each
# the same geoedge binary with its own copy of the routing.db and one
# setting more, measured in the same rounds as geoedge (in even rounds the
# geoedge family runs in reverse order, so that none always runs first),
# with every test but sni:
#   limits   --client-max-connections 1000 --client-rate 1000000/1s
#            (LIMITS_ARGS): limits that never refuse the benchmark's single
#            client but are checked and counted on every connection;
#   logtext  --access-log FILE --access-log-format text,
#   logjson  --access-log FILE --access-log-format json: FILE in LOG_DIR
#            (default: the temporary directory; the report names its
#            filesystem), emptied after each configuration; the lines
#            written are counted against the connections made;
# and a table of each against geoedge, round by round, with the issue's
# targets (limits: keep-alive within the spread, new connections at most 3%
# slower; access log: new connections at most 5% slower). And the test
#   sni      TLS new connections/s: wrk over https (the backend nginx with
#            `ssl`, ECDSA P-256, no session cache or tickets, so every
#            connection is a full handshake) with `Connection: close`,
#            through geoedge's --sni-listen (routing.db sni_routes:
#            localhost -> app tlsa; the listener's default app tlsb is a
#            backend answering 421, so a misrouted request counts as an
#            error), HAProxy (req.ssl_sni) and nginx stream (ssl_preread
#            and a map), direct: wrk to the TLS backend itself. Not for
#            the baseline or the variants above.
# e.g. sudo TESTS="ka conn sni" WORKERS=1 REPS=4 \
#          PROXIES="direct geoedge limits logtext logjson haproxy nginx" benches/load/run.sh
#
# Issue 22, proxy-bound: with CAP=0.5 (cores; off by default) every proxy
# under test gets the same CPU cap while the client and the backends keep
# their cores, so that the proxy, not the client, is the bottleneck (pinned,
# uncapped runs measure the client: wrk's core is saturated first). The
# harness creates one cgroup for the run and starts each proxy inside it,
# so that every process and thread it starts (nginx's workers, geoedge's
# worker threads) is capped; it checks every thread is there before
# measuring, and removes the cgroup at exit, on failure and on Ctrl-C:
#   cgroup v1 (when /sys/fs/cgroup/cpu/cpu.cfs_quota_us exists)
#     /sys/fs/cgroup/cpu/geoedge-load-PID, cpu.cfs_period_us 100000,
#     cpu.cfs_quota_us CAP × 100000;
#   cgroup v2 (else, when cgroup.controllers lists cpu)
#     /sys/fs/cgroup/geoedge-load-PID, cpu.max "CAP×100000 100000" (cpu
#     enabled in the root's cgroup.subtree_control).
# Capped proxies run at normal priority even with PRIO=rr (the CFS quota
# does not hold back real-time tasks); client and backends keep PRIO's. The
# proxy `reference` is the reference relay (benches/load/reference-relay.c,
# or REFERENCE_SRC; built with `cc -O2` into the temporary directory): the
# simplest single-threaded edge-triggered epoll relay, no runtime, no
# routing, one process per listener, the userspace limit. With CAP,
# PROXIES defaults to "geoedge reference haproxy nginx" (reference may be
# named in any run). The run then prints first a section "Proxy-bound
# (issue 22, item 1)": requests/s and proxy CPU seconds per 100,000
# requests, (1) user + system of the proxy's processes from /proc/PID/stat
# and (2) that plus the hardirq + softirq time of the proxy's CPU from
# /proc/stat during the sample (one pinned worker only: loopback's receive
# work for what the proxy sends runs as softirq on the proxy's CPU, not
# charged to the proxy's own time nor held by the cap; softirq work of
# what the client and backends send runs on their CPU and is not counted;
# nor is that time, less ksoftirqd's, "other processes" for the contention
# mark), the share of throttled periods, and ratios to the best of HAProxy and
# nginx and to the reference relay. The proxies' order rotates by one
# place each round (instead of the geoedge family's reversal). e.g.
#   sudo CAP=0.5 PRIO=rr TESTS="ka conn" WORKERS=1 REPS=6 benches/load/run.sh
#
# Pinning (2 cores): with one worker, wrk/iperf3 run on CPU 0 and the proxy
# on CPU 1; the backends share CPU 0 with the client (direct: the backend on
# CPU 1 instead). With two workers nothing is pinned and wrk runs 2 threads.
#
# It prints a markdown table per measurement with the medians, the samples
# and the ratios geoedge/HAProxy, geoedge/nginx and geoedge/direct (and
# geoedge/baseline with BASELINE), and a table of the issue's targets, each
# met or not; with BASELINE also a table of geoedge against the baseline,
# every median beside the ratio round by round and the run-to-run spread of
# its samples. After a full run
# (default TESTS, PROXIES and WORKERS, no BASELINE) it writes them, with the
# machine, versions and settings, as the section "Load: geoedge against
# HAProxy and nginx stream (issue 6)" of docs/benchmarks.md (replacing that
# section if present).
# DOC=0 never writes, DOC=1 always does.
#
# Needs: root (sysctls, open-file limit, network namespaces, TUN), and
#   apt-get install -y --no-install-recommends haproxy nginx libnginx-mod-stream \
#       wrk iperf3 sqlite3 python3 iproute2 util-linux procps
# plus cargo unless GEOEDGE is given.
#
# Takes about 19 minutes with the defaults on a 2-core machine (plus the
# build, and any time spent waiting for the machine to be idle).
#
# Environment:
#   TESTS        "idle ka conn bulk wg" (any subset), and sni (issue 20)
#   PROXIES      "direct geoedge haproxy nginx" (any subset; ratios need geoedge);
#                with CAP "geoedge reference haproxy nginx"; reference (the
#                reference relay) may be added to any run, not to sni
#                with BASELINE, baseline is added after geoedge when missing;
#                limits, logtext and logjson (issue 20) need geoedge
#   LIMITS_ARGS  the limits proxy's extra settings (see above)
#   LOG_DIR      where logtext and logjson write their access log
#   WORKERS      "1 2"
#   REPS         3 rounds; DURATION 10 s (wrk); BULK_DURATION 4 s (iperf3)
#   CONNS        100 wrk connections; IDLE_CONNS 10000, or fewer when the
#                open-file limit cannot be raised (a proxy needs two
#                descriptors per proxied connection)
#   IDLE_WAIT    300: seconds to wait for an idle machine before each
#                configuration; a sample during which other processes used
#                more than 25% of a core, or the hypervisor took more than 5%
#                of one (steal time), is marked *, and the medians leave
#                marked samples out unless all of a measurement's are
#   PORT_BASE    27400: ports PORT_BASE..PORT_BASE+39 on 127.0.0.1 (+49 with
#                BASELINE, +69 with limits, logtext, logjson or sni, +79 with
#                reference, whose ports are +70..72)
#   GEOEDGE      a geoedge binary to use instead of building one
#   GEOEDGE_LABEL what to call that build in the report (default: git describe)
#   BASELINE     an older geoedge binary to measure beside GEOEDGE, as the
#                proxy `baseline` (ports PORT_BASE+40..42); it must accept the
#                same command line. The wg test uses GEOEDGE only
#   BASELINE_LABEL what to call it (default: git describe in the binary's
#                directory, e.g. a worktree's target/release, else "baseline")
#   GEOEDGE_*    geoedge's own settings (GEOEDGE_SPLICE=off, ...) reach it
#                (and the baseline) from the environment and are shown with its command line
#   DOC          auto (default: only after a full run without BASELINE), 1 or
#                0: write docs/benchmarks.md
#   PIN          1 (default) or 0: no pinning at all
#   BACKEND_WITH client (default) or proxy: the CPU the backends share with
#                one worker
#   CAP          cores (e.g. 0.5; unset: off): the proxy-bound mode (issue 22)
#   REFERENCE_SRC the reference relay's C source (benches/load/reference-relay.c)
#   WRK_KEEP     a directory: every wrk output is copied into it
#   PRIO         normal (default) or rr: every process measured runs under
#                SCHED_RR (chrt -r), proxies, wrk and iperf3 at priority 50,
#                the backends at 51 (the iperf3 server at 50, with its
#                client), so that other work on a shared machine
#                (builds at normal or lower priority) cannot keep a CPU that
#                one of them waits for, and a client that busy-waits (wrk
#                polls while its TLS handshake waits for the server) cannot
#                keep the backend that shares its CPU from running; samples
#                are still marked when others use CPU
#
# Everything it starts (processes, namespaces, veth and TUN devices, its
# temporary directory) is removed on exit, on failure and on Ctrl-C, and the
# sysctls it raises are restored. Traffic stays on loopback and inside the
# namespaces it creates.
set -uo pipefail

REPS=${REPS:-3}
DURATION=${DURATION:-10}
BULK_DURATION=${BULK_DURATION:-4}
CONNS=${CONNS:-100}
IDLE_WAIT=${IDLE_WAIT:-300}
PORT_BASE=${PORT_BASE:-27400}
DOC=${DOC:-auto}
DEFAULT_TESTS="idle ka conn bulk wg"
CAP=${CAP:-}
DEFAULT_PROXIES="direct geoedge haproxy nginx"
[[ -n $CAP ]] && DEFAULT_PROXIES="geoedge reference haproxy nginx"
DEFAULT_WORKERS="1 2"
read -ra TESTS <<<"${TESTS:-$DEFAULT_TESTS}"
read -ra PROXIES <<<"${PROXIES:-$DEFAULT_PROXIES}"
read -ra WORKERS <<<"${WORKERS:-$DEFAULT_WORKERS}"
BASELINE=${BASELINE:-}
read -ra LIMITS_ARGS <<<"${LIMITS_ARGS:---client-max-connections 1000 --client-rate 1000000/1s}"
LOG_DIR=${LOG_DIR:-}
VARIANTS=(limits logtext logjson) # geoedge with one setting more (issue 20)
OTHER_MAX=25 # % of one core used by other processes that marks a sample as contended
STEAL_MAX=5 # % of one core taken by the hypervisor (steal time) that marks it too
CLIENT_CPU=0
PROXY_CPU=1

die() {
    echo "run.sh: $*" >&2
    exit 1
}
has() { # word list...: is word in the list?
    local w=$1 x
    shift
    for x in "$@"; do [[ $x == "$w" ]] && return 0; done
    return 1
}

for v in REPS DURATION BULK_DURATION CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a number of seconds"
PORT_SPAN=40 # ports PORT_BASE..PORT_BASE+PORT_SPAN-1; the baseline's are +40..42
[[ -n $BASELINE ]] && PORT_SPAN=50
for v in "${VARIANTS[@]}" sni; do has "$v" "${PROXIES[@]}" "${TESTS[@]}" && PORT_SPAN=70; done
has reference "${PROXIES[@]}" && PORT_SPAN=80 # the reference relay's ports are +70..72
[[ $PORT_BASE =~ ^[0-9]+$ ]] && ((PORT_BASE >= 1024 && PORT_BASE + PORT_SPAN < 32768)) ||
    die "PORT_BASE must leave PORT_BASE..PORT_BASE+$((PORT_SPAN - 1)) between 1024 and 32767 (below the ephemeral range)"
[[ $DOC == auto || $DOC == 0 || $DOC == 1 ]] || die "DOC takes auto, 0 or 1"
for t in "${TESTS[@]}"; do has "$t" idle ka conn bulk wg sni || die "TESTS takes idle, ka, conn, bulk, wg and sni"; done
for p in "${PROXIES[@]}"; do
    has "$p" direct geoedge baseline reference haproxy nginx "${VARIANTS[@]}" ||
        die "PROXIES takes direct, geoedge, baseline, reference, haproxy, nginx, limits, logtext and logjson"
    if has "$p" "${VARIANTS[@]}" && ! has geoedge "${PROXIES[@]}"; then
        die "the proxy $p is measured against geoedge: add geoedge to PROXIES"
    fi
done
if [[ -n $BASELINE ]]; then
    if ! has baseline "${PROXIES[@]}"; then # after geoedge, else last
        with=()
        for p in "${PROXIES[@]}"; do
            with+=("$p")
            [[ $p == geoedge ]] && with+=(baseline)
        done
        has baseline "${with[@]}" || with+=(baseline)
        PROXIES=("${with[@]}")
    fi
else
    has baseline "${PROXIES[@]}" && die "the proxy baseline needs BASELINE=/path/to/an/older/geoedge"
fi
for w in "${WORKERS[@]}"; do [[ $w =~ ^[1-9]$ ]] || die "WORKERS takes worker counts 1-9"; done
((${#TESTS[@]} && ${#PROXIES[@]} && ${#WORKERS[@]})) || die "TESTS, PROXIES and WORKERS must not be empty"
if [[ -n $CAP ]]; then
    [[ $CAP =~ ^[0-9]*\.?[0-9]+$ ]] && awk -v c="$CAP" 'BEGIN { exit !(c >= 0.01 && c <= 64) }' ||
        die "CAP takes a number of cores, 0.01 or more (e.g. 0.5)"
fi
REFERENCE_SRC=${REFERENCE_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/reference-relay.c}
if has reference "${PROXIES[@]}"; then
    [[ -f $REFERENCE_SRC ]] || die "REFERENCE_SRC=$REFERENCE_SRC: no such file (the reference relay's C source)"
    has sni "${TESTS[@]}" && echo "run.sh: the reference relay does not take part in the sni test" >&2
fi

[[ $EUID -eq 0 ]] || die "must run as root (it raises sysctls and the open-file limit, and creates network namespaces and TUN devices): sudo $0"

missing=()
for tool in haproxy nginx wrk iperf3 python3 sqlite3 ip ss taskset sysctl pgrep $(has sni "${TESTS[@]}" && echo openssl) \
    $(has reference "${PROXIES[@]}" && echo cc); do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]}; install with:
  apt-get install -y --no-install-recommends haproxy nginx libnginx-mod-stream wrk iperf3 sqlite3 python3 iproute2 util-linux procps"
fi
# nginx's stream module: built in, or a dynamic module to load
NGINX_V=$(nginx -V 2>&1)
STREAM_LOAD=
if [[ $NGINX_V == *--with-stream=dynamic* ]]; then
    mdir=$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$NGINX_V")
    mdir=${mdir:-/usr/lib/nginx/modules}
    [[ -f $mdir/ngx_stream_module.so ]] || die "nginx's stream module is missing ($mdir/ngx_stream_module.so); install with:
  apt-get install -y --no-install-recommends libnginx-mod-stream"
    STREAM_LOAD="load_module $mdir/ngx_stream_module.so;"
elif [[ $NGINX_V != *--with-stream* ]]; then
    die "this nginx has no stream module"
fi
if has wg "${TESTS[@]}"; then
    [[ -c /dev/net/tun ]] || die "/dev/net/tun is missing: the wg test needs TUN devices (leave wg out of TESTS)"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/benches/load
NPROC=$(nproc)
HZ=$(getconf CLK_TCK)
START_SECONDS=$SECONDS
PIN=${PIN:-1}
[[ $PIN == 0 || $PIN == 1 ]] || die "PIN takes 0 or 1"
((NPROC >= 2)) || PIN=0
BACKEND_WITH=${BACKEND_WITH:-client}
PRIO=${PRIO:-normal}
WRK_KEEP=${WRK_KEEP:-}
[[ -z $WRK_KEEP || -d $WRK_KEEP ]] || die "WRK_KEEP: $WRK_KEEP is not a directory"
RT=()
RT_BACKEND=()
case $PRIO in
normal) ;;
rr)
    command -v chrt >/dev/null 2>&1 || die "PRIO=rr needs chrt (util-linux)"
    RT=(chrt -r 50)
    RT_BACKEND=(chrt -r 51)
    ;;
*) die "PRIO takes normal or rr" ;;
esac
[[ $BACKEND_WITH == client || $BACKEND_WITH == proxy ]] || die "BACKEND_WITH takes client or proxy"

if [[ -n ${GEOEDGE:-} ]]; then
    [[ -x $GEOEDGE ]] || die "GEOEDGE=$GEOEDGE is not an executable"
    GEOEDGE=$(realpath "$GEOEDGE")
    GEOEDGE_FROM="$GEOEDGE"
else
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found in PATH (under sudo, try: sudo env \"PATH=\$PATH\" $0), or give GEOEDGE=/path/to/geoedge"
    echo "== building geoedge (cargo build --release)"
    (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
    tdir=${CARGO_TARGET_DIR:-target}
    [[ $tdir == /* ]] || tdir=$REPO/$tdir
    GEOEDGE=$tdir/release/geoedge
    [[ -x $GEOEDGE ]] || die "$GEOEDGE not found after the build"
    GEOEDGE_FROM="cargo build --release"
fi
# the commit built, "-modified" when geoedge's own sources differ from it
# GEOEDGE_LABEL names the build in the report; it is no setting of geoedge
# (which refuses an unknown GEOEDGE_* variable), so it is not passed on.
export -n GEOEDGE_LABEL 2>/dev/null || true
GEOEDGE_REV=${GEOEDGE_LABEL:-$(git -C "$REPO" describe --always 2>/dev/null || echo '?')}
if [[ -z ${GEOEDGE_LABEL:-} ]] &&
    [[ -n $(git -C "$REPO" status --porcelain -- src routing geoip wireguard Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    GEOEDGE_REV+=-modified
fi
# geoedge's worker threads: --workers when it has the flag, else its runtime
# starts one worker per CPU it may run on, so it is confined to N CPUs.
GE_HELP=$("$GEOEDGE" run --help 2>/dev/null)
if [[ $GE_HELP == *--workers* ]]; then
    GE_WORKERS_FLAG=1
else
    GE_WORKERS_FLAG=0
fi
# The baseline: an older build, started with geoedge's command line.
BL_HELP=
BASELINE_REV=
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable"
    BASELINE=$(realpath "$BASELINE")
    BL_HELP=$("$BASELINE" run --help 2>/dev/null)
    [[ -n $BL_HELP ]] || die "BASELINE=$BASELINE does not answer \`run --help\` like geoedge"
    for f in --workers --max-connections --health-check-interval; do
        [[ ($GE_HELP == *$f* && $BL_HELP == *$f*) || ($GE_HELP != *$f* && $BL_HELP != *$f*) ]] ||
            die "BASELINE=$BASELINE and $GEOEDGE differ in $f: they must accept the same command line"
    done
    BASELINE_REV=${BASELINE_LABEL:-$(git -C "$(dirname "$BASELINE")" describe --always 2>/dev/null || echo baseline)}
fi

# --- names and state -----------------------------------------------------------
ID=$$
WORK=
CG_DIR= # the CPU cap's cgroup (CAP)
PIDS=()         # every process started, by pid
SYSCTL_SAVED=() # "name value" to restore
NS_E=gel-e-$ID
NS_P=gel-p-$ID
NETNS_MADE=0
B_HTTP=$PORT_BASE
B_IPERF=$((PORT_BASE + 1))
B_SINK=$((PORT_BASE + 2))
B_TLS_A=$((PORT_BASE + 3)) # the TLS backend the sni test's requests must reach
B_TLS_B=$((PORT_BASE + 4)) # the TLS backend of names no route matches: answers 421
declare -A PORT_HTTP PORT_IPERF PORT_IDLE PORT_SNI LABEL
PORT_HTTP=([direct]=$B_HTTP [geoedge]=$((PORT_BASE + 10)) [haproxy]=$((PORT_BASE + 20)) [nginx]=$((PORT_BASE + 30)))
PORT_IPERF=([direct]=$B_IPERF [geoedge]=$((PORT_BASE + 11)) [haproxy]=$((PORT_BASE + 21)) [nginx]=$((PORT_BASE + 31)))
PORT_IDLE=([direct]=$B_SINK [geoedge]=$((PORT_BASE + 12)) [haproxy]=$((PORT_BASE + 22)) [nginx]=$((PORT_BASE + 32)))
LABEL=([direct]="direct" [geoedge]="geoedge" [haproxy]="HAProxy" [nginx]="nginx stream")
if [[ -n $BASELINE ]]; then
    PORT_HTTP[baseline]=$((PORT_BASE + 40))
    PORT_IPERF[baseline]=$((PORT_BASE + 41))
    PORT_IDLE[baseline]=$((PORT_BASE + 42))
    LABEL[baseline]="baseline"
    [[ $BASELINE_REV != baseline ]] && LABEL[baseline]+=" ($BASELINE_REV)"
fi
# issue 22: the reference relay, one process per listener
if has reference "${PROXIES[@]}"; then
    PORT_HTTP[reference]=$((PORT_BASE + 70))
    PORT_IPERF[reference]=$((PORT_BASE + 71))
    PORT_IDLE[reference]=$((PORT_BASE + 72))
fi
LABEL[reference]="reference relay"
# issue 20: geoedge with limits or the access log on, and the sni test's listeners
if has sni "${TESTS[@]}"; then
    PORT_SNI=([direct]=$B_TLS_A [geoedge]=$((PORT_BASE + 13)) [haproxy]=$((PORT_BASE + 23)) [nginx]=$((PORT_BASE + 33)))
fi
vi=0
for v in "${VARIANTS[@]}"; do
    if has "$v" "${PROXIES[@]}"; then
        PORT_HTTP[$v]=$((PORT_BASE + 50 + 4 * vi))
        PORT_IPERF[$v]=$((PORT_BASE + 51 + 4 * vi))
        PORT_IDLE[$v]=$((PORT_BASE + 52 + 4 * vi))
        has sni "${TESTS[@]}" && PORT_SNI[$v]=$((PORT_BASE + 53 + 4 * vi))
    fi
    vi=$((vi + 1))
done
LABEL[limits]="geoedge, limits on"
LABEL[logtext]="geoedge, access log text"
LABEL[logjson]="geoedge, access log JSON"
is_geoedge() { has "$1" geoedge baseline "${VARIANTS[@]}"; } # proxy: a geoedge process?
sni_for() { # proxy: does the sni test run through it?
    has sni "${TESTS[@]}" && has "$1" direct geoedge haproxy nginx
}

stop_pid() { # pid: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$? pid entry i
    trap - EXIT INT TERM HUP
    trap '' PIPE
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if ((NETNS_MADE)); then
        ip netns del "$NS_E" >/dev/null 2>&1
        ip netns del "$NS_P" >/dev/null 2>&1
        rm -f "/var/run/wireguard/glwe$ID.sock" "/var/run/wireguard/glwp$ID.sock"
    fi
    for entry in "${SYSCTL_SAVED[@]}"; do
        # shellcheck disable=SC2086
        set -- $entry
        sysctl -q -w "$1=$2" >/dev/null
    done
    # the CPU cap's cgroup: empty once its processes are stopped
    if [[ -n $CG_DIR && -d $CG_DIR ]]; then
        for ((i = 0; i < 50; i++)); do
            rmdir "$CG_DIR" 2>/dev/null && break
            sleep 0.1
        done
        [[ -d $CG_DIR ]] && echo "run.sh: could not remove the cgroup $CG_DIR" >&2
    fi
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    [[ -n ${LOG_DIR:-} ]] && rm -f "$LOG_DIR/access-logtext.log" "$LOG_DIR/access-logjson.log"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted, cleaning up" >&2; exit 130' INT
trap 'echo "run.sh: terminated, cleaning up" >&2; exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE # a closed output ends the run, with the cleanup

WORK=$(mktemp -d /tmp/geoedge-load.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user
LOG_DIR=${LOG_DIR:-$WORK}

# --- issue 22: the reference relay and the CPU cap ---------------------------------
REFERENCE=
if has reference "${PROXIES[@]}"; then
    REFERENCE=$WORK/reference-relay
    cc -O2 -o "$REFERENCE" "$REFERENCE_SRC" 2>"$WORK/reference-cc.log" ||
        die "cc -O2 $REFERENCE_SRC failed: $(tail -n 5 "$WORK/reference-cc.log")"
fi
# CAP: one cgroup for the run, with a CPU quota of CAP cores; each proxy is
# started inside it (its processes and every thread they start inherit it)
# and leaves it when stopped. cgroup v1 (the cpu controller's own hierarchy,
# cpu.cfs_quota_us / cpu.cfs_period_us) when the host has it, else cgroup v2
# (cpu.max, the cpu controller enabled in the root's cgroup.subtree_control).
CG_KIND=
CG_PERIOD=100000
CG_QUOTA=
CG_TEXT=
if [[ -n $CAP ]]; then
    CG_QUOTA=$(awk -v c="$CAP" -v p="$CG_PERIOD" 'BEGIN { printf "%d", c * p }')
    if [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
        CG_KIND=v1
        CG_DIR=/sys/fs/cgroup/cpu/geoedge-load-$ID
        mkdir "$CG_DIR" || die "could not create the cgroup $CG_DIR"
        echo "$CG_PERIOD" >"$CG_DIR/cpu.cfs_period_us" && echo "$CG_QUOTA" >"$CG_DIR/cpu.cfs_quota_us" ||
            die "could not set the CPU quota of $CG_DIR"
        CG_TEXT="cgroup v1 $CG_DIR: cpu.cfs_period_us $CG_PERIOD, cpu.cfs_quota_us $CG_QUOTA"
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
        CG_KIND=v2
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
            echo +cpu >/sys/fs/cgroup/cgroup.subtree_control || die "could not enable the cpu controller for child cgroups"
        CG_DIR=/sys/fs/cgroup/geoedge-load-$ID
        mkdir "$CG_DIR" || die "could not create the cgroup $CG_DIR"
        echo "$CG_QUOTA $CG_PERIOD" >"$CG_DIR/cpu.max" || die "could not set $CG_DIR/cpu.max"
        CG_TEXT="cgroup v2 $CG_DIR: cpu.max \"$CG_QUOTA $CG_PERIOD\""
    else
        die "CAP needs the cgroup CPU controller: /sys/fs/cgroup/cpu (v1) or cpu in /sys/fs/cgroup/cgroup.controllers (v2)"
    fi
fi
cg_throttled() { # the cap's cgroup: "periods throttled-periods throttled-seconds" so far
    [[ -n $CG_DIR ]] || {
        echo "0 0 0"
        return
    }
    awk -v kind="$CG_KIND" '$1 == "nr_periods" {n = $2} $1 == "nr_throttled" {t = $2}
        $1 == "throttled_time" {s = $2 / 1e9} $1 == "throttled_usec" {s = $2 / 1e6}
        END {printf "%d %d %.3f\n", n, t, s}' "$CG_DIR/cpu.stat"
}
cg_check() { # pids...: move any thread not yet in the cap's cgroup there; fails when one cannot be
    local pid tid ok=0
    for pid in "$@"; do
        for tid in /proc/"$pid"/task/*; do
            tid=${tid##*/}
            grep -q "geoedge-load-$ID\$" "/proc/$pid/task/$tid/cgroup" 2>/dev/null && continue
            if [[ $CG_KIND == v1 ]]; then
                echo "$tid" >"$CG_DIR/tasks" 2>/dev/null || ok=1
            else
                echo "$pid" >"$CG_DIR/cgroup.procs" 2>/dev/null || ok=1
            fi
        done
    done
    return $ok
}
if has logtext "${PROXIES[@]}" || has logjson "${PROXIES[@]}"; then
    [[ -d $LOG_DIR && -w $LOG_DIR ]] || die "LOG_DIR=$LOG_DIR is not a writable directory"
    LOG_DIR=$(realpath "$LOG_DIR")
    LOG_FS=$(findmnt -n -o SOURCE,FSTYPE -T "$LOG_DIR" 2>/dev/null | awk '{print $1 " (" $2 ")"}')
fi

# --- limits and sysctls ----------------------------------------------------------
raise_sysctl() { # name value: raise to at least value, restore at exit
    local cur
    cur=$(sysctl -n "$1" 2>/dev/null) || return 0
    if ((cur < $2)); then
        SYSCTL_SAVED+=("$1 $cur")
        sysctl -q -w "$1=$2" >/dev/null || echo "   could not set $1=$2" >&2
    fi
}
raise_sysctl net.core.somaxconn 65535
raise_sysctl net.ipv4.tcp_max_syn_backlog 65535
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
# A proxy holds two descriptors per proxied connection, plus its own.
IDLE_MAX=$(((NOFILE - 200) / 2))
IDLE_CONNS=${IDLE_CONNS:-10000}
[[ $IDLE_CONNS =~ ^[1-9][0-9]*$ ]] || die "IDLE_CONNS must be a positive integer"
IDLE_NOTE=
if ((IDLE_CONNS > IDLE_MAX)); then
    IDLE_NOTE="$IDLE_CONNS idle connections need more open files than this machine allows (ulimit -n $NOFILE, hard limit $(ulimit -Hn)); using $IDLE_MAX"
    echo "   NOTE: $IDLE_NOTE" >&2
    IDLE_CONNS=$IDLE_MAX
fi
MAXCONN=$(((NOFILE - 100) / 2))

for port in "$B_HTTP" "$B_IPERF" "$B_SINK" "${PORT_HTTP[@]}" "${PORT_IPERF[@]}" "${PORT_IDLE[@]}" \
    $(has sni "${TESTS[@]}" && echo "$B_TLS_B ${PORT_SNI[*]}"); do
    if [[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null) ]]; then
        die "port $port on this host is in use; choose another PORT_BASE"
    fi
done

# --- CPU accounting --------------------------------------------------------------
ticks() { # pids...: user+system ticks, summed (0 for those gone)
    local pid stat sum=0 f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        read -ra f <<<"$stat"
        # after "(comm) ": state is f[0], utime f[11], stime f[12]
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
child_ticks() { # this shell's reaped children: cutime + cstime
    local stat f
    stat=$(<"/proc/$$/stat")
    stat=${stat##*) }
    read -ra f <<<"$stat"
    echo $((f[13] + f[14]))
}
machine_ticks() { # busy (user nice system irq softirq), idle (idle iowait), steal
    awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6, $9}' /proc/stat
}
proxy_cpu_irq_ticks() { # hardirq + softirq ticks of the proxy's CPU (/proc/stat cpuN: irq, softirq)
    awk -v c="cpu$PROXY_CPU" '$1 == c {print $7 + $8}' /proc/stat
}
ksoftirqd_pids() { pgrep -x 'ksoftirqd/[0-9]+' | tr '\n' ' '; }
KSOFT=$(ksoftirqd_pids)

busy_share() { # the machine's busy share of all cores over 1 s, in percent
    local m0 m1
    m0=$(machine_ticks)
    sleep 1
    m1=$(machine_ticks)
    awk -v m0="$m0" -v m1="$m1" 'BEGIN { split(m0, x, " "); split(m1, y, " ")
        b = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f\n", (b + i > 0) ? 100 * b / (b + i) : 0 }'
}

BUSY_STARTS=0
CONTENDED=0
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

# Around one sample: the proxy's, the backends', the client's and everyone
# else's CPU. sample_begin, run the client in this shell (not in a command
# substitution, so that its time shows in this shell's children's time),
# sample_end; then S_PROXY (CPU seconds), S_PROXY_PCT, S_CLIENT_PCT,
# S_BACKEND_PCT, S_OTHER_PCT, S_STEAL_PCT (% of one core; steal: time the
# hypervisor gave the machine's CPUs to someone else) and S_MARK ("*" if
# contended: other processes or steal over OTHER_MAX or STEAL_MAX).
sample_begin() {
    SB_T=$EPOCHREALTIME
    SB_P=$(ticks "${PROXY_PIDS[@]}")
    SB_B=$(ticks "${BACKEND_PIDS[@]}")
    SB_C=$(child_ticks)
    # shellcheck disable=SC2086
    SB_K=$(ticks $KSOFT)
    SB_M=$(machine_ticks)
    if [[ -n $CAP ]]; then
        SB_SI=$(proxy_cpu_irq_ticks)
        SB_TH=$(cg_throttled)
    fi
}
sample_end() {
    local t p b c k m
    t=$EPOCHREALTIME
    m=$(machine_ticks)
    p=$(ticks "${PROXY_PIDS[@]}")
    b=$(ticks "${BACKEND_PIDS[@]}")
    # shellcheck disable=SC2086
    k=$(ticks $KSOFT)
    c=$(child_ticks)
    read -r S_PROXY S_PROXY_PCT S_CLIENT_PCT S_BACKEND_PCT S_OTHER_PCT S_STEAL_PCT < <(awk \
        -v w0="$SB_T" -v w1="$t" -v hz="$HZ" -v p="$((p - SB_P))" -v b="$((b - SB_B))" \
        -v c="$((c - SB_C))" -v k="$((k - SB_K))" -v m0="$SB_M" -v m1="$m" 'BEGIN {
            w = w1 - w0; if (w <= 0) w = 1e-9
            split(m0, x, " "); split(m1, y, " ")
            other = (y[1] - x[1]) - (p + b + c + k); if (other < 0) other = 0
            steal = y[3] - x[3]; if (steal < 0) steal = 0
            printf "%.3f %.0f %.0f %.0f %.0f %.0f\n", p / hz, 100 * p / hz / w, 100 * c / hz / w,
                100 * b / hz / w, 100 * other / hz / w, 100 * steal / hz / w }')
    # CAP: the proxy CPU's hardirq + softirq seconds (S_SOFT) and the share of
    # the cap's periods in which the proxy was throttled (S_THR, %); that
    # irq + softirq time (less ksoftirqd's, already counted) is not "others"
    if [[ -n $CAP ]]; then
        local si th
        si=$(proxy_cpu_irq_ticks)
        th=$(cg_throttled)
        read -r S_SOFT S_THR S_OTHER_PCT < <(awk -v si="$((si - SB_SI))" -v k="$((k - SB_K))" -v hz="$HZ" \
            -v t0="$SB_TH" -v t1="$th" -v o="$S_OTHER_PCT" -v w0="$SB_T" -v w1="$t" 'BEGIN {
            split(t0, x, " "); split(t1, y, " "); n = y[1] - x[1]; t = y[2] - x[2]
            w = w1 - w0; if (w <= 0) w = 1e-9
            extra = si - k; if (extra < 0) extra = 0
            o -= 100 * extra / hz / w; if (o < 0) o = 0
            printf "%.3f %.0f %.0f\n", si / hz, (n > 0) ? 100 * t / n : 0, o }')
    fi
    S_MARK=
    if ((S_OTHER_PCT > OTHER_MAX || S_STEAL_PCT > STEAL_MAX)); then
        S_MARK='*'
        CONTENDED=$((CONTENDED + 1))
    fi
}

# --- results ---------------------------------------------------------------------
declare -A R # "test|metric|workers|proxy" -> samples "v v* v"
FAILS=()
add() { R[$1]+="$2$3 "; }
median() { # numbers on stdin, one a line
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() { # key: median of its samples that are not marked *, or of all when every one is; or -
    local s=${R[$1]:-} clean
    [[ -n $s ]] || {
        echo -
        return
    }
    clean=$(tr ' ' '\n' <<<"$s" | grep . | grep -v '\*' || true)
    [[ -n $clean ]] || clean=$(tr -d '*' <<<"$s" | tr ' ' '\n' | grep .)
    median <<<"$clean"
}

# --- backends ----------------------------------------------------------------------
BACKEND_PIDS=()
pin_backends() { # cpu list: move the backend processes (all threads) there
    local pid
    ((PIN)) || return 0
    for pid in "${BACKEND_PIDS[@]}"; do
        taskset -a -p -c "$1" "$pid" >/dev/null 2>&1
    done
}
wait_listen() { # pid port [netns]: wait up to 10 s for a listener on 127.0.0.1/any:port
    local pid=$1 port=$2 ns=${3:-} i
    for ((i = 0; i < 100; i++)); do
        if [[ -n $ns ]]; then
            [[ -n $(ip netns exec "$ns" ss -Hltn "( sport = :$port )" 2>/dev/null) ]] && return 0
        else
            [[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null) ]] && return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
nginx_pids() { # master pid: master and workers
    echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"
}

# The sni test's TLS backends (inside the backend nginx's http block): a
# self-signed ECDSA P-256 certificate for localhost, no session cache and no
# tickets, so that every connection is a full handshake.
tls_backend_conf() {
    cat <<EOF
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$B_TLS_A ssl backlog=65535;
        location / {
            return 200 "hello world\n";
        }
    }
    server {
        listen 127.0.0.1:$B_TLS_B ssl backlog=65535;
        location / {
            return 421 "misrouted\n";
        }
    }
EOF
}

start_backends() {
    if has sni "${TESTS[@]}"; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=localhost -addext subjectAltName=DNS:localhost \
            -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1 || die "openssl req failed"
        chmod 644 "$WORK/tls.key"
    fi
    cat >"$WORK/backend.conf" <<EOF
# Backend: nginx answering every request with a small body.
worker_processes 1;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
    worker_connections $((NOFILE - 100));
}
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {
        listen 127.0.0.1:$B_HTTP backlog=65535;
        location / {
            return 200 "hello world\n";
        }
    }
$(has sni "${TESTS[@]}" && tls_backend_conf)
}
EOF
    nginx -t -q -p "$WORK/" -e "$WORK/backend-error.log" -c "$WORK/backend.conf" ||
        die "the backend nginx configuration is invalid"
    "${RT_BACKEND[@]}" nginx -p "$WORK/" -e "$WORK/backend-error.log" -c "$WORK/backend.conf" -g 'daemon off;' \
        >"$WORK/backend.out" 2>&1 &
    local npid=$!
    PIDS+=("$npid")
    wait_listen "$npid" "$B_HTTP" || die "the backend nginx did not start: $(tail -n 5 "$WORK/backend-error.log" 2>/dev/null)"
    if has sni "${TESTS[@]}"; then
        wait_listen "$npid" "$B_TLS_A" && wait_listen "$npid" "$B_TLS_B" ||
            die "the TLS backends did not start: $(tail -n 5 "$WORK/backend-error.log" 2>/dev/null)"
    fi
    # At the client's priority, not the backends': iperf3's server can spin
    # (seen after a failed four-stream reverse test), and at a higher
    # real-time priority than the client on the CPU they share it would
    # keep the client from ever running again.
    "${RT[@]}" iperf3 -s -B 127.0.0.1 -p "$B_IPERF" >"$WORK/iperf3-server.log" 2>&1 &
    local ipid=$!
    PIDS+=("$ipid")
    wait_listen "$ipid" "$B_IPERF" || die "the iperf3 server did not start: $(tail -n 5 "$WORK/iperf3-server.log")"
    sleep 0.2
    read -ra BACKEND_PIDS <<<"$(nginx_pids "$npid") $ipid"
}

# --- proxies -------------------------------------------------------------------------
PROXY_PIDS=()
PROXY_MAIN=
PROXY_LOG=

write_geoedge_db() { # [proxy]: geoedge.db (baseline: baseline.db, made by its own binary)
    local proxy=${1:-geoedge} bin=$GEOEDGE db
    [[ $proxy == baseline ]] && bin=$BASELINE
    db=$WORK/$proxy.db
    rm -f "$db"
    "$bin" db init --empty "$db" >/dev/null || die "$proxy db init failed"
    GE_SQL="INSERT INTO regions (id, name, latitude, longitude) VALUES ('eu', 'Europe', 50.11, 8.68);
INSERT INTO backends (id, app, region, wg_ip, port, soft_limit, hard_limit)
  VALUES ('http', 'http', 'eu', '127.0.0.1', $B_HTTP, 1000000, 1000000),
         ('iperf', 'iperf', 'eu', '127.0.0.1', $B_IPERF, 1000000, 1000000),
         ('idle', 'idle', 'eu', '127.0.0.1', $B_SINK, 1000000, 1000000);"
    if sni_for geoedge && [[ $proxy != baseline ]]; then
        GE_SQL+="
INSERT INTO backends (id, app, region, wg_ip, port, soft_limit, hard_limit)
  VALUES ('tlsa', 'tlsa', 'eu', '127.0.0.1', $B_TLS_A, 1000000, 1000000),
         ('tlsb', 'tlsb', 'eu', '127.0.0.1', $B_TLS_B, 1000000, 1000000);
INSERT INTO sni_routes (hostname, app) VALUES ('localhost', 'tlsa');"
    fi
    sqlite3 "$db" "$GE_SQL" || die "writing $db failed"
}

write_haproxy_conf() { # workers
    cat >"$WORK/haproxy-$1.cfg" <<EOF
global
    nbthread $1
    maxconn $MAXCONN

defaults
    mode tcp
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 300s
    timeout server 300s

listen http
    bind 127.0.0.1:${PORT_HTTP[haproxy]}
    server backend 127.0.0.1:$B_HTTP

listen iperf
    bind 127.0.0.1:${PORT_IPERF[haproxy]}
    server backend 127.0.0.1:$B_IPERF

listen idle
    bind 127.0.0.1:${PORT_IDLE[haproxy]}
    server backend 127.0.0.1:$B_SINK
EOF
    sni_for haproxy && cat >>"$WORK/haproxy-$1.cfg" <<EOF

frontend tls
    bind 127.0.0.1:${PORT_SNI[haproxy]}
    tcp-request inspect-delay 10s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend tlsa if { req.ssl_sni -i localhost }
    default_backend tlsb

backend tlsa
    server backend 127.0.0.1:$B_TLS_A

backend tlsb
    server backend 127.0.0.1:$B_TLS_B
EOF
    return 0
}

write_nginx_conf() { # workers
    cat >"$WORK/nginx-stream-$1.conf" <<EOF
$STREAM_LOAD
worker_processes $1;
pid $WORK/nginx-stream.pid;
error_log $WORK/nginx-stream-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
    worker_connections $((NOFILE - 100));
}
stream {
    server {
        listen 127.0.0.1:${PORT_HTTP[nginx]};
        proxy_pass 127.0.0.1:$B_HTTP;
    }
    server {
        listen 127.0.0.1:${PORT_IPERF[nginx]};
        proxy_pass 127.0.0.1:$B_IPERF;
    }
    server {
        listen 127.0.0.1:${PORT_IDLE[nginx]};
        proxy_pass 127.0.0.1:$B_SINK;
    }
$(sni_for nginx && nginx_sni_conf)
}
EOF
}
nginx_sni_conf() { # the sni test's server: the ClientHello's name picks the backend
    cat <<EOF
    map \$ssl_preread_server_name \$tls_backend {
        localhost 127.0.0.1:$B_TLS_A;
        default 127.0.0.1:$B_TLS_B;
    }
    server {
        listen 127.0.0.1:${PORT_SNI[nginx]};
        ssl_preread on;
        proxy_pass \$tls_backend;
    }
EOF
}

GE_NOTE=
geoedge_cmd() { # workers [proxy]: the command line of geoedge run (or of the baseline's)
    local w=$1 proxy=${2:-geoedge} bin=$GEOEDGE cpus
    [[ $proxy == baseline ]] && bin=$BASELINE
    GE_CMD=()
    if ((GE_WORKERS_FLAG)); then
        ((w == 1 && PIN)) && GE_CMD=(taskset -c "$PROXY_CPU")
    else
        # no --workers: its runtime starts one worker per CPU it may use
        if ((w == 1 && NPROC > 1)); then cpus=$PROXY_CPU; else cpus=0-$(((w < NPROC ? w : NPROC) - 1)); fi
        GE_CMD=(taskset -c "$cpus")
        GE_NOTE="this geoedge has no --workers: it ran under taskset on as many CPUs as workers (its runtime starts one worker per CPU)"
    fi
    GE_CMD+=("$bin" run --routing-db "$WORK/$proxy.db" --region eu --metrics-listen off
        --listen "http=127.0.0.1:${PORT_HTTP[$proxy]}"
        --listen "iperf=127.0.0.1:${PORT_IPERF[$proxy]}"
        --listen "idle=127.0.0.1:${PORT_IDLE[$proxy]}")
    ((GE_WORKERS_FLAG)) && GE_CMD+=(--workers "$w")
    # The same footing as HAProxy's configuration: its connection cap, and no
    # active health checks (a TCP check against the single-client iperf3
    # server can take the place of a test's control connection).
    [[ $GE_HELP == *--max-connections* ]] && GE_CMD+=(--max-connections "$MAXCONN")
    [[ $GE_HELP == *--health-check-interval* ]] && GE_CMD+=(--health-check-interval off)
    # issue 20: the same in every member of the geoedge family but the baseline
    sni_for geoedge && [[ $proxy != baseline ]] && GE_CMD+=(--sni-listen "tlsb=127.0.0.1:${PORT_SNI[$proxy]}")
    case $proxy in
    limits) GE_CMD+=("${LIMITS_ARGS[@]}") ;;
    logtext | logjson) GE_CMD+=(--access-log "$LOG_DIR/access-$proxy.log" --access-log-format "${proxy#log}") ;;
    esac
    return 0
}

# proxy workers: start it with its own configuration; PROXY_PIDS, PROXY_MAIN
start_proxy() {
    local proxy=$1 w=$2 pin=() pid rt=("${RT[@]}") cap=()
    PROXY_PIDS=()
    PROXY_MAIN=
    PROXY_LOG=
    [[ $proxy == direct ]] && return 0
    ((w == 1 && PIN)) && pin=(taskset -c "$PROXY_CPU")
    PROXY_LOG=$WORK/$proxy-$w.log
    if [[ -n $CAP ]]; then
        # Into the cap's cgroup before exec, so that every process and thread
        # of the proxy starts there. At normal priority: the CFS quota does not
        # hold back SCHED_RR tasks (and a real-time task cannot join a cgroup
        # without a real-time budget).
        rt=()
        # shellcheck disable=SC2016
        cap=(sh -c 'echo $$ >"$1" || exit 126; shift; exec "$@"' capped "$CG_DIR/cgroup.procs")
    fi
    case $proxy in
    reference)
        # one relay per listener, as the relay takes one backend
        local lp b
        for lp in "${PORT_HTTP[reference]}:$B_HTTP" "${PORT_IPERF[reference]}:$B_IPERF" "${PORT_IDLE[reference]}:$B_SINK"; do
            b=${lp#*:}
            lp=${lp%:*}
            "${rt[@]}" "${cap[@]}" "${pin[@]}" "$REFERENCE" "$lp" "$b" >>"$PROXY_LOG" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            PROXY_PIDS+=("$pid")
            [[ -z $PROXY_MAIN ]] && PROXY_MAIN=$pid
            if ! wait_listen "$pid" "$lp"; then
                echo "   the reference relay did not start listening on $lp:" >&2
                tail -n 10 "$PROXY_LOG" 2>/dev/null | sed 's/^/   | /' >&2
                stop_proxy
                return 1
            fi
        done
        cap_verify
        return
        ;;
    geoedge | baseline | limits | logtext | logjson)
        geoedge_cmd "$w" "$proxy"
        "${rt[@]}" "${cap[@]}" "${GE_CMD[@]}" >"$PROXY_LOG" 2>&1 &
        pid=$!
        ;;
    haproxy)
        haproxy -c -q -f "$WORK/haproxy-$w.cfg" >"$PROXY_LOG" 2>&1 || {
            echo "   the HAProxy configuration is invalid:" >&2
            sed 's/^/   | /' "$PROXY_LOG" >&2
            return 1
        }
        "${rt[@]}" "${cap[@]}" "${pin[@]}" haproxy -f "$WORK/haproxy-$w.cfg" -db >"$PROXY_LOG" 2>&1 &
        pid=$!
        ;;
    nginx)
        "${rt[@]}" "${cap[@]}" "${pin[@]}" nginx -p "$WORK/" -e "$WORK/nginx-stream-error.log" -c "$WORK/nginx-stream-$w.conf" \
            -g 'daemon off;' >"$PROXY_LOG" 2>&1 &
        pid=$!
        ;;
    esac
    PIDS+=("$pid")
    PROXY_MAIN=$pid
    local port
    local ports=("${PORT_HTTP[$proxy]}" "${PORT_IPERF[$proxy]}" "${PORT_IDLE[$proxy]}")
    [[ -n ${PORT_SNI[$proxy]:-} ]] && ports+=("${PORT_SNI[$proxy]}")
    for port in "${ports[@]}"; do
        if ! wait_listen "$pid" "$port"; then
            echo "   $proxy did not start listening on $port:" >&2
            tail -n 10 "$PROXY_LOG" "$WORK/nginx-stream-error.log" 2>/dev/null | sed 's/^/   | /' >&2
            stop_pid "$pid"
            return 1
        fi
    done
    if [[ $proxy == nginx ]]; then
        local i
        for ((i = 0; i < 50; i++)); do
            (($(pgrep -c -P "$pid") >= w)) && break
            sleep 0.1
        done
        read -ra PROXY_PIDS <<<"$(nginx_pids "$pid")"
    else
        PROXY_PIDS=("$pid")
    fi
    cap_verify
}
cap_verify() { # CAP: every thread of the proxy in the cgroup (or the configuration fails)
    [[ -n $CAP ]] || return 0
    sleep 0.2 # geoedge starts its worker threads after it listens
    cg_check "${PROXY_PIDS[@]}" && return 0
    echo "   could not move every thread of the proxy into $CG_DIR" >&2
    stop_proxy
    return 1
}
stop_proxy() {
    local pid
    [[ -n $PROXY_MAIN ]] && stop_pid "$PROXY_MAIN"
    # the reference relay's other processes (nginx's workers are gone with the master)
    for pid in "${PROXY_PIDS[@]}"; do stop_pid "$pid"; done
    PROXY_PIDS=()
    PROXY_MAIN=
}

# --- the measurements -------------------------------------------------------------------
CLIENT=()
ms() { # wrk latency (e.g. 612.00us, 1.20ms, 1.05s) in ms
    awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); n = v + 0
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f\n", n }'
}
# port: client connections to 127.0.0.1:port that the server has not
# accepted: those in its listeners' accept queues (ss Recv-Q of a listening
# socket), and those still waiting for a SYN-ACK (the queues were full)
not_accepted() {
    local queued syn
    queued=$(ss -tlnH "( sport = :$1 )" 2>/dev/null | awk '{s += $2} END {print s + 0}')
    syn=$(ss -tnH state syn-sent "( dport = :$1 )" 2>/dev/null | wc -l)
    echo $((queued + syn))
}

# test workers proxy: one wrk run (keep-alive or Connection: close)
run_wrk() {
    local test=$1 w=$2 proxy=$3 hdr=() out=$WORK/wrk.out rc rps reqs p50 p99 errs cpu100k wpid waiting
    local port=${PORT_HTTP[$proxy]}
    local url="http://127.0.0.1:$port/"
    [[ $test == conn || $test == sni ]] && hdr=(-H 'Connection: close')
    # sni: the name localhost (127.0.0.1 in /etc/hosts) is the ClientHello's server name
    [[ $test == sni ]] && port=${PORT_SNI[$proxy]} && url="https://localhost:$port/"
    sample_begin
    "${RT[@]}" "${CLIENT[@]}" wrk -t "$w" -c "$CONNS" -d "${DURATION}s" --latency "${hdr[@]}" \
        "$url" >"$out" 2>&1 &
    wpid=$!
    # Halfway through: wrk's connections the proxy has not taken in yet.
    sleep "$(awk -v d="$DURATION" 'BEGIN {print d / 2}')"
    waiting=$(not_accepted "$port")
    wait "$wpid"
    rc=$?
    sample_end
    if [[ -n $WRK_KEEP ]]; then
        cp "$out" "$WRK_KEEP/wrk-$test-w$w-$proxy-$(date +%s).out"
    fi
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    p50=$(awk '$1 == "50%" {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    errs=$(awk '/Socket errors/ {gsub(",", ""); s = $4 + $6 + $8 + $10} /Non-2xx/ {s += $NF} END {print s + 0}' "$out")
    if ((rc != 0)) || [[ -z $rps || -z $reqs || -z $p99 ]] || ((reqs == 0)); then
        echo "   wrk failed (exit $rc):" >&2
        tail -n 5 "$out" | sed 's/^/   | /' >&2
        FAILS+=("$test W=$w $proxy: wrk failed")
        return 1
    fi
    p50=$(ms "$p50")
    p99=$(ms "$p99")
    cpu100k=$(awk -v s="$S_PROXY" -v n="$reqs" 'BEGIN {printf "%.3f", s / n * 100000}')
    WRK_REQS=$reqs
    add "$test|rps|$w|$proxy" "$rps" "$S_MARK"
    add "$test|p50|$w|$proxy" "$p50" "$S_MARK"
    add "$test|p99|$w|$proxy" "$p99" "$S_MARK"
    add "$test|errors|$w|$proxy" "$errs" "$S_MARK"
    add "$test|waiting|$w|$proxy" "$waiting" "$S_MARK"
    if [[ $proxy != direct ]]; then
        add "$test|cpu|$w|$proxy" "$cpu100k" "$S_MARK"
        add "$test|pcpu|$w|$proxy" "$S_PROXY_PCT" "$S_MARK"
    fi
    local capped=
    if [[ -n $CAP && $proxy != direct ]]; then
        add "$test|thr|$w|$proxy" "$S_THR" "$S_MARK"
        capped="  throttled in ${S_THR}% of periods"
        if ((PIN && w == 1)); then
            # with the proxy alone on its CPU: its processes plus that CPU's irq and softirq time
            local kcpu
            kcpu=$(awk -v s="$S_PROXY" -v k="$S_SOFT" -v n="$reqs" 'BEGIN {printf "%.3f", (s + k) / n * 100000}')
            add "$test|kcpu|$w|$proxy" "$kcpu" "$S_MARK"
            capped+=", with its CPU's irq+softirq $kcpu s/100k req"
        fi
    fi
    printf '   %-4s %8s req/s%-1s p50 %7.3f ms  p99 %7.3f ms  errors %s  not accepted halfway %s  proxy %s s/100k req  CPU%%: proxy %s, client %s, backend %s, others %s, steal %s%s\n' \
        "$test" "$rps" "$S_MARK" "$p50" "$p99" "$errs" "$waiting" \
        "$([[ $proxy == direct ]] && echo - || echo "$cpu100k")" "$S_PROXY_PCT" "$S_CLIENT_PCT" "$S_BACKEND_PCT" "$S_OTHER_PCT" "$S_STEAL_PCT" "$capped"
}

# host port args...: one iperf3 run; prints Mbit/s (receiver) or fails
iperf_once() {
    local host=$1 port=$2 out=$WORK/iperf.out rc try
    shift 2
    for try in 1 2; do
        "${IPERF_PREFIX[@]}" iperf3 -c "$host" -p "$port" -t "$BULK_DURATION" -f m "$@" >"$out" 2>&1
        rc=$?
        ((rc == 0)) && break
        # the server may still be finishing the previous test
        grep -q 'busy' "$out" || break
        sleep 1
    done
    IPERF_MBPS=$(awk '/receiver/ && /bits\/sec/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i-1)} END {print v}' "$out")
    if ((rc != 0)) || [[ -z $IPERF_MBPS ]]; then
        echo "   iperf3 failed (exit $rc):" >&2
        tail -n 5 "$out" | sed 's/^/   | /' >&2
        return 1
    fi
    return 0
}

run_bulk() { # workers proxy
    local w=$1 proxy=$2 streams dir args
    IPERF_PREFIX=("${RT[@]}" "${CLIENT[@]}")
    for streams in 1 4; do
        for dir in up down; do
            args=(-P "$streams")
            [[ $dir == down ]] && args+=(-R)
            sample_begin
            if iperf_once 127.0.0.1 "${PORT_IPERF[$proxy]}" "${args[@]}"; then
                sample_end
                add "bulk|b$streams$dir|$w|$proxy" "$IPERF_MBPS" "$S_MARK"
                [[ $proxy != direct ]] && add "bulk|pcpu$streams$dir|$w|$proxy" "$S_PROXY_PCT" "$S_MARK"
                printf '   bulk %s stream%s %-4s %8s Mbit/s%-1s  CPU%%: proxy %s, client %s, backend %s, others %s, steal %s\n' \
                    "$streams" "$([[ $streams == 1 ]] && echo " " || echo s)" "$dir" "$IPERF_MBPS" "$S_MARK" \
                    "$S_PROXY_PCT" "$S_CLIENT_PCT" "$S_BACKEND_PCT" "$S_OTHER_PCT" "$S_STEAL_PCT"
            else
                sample_end
                FAILS+=("bulk W=$w $proxy $streams streams $dir: iperf3 failed")
            fi
            sleep 0.5
        done
    done
}

run_idle() { # workers proxy
    local w=$1 proxy=$2 out rc line
    out=$WORK/idle.out
    sample_begin
    python3 "$HERE/idle.py" --target "127.0.0.1:${PORT_IDLE[$proxy]}" --sink-port "$B_SINK" \
        --conns "$IDLE_CONNS" --pids "${PROXY_PIDS[*]}" --slab-detail >"$out" 2>"$WORK/idle.err"
    rc=$?
    sample_end
    line=$(tail -n 1 "$out")
    if ((rc != 0)) || [[ -z $line ]]; then
        echo "   idle connections failed (exit $rc):" >&2
        tail -n 5 "$WORK/idle.err" | sed 's/^/   | /' >&2
        [[ -n $PROXY_LOG ]] && tail -n 5 "$PROXY_LOG" 2>/dev/null | sed 's/^/   | proxy: /' >&2
        FAILS+=("idle W=$w $proxy: failed")
        return 1
    fi
    local n rss0 rss1 slab0 slab1 secs rss slab
    read -r n rss0 rss1 slab0 slab1 secs <<<"$line"
    rss=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')
    slab=$(awk -v a="$slab0" -v b="$slab1" -v n="$n" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')
    [[ $proxy != direct ]] && add "idle|rss|$w|$proxy" "$rss" "$S_MARK"
    add "idle|slab|$w|$proxy" "$slab" "$S_MARK"
    printf '   idle %s connections up in %s s: process %s B/conn (RSS %s -> %s KiB), kernel slab %s B/conn%-1s\n' \
        "$n" "$secs" "$([[ $proxy == direct ]] && echo - || echo "$rss")" "$rss0" "$rss1" "$slab" "$S_MARK"
    sed 's/^/     /' "$WORK/idle.err"
    # let the closes finish before the next test
    sleep 0.5
}

# One configuration (workers, proxy) in one round: every test but wg.
run_config() {
    local w=$1 proxy=$2 round=$3 t
    echo "-- round $round/$REPS, $w worker$( ((w > 1)) && echo s), ${LABEL[$proxy]}"
    wait_idle
    CLIENT=()
    if ((PIN && w == 1)); then
        CLIENT=(taskset -c "$CLIENT_CPU")
        if [[ $proxy == direct || $BACKEND_WITH == proxy ]]; then
            pin_backends "$PROXY_CPU"
        else
            pin_backends "$CLIENT_CPU"
        fi
    else
        pin_backends "0-$((NPROC - 1))"
    fi
    if ! start_proxy "$proxy" "$w"; then
        FAILS+=("W=$w $proxy round $round: start failed")
        return 1
    fi
    local made=0 lines
    for t in idle ka conn bulk sni; do
        has "$t" "${TESTS[@]}" || continue
        [[ $t == sni ]] && ! sni_for "$proxy" && continue
        WRK_REQS=0
        case $t in
        idle) run_idle "$w" "$proxy" ;;
        ka | conn | sni) run_wrk "$t" "$w" "$proxy" ;;
        bulk) run_bulk "$w" "$proxy" ;;
        esac
        # connections wrk completed: one per request with Connection: close
        case $t in
        ka) made=$((made + CONNS)) ;;
        conn) made=$((made + WRK_REQS)) ;;
        esac
        if [[ -n $PROXY_MAIN ]] && ! kill -0 "$PROXY_MAIN" 2>/dev/null; then
            echo "   $proxy exited:" >&2
            tail -n 10 "$PROXY_LOG" | sed 's/^/   | /' >&2
            FAILS+=("W=$w $proxy round $round: the proxy exited")
            break
        fi
        sleep 0.5
    done
    stop_proxy
    if [[ $proxy == logtext || $proxy == logjson ]]; then
        # geoedge flushed its log at shutdown: one line per connection
        lines=$(wc -l <"$LOG_DIR/access-$proxy.log" 2>/dev/null || echo 0)
        add "log|lines|$w|$proxy" "$lines" ""
        add "log|made|$w|$proxy" "$made" ""
        add "log|bytes|$w|$proxy" "$(stat -c %s "$LOG_DIR/access-$proxy.log" 2>/dev/null || echo 0)" ""
        echo "   access log: $lines lines for about $made connections (wrk's; idle and bulk not counted)"
        [[ $proxy == logjson && $round == 1 ]] && head -n 1 "$LOG_DIR/access-$proxy.log" >"$WORK/logjson.sample"
        [[ $proxy == logtext && $round == 1 ]] && head -n 1 "$LOG_DIR/access-$proxy.log" >"$WORK/logtext.sample"
        rm -f "$LOG_DIR/access-$proxy.log"
    fi
}

# --- (f) the WireGuard path ---------------------------------------------------------------
WG_PATHS=(veth wgdirect geveth gewg)
declare -A WG_LABEL
WG_LABEL=([veth]="veth, no proxy" [wgdirect]="WireGuard, no proxy"
    [geveth]="geoedge over the veth" [gewg]="geoedge over WireGuard")
WG_SOCK_E=/var/run/wireguard/glwe$ID.sock
WG_SOCK_P=/var/run/wireguard/glwp$ID.sock
UNDER_E=172.30.61.1
UNDER_P=172.30.61.2
OVER_E=10.81.0.1
OVER_P=10.81.0.2
WG_IPERF=5201
WG_GE_VETH=6001
WG_GE_WG=6002
WG_EDGE_PID=
WG_POP_PID=
WG_SERVER_PID=

wait_sock() { # pid sock: wait up to 10 s for a WireGuard configuration socket
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -S $2 ]] && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

wg_fail() {
    echo "   $*" >&2
    local f
    for f in "$WORK"/wg-pop.log "$WORK"/wg-edge.log; do
        [[ -f $f ]] && tail -n 10 "$f" | sed "s/^/   | $(basename "$f"): /" >&2
    done
    FAILS+=("wg: $*")
    return 1
}

wg_setup() {
    echo "== WireGuard: namespaces $NS_E (edge) and $NS_P (POP), veth 172.30.61.0/24, overlay 10.81.0.0/24"
    NETNS_MADE=1
    ip netns add "$NS_E" && ip netns add "$NS_P" || {
        wg_fail "ip netns add failed"
        return 1
    }
    ip link add "glve$ID" netns "$NS_E" type veth peer name "glvp$ID" netns "$NS_P" &&
        ip -n "$NS_E" addr add "$UNDER_E/24" dev "glve$ID" &&
        ip -n "$NS_P" addr add "$UNDER_P/24" dev "glvp$ID" &&
        ip -n "$NS_E" link set "glve$ID" up && ip -n "$NS_P" link set "glvp$ID" up &&
        ip -n "$NS_E" link set lo up && ip -n "$NS_P" link set lo up || {
        wg_fail "configuring the veth pair failed"
        return 1
    }
    (
        umask 077
        "$GEOEDGE" wg genkey >"$WORK/edge.key" && "$GEOEDGE" wg pubkey <"$WORK/edge.key" >"$WORK/edge.pub" &&
            "$GEOEDGE" wg genkey >"$WORK/pop.key" && "$GEOEDGE" wg pubkey <"$WORK/pop.key" >"$WORK/pop.pub"
    ) || {
        wg_fail "geoedge wg genkey/pubkey failed"
        return 1
    }
    local edge_pub pop_pub i ok=0
    edge_pub=$(<"$WORK/edge.pub")
    pop_pub=$(<"$WORK/pop.pub")
    # The POP: geoedge wg up, with the edge as its peer, and the iperf3 server.
    "$GEOEDGE" db init --empty "$WORK/pop.db" >/dev/null &&
        sqlite3 "$WORK/pop.db" "INSERT INTO wg_peers (public_key, allowed_ips) VALUES ('$edge_pub', '$OVER_E/32');" || {
        wg_fail "writing pop.db failed"
        return 1
    }
    ip netns exec "$NS_P" "$GEOEDGE" wg up --routing-db "$WORK/pop.db" --wg-interface "glwp$ID" \
        --wg-private-key-file "$WORK/pop.key" --wg-address "$OVER_P/24" --wg-listen-port 51820 \
        >"$WORK/wg-pop.log" 2>&1 &
    WG_POP_PID=$!
    PIDS+=("$WG_POP_PID")
    wait_sock "$WG_POP_PID" "$WG_SOCK_P" || {
        wg_fail "geoedge wg up (POP) did not come up"
        return 1
    }
    ip netns exec "$NS_P" iperf3 -s -p "$WG_IPERF" >"$WORK/wg-iperf3-server.log" 2>&1 &
    WG_SERVER_PID=$!
    PIDS+=("$WG_SERVER_PID")
    wait_listen "$WG_SERVER_PID" "$WG_IPERF" "$NS_P" || {
        wg_fail "the POP's iperf3 server did not start"
        return 1
    }
    # The edge: geoedge run with the backhaul; app veth reaches the server over
    # the veth, app wg over WireGuard (a backend in region us at the POP's
    # overlay address).
    "$GEOEDGE" db init --empty "$WORK/edge.db" >/dev/null &&
        sqlite3 "$WORK/edge.db" "
        INSERT INTO regions (id, name, latitude, longitude)
            VALUES ('eu', 'Europe', 50.11, 8.68), ('us', 'US East', 38.95, -77.45);
        INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
            VALUES ('$pop_pub', '$UNDER_P:51820', '$OVER_P/32', 25, 'us');
        INSERT INTO backends (id, app, region, wg_ip, port, soft_limit, hard_limit)
            VALUES ('pop-veth', 'veth', 'eu', '$UNDER_P', $WG_IPERF, 1000000, 1000000),
                   ('pop-wg', 'wg', 'us', '$OVER_P', $WG_IPERF, 1000000, 1000000);" || {
        wg_fail "writing edge.db failed"
        return 1
    }
    local extra=()
    # No active health checks: a TCP check can take the place of a test's
    # control connection at the single-client iperf3 server.
    [[ $GE_HELP == *--health-check-interval* ]] && extra+=(--health-check-interval off)
    ip netns exec "$NS_E" "$GEOEDGE" run --routing-db "$WORK/edge.db" --region eu --metrics-listen off \
        --listen "veth=127.0.0.1:$WG_GE_VETH" --listen "wg=127.0.0.1:$WG_GE_WG" \
        --wg-interface "glwe$ID" --wg-private-key-file "$WORK/edge.key" --wg-address "$OVER_E/24" \
        --wg-listen-port 51820 "${extra[@]}" >"$WORK/wg-edge.log" 2>&1 &
    WG_EDGE_PID=$!
    PIDS+=("$WG_EDGE_PID")
    wait_sock "$WG_EDGE_PID" "$WG_SOCK_E" && wait_listen "$WG_EDGE_PID" "$WG_GE_VETH" "$NS_E" &&
        wait_listen "$WG_EDGE_PID" "$WG_GE_WG" "$NS_E" || {
        wg_fail "geoedge run (edge) did not come up"
        return 1
    }
    # The handshake: a connection to a closed port on the POP's overlay
    # address is refused once the tunnel carries packets.
    local out
    for ((i = 0; i < 20; i++)); do
        out=$(ip netns exec "$NS_E" timeout 1 bash -c "exec 3<>/dev/tcp/$OVER_P/9" 2>&1)
        if [[ $out == *refused* ]]; then
            ok=1
            break
        fi
        sleep 0.2
    done
    ((ok)) || {
        wg_fail "no answer from $OVER_P through the tunnel in 20 s"
        return 1
    }
    return 0
}

run_wg() {
    local round path dir host port args
    wg_setup || return 1
    PROXY_PIDS=("$WG_EDGE_PID")
    BACKEND_PIDS=("$WG_POP_PID" "$WG_SERVER_PID")
    IPERF_PREFIX=(ip netns exec "$NS_E")
    for ((round = 1; round <= REPS; round++)); do
        echo "-- WireGuard round $round/$REPS"
        wait_idle
        for path in "${WG_PATHS[@]}"; do
            case $path in
            veth) host=$UNDER_P port=$WG_IPERF ;;
            wgdirect) host=$OVER_P port=$WG_IPERF ;;
            geveth) host=127.0.0.1 port=$WG_GE_VETH ;;
            gewg) host=127.0.0.1 port=$WG_GE_WG ;;
            esac
            for dir in up down; do
                args=()
                [[ $dir == down ]] && args=(-R)
                sample_begin
                if iperf_once "$host" "$port" "${args[@]}"; then
                    sample_end
                    add "wg|$dir|-|$path" "$IPERF_MBPS" "$S_MARK"
                    add "wg|edgecpu$dir|-|$path" "$S_PROXY_PCT" "$S_MARK"
                    add "wg|popcpu$dir|-|$path" "$S_BACKEND_PCT" "$S_MARK"
                    printf '   %-24s %-4s %8s Mbit/s%-1s  CPU%%: edge geoedge %s, POP geoedge + iperf3 server %s, client %s, others %s, steal %s\n' \
                        "${WG_LABEL[$path]}" "$dir" "$IPERF_MBPS" "$S_MARK" "$S_PROXY_PCT" "$S_BACKEND_PCT" "$S_CLIENT_PCT" "$S_OTHER_PCT" "$S_STEAL_PCT"
                else
                    sample_end
                    FAILS+=("wg $path $dir round $round: iperf3 failed")
                fi
                sleep 0.5
            done
        done
    done
}

# --- the run ------------------------------------------------------------------------------
LOCAL_TESTS=()
for t in "${TESTS[@]}"; do [[ $t != wg ]] && LOCAL_TESTS+=("$t"); done
if ((${#LOCAL_TESTS[@]})); then
    write_geoedge_db
    [[ -n $BASELINE ]] && write_geoedge_db baseline
    for v in "${VARIANTS[@]}"; do has "$v" "${PROXIES[@]}" && write_geoedge_db "$v"; done
    for w in "${WORKERS[@]}"; do
        write_haproxy_conf "$w"
        write_nginx_conf "$w"
        nginx -t -q -p "$WORK/" -e "$WORK/nginx-stream-error.log" -c "$WORK/nginx-stream-$w.conf" ||
            die "the nginx stream configuration is invalid"
    done
    start_backends
    echo "== $REPS rounds of: ${LOCAL_TESTS[*]}; proxies: ${PROXIES[*]}; workers: ${WORKERS[*]}"
    echo "   wrk -c $CONNS, $DURATION s; iperf3 $BULK_DURATION s; $IDLE_CONNS idle connections; pinning $( ((PIN)) && echo "on (1 worker: client CPU $CLIENT_CPU, proxy CPU $PROXY_CPU)" || echo off)"
    ((GE_WORKERS_FLAG)) || echo "   geoedge has no --workers: confined with taskset to as many CPUs as workers"
    [[ -n $BASELINE ]] && echo "   baseline: $BASELINE ($BASELINE_REV), against geoedge $GEOEDGE ($GEOEDGE_REV)"
    for ((round = 1; round <= REPS; round++)); do
        order=("${PROXIES[@]}")
        if ((round % 2 == 0)); then # the geoedge family in reverse order in even rounds
            fam=()
            for p in "${order[@]}"; do is_geoedge "$p" && fam=("$p" "${fam[@]}"); done
            k=0
            for i in "${!order[@]}"; do
                if is_geoedge "${order[i]}"; then
                    order[i]=${fam[k]}
                    k=$((k + 1))
                fi
            done
        fi
        if [[ -n $CAP ]]; then # proxy-bound: every proxy takes every place in turn
            k=$(((round - 1) % ${#order[@]}))
            order=("${order[@]:k}" "${order[@]:0:k}")
        fi
        for w in "${WORKERS[@]}"; do
            for proxy in "${order[@]}"; do
                run_config "$w" "$proxy" "$round"
            done
        done
    done
fi
if has wg "${TESTS[@]}"; then
    run_wg
fi
ELAPSED=$((SECONDS - START_SECONDS))

# --- report ---------------------------------------------------------------------------------
fmt() { # value decimals: thousands separated, or "-"
    awk -v v="$1" -v d="$2" 'BEGIN {
        if (v == "-" || v == "") { print "-"; exit }
        s = sprintf("%." d "f", v); neg = (s ~ /^-/); if (neg) s = substr(s, 2)
        i = s; f = ""; p = index(s, "."); if (p) { i = substr(s, 1, p - 1); f = substr(s, p) }
        o = ""; while (length(i) > 3) { o = "," substr(i, length(i) - 2) o; i = substr(i, 1, length(i) - 3) }
        print (neg ? "-" : "") i o f }'
}
samples() { # key decimals: "[a, b*, c]"
    local s=${R[$1]:-} x out=
    for x in $s; do
        [[ -n $out ]] && out+=", "
        if [[ $x == *'*' ]]; then out+="$(fmt "${x%\*}" "$2")\\*"; else out+=$(fmt "$x" "$2"); fi
    done
    echo "[$out]"
}
cell() { # key decimals [s]: median, with the samples when a third argument is given
    local m
    m=$(med "$1")
    if [[ $m == - ]]; then
        echo "-"
    elif [[ -n ${3:-} ]]; then
        echo "$(fmt "$m" "$2") $(samples "$1" "$2")"
    else
        fmt "$m" "$2"
    fi
}
ratio() { # a b: a/b to 2 decimals, or -
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}
proxies_in() { # the proxies of this run among the arguments
    local p
    for p in "$@"; do has "$p" "${PROXIES[@]}" && echo "$p"; done
}
# rows of ratios for the keys' metric: test metric workers "label"
ratio_rows() { # test workers ncols metrics...: the geoedge/peer rows of a table
    local test=$1 w=$2 peer m row
    shift 2
    has geoedge "${PROXIES[@]}" || return 0
    for peer in baseline haproxy nginx direct; do
        has "$peer" "${PROXIES[@]}" || continue
        [[ $test == sni ]] && ! sni_for "$peer" && continue
        row="| $w | geoedge/${LABEL[$peer]%% *}"
        for m in "$@"; do
            if [[ $m == _ ]]; then
                row+=" | "
            else
                row+=" | $(ratio "$(med "$test|$m|$w|geoedge")" "$(med "$test|$m|$w|$peer")")"
            fi
        done
        echo "$row |"
    done
}

report_wrk() { # test
    local test=$1 w p
    if [[ $test == ka ]]; then
        echo "### (a) Keep-alive requests: wrk, $CONNS connections, $DURATION s"
    elif [[ $test == sni ]]; then
        echo "### (g) TLS new connections through SNI routing: wrk over https with \`Connection: close\`, $CONNS connections, $DURATION s"
        echo
        echo "Every connection a full TLS handshake with the backend nginx (ECDSA P-256, no session cache or tickets),"
        echo "the server name \`localhost\` routed by the proxy's reading of the ClientHello (geoedge \`--sni-listen\` and"
        echo "routing.db \`sni_routes\`, HAProxy \`req.ssl_sni\`, nginx \`ssl_preread\` and a \`map\`); a misrouted"
        echo "connection reaches a backend answering 421 and counts as an error. Direct: wrk to the TLS backend."
    else
        echo "### (b) New connections: wrk with \`Connection: close\`, $CONNS connections, $DURATION s"
    fi
    echo
    [[ $test == conn ]] && echo "One request per connection, so requests/s are new connections per second through the proxy (and"
    [[ $test == conn ]] && echo "from the proxy to the backend)."
    echo "Proxy CPU: user + system seconds of the proxy's processes per 100,000 requests, and its mean share of one"
    echo "core during the run. Latency as wrk reports it (closed loop: $CONNS requests always outstanding)."
    echo "Not accepted: wrk's connections the proxy had not taken in halfway through the run (in its listeners'"
    echo "accept queues, or still waiting for a SYN-ACK because they were full); their requests are in no latency"
    echo "figure until they are."
    echo
    echo "| workers | proxy | requests/s | p50 ms | p99 ms | not accepted | proxy CPU s / 100k requests | proxy CPU % of a core | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    local v
    for w in "${WORKERS[@]}"; do
        for p in "${PROXIES[@]}"; do
            [[ $test == sni ]] && ! sni_for "$p" && continue
            echo "| $w | ${LABEL[$p]} | $(cell "$test|rps|$w|$p" 0 s) | $(cell "$test|p50|$w|$p" 3) | $(cell "$test|p99|$w|$p" 3) | $(cell "$test|waiting|$w|$p" 0) | $(cell "$test|cpu|$w|$p" 3) | $(cell "$test|pcpu|$w|$p" 0) | $(cell "$test|errors|$w|$p" 0) |"
        done
        ratio_rows "$test" "$w" rps p50 p99 _ cpu pcpu _
        for v in $(proxies_in "${VARIANTS[@]}"); do
            [[ $test == sni ]] && continue
            row="| $w | $v/geoedge"
            for m in rps p50 p99 waiting cpu pcpu; do
                row+=" | $(ratio "$(med "$test|$m|$w|$v")" "$(med "$test|$m|$w|geoedge")")"
            done
            echo "$row |  |"
        done
    done
    echo
}

report_bulk() {
    local w p s d
    echo "### (c) Bulk throughput: iperf3, $BULK_DURATION s, Mbit/s"
    echo
    echo "Up: the iperf3 client sends through the proxy; down: \`-R\`, the server sends."
    echo
    echo "| workers | proxy | 1 stream up | 1 stream down | 4 streams up | 4 streams down |"
    echo "|---|---|---:|---:|---:|---:|"
    for w in "${WORKERS[@]}"; do
        for p in "${PROXIES[@]}"; do
            echo "| $w | ${LABEL[$p]} | $(cell "bulk|b1up|$w|$p" 0 s) | $(cell "bulk|b1down|$w|$p" 0 s) | $(cell "bulk|b4up|$w|$p" 0 s) | $(cell "bulk|b4down|$w|$p" 0 s) |"
        done
        ratio_rows bulk "$w" b1up b1down b4up b4down
    done
    echo
    echo "Proxy CPU during the bulk runs, % of one core (median):"
    echo
    echo "| workers | proxy | 1 up | 1 down | 4 up | 4 down |"
    echo "|---|---|---:|---:|---:|---:|"
    for w in "${WORKERS[@]}"; do
        for p in $(proxies_in geoedge baseline reference haproxy nginx); do
            echo "| $w | ${LABEL[$p]} | $(cell "bulk|pcpu1up|$w|$p" 0) | $(cell "bulk|pcpu1down|$w|$p" 0) | $(cell "bulk|pcpu4up|$w|$p" 0) | $(cell "bulk|pcpu4down|$w|$p" 0) |"
        done
    done
    echo
}

spread() { # key: (max - min) / median of all its samples (marked or not), in percent; or -
    tr -d '*' <<<"${R[$1]:-}" | tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (m == 0) print 0; else printf "%.1f\n", 100 * (v[NR] - v[1]) / m }'
}

med_all() { # key: median of all its samples, marked or not; or -
    local s
    s=$(tr -d '*' <<<"${R[$1]:-}" | tr ' ' '\n' | grep .)
    [[ -n $s ]] || {
        echo -
        return
    }
    median <<<"$s"
}
round_ratios() { # key-a key-b: "median [smallest–largest]" of a/b round by round, or -
    local a b
    read -ra a <<<"$(tr -d '*' <<<"${R[$1]:-}")"
    read -ra b <<<"$(tr -d '*' <<<"${R[$2]:-}")"
    ((${#a[@]} && ${#a[@]} == ${#b[@]})) || {
        echo -
        return
    }
    paste -d ' ' <(printf '%s\n' "${a[@]}") <(printf '%s\n' "${b[@]}") |
        awk '$2 + 0 != 0 {printf "%.4f\n", $1 / $2}' | sort -g | awk '{v[NR] = $1} END {
            if (NR == 0) { print "-"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.2f [%.2f–%.2f]\n", m, v[1], v[NR] }'
}

BL_WORSE=()
BL_ROWS=0
# one row of report_baseline: label workers key better(max|min) decimals
baseline_row() {
    local label=$1 w=$2 key=$3 better=$4 dec=$5 ge bl sg sb r verdict
    ge=$(med_all "$key|$w|geoedge")
    bl=$(med_all "$key|$w|baseline")
    [[ $ge == - || $bl == - ]] && return 0
    sg=$(spread "$key|$w|geoedge")
    sb=$(spread "$key|$w|baseline")
    r=$(ratio "$ge" "$bl")
    verdict=$(awk -v g="$ge" -v b="$bl" -v sg="$sg" -v sb="$sb" -v better="$better" 'BEGIN {
        if (b + 0 == 0) { print "-"; exit }
        r = g / b; s = ((sg > sb) ? sg : sb) / 100
        if (better == "min") { worse = (r > 1 + s); gain = (r < 1 - s) }
        else { worse = (r < 1 - s); gain = (r > 1 + s) }
        print worse ? "**worse**" : (gain ? "better" : "within the spread") }')
    BL_ROWS=$((BL_ROWS + 1))
    [[ $verdict == '**worse**' ]] && BL_WORSE+=("$label ($w worker$( ((w > 1)) && echo s)): $r")
    echo "| $label | $w | $(fmt "$ge" "$dec") | $(fmt "$bl" "$dec") | $r | $(round_ratios "$key|$w|geoedge" "$key|$w|baseline") | $sg% | $sb% | $verdict |"
}

report_baseline() {
    local w
    has geoedge "${PROXIES[@]}" && has baseline "${PROXIES[@]}" || return 0
    echo "### geoedge $GEOEDGE_REV against the baseline $BASELINE_REV"
    echo
    echo "Both started with the same command line, one after the other in each of $REPS rounds (the baseline first in"
    echo "even rounds). Here the medians are of all samples, marked ones included (the tables below leave marked"
    echo "samples out), so that both sides count the same rounds. Round by round: geoedge's sample over the"
    echo "baseline's of the same round, median [smallest–largest]. Spread: (largest − smallest) / median of a"
    echo "measurement's samples over the rounds. A ratio is within the spread when it is no further from 1, in the"
    echo "worse direction, than the larger of the two spreads."
    echo
    echo "| measurement | workers | geoedge | baseline | geoedge/baseline | round by round | spread geoedge | spread baseline | |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    for w in "${WORKERS[@]}"; do
        if has ka "${TESTS[@]}"; then
            baseline_row "keep-alive requests/s" "$w" "ka|rps" max 0
            baseline_row "keep-alive p50 ms" "$w" "ka|p50" min 3
            baseline_row "keep-alive p99 ms" "$w" "ka|p99" min 3
            baseline_row "keep-alive CPU s / 100k requests" "$w" "ka|cpu" min 3
        fi
        if has conn "${TESTS[@]}"; then
            baseline_row "new connections/s" "$w" "conn|rps" max 0
            baseline_row "new connections p50 ms" "$w" "conn|p50" min 3
            baseline_row "new connections p99 ms" "$w" "conn|p99" min 3
            baseline_row "new connections CPU s / 100k" "$w" "conn|cpu" min 3
        fi
        if has bulk "${TESTS[@]}"; then
            baseline_row "bulk 1 stream up, Mbit/s" "$w" "bulk|b1up" max 0
            baseline_row "bulk 1 stream down, Mbit/s" "$w" "bulk|b1down" max 0
            baseline_row "bulk 4 streams up, Mbit/s" "$w" "bulk|b4up" max 0
            baseline_row "bulk 4 streams down, Mbit/s" "$w" "bulk|b4down" max 0
        fi
        if has idle "${TESTS[@]}"; then
            baseline_row "process memory per idle connection, bytes" "$w" "idle|rss" min 0
            baseline_row "kernel memory per idle connection, bytes" "$w" "idle|slab" min 0
        fi
    done
    echo
    if ((${#BL_WORSE[@]})); then
        echo "Worse than the spread: ${#BL_WORSE[@]} of $BL_ROWS: $(printf '%s; ' "${BL_WORSE[@]}" | sed 's/; $/./')"
    else
        echo "Worse than the spread: none of $BL_ROWS."
    fi
    echo
}

# issue 20: one row of report_variants: label workers key better(max|min) decimals variant goal
# goal: "spread" (no worse than the larger spread), a fraction like 0.97 (the
# variant over geoedge at least that, or at most 1/that for min), or - (no goal)
variant_row() {
    local label=$1 w=$2 key=$3 better=$4 dec=$5 v=$6 goal=$7 ge vv sg sv r verdict
    ge=$(med_all "$key|$w|geoedge")
    vv=$(med_all "$key|$w|$v")
    [[ $ge == - || $vv == - ]] && return 0
    sg=$(spread "$key|$w|geoedge")
    sv=$(spread "$key|$w|$v")
    r=$(ratio "$vv" "$ge")
    verdict=$(awk -v g="$ge" -v x="$vv" -v sg="$sg" -v sv="$sv" -v better="$better" -v goal="$goal" 'BEGIN {
        if (g + 0 == 0 || goal == "-") { print "-"; exit }
        r = x / g
        if (goal == "spread") { lim = 1 - ((sg > sv) ? sg : sv) / 100; text = "within the spread" }
        else { lim = goal + 0; text = sprintf("≥ %.2f", lim) }
        if (better == "min") ok = (r <= 2 - lim); else ok = (r >= lim)
        printf "%s: %s\n", text, ok ? "met" : "**not met**" }')
    [[ $verdict == *"not met"* ]] && VAR_MISSED+=("$label, ${LABEL[$v]} ($w worker$( ((w > 1)) && echo s)): $r")
    echo "| $label | $w | $(fmt "$vv" "$dec") | $(fmt "$ge" "$dec") | $r | $(round_ratios "$key|$w|$v" "$key|$w|geoedge") | $sv% | $sg% | $verdict |"
}

VAR_MISSED=()
report_variants() {
    local v w goal
    [[ -n $(proxies_in "${VARIANTS[@]}") ]] || return 0
    echo "### geoedge with limits or the access log on, against geoedge (issue 20)"
    echo
    echo "Each the same build and command line as geoedge plus one setting (below), measured in the same $REPS rounds"
    echo "(the geoedge family in reverse order in even rounds). Medians of all samples, marked ones included, so"
    echo "that both sides count the same rounds; round by round: the variant's sample over geoedge's of the same"
    echo "round, median [smallest–largest]; spread: (largest − smallest) / median over the rounds. Goals: limits"
    echo "on, keep-alive requests/s within the spread (no further below 1 than the larger spread) and new"
    echo "connections/s at most 3% below; the access log on, new connections/s at most 5% below."
    echo
    echo "| measurement | workers | variant | geoedge | variant/geoedge | round by round | spread variant | spread geoedge | goal |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    for v in $(proxies_in "${VARIANTS[@]}"); do
        for w in "${WORKERS[@]}"; do
            if has ka "${TESTS[@]}"; then
                goal=-
                [[ $v == limits ]] && goal=spread
                variant_row "${LABEL[$v]}: keep-alive requests/s" "$w" "ka|rps" max 0 "$v" "$goal"
                variant_row "${LABEL[$v]}: keep-alive p99 ms" "$w" "ka|p99" min 3 "$v" -
                variant_row "${LABEL[$v]}: keep-alive CPU s / 100k requests" "$w" "ka|cpu" min 3 "$v" -
            fi
            if has conn "${TESTS[@]}"; then
                goal=0.95
                [[ $v == limits ]] && goal=0.97
                variant_row "${LABEL[$v]}: new connections/s" "$w" "conn|rps" max 0 "$v" "$goal"
                variant_row "${LABEL[$v]}: new connections p99 ms" "$w" "conn|p99" min 3 "$v" -
                variant_row "${LABEL[$v]}: new connections CPU s / 100k" "$w" "conn|cpu" min 3 "$v" -
            fi
        done
    done
    echo
    if ((${#VAR_MISSED[@]})); then
        echo "Goals not met: $(printf '%s; ' "${VAR_MISSED[@]}" | sed 's/; $/./')"
    else
        echo "Goals not met: none."
    fi
    echo
    for v in logtext logjson; do
        has "$v" "${PROXIES[@]}" || continue
        for w in "${WORKERS[@]}"; do
            echo "${LABEL[$v]}, $w worker$( ((w > 1)) && echo s): access-log lines written per round $(samples "log|lines|$w|$v" 0), connections wrk completed $(samples "log|made|$w|$v" 0) (keep-alive: $CONNS; new connections: one per request), file size in bytes $(samples "log|bytes|$w|$v" 0)."
            echo
        done
    done
}

# kernel memory of the proxy's own part: slab per proxied connection less the
# direct connection's (client and backend sockets)
kernel_own() { # workers proxy
    local a b
    a=$(med "idle|slab|$1|$2")
    b=$(med "idle|slab|$1|direct")
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.0f\n", a - b }'
}

report_idle() {
    local w p own
    echo "### (d) Memory per idle proxied connection: $IDLE_CONNS connections, no data"
    echo
    echo "Process: resident memory (VmRSS; nginx: master and workers) above the freshly started proxy's, per"
    echo "connection. Kernel: slab memory (/proc/slabinfo, without the TIME_WAIT caches and /proc inodes) per"
    echo "connection, for all its sockets: the client's, the proxy's two and the backend's (direct: client and"
    echo "backend only); \"the proxy's sockets\" subtracts the direct figure. Bytes per connection."
    echo
    echo "| workers | proxy | process | kernel, all sockets | kernel, the proxy's sockets |"
    echo "|---|---|---:|---:|---:|"
    for w in "${WORKERS[@]}"; do
        for p in "${PROXIES[@]}"; do
            own=-
            [[ $p != direct ]] && own=$(fmt "$(kernel_own "$w" "$p")" 0)
            echo "| $w | ${LABEL[$p]} | $(cell "idle|rss|$w|$p" 0 s) | $(cell "idle|slab|$w|$p" 0 s) | $own |"
        done
        if has geoedge "${PROXIES[@]}"; then
            for p in $(proxies_in baseline haproxy nginx); do
                echo "| $w | geoedge/${LABEL[$p]%% *} | $(ratio "$(med "idle|rss|$w|geoedge")" "$(med "idle|rss|$w|$p")") | $(ratio "$(med "idle|slab|$w|geoedge")" "$(med "idle|slab|$w|$p")") | $(ratio "$(kernel_own "$w" geoedge)" "$(kernel_own "$w" "$p")") |"
            done
        fi
    done
    echo
}

report_cpu() {
    local w p
    echo "### (e) Proxy CPU per 100,000 requests"
    echo
    echo "CPU seconds (user + system, all the proxy's threads and processes) per 100,000 requests, from (a) and (b)."
    echo
    echo "| workers | proxy | keep-alive requests | new connections |$(has sni "${TESTS[@]}" && echo " TLS new connections (sni) |")"
    echo "|---|---|---:|---:|$(has sni "${TESTS[@]}" && echo "---:|")"
    for w in "${WORKERS[@]}"; do
        for p in $(proxies_in geoedge "${VARIANTS[@]}" baseline reference haproxy nginx); do
            echo "| $w | ${LABEL[$p]} | $(cell "ka|cpu|$w|$p" 3) | $(cell "conn|cpu|$w|$p" 3) |$(has sni "${TESTS[@]}" && echo " $(cell "sni|cpu|$w|$p" 3) |")"
        done
        if has geoedge "${PROXIES[@]}"; then
            for p in $(proxies_in baseline haproxy nginx); do
                echo "| $w | geoedge/${LABEL[$p]%% *} | $(ratio "$(med "ka|cpu|$w|geoedge")" "$(med "ka|cpu|$w|$p")") | $(ratio "$(med "conn|cpu|$w|geoedge")" "$(med "conn|cpu|$w|$p")") |"
            done
        fi
    done
    echo
}

report_wg() {
    local path
    echo "### (f) The WireGuard path: iperf3 single stream, $BULK_DURATION s, Mbit/s"
    echo
    echo "Edge namespace (iperf3 client, geoedge \`run\` with the backhaul, unpinned, default workers) and POP namespace"
    echo "(geoedge \`wg up\`, iperf3 server) joined by a veth pair. Up: edge to POP; down: \`-R\`. CPU: the edge's"
    echo "geoedge, and the POP's geoedge plus the iperf3 server, % of one core (median)."
    echo
    echo "| path | up | down | edge CPU up / down | POP CPU up / down |"
    echo "|---|---:|---:|---:|---:|"
    for path in "${WG_PATHS[@]}"; do
        echo "| ${WG_LABEL[$path]} | $(cell "wg|up|-|$path" 0 s) | $(cell "wg|down|-|$path" 0 s) | $(cell "wg|edgecpuup|-|$path" 0) / $(cell "wg|edgecpudown|-|$path" 0) | $(cell "wg|popcpuup|-|$path" 0) / $(cell "wg|popcpudown|-|$path" 0) |"
    done
    echo "| geoedge over WireGuard / geoedge over the veth | $(ratio "$(med "wg|up|-|gewg")" "$(med "wg|up|-|geveth")") | $(ratio "$(med "wg|down|-|gewg")" "$(med "wg|down|-|geveth")") | | |"
    echo "| geoedge over WireGuard / veth, no proxy | $(ratio "$(med "wg|up|-|gewg")" "$(med "wg|up|-|veth")") | $(ratio "$(med "wg|down|-|gewg")" "$(med "wg|down|-|veth")") | | |"
    echo "| geoedge over WireGuard / WireGuard, no proxy | $(ratio "$(med "wg|up|-|gewg")" "$(med "wg|up|-|wgdirect")") | $(ratio "$(med "wg|down|-|gewg")" "$(med "wg|down|-|wgdirect")") | | |"
    echo
}

# issue 22: the proxies under the same CPU cap
best_peer() { # key better(max|min): "value name" of the better of HAProxy and nginx, or "- -"
    local h n
    h=$(med "$1|haproxy")
    n=$(med "$1|nginx")
    awk -v h="$h" -v n="$n" -v b="$2" 'BEGIN {
        if (h == "-" && n == "-") { print "- -"; exit }
        if (h == "-") { print n, "nginx"; exit }
        if (n == "-") { print h, "HAProxy"; exit }
        if ((b == "max" && h >= n) || (b == "min" && h <= n)) print h, "HAProxy"; else print n, "nginx" }'
}
report_capped_test() { # test
    local test=$1 w p rp rn cm cp cn rr cr
    echo "| workers | proxy | requests/s | proxy CPU s / 100k, processes | with its CPU's irq + softirq | throttled periods % | req/s ÷ best peer | req/s ÷ reference (round by round) | CPU ÷ best peer | CPU ÷ reference |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in "${WORKERS[@]}"; do
        read -r rp rn < <(best_peer "$test|rps|$w" max)
        cm=kcpu
        [[ $(med "$test|kcpu|$w|${PROXIES[0]}") == - ]] && cm=cpu
        read -r cp cn < <(best_peer "$test|$cm|$w" min)
        rr=$(med "$test|rps|$w|reference")
        cr=$(med "$test|$cm|$w|reference")
        for p in "${PROXIES[@]}"; do
            [[ $p == direct ]] && continue
            local byround=-
            [[ $p != reference ]] && has reference "${PROXIES[@]}" && byround=$(round_ratios "$test|rps|$w|$p" "$test|rps|$w|reference")
            echo "| $w | ${LABEL[$p]} | $(cell "$test|rps|$w|$p" 0 s) | $(cell "$test|cpu|$w|$p" 3 s) | $(cell "$test|kcpu|$w|$p" 3 s) | $(cell "$test|thr|$w|$p" 0) | $(ratio "$(med "$test|rps|$w|$p")" "$rp") | $(ratio "$(med "$test|rps|$w|$p")" "$rr") $([[ $byround != - ]] && echo "($byround)") | $(ratio "$(med "$test|$cm|$w|$p")" "$cp") | $(ratio "$(med "$test|$cm|$w|$p")" "$cr") |"
        done
        echo
        echo "Best peer ($w worker$( ((w > 1)) && echo s)): requests/s $rn, CPU $cn$([[ $cm == kcpu ]] && echo " (with its CPU's irq + softirq)" || echo " (processes only)")."
        echo
    done
}
report_capped() {
    [[ -n $CAP ]] || return 0
    echo "### Proxy-bound: every proxy capped at $CAP of a core"
    echo
    echo "Each proxy (all its processes and threads) ran in one cgroup with a CPU quota of $CAP core ($CG_TEXT),"
    echo "created for the run and removed after it; the client and the backends were not capped and kept their"
    echo "CPUs$( ((PIN)) && echo " (one worker: client and backends on CPU $CLIENT_CPU, the proxy on CPU $PROXY_CPU)"). The proxies ran at"
    echo "normal priority (the CFS quota does not apply to real-time tasks)$([[ $PRIO == rr ]] && echo "; client and backends under SCHED_RR as PRIO=rr sets")."
    echo "The reference relay (\`$(basename "$REFERENCE_SRC")\`, \`cc -O2\`: a single-threaded edge-triggered epoll relay with"
    echo "16 KiB buffers, no runtime, no routing; one process per listener) stands for the userspace limit."
    echo
    echo "Proxy CPU per 100,000 requests: user + system time of the proxy's processes (/proc/PID/stat utime + stime,"
    echo "every thread, nginx's master and worker) over the sample; \"with its CPU's irq + softirq\" adds the hardirq and"
    echo "softirq time of the proxy's CPU (/proc/stat cpu$PROXY_CPU, irq + softirq, which includes ksoftirqd/$PROXY_CPU's"
    echo "softirq work) over the same sample. On loopback the receive path of what a process sends runs as softirq on"
    echo "the sender's CPU, so that time is the kernel's work for the proxy's sends (not charged to the proxy's stime,"
    echo "and not held back by the cap); the softirq of what the client and the backends send runs on their CPU and"
    echo "is not counted. Only with one pinned worker (the proxy alone on its CPU); otherwise \"-\". Throttled: the"
    echo "share of the cap's periods in which the cgroup used up its quota (cpu.stat nr_throttled / nr_periods)."
    echo "Best peer: the better of HAProxy and nginx. Round by round: the proxy's sample over the reference's of the"
    echo "same round, median [smallest–largest]."
    echo
    if has ka "${TESTS[@]}"; then
        echo "Keep-alive requests (wrk, $CONNS connections, $DURATION s):"
        echo
        report_capped_test ka
    fi
    if has conn "${TESTS[@]}"; then
        echo "New connections (wrk with \`Connection: close\`, $CONNS connections, $DURATION s):"
        echo
        report_capped_test conn
    fi
}

TARGETS_MET=0
TARGETS_ALL=0
TARGETS_MISSED=()
# target row: label workers test metric better(max|min) goal(>=x|<=x) decimals unit
target_row() {
    local label=$1 w=$2 key=$3 better=$4 goal=$5 dec=$6 ge ha ng peer=- peername=- r met
    ge=$(med "$key|$w|geoedge")
    ha=$(med "$key|$w|haproxy")
    ng=$(med "$key|$w|nginx")
    if [[ $better == fixed ]]; then
        r=-
        met=$(awk -v g="$ge" -v lim="${goal#<=}" 'BEGIN { if (g == "-") print "-"; else print (g <= lim) ? "met" : "**not met**" }')
    else
        if [[ $better == haproxy ]]; then
            peer=$ha peername=HAProxy
        else
            read -r peer peername < <(awk -v h="$ha" -v n="$ng" -v b="$better" 'BEGIN {
                if (h == "-" && n == "-") { print "- -"; exit }
                if (h == "-") { print n, "nginx"; exit }
                if (n == "-") { print h, "HAProxy"; exit }
                if ((b == "max" && h >= n) || (b == "min" && h <= n)) print h, "HAProxy"; else print n, "nginx" }')
        fi
        r=$(ratio "$ge" "$peer")
        met=$(awk -v r="$r" -v g="$goal" 'BEGIN { if (r == "-") { print "-"; exit }
            op = substr(g, 1, 2); lim = substr(g, 3) + 0
            if (op == ">=") print (r + 0 >= lim) ? "met" : "**not met**"; else print (r + 0 <= lim) ? "met" : "**not met**" }')
    fi
    if [[ $met != - ]]; then
        TARGETS_ALL=$((TARGETS_ALL + 1))
        if [[ $met == met ]]; then
            TARGETS_MET=$((TARGETS_MET + 1))
        else
            local short="${label%, *} ($w worker$( ((w > 1)) && echo s))"
            if [[ $better == fixed ]]; then
                TARGETS_MISSED+=("$short: $(fmt "$ge" "$dec")")
            else
                TARGETS_MISSED+=("$short: ${r}× $peername")
            fi
        fi
    fi
    local goaltext=${goal/>=/≥ }
    goaltext=${goaltext/<=/≤ }
    [[ $better != fixed ]] && goaltext+="× $([[ $better == haproxy ]] && echo HAProxy || echo "the better peer")"
    [[ $better == fixed ]] && goaltext+=" $7"
    local rtext="$r ($peername)"
    [[ $better == fixed ]] && rtext=-
    echo "| $label | $w | $(fmt "$ge" "$dec") | $(fmt "$ha" "$dec") | $(fmt "$ng" "$dec") | $rtext | $goaltext | $met |"
}

report_targets() {
    local w
    has geoedge "${PROXIES[@]}" || return 0
    echo "### Targets"
    echo
    echo "Ratios are geoedge over the better of HAProxy and nginx (the higher rate, the lower latency, CPU or memory),"
    echo "from the medians below; kernel memory is compared with HAProxy's, as the issue asks. Kernel slab figures"
    echo "move by a few percent with whatever else the machine does, so a ratio within about 0.05 of 1 is a tie."
    echo
    echo "| target | workers | geoedge | HAProxy | nginx | ratio (peer) | goal | |"
    echo "|---|---|---:|---:|---:|---:|---|---|"
    for w in "${WORKERS[@]}"; do
        if has conn "${TESTS[@]}"; then
            target_row "new connections/s" "$w" "conn|rps" max ">=1.05" 0
        fi
        if has ka "${TESTS[@]}"; then
            target_row "keep-alive requests/s" "$w" "ka|rps" max ">=1.10" 0
            target_row "keep-alive p99 latency, ms" "$w" "ka|p99" min "<=1.00" 3
        fi
        if has bulk "${TESTS[@]}"; then
            target_row "bulk, 1 stream up, Mbit/s" "$w" "bulk|b1up" max ">=1.10" 0
            target_row "bulk, 1 stream down, Mbit/s" "$w" "bulk|b1down" max ">=1.10" 0
            target_row "bulk, 4 streams up, Mbit/s" "$w" "bulk|b4up" max ">=1.10" 0
            target_row "bulk, 4 streams down, Mbit/s" "$w" "bulk|b4down" max ">=1.10" 0
        fi
        if has idle "${TESTS[@]}"; then
            target_row "process memory per idle connection, bytes" "$w" "idle|rss" fixed "<=3072" 0 "bytes (3 KiB)"
            target_row "kernel memory per idle connection, bytes" "$w" "idle|slab" haproxy "<=1.00" 0
        fi
        if has ka "${TESTS[@]}"; then
            target_row "proxy CPU s per 100k keep-alive requests" "$w" "ka|cpu" min "<=0.80" 3
        fi
    done
    echo
    echo "Met: $TARGETS_MET of $TARGETS_ALL."
    if ((${#TARGETS_MISSED[@]})); then
        echo "Not met: $(printf '%s; ' "${TARGETS_MISSED[@]}" | sed 's/; $/./')"
    fi
    echo
    echo "From round to round the same configuration moves by up to about 15% on this shared machine (see the"
    echo "samples in the tables below), so a ratio within about 0.1 of its goal is not decided by one run."
    echo
}

# the configurations, with the temporary directory's name replaced
show_file() { # title file
    [[ -f $2 ]] || return 0
    echo "$1:"
    echo
    echo '```'
    sed -e "s|$WORK|\$WORK|g" -e '/^$/N;/^\n$/D' "$2"
    echo '```'
    echo
}

report() {
    local cpu_model mem_gib
    cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem_gib=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
    if [[ -n $CAP ]]; then
        echo "## Proxy-bound (issue 22, item 1)"
        echo
        echo "\`CAP=$CAP benches/load/run.sh\` with TESTS=\"${TESTS[*]}\" PROXIES=\"${PROXIES[*]}\" WORKERS=\"${WORKERS[*]}\" REPS=$REPS DURATION=$DURATION PRIO=$PRIO;"
        echo "run of $(date -u '+%Y-%m-%d %H:%M UTC'): $NPROC× $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r),"
        echo "geoedge $GEOEDGE_REV, $(haproxy -v 2>&1 | head -n 1 | sed 's/ - https.*//; s/ version//'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}')."
        echo "The full tables of the same run follow in the next section (printed; with DOC=1 only this section is written)."
        echo
        report_capped
    fi
    echo "## Load: geoedge against HAProxy and nginx stream (issue 6)"
    echo
    echo "\`benches/load/run.sh\` (root; \`apt-get install -y --no-install-recommends haproxy nginx"
    echo "libnginx-mod-stream wrk iperf3 sqlite3 python3\`, and cargo) builds geoedge in release and measures, in"
    echo "one run on this machine, direct (no proxy), geoedge, HAProxy \`mode tcp\` and nginx \`stream\` at one and"
    echo "at two worker threads (geoedge \`--workers N\`, HAProxy \`nbthread N\`, nginx \`worker_processes N\`),"
    echo "each proxy started afresh with its own configuration for every configuration and round; the proxies"
    echo "alternate within each of $REPS rounds and the figures are the medians, samples in brackets. Everything"
    echo "runs on 127.0.0.1: backend nginx (one worker, \`return 200 \"hello world\\n\"\`), an iperf3 server, and"
    echo "an idle-connection sink (\`benches/load/idle.py\`). With one worker, the client (wrk, iperf3) runs on"
    echo "CPU 0 with the backends and the proxy on CPU 1 (direct: the backend on CPU 1); with two, nothing is"
    echo "pinned and wrk runs two threads. Before each configuration the script waits for the shared machine to"
    echo "be idle; a sample during which other processes used more than $OTHER_MAX% of a core, or the hypervisor"
    echo "took more than $STEAL_MAX% of one (steal time, /proc/stat), is marked \\*, and a median leaves marked samples"
    echo "out unless all of them are. (f)"
    echo "runs in two network namespaces. Re-run and rewrite this section with one command:"
    echo
    echo '```sh'
    echo "sudo benches/load/run.sh                                  # about $(((ELAPSED + 30) / 60)) minutes, plus the build"
    echo 'sudo TESTS="ka conn" WORKERS=1 benches/load/run.sh        # a subset: printed, docs untouched'
    echo 'sudo GEOEDGE=/path/to/geoedge benches/load/run.sh         # another build'
    echo '```'
    echo
    echo "The settings (TESTS, PROXIES, WORKERS, REPS, DURATION, BULK_DURATION, CONNS, IDLE_CONNS, ...) are described"
    echo "at the top of the script."
    echo
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), $((ELAPSED / 60)) min $((ELAPSED % 60)) s: $NPROC× $cpu_model, ${mem_gib} GiB,"
    echo "kernel $(uname -r), geoedge $GEOEDGE_REV ($GEOEDGE_FROM), $(haproxy -v 2>&1 | head -n 1 | sed 's/ - https.*//'),"
    echo "$(nginx -v 2>&1 | sed 's/^nginx version: //'), wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}'),"
    echo "$(iperf3 --version 2>&1 | head -n 1 | sed 's/ (cJSON.*//'), Python $(python3 -c 'import platform; print(platform.python_version())'),"
    echo "TCP congestion control $(sysctl -n net.ipv4.tcp_congestion_control), open-file limit $NOFILE."
    if [[ $PRIO == rr && -n $CAP ]]; then
        echo "PRIO=rr: wrk and iperf3 ran under SCHED_RR priority 50 (\`chrt -r 50\`), the backends at 51 (the iperf3 server at 50); the capped proxies at normal priority."
    elif [[ $PRIO == rr ]]; then
        echo "PRIO=rr: proxies, wrk and iperf3 ran under SCHED_RR priority 50 (\`chrt -r 50\`), the backends at 51 (the iperf3 server at 50)."
    fi
    ((GE_WORKERS_FLAG)) || echo "geoedge had no \`--workers\` flag yet: $GE_NOTE."
    [[ -n $IDLE_NOTE ]] && echo "Idle connections: $IDLE_NOTE."
    [[ -n $BASELINE ]] && echo "Baseline: $BASELINE ($BASELINE_REV), started like geoedge; the wg test uses geoedge only."
    if has logtext "${PROXIES[@]}" || has logjson "${PROXIES[@]}"; then
        echo "Access logs: files in $LOG_DIR, on $LOG_FS, emptied after each configuration."
    fi
    echo
    report_baseline
    report_variants
    report_targets
    has ka "${TESTS[@]}" && report_wrk ka
    has conn "${TESTS[@]}" && report_wrk conn
    has sni "${TESTS[@]}" && report_wrk sni
    has bulk "${TESTS[@]}" && report_bulk
    has idle "${TESTS[@]}" && report_idle
    if has ka "${TESTS[@]}" || has conn "${TESTS[@]}"; then report_cpu; fi
    has wg "${TESTS[@]}" && report_wg
    if ((BUSY_STARTS || CONTENDED)); then
        echo "Contention: $BUSY_STARTS configuration(s) started on a busy machine, $CONTENDED sample(s) marked \\*."
        echo
    fi
    if ((${#FAILS[@]})); then
        echo "Failures: $(printf '%s; ' "${FAILS[@]}")"
        echo
    fi
    if ((${#LOCAL_TESTS[@]})); then
        echo "### Configurations"
        echo
        echo "Written by the script into its temporary directory (\$WORK); two workers change only \`nbthread\`,"
        echo "\`worker_processes\` and \`--workers\`."
        echo
        show_file "Backend nginx" "$WORK/backend.conf"
        has haproxy "${PROXIES[@]}" && show_file "HAProxy (\`haproxy -f FILE -db\`)" "$WORK/haproxy-${WORKERS[0]}.cfg"
        has nginx "${PROXIES[@]}" && show_file "nginx stream (\`nginx -c FILE -g 'daemon off;'\`)" "$WORK/nginx-stream-${WORKERS[0]}.conf"
        if has geoedge "${PROXIES[@]}"; then
            geoedge_cmd "${WORKERS[0]}"
            echo "geoedge (routing.db from \`geoedge db init --empty\` plus these rows):"
            echo
            echo '```'
            # Settings taken from the environment (GEOEDGE_SPLICE=off, ...).
            env | grep '^GEOEDGE_' | grep -v '^GEOEDGE_LABEL=' | sort | sed 's/$/ \\/'
            echo "${GE_CMD[*]}" | sed -e "s|$WORK|\$WORK|g" -e "s|$GEOEDGE|geoedge|"
            echo "$GE_SQL"
            echo '```'
            echo
        fi
        if has reference "${PROXIES[@]}"; then
            echo "Reference relay (\`cc -O2 -o reference-relay $(basename "$REFERENCE_SRC")\`, one process per listener):"
            echo
            echo '```'
            echo "reference-relay ${PORT_HTTP[reference]} $B_HTTP"
            echo "reference-relay ${PORT_IPERF[reference]} $B_IPERF"
            echo "reference-relay ${PORT_IDLE[reference]} $B_SINK"
            echo '```'
            echo
        fi
        for v in $(proxies_in "${VARIANTS[@]}"); do
            geoedge_cmd "${WORKERS[0]}" "$v"
            echo "${LABEL[$v]}:"
            echo
            echo '```'
            echo "${GE_CMD[*]}" | sed -e "s|$WORK|\$WORK|g" -e "s|$GEOEDGE|geoedge|"
            echo '```'
            echo
            [[ -s $WORK/$v.sample ]] && echo "A line: \`$(cat "$WORK/$v.sample")\`" && echo
        done
        if has baseline "${PROXIES[@]}"; then
            geoedge_cmd "${WORKERS[0]}" baseline
            echo "baseline (the same rows in its own routing.db):"
            echo
            echo '```'
            echo "${GE_CMD[*]}" | sed -e "s|$WORK|\$WORK|g" -e "s|$BASELINE|baseline|"
            echo '```'
            echo
        fi
    fi
}

echo
report >"$WORK/section.md"
cat "$WORK/section.md"

# --- docs/benchmarks.md ---------------------------------------------------------------------
full=0
[[ -z $BASELINE && "${TESTS[*]}" == "$DEFAULT_TESTS" && "${PROXIES[*]}" == "$DEFAULT_PROXIES" && "${WORKERS[*]}" == "$DEFAULT_WORKERS" ]] && full=1
if [[ $DOC == 1 || ($DOC == auto && $full == 1) ]]; then
    python3 - "$REPO/docs/benchmarks.md" "$WORK/section.md" <<'EOF' || echo "run.sh: could not write docs/benchmarks.md" >&2
import sys
doc_path, section_path = sys.argv[1], sys.argv[2]
section = open(section_path).read().rstrip("\n") + "\n"
heading = section.splitlines()[0]
# one section: a proxy-bound run (CAP) prints the issue 6 tables after its own
sl = section.splitlines(keepends=True)
nxt = next((i for i in range(1, len(sl)) if sl[i].startswith("## ")), None)
if nxt is not None:
    section = "".join(sl[:nxt]).rstrip("\n") + "\n"
try:
    lines = open(doc_path).read().splitlines(keepends=True)
except FileNotFoundError:
    lines = ["# Benchmarks\n"]
start = next((i for i, l in enumerate(lines) if l.rstrip("\n") == heading), None)
if start is None:
    text = "".join(lines).rstrip("\n") + "\n\n" + section
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[end:])
    text = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
open(doc_path + ".tmp", "w").write(text)
import os
os.replace(doc_path + ".tmp", doc_path)
EOF
    echo "== wrote the section to docs/benchmarks.md"
fi

((BUSY_STARTS)) && echo "WARNING: $BUSY_STARTS configuration(s) started while other work loaded the machine: figures may be low" >&2
((CONTENDED)) && echo "WARNING: $CONTENDED sample(s) marked * ran while other processes used more than $OTHER_MAX% of a core or steal time was over $STEAL_MAX%" >&2
if ((${#FAILS[@]})); then
    printf 'FAILED: %s\n' "${FAILS[@]}" >&2
    exit 1
fi
exit 0
