#!/usr/bin/env bash
# Builds geoedge's fuzz targets and runs each for a while from its
# checked-in seed corpus; fails on any crash, panic, timeout or OOM.
#
# The targets (each crate sits beside the code it fuzzes, with its own
# Cargo.lock, outside the main workspace):
#   proxy_protocol  src/fuzz        PROXY v1/v2 parser on arbitrary bytes; encode -> parse round trip
#   client_hello    src/fuzz        TLS ClientHello (SNI) parser on arbitrary bytes; re-framed hellos
#   routing_rows    routing/fuzz    routing.db row validation, snapshot build, reload diff, decisions
#   wg_datagram     wireguard/fuzz  WireGuard engine on arbitrary, mangled and replayed datagrams
#   wg_gro          wireguard/fuzz  GRO coalescer on batches of TCP segments and junk
#   mmdb_load       geoip/fuzz      MaxMind DB loader and lookups on mutated .mmdb files
# Seeds live in <crate>/fuzz/seeds/<target>/; they are copied to a scratch
# directory before a run, so runs never grow the repository.
#
# By hand:
#   src/fuzz/run.sh                            # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=600 src/fuzz/run.sh wg_datagram
#   FUZZ_JOBS=1 src/fuzz/run.sh proxy_protocol mmdb_load
#   # reproduce a crash (the run prints the artifact's path):
#   target/fuzz/bin/proxy_protocol target/fuzz/artifacts/proxy_protocol/crash-...
# Settings (environment): FUZZ_SECONDS (per target, default 60), FUZZ_JOBS
# (targets run at once, default 2), FUZZ_TARGET_DIR (cargo target dir,
# default target/fuzz/cargo), FUZZ_KEEP_CORPUS=DIR (copy each grown corpus
# to DIR/<target> afterwards, to pick new seeds from).
#
# With cargo-fuzz installed (`cargo install cargo-fuzz --locked`) the same
# crates work with it, e.g. from routing/: `cargo fuzz run -s none
# routing_rows fuzz/corpus/routing_rows fuzz/seeds/routing_rows`; for the
# PROXY target pass `--fuzz-dir src/fuzz` from the repository root. Its
# default AddressSanitizer build needs a nightly toolchain (`cargo +nightly
# fuzz run ...`); this script needs only the stable one.
#
# How it builds: exactly as `cargo fuzz build -s none --debug-assertions`
# does (libFuzzer from the libfuzzer-sys crate, SanitizerCoverage through
# stable rustc flags), but with plain cargo, so CI needs no extra tool and
# no nightly toolchain. No sanitizer: the code under test is safe Rust, and
# debug assertions with overflow checks stay on, so an arithmetic overflow
# on hostile input is a crash here too. One difference: the cryptography
# crates under boringtun are built without coverage instrumentation
# (src/fuzz/rustc-wrapper.sh), which makes wg_datagram several times faster.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-2}"
out="$root/target/fuzz"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$out/cargo}"

# target name -> crate directory
declare -A crate=(
  [proxy_protocol]=src/fuzz
  [client_hello]=src/fuzz
  [routing_rows]=routing/fuzz
  [wg_datagram]=wireguard/fuzz
  [wg_gro]=wireguard/fuzz
  [mmdb_load]=geoip/fuzz
)
order=(proxy_protocol client_hello routing_rows wg_datagram wg_gro mmdb_load)

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${order[@]}")
for t in "${targets[@]}"; do
  [ -n "${crate[$t]:-}" ] || { echo "unknown fuzz target: $t (known: ${order[*]})" >&2; exit 2; }
done

host="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes (see `cargo fuzz build -v`), plus debug assertions.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Ccodegen-units=1 -Cdebug-assertions"
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# Leaves the cryptography crates uninstrumented (see the wrapper).
export RUSTC_WRAPPER="$root/src/fuzz/rustc-wrapper.sh"

mkdir -p "$out/bin" "$out/logs"
start=$(date +%s)
built=()
for t in "${targets[@]}"; do
  dir="${crate[$t]}"
  case " ${built[*]} " in *" $dir "*) continue ;; esac
  built+=("$dir")
  bins=()
  for u in "${targets[@]}"; do [ "${crate[$u]}" = "$dir" ] && bins+=(--bin "$u"); done
  echo "fuzz: building ${bins[*]} ($dir)"
  # --target keeps the coverage flags off build scripts and proc macros.
  cargo build --locked --release --quiet --manifest-path "$dir/Cargo.toml" \
    --target "$host" "${bins[@]}"
done
for t in "${targets[@]}"; do
  cp "$CARGO_TARGET_DIR/$host/release/$t" "$out/bin/$t"
done
echo "fuzz: built in $(( $(date +%s) - start )) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Runs one target for $seconds from a copy of its seeds; its log goes to
# $out/logs/<target>.log, crashing inputs to $out/artifacts/<target>/.
run_one() {
  local t="$1" seeds="$root/${crate[$1]}/seeds/$1"
  local corpus="$scratch/$t" art="$out/artifacts/$t"
  rm -rf "$art"
  mkdir -p "$corpus" "$art"
  if [ -d "$seeds" ]; then cp -r "$seeds/." "$corpus/"; fi
  "$out/bin/$t" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" \
    >"$out/logs/$t.log" 2>&1
}

start=$(date +%s)
declare -A pid
failed=()
running=()
wait_one() {
  local p="${running[0]}"
  running=("${running[@]:1}")
  local t="${pid[$p]}"
  if ! wait "$p"; then failed+=("$t"); fi
}
for t in "${targets[@]}"; do
  while [ ${#running[@]} -ge "$jobs" ]; do wait_one; done
  run_one "$t" &
  pid[$!]="$t"
  running+=("$!")
done
while [ ${#running[@]} -gt 0 ]; do wait_one; done
elapsed=$(( $(date +%s) - start ))

# One line per target: executions, speed, coverage (edges and features, as
# libFuzzer counts them), corpus size.
printf '%-15s %12s %9s %7s %8s %7s  %s\n' target execs exec/s cov ft corpus result
for t in "${targets[@]}"; do
  log="$out/logs/$t.log"
  fstat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  done_line="$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")"
  result=ok
  case " ${failed[*]} " in *" $t "*) result=FAILED ;; esac
  printf '%-15s %12s %9s %7s %8s %7s  %s\n' "$t" "$(fstat number_of_executed_units)" \
    "$(fstat average_exec_per_sec)" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
  if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
    mkdir -p "$FUZZ_KEEP_CORPUS/$t"
    cp -r "$scratch/$t/." "$FUZZ_KEEP_CORPUS/$t/"
  fi
done
echo "fuzz: ran ${#targets[@]} targets for ${seconds} s each, $jobs at a time, in ${elapsed} s"

for t in "${failed[@]}"; do
  echo "=== $t failed; the end of $out/logs/$t.log:"
  tail -n 60 "$out/logs/$t.log"
  for a in "$out/artifacts/$t"/*; do
    [ -f "$a" ] || continue
    echo "--- input $a ($(stat -c %s "$a") bytes), base64:"
    base64 -w 0 "$a" | head -c 8192
    echo
  done
done
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
