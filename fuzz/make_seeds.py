#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ from tests/data and the docs.

Run from the repository root: python3 fuzz/make_seeds.py. Small files only (a few hundred in all).
Seeds that need the built tool (licenses signed with the fuzz key, watch-state blobs, v1 passports)
are made by scripts/fuzz.sh seeds; see fuzz/README.md.
"""
import gzip
import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def trace_lines(name):
    return gzip.open(ROOT / "tests/data/traces" / name).read().splitlines(keepends=True)


traces = sorted(p.name for p in (ROOT / "tests/data/traces").glob("*.gz"))

# Lines: a few per trace (the first, one from the middle, the last), every distinct non-JSON line
# shape of the stdout log, hand-written edge cases, CSV header+row pairs and timestamps.
for name in traces:
    lines = trace_lines(name)
    for i in (0, len(lines) // 2, len(lines) - 1):
        put("telemetry_line", lines[i].rstrip(b"\n"))
log = trace_lines("combo.stdout.log.gz")
for line in [l for l in log if not l.startswith(b"{")][:6]:
    put("telemetry_line", line.rstrip(b"\n"))
for s in [
    '2026-01-01T00:00:00.123456789Z {"step":1,"step_time_ms":30}',
    '2026-01-01T00:00:00.100Z INFO step done {"step":2,"step_time_ms":31}',
    '{"timestamp":"2026-01-01T00:00:00Z","step":"7","latency_ms":30.5,"loss":null,"gpu_util":"95%","node_name":"n1","rank":3,"extra":{"a":[1,{"b":2}]}}',
    '{"step_time_ms":"12.5ms","worker_latencies_ms":"1;2 3","step":1.5}',
    '{"step_time_ms":9007199254740.992e-5,"loss":0.000001,"ts":1.5e9}',
    '{"step_time_ms":1,"step":18446744073709551615,"rank":4294967295}',
    '{"node":"a\\"b","step_time_ms":NaN}',
    "[1, 2]",
    "ts,step,step_time_ms,worker_latencies_ms,node\n1767225600,3,28.5,\"[1, 2]\",gpu-0",
    "Timestamp, Step ,LATENCY_MS,gpu_util\n2026-01-01 00:00:01,7,12.5ms,95%",
    "ts,step,step_time_ms\n1767225601,2,\"3\"\"4\"",
    "2026-01-01T00:00:00Z",
    "2026-01-01T01:00:04+01:00",
    "2026-01-01 00:00:01.5",
    "1767225602.5",
    "2024-02-29T23:59:60.999Z",
]:
    put("telemetry_line", s)

# Streams: a control byte (ingest options), then the first lines of each trace, in the three formats.
for i, name in enumerate(traces):
    lines = trace_lines(name)
    put("telemetry_stream", bytes([i * 37 % 256]) + b"".join(lines[:12]))
    # Out of order, duplicated, without steps.
    mixed = lines[5:9] + lines[1:4] + lines[3:5] + [b'{"step_time_ms": 5}\n']
    put("telemetry_stream", bytes([0x0B + i]) + b"".join(mixed))
csv = "ts,step,step_time_ms,data_wait_ms,loss,node,rank\n" + "".join(
    f"{1767225600 + s},{s},{20 + s % 7},{s % 3},{2 / s:.4f},n{s % 2},{s % 2}\n" for s in range(1, 14)
)
put("telemetry_stream", b"\x03" + csv.encode())
put("telemetry_stream", b"\x4a" + b"".join(log[:15]))

# Watch state: mode 1 (telemetry text to checkpoint and resume), mode 2 (state JSON, made by
# scripts/fuzz.sh seeds); mode-0 blobs are dumped by the target itself.
for name in traces[:4]:
    put("watch_state", b"\x01" + b"".join(trace_lines(name)[:30]))
put("watch_state", b"\x01" + b"".join(log[:30]))

# Plans: the documented forms.
item = {"namespace": "ml", "name": "trainer", "kind": "Deployment",
        "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.concurrency": "6"}}}}}}
put("plan", json.dumps(item))
put("plan", json.dumps([item, dict(item, name="trainer-b", kind="StatefulSet", apiVersion="apps/v1", reason="r")]))
put("plan", json.dumps({"schema_version": "k8s_plan.v1", "items": [item]}))
both = dict(item, patch={"metadata": {"annotations": {"modekeeper/knob.microbatch_size": "8"}},
                         "spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.microbatch_size": "8", "modekeeper/knob.grad_accum_steps": None}}}}})
put("plan", json.dumps(both, indent=1))

# Passports: the built-in v0 templates (their v1 forms come from `passport show`).
for p in sorted((ROOT / "src/passport/templates").glob("*.json")):
    put("passport", p.read_bytes())

# Policy metadata: mode 0 the smallest components whole, mode 1 each component's metadata JSON.
def custom_sections(b):
    i = 8
    while i < len(b):
        sid = b[i]
        i += 1
        size, shift = 0, 0
        while True:
            c = b[i]
            i += 1
            size |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                break
        body = b[i:i + size]
        i += size
        if sid == 0:
            n, j = body[0], 1
            yield body[j:j + n].decode(errors="replace"), body[j + n:]

wasm = sorted((ROOT / "tests/data/policies").glob("*.wasm"), key=lambda p: p.stat().st_size)
for p in wasm[:2]:
    put("policy_metadata", b"\x00" + p.read_bytes())
for p in wasm:
    for name, data in custom_sections(p.read_bytes()):
        if name == "modekeeper-policy":
            put("policy_metadata", b"\x01" + data)
