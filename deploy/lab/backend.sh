#!/bin/sh
# One connection to a lab backend. socat runs this for each connection, with
# the connection on standard input and output and the caller's address in
# SOCAT_PEERADDR. It reads geoedge's PROXY v1 header, answers with one line
# saying which backend this is, which client geoedge said it serves and
# which address the connection came from (a POP's overlay address when it
# came through WireGuard), then echoes everything else.
IFS= read -r header || exit 0
# shellcheck disable=SC2086 # split the header into its words
set -- $header
printf 'backend=%s region=%s client=%s peer=%s\n' \
  "${LAB_BACKEND:-?}" "${LAB_REGION:-?}" "${3:-unknown}" "${SOCAT_PEERADDR:-unknown}"
exec cat
