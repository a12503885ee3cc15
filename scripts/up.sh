#!/usr/bin/env bash
# Builds shoal and starts a whole cluster on this machine (`shoal up`),
# after installing the Debian packages the build and the node agent need.
# Arguments go to `shoal up` (e.g. --data-dir /tmp/shoal, --no-agent).
# As root, the cluster has a node agent that runs pods for real.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Under sudo, root's PATH may lack the invoking user's rustup toolchain.
if ! command -v cargo >/dev/null 2>&1; then
  for home in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}" "$HOME"; do
    if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH="$home/.cargo/bin:$PATH"
      export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
      break
    fi
  done
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
if [ -z "${RUSTC_WRAPPER:-}" ] && command -v sccache >/dev/null 2>&1; then
  export RUSTC_WRAPPER=sccache
fi
exec cargo run --release -p shoal -- up "$@"
