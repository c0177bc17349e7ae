#!/usr/bin/env bash
# Builds geoedge's Debian package with cargo-deb and checks it: the control
# fields and file list (dpkg-deb -I/-c), then a real install with dpkg -i,
# the installed units through `systemd-analyze verify` exactly as shipped,
# `/usr/bin/geoedge check-host` from the package, and a purge that must leave
# nothing behind.
#
# The install changes the machine (a package, a system user), so it runs
# only under CI (CI=true) as root, or when asked with --install, and never
# where geoedge is already installed. Everything it adds is undone on exit,
# also on failure: `dpkg -P geoedge`, and the geoedge user and group when
# this script's install created them.
#
#   bash deploy/check-deb.sh            # build and inspect; install under CI
#   bash deploy/check-deb.sh --install  # also install, check and purge here
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
install=no
if [ "${1:-}" = "--install" ] || [ "${CI:-}" = "true" ]; then
  install=yes
fi

phase_start=$SECONDS
phase() {
  echo "check-deb: $1 ($((SECONDS - phase_start)) s)"
  phase_start=$SECONDS
}
fail() {
  echo "check-deb: FAILED: $*" >&2
  exit 1
}

if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
  phase "installed cargo-deb $CARGO_DEB_VERSION"
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
rm -f "$target"/debian/geoedge_*.deb
cargo deb --quiet >/dev/null
deb=$(ls "$target"/debian/geoedge_*_amd64.deb)
phase "built $deb ($(du -h "$deb" | cut -f1))"

# The control fields and the file list.
info=$(dpkg-deb -I "$deb")
grep -q '^ Package: geoedge$' <<<"$info" || fail "no Package: geoedge in $info"
grep -q '^ Depends: .*iproute2' <<<"$info" || fail "Depends lacks iproute2"
for script in postinst prerm postrm; do
  grep -q " $script " <<<"$info" || fail "no $script"
done
files=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in \
  ./usr/bin/geoedge \
  ./lib/systemd/system/geoedge.service \
  ./lib/systemd/system/geoedge-wg.service \
  ./lib/systemd/system/geoedge-nats.service \
  ./usr/share/doc/geoedge/examples/nats-server.conf \
  ./usr/share/doc/geoedge/multi-pop.md \
  ./usr/lib/sysusers.d/geoedge.conf \
  ./usr/lib/tmpfiles.d/geoedge.conf \
  ./usr/lib/sysctl.d/90-geoedge.conf \
  ./etc/security/limits.d/90-geoedge.conf \
  ./etc/geoedge/edge.toml \
  ./etc/geoedge/backend.toml \
  ./usr/share/doc/geoedge/examples/three-regions.sql \
  ./usr/share/doc/geoedge/deploy.md \
  ./usr/share/doc/geoedge/kernel-tuning.md; do
  grep -qx "$f" <<<"$files" || fail "$f is not in the package"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
for f in /etc/geoedge/edge.toml /etc/geoedge/backend.toml /etc/security/limits.d/90-geoedge.conf; do
  grep -qx "$f" <<<"$conffiles" || fail "$f is not a conffile"
done
# The shipped files are the repository's, byte for byte.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
cmp sysctl/90-geoedge.conf "$unpacked/usr/lib/sysctl.d/90-geoedge.conf"
cmp deploy/systemd/geoedge.service "$unpacked/lib/systemd/system/geoedge.service"
phase "contents and control fields ok"

if [ "$install" != "yes" ]; then
  echo "check-deb: not installing (only under CI=true, or with --install)"
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "installing needs root"
if dpkg-query -W -f '${Status}' geoedge 2>/dev/null | grep -q 'installed'; then
  fail "geoedge is already installed here; not touching it"
fi
[ ! -e /usr/bin/geoedge ] || fail "/usr/bin/geoedge exists; not touching it"
[ ! -e /etc/geoedge ] || fail "/etc/geoedge exists; not touching it"
had_user=no
getent passwd geoedge >/dev/null && had_user=yes
# The tmpfiles snippet makes /run/wireguard the geoedge user's; put back
# what was there.
run_wg=$(stat -c '%u:%g %a' /run/wireguard 2>/dev/null || echo absent)

cleanup() {
  dpkg -P geoedge >/dev/null 2>&1 || true
  if [ "$run_wg" = absent ]; then
    rmdir /run/wireguard 2>/dev/null || true
  elif [ -d /run/wireguard ]; then
    chown "${run_wg% *}" /run/wireguard
    chmod "${run_wg#* }" /run/wireguard
  fi
  if [ "$had_user" = no ] && getent passwd geoedge >/dev/null; then
    userdel geoedge 2>/dev/null || true
    getent group geoedge >/dev/null && groupdel geoedge 2>/dev/null || true
  fi
  rm -rf "$unpacked"
}
trap cleanup EXIT

dpkg -i "$deb"
phase "installed with dpkg -i"

getent passwd geoedge >/dev/null || fail "no geoedge user after install"
[ "$(stat -c '%U %a' /var/lib/geoedge)" = "geoedge 750" ] || fail "/var/lib/geoedge: $(stat -c '%U %a' /var/lib/geoedge)"
[ "$(stat -c '%U %a' /etc/geoedge/wg.key)" = "root 600" ] || fail "/etc/geoedge/wg.key: $(stat -c '%U %a' /etc/geoedge/wg.key)"
/usr/bin/geoedge wg pubkey </etc/geoedge/wg.key >/dev/null
/usr/bin/geoedge --version

# The units exactly as installed, /usr/bin/geoedge now being real.
out=$(systemd-analyze verify --man=no /lib/systemd/system/geoedge.service /lib/systemd/system/geoedge-wg.service 2>&1) \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"

# check-host from the package: every shipped key has a row.
report=$(/usr/bin/geoedge check-host)
echo "$report"
rows=$(grep -c -E ' (ok|SHORT|unavailable)$' <<<"$report")
keys=$(grep -c -E '^[a-z]' /usr/lib/sysctl.d/90-geoedge.conf)
[ "$rows" = "$((keys + 1))" ] || fail "check-host printed $rows rows for $keys keys and the open-file limit"
set +e
/usr/bin/geoedge check-host --strict >/dev/null
strict=$?
set -e
want=0
grep -q ' SHORT$' <<<"$report" && want=1
[ "$strict" = "$want" ] || fail "check-host --strict exited $strict, expected $want"
phase "installed package checked (check-host --strict: exit $strict)"

dpkg -P geoedge
for f in /usr/bin/geoedge /lib/systemd/system/geoedge.service /etc/geoedge /var/lib/geoedge \
  /usr/lib/sysctl.d/90-geoedge.conf /etc/security/limits.d/90-geoedge.conf; do
  [ ! -e "$f" ] || fail "$f is left after dpkg -P"
done
phase "purged"
echo "check-deb: ok"
