#!/usr/bin/env bash
# A three-POP geoedge lab on one machine, built from network namespaces:
# POPs eu, us and sa, each running `geoedge run` with its own routing.db and
# two backends, joined by geoedge's WireGuard backhaul. See docs/lab.md.
#
#   lab.sh up              build the lab (cleans up after itself if a step fails)
#   lab.sh down            remove everything the lab made (also a half-built lab)
#   lab.sh push            push the master routing.db to every POP
#   lab.sh probe POP IP    connect to POP (eu, us, sa) as client IP; print the backend's greeting
#   lab.sh wg POP [ARGS]   `wg show` on POP's WireGuard interface (default: all of it)
#   lab.sh status          processes, tunnels and routing.db generations
#
# Run as root. Needs iproute2, sqlite3, socat and a geoedge binary; `wg`
# (wireguard-tools) for `lab.sh wg`.
#
# Environment:
#   GEOEDGE     the geoedge binary (default: geoedge on the PATH, else
#               target/release/geoedge of this checkout)
#   GELAB_NAME  prefix of every namespace and interface (default gelab, at
#               most 12 characters: WireGuard interfaces are NAME-eu, ...)
#   GELAB_DIR   where keys, routing.db copies, settings and logs go
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

# Whether geoedge (pid $1) has said it is listening in log $2; fails the
# whole `up` at once when it exited instead.
listening() {
  grep -q "^listening " "$2" && return 0
  kill -0 "$1" 2>/dev/null || die "geoedge exited; its log:$(echo && cat "$2")"
  return 1
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
  declare -A pub pid
  for r in "${regions[@]}"; do
    (umask 077 && "$geoedge" wg genkey >"$dir/$r/wg.key")
    pub[$r]=$("$geoedge" wg pubkey <"$dir/$r/wg.key")
  done

  log "routing.db: the master copy $dir/master/routing.db, pushed to every POP"
  "$geoedge" db init --empty "$dir/master/routing.db" >/dev/null
  render "$here/routing.sql.in" EU_PUB="${pub[eu]}" US_PUB="${pub[us]}" SA_PUB="${pub[sa]}" \
    WAN="$wan" OVERLAY="$overlay" | sqlite3 -bail "$dir/master/routing.db"
  cmd_push >/dev/null

  for r in "${regions[@]}"; do
    log "POP $r: geoedge run (interface $(ns "$r"), listening on $(underlay_ip "$r"):8080)"
    render "$here/pop.toml.in" REGION="$r" DIR="$dir" CLIENT_IP="$client_ip" \
      UNDERLAY_IP="$(underlay_ip "$r")" OVERLAY_IP="$(overlay_ip "$r")" \
      WG_IF="$(ns "$r")" >"$dir/$r/geoedge.toml"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} spawn "$(ns "$r")" "$dir/$r/geoedge.log" \
      "$geoedge" run --config "$dir/$r/geoedge.toml"
    pid[$r]=$spawned
  done
  for r in "${regions[@]}"; do
    local deadline=$((SECONDS + 30))
    until listening "${pid[$r]}" "$dir/$r/geoedge.log"; do
      [ $SECONDS -lt $deadline ] ||
        die "geoedge at POP $r did not start within 30 s; its log:$(echo && cat "$dir/$r/geoedge.log")"
      sleep 0.1
    done
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
  trap - EXIT INT TERM
  cat <<EOF
The lab $name is up ($dir).
  clients (namespace $(ns wan), $client_ip) reach the POPs at $(underlay_ip eu):8080 (eu), $(underlay_ip us):8080 (us), $(underlay_ip sa):8080 (sa)
  try:   $0 probe eu 81.2.69.160        # a London client at the eu POP
  drain: sqlite3 $dir/master/routing.db "UPDATE backends SET healthy = 0 WHERE region = 'eu';" && $0 push
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

cmd_push() {
  [ -f "$dir/master/routing.db" ] || die "no lab at $dir"
  local targets=() r
  for r in "${regions[@]}"; do
    targets+=("$dir/$r/routing.db")
  done
  GEOEDGE=$geoedge "$here/../push-routing-db.sh" "$dir/master/routing.db" "${targets[@]}"
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

cmd_status() {
  local r
  for r in "${regions[@]}"; do
    echo "== POP $r ($(ns "$r"), $(underlay_ip "$r"), overlay $(overlay_ip "$r"))"
    if [ -e "/var/run/netns/$(ns "$r")" ]; then
      ip netns pids "$(ns "$r")" | xargs -r ps -o pid=,args= -p
      grep -a "routing.db reloaded" "$dir/$r/geoedge.log" | tail -n 1 || true
      if command -v wg >/dev/null; then
        wg show "$(ns "$r")" latest-handshakes || true
      fi
    else
      echo "not running"
    fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  push) cmd_push ;;
  probe) shift && cmd_probe "$@" ;;
  wg) shift && cmd_wg "$@" ;;
  status) cmd_status ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
