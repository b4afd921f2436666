#!/usr/bin/env bash
# Installs what the project needs on a fresh machine with rustup: the components CI checks with, and the
# wasm target used to rebuild the chord policy components. Idempotent.
set -euo pipefail
rustup component add rustfmt clippy >/dev/null 2>&1 || rustup component add rustfmt clippy
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
command -v kubectl >/dev/null 2>&1 || echo "note: kubectl not found; the kubectl cross-check tests will be skipped" >&2
# Headless Chromium for the report screenshot test (tests/report_browser.rs), from Debian's packages;
# only when missing and apt is there (elsewhere the test says what to install).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium (apt-get) for the report browser test" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 \
    || echo "note: could not install chromium; tests/report_browser.rs will fail (MODEKEEPER_SKIP_BROWSER=1 skips it locally)" >&2
fi
# Prometheus and promtool for the Prometheus source test (tests/prometheus_source.rs) and the
# controller's metrics tests (tests/controller_observe.rs), from Debian's packages; only when missing and apt is there (elsewhere the test says what to install).
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing prometheus (apt-get) for the Prometheus source test" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } >&2 \
    || echo "note: could not install prometheus; tests/prometheus_source.rs will fail (MODEKEEPER_SKIP_PROMETHEUS=1 skips it locally)" >&2
fi
