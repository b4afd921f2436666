"""Shared by the tests: strict JSON reading, a fake clock, and `observe` on a file of our output."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))


def required(what):
    """CI (scripts/test-python.sh) sets MODEKEEPER_PY_REQUIRE=1: a missing framework or binary is a
    failure there, a skip elsewhere."""
    if os.environ.get("MODEKEEPER_PY_REQUIRE") == "1":
        raise AssertionError(f"{what} is required (MODEKEEPER_PY_REQUIRE=1)")
    raise unittest.SkipTest(f"{what} is not available")


def strict_loads(line):
    def bad(token):
        raise ValueError(f"non-JSON token {token}")

    return json.loads(line, parse_constant=bad)


def records(text):
    """The telemetry records among a trainer's output lines."""
    return [strict_loads(x) for x in text.splitlines() if x.startswith('{"')]


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, s):
        self.now += s


def binary():
    path = os.environ.get("MODEKEEPER_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "debug",
        "kubectl-modekeeper")
    if not os.path.exists(path):
        required(f"the built binary ({path}; cargo build)")
    return path


def observe(testcase, path, expect_records):
    """Runs `kubectl-modekeeper observe` on `path`; asserts every record was read and no line skipped."""
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([binary(), "observe", "--source", "file", "--path", path, "--out", out],
                             capture_output=True, text=True)
        testcase.assertEqual(run.returncode, 0, run.stderr)
        with open(os.path.join(out, "observe_latest.json"), encoding="utf-8") as f:
            report = json.load(f)
    ingest = report["ingest"]
    testcase.assertEqual(ingest["records_emitted"], expect_records, ingest)
    testcase.assertEqual(ingest["skipped_total"], 0, ingest)
    return report
