"""The plain-loop helper in a real PyTorch loop, and `observe` reading what it prints."""

import io
import os
import tempfile
import unittest
from contextlib import redirect_stdout

from support import REPO, observe, records, required

from modekeeper_telemetry import StepTimer

GOLDEN = os.path.join(REPO, "tests", "data", "python-telemetry", "plain_loop.log")


class Observe(unittest.TestCase):
    def test_golden_sample_is_read_whole(self):
        report = observe(self, GOLDEN, 300)
        self.assertEqual(report["ingest"]["log_lines"], 4)


class TorchLoop(unittest.TestCase):
    def test_real_loop_with_accumulation_is_read_by_observe(self):
        try:
            import torch
        except ImportError:
            required("torch")
        torch.manual_seed(0)
        x = torch.randn(96, 8)
        data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=0)
        model = torch.nn.Linear(8, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        out = io.StringIO()
        with redirect_stdout(out):
            timer = StepTimer(environ={}, start_step=1)
            it = iter(loader)
            for _ in range(12):
                print("INFO an ordinary log line between records")
                with timer.step() as s:
                    total = 0.0
                    for _ in range(2):
                        with timer.data():
                            xb, yb = next(it)
                        loss = torch.nn.functional.cross_entropy(model(xb), yb) / 2
                        loss.backward()
                        total += loss.detach()
                    opt.step()
                    opt.zero_grad()
                    s.set(loss=total, lr=opt.param_groups[0]["lr"], samples=8)
        recs = records(out.getvalue())
        self.assertEqual([r["step"] for r in recs], list(range(1, 13)))
        for r in recs:
            self.assertGreaterEqual(r["step_time_ms"], r["data_wait_ms"])
            self.assertGreater(r["data_wait_ms"], 0)
            self.assertIsInstance(r["loss"], (int, float))
            self.assertGreater(r["samples_per_s"], 0)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "loop.log")
            with open(path, "w", encoding="utf-8") as f:
                f.write(out.getvalue())
            report = observe(self, path, 12)
            self.assertEqual(report["ingest"]["log_lines"], 12)


if __name__ == "__main__":
    unittest.main()
