#!/usr/bin/env bash
# The RUSTC_WRAPPER of src/fuzz/run.sh: compiles the cryptography crates
# under boringtun without SanitizerCoverage (and without debug assertions)
# and everything else as asked.
# Their constant-time arithmetic has no input-dependent branches for the
# fuzzer to find, yet its instrumented comparisons took most of the
# WireGuard target's time (each engine derives keys, each handshake does
# Diffie-Hellman); without them that target runs several times faster.
rustc="$1"
shift
plain=no
prev=
for a in "$@"; do
  if [ "$prev" = --crate-name ]; then
    case "$a" in
      curve25519_dalek | x25519_dalek | blake2 | chacha20 | chacha20poly1305 | poly1305 | \
        aead | universal_hash | subtle | digest | hmac | ring) plain=yes ;;
    esac
    break
  fi
  prev="$a"
done
if [ "$plain" = no ]; then
  exec "$rustc" "$@"
fi
args=()
for a in "$@"; do
  case "$a" in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-* | -Cdebug-assertions) ;;
    *) args+=("$a") ;;
  esac
done
exec "$rustc" "${args[@]}"
