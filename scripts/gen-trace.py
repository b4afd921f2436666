#!/usr/bin/env python3
"""Deterministic synthetic telemetry for benchmarks: JSONL in the trainer's record shape with a few
regime changes (straggler, burst, loss drift), ISO-8601 timestamps. Usage: gen-trace.py LINES OUT"""
import json, math, random, sys
from datetime import datetime, timedelta, timezone

def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(42)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ms = 0.0
    with open(out, "w") as f:
        for i in range(1, n + 1):
            frac = i / n
            st = 28.0 + 2.0 * math.sin(i / 50) + rng.uniform(-1, 1)
            workers = [8.0 + rng.uniform(-0.5, 0.5) for _ in range(4)]
            wait = 0.3 + rng.uniform(0, 0.1)
            if 0.30 < frac < 0.35:          # one slow dataloader worker
                workers[2] *= 30
                if i % 4 == 0:
                    wait += 70
                    st += 70
            if 0.50 < frac < 0.55 and (i // 40) % 3 == 0:   # noisy neighbour
                st *= 2.2
            loss = 1.3 + 8 * math.exp(-i / 300) + rng.uniform(-0.02, 0.02)
            if frac > 0.8:                 # learning rate too high
                loss += 3 * (frac - 0.8)
            ms += st
            ts = (t0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")
            f.write(json.dumps({"ts": ts, "step": i, "step_time_ms": round(st, 3), "data_wait_ms": round(wait, 3),
                                "loss": round(loss, 5), "worker_latencies_ms": [round(w, 3) for w in workers],
                                "gpu_util_pct": round(90 + rng.uniform(-5, 5), 1), "node": "gpu-node-0"}) + "\n")

if __name__ == "__main__":
    main()
