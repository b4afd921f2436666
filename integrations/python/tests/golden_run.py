"""The plain-loop helper on a simulated loop with a fake clock, so its output is the same every run.

    python3 integrations/python/tests/golden_run.py > tests/data/python-telemetry/plain_loop.log

writes the committed golden sample (tests/python_telemetry.rs reads it with `observe`;
test_core.GoldenSample checks that this script still prints exactly it)."""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from modekeeper_telemetry import StepTimer, TelemetryWriter  # noqa: E402

EPOCH = 1795348483.0  # 2026-11-23T07:54:43Z


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def run(out, steps=300, seed=12):
    rng = random.Random(seed)
    clock = FakeClock()
    writer = TelemetryWriter(out=out, rank=0, node="gpu-node-0", clock=lambda: EPOCH + clock(),
                             environ={})
    timer = StepTimer(writer, clock=clock)

    def loader():
        for i in range(steps):
            clock.advance(rng.uniform(0.4, 1.2) / 1000.0)  # the data loader's wait
            yield i

    loss = 6.0
    out.write("2026-11-23T07:54:43 INFO trainer: starting training for %d steps\n" % steps)
    for i in timer.iterate(loader()):
        clock.advance(rng.uniform(34.0, 38.0) / 1000.0)  # forward, backward, optimizer step
        loss = loss * 0.995 + rng.uniform(-0.01, 0.01)
        timer.end(loss=loss, lr=3e-4 * min(1.0, (i + 1) / 50), tokens=8 * 1024)
        if (i + 1) % 100 == 0:
            out.write("2026-11-23T07:54:%02d INFO trainer: step %d done\n" % (43 + (i + 1) // 30, i + 1))
    return writer


if __name__ == "__main__":
    run(sys.stdout)
