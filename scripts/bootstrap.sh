#!/usr/bin/env bash
# Creates .venv with the project and its test dependencies, and builds the native fast path
# (native/, Rust through maturin) into it (idempotent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
# The native fast path: rebuilt when its sources change. Without cargo the consumer still runs
# (on the Python path, with a warning at start-up); the test suite requires it.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
native_stamp=.venv/.native-$(cat native/Cargo.toml native/Cargo.lock native/pyproject.toml native/src/*.rs | sha1sum | cut -c1-12)
if [ ! -f "$native_stamp" ]; then
  if command -v cargo >/dev/null 2>&1; then
    echo "[bootstrap] building the native fast path (native/, cargo $(cargo --version | cut -d' ' -f2))" >&2
    .venv/bin/python -m pip install -q ./native
    rm -f .venv/.native-*; touch "$native_stamp"
  else
    echo "[bootstrap] warning: cargo not found: the native fast path is not built (the consumer runs the Python path)" >&2
  fi
fi
