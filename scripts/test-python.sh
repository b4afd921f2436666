#!/usr/bin/env bash
# Tests of the trainer-side Python helpers (integrations/python): the standard-library core, the
# plain PyTorch loop helper, and the Hugging Face and Lightning callbacks driven by the real
# frameworks (versions pinned in integrations/python/requirements-test.txt, from PyPI; CPU only,
# no model download), each run's output read back by the built `observe`. Called by scripts/test.sh.
#
# The virtualenv lives in a cache directory keyed by the requirements file, so a rerun installs
# nothing; a first install downloads about 3 GB (PyPI's torch wheel needs its CUDA libraries even
# on a CPU) and takes about a minute. MODEKEEPER_PY_CACHE moves it; MODEKEEPER_SKIP_PYTHON=1 skips
# these tests locally.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MODEKEEPER_SKIP_PYTHON:-}" = 1 ]; then
  echo "test-python: skipped (MODEKEEPER_SKIP_PYTHON=1)" >&2
  exit 0
fi
req=integrations/python/requirements-test.txt
cache="${MODEKEEPER_PY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modekeeper-python}"
venv="$cache/venv-$(sha256sum "$req" | cut -c1-16)"
if [ ! -e "$venv/.complete" ]; then
  echo "test-python: creating $venv (pip install -r $req)" >&2
  mkdir -p "$cache"
  # Venvs of older requirement files are several GB each: keep only the one in use.
  find "$cache" -mindepth 1 -maxdepth 1 -name 'venv-*' -exec rm -rf {} +
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req"
  touch "$venv/.complete"
fi
# The end-to-end tests feed each run's output to `observe`; cargo test has built it already, so
# this is a no-op in CI.
cargo build --locked --quiet --bin kubectl-modekeeper
MODEKEEPER_BIN="$(realpath "${CARGO_TARGET_DIR:-target}/debug/kubectl-modekeeper")"
export MODEKEEPER_BIN MODEKEEPER_PY_REQUIRE=1
# The core must work without anything installed: its tests run under the bare interpreter too.
python3 -m unittest discover -s integrations/python/tests -p test_core.py
"$venv/bin/python" -m unittest discover -s integrations/python/tests -v
