#!/usr/bin/env bash
# Pushes one routing.db (the operator's master copy) to every POP, safely:
#
#   1. a consistent copy of the master with sqlite3's `.backup` (it waits
#      for a writer to finish and never copies half a transaction, unlike
#      cp), switched to rollback-journal mode so no -wal file travels or
#      lingers beside a POP's copy;
#   2. `PRAGMA integrity_check` and `geoedge db check` on that copy, so a
#      broken or invalid table never leaves the operator's machine;
#   3. for each POP: the copy is written next to the POP's routing.db under
#      a temporary name (same directory, so the same filesystem), flushed to
#      disk, then renamed over routing.db in one step. geoedge's reloader
#      sees the new file (it watches the directory and the file's inode) and
#      applies it within about a second; a reader never sees a partial file.
#
# Usage: push-routing-db.sh MASTER TARGET...
#   TARGET is a local path (/var/lib/geoedge/routing.db) or
#   [user@]host:/path/routing.db (copied with scp and renamed with ssh).
#   Prints the copy's sha256 first, then one line per POP pushed.
# Environment: GEOEDGE, the geoedge binary for `db check` (default: geoedge
# on the PATH; the check is skipped with a warning when there is none).
# Exits non-zero, naming the POP, when a copy could not be pushed; POPs not
# reached keep the table they had.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 MASTER TARGET..." >&2
  exit 2
fi
master=$1
shift
[ -f "$master" ] || { echo "$master: no such file" >&2; exit 2; }
geoedge=${GEOEDGE:-$(command -v geoedge || true)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
snap=$work/routing.db

# 1. A consistent copy, in rollback-journal mode.
sqlite3 -bail "$master" ".timeout 5000" ".backup '$snap'"
sqlite3 -bail "$snap" "PRAGMA journal_mode = DELETE;" >/dev/null

# 2. Checked before it goes anywhere.
check=$(sqlite3 -bail "$snap" "PRAGMA integrity_check;")
if [ "$check" != "ok" ]; then
  echo "integrity check of the copy of $master failed: $check" >&2
  exit 1
fi
if [ -n "$geoedge" ]; then
  if ! verdict=$("$geoedge" db check "$snap" 2>&1); then
    echo "$verdict" >&2
    echo "$master is not a valid routing.db: nothing pushed" >&2
    exit 1
  fi
  echo "checked: ${verdict#"$snap: "}"
else
  echo "warning: no geoedge binary (set GEOEDGE): routing.db not validated before the push" >&2
fi

# What every POP will hold, to compare with `sha256sum routing.db` there.
echo "routing.db sha256 $(sha256sum "$snap" | cut -d' ' -f1)"

# 3. Shipped and swapped in by rename.
tmpname=".routing.db.push.$$"
failed=0
for target in "$@"; do
  case $target in
    /* | ./* | ../*) remote= ;;
    *:*) remote=${target%%:*} target=${target#*:} ;;
    *) remote= ;;
  esac
  dir=$(dirname "$target")
  tmp=$dir/$tmpname
  if [ -z "$remote" ]; then
    if cp "$snap" "$tmp" && sync "$tmp" && mv -f "$tmp" "$target"; then
      echo "pushed to $target"
    else
      rm -f "$tmp"
      echo "push to $target failed" >&2
      failed=1
    fi
  else
    # The paths are expanded here, on purpose.
    # shellcheck disable=SC2029
    if scp -q "$snap" "$remote:$tmp" &&
      ssh "$remote" "sync '$tmp' && mv -f '$tmp' '$target'"; then
      echo "pushed to $remote:$target"
    else
      # shellcheck disable=SC2029
      ssh "$remote" "rm -f '$tmp'" || true
      echo "push to $remote:$target failed" >&2
      failed=1
    fi
  fi
done
exit $failed
