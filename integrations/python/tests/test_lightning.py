"""The Lightning callback against the real `lightning` (pinned in requirements-test.txt)."""

import io
import os
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

from support import FakeClock, observe, records, required, strict_loads

try:
    import lightning
    import torch
except ImportError:
    lightning = None

from modekeeper_telemetry import TelemetryWriter


def setUpModule():
    if lightning is None:
        required("lightning and torch")


class DrivenCallback(unittest.TestCase):
    """The hooks called in Lightning's order with a fake clock and a stand-in trainer (global_step,
    global_rank, optimizers), so the times are exact."""

    def setUp(self):
        from modekeeper_telemetry.lightning import ModeKeeperCallback

        self.clock = FakeClock()
        self.buf = io.StringIO()
        self.cb = ModeKeeperCallback(writer=TelemetryWriter(out=self.buf, node="n", environ={}),
                                     tokens_fn=lambda b: b * 100, samples_fn=lambda b: b,
                                     clock=self.clock)
        self.trainer = SimpleNamespace(global_step=0, global_rank=0,
                                       optimizers=[SimpleNamespace(param_groups=[{"lr": 0.01}])])

    def batch(self, fetch_s, compute_s, loss, optimizer_step):
        self.clock.advance(fetch_s)
        self.cb.on_train_batch_start(self.trainer, None, 4, 0)
        self.clock.advance(compute_s)
        if optimizer_step:
            self.trainer.global_step += 1
        self.cb.on_train_batch_end(self.trainer, None, {"loss": torch.tensor(loss)}, 4, 0)

    def recs(self):
        return [strict_loads(x) for x in self.buf.getvalue().splitlines()]

    def test_accumulated_batches_make_one_step(self):
        self.cb.on_train_start(self.trainer, None)
        self.batch(0.002, 0.010, 0.5, False)
        self.batch(0.003, 0.010, 0.75, True)
        self.cb.on_validation_start(self.trainer, None)
        self.clock.advance(1.0)  # validation is not part of the next step
        self.cb.on_validation_end(self.trainer, None)
        self.batch(0.001, 0.020, 1.0, False)
        self.batch(0.001, 0.020, float("nan"), True)
        recs = self.recs()
        self.assertEqual([r["step"] for r in recs], [1, 2])
        self.assertEqual([r["step_time_ms"] for r in recs], [25, 42])
        self.assertEqual([r["data_wait_ms"] for r in recs], [5, 2])
        self.assertEqual([r["loss"] for r in recs], [1.25, "NaN"])
        self.assertEqual(recs[0]["lr"], 0.01)
        self.assertEqual(recs[0]["tokens_per_s"], 32000)  # 800 tokens in 25 ms
        self.assertEqual(recs[0]["samples_per_s"], 320)

    def test_rank_comes_from_the_trainer_when_the_environment_has_none(self):
        self.trainer.global_rank = 2
        self.cb.on_train_start(self.trainer, None)
        self.batch(0.0, 0.01, 1.0, True)
        self.assertEqual(self.buf.getvalue(), "")  # rank 2: quiet by default
        self.cb.writer.ranks = None  # every rank
        self.batch(0.0, 0.01, 1.0, True)
        self.assertEqual(self.recs()[0]["rank"], 2)

    def test_telemetry_errors_never_reach_the_loop(self):
        self.cb.on_train_start(self.trainer, None)
        self.trainer.optimizers = [SimpleNamespace(param_groups=None)]  # lr lookup fails
        with redirect_stderr(io.StringIO()) as err:
            self.batch(0.0, 0.01, 1.0, True)
            self.cb.on_train_batch_end(self.trainer, None, object(), None, 0)
        self.assertGreaterEqual(self.cb.writer.errors, 1)
        self.assertIn("modekeeper_telemetry", err.getvalue())


class LiveTrainer(unittest.TestCase):
    """A real lightning.Trainer.fit() of a tiny randomly initialised model on the CPU, with
    gradient accumulation and validation; its stdout goes to `observe`."""

    def test_fit_is_read_by_observe(self):
        from modekeeper_telemetry.lightning import ModeKeeperCallback

        class Tiny(lightning.LightningModule):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(8, 2)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.cross_entropy(self.lin(x), y)

            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val_loss", torch.nn.functional.cross_entropy(self.lin(x), y))

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05)

        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        loader = torch.utils.data.DataLoader(data, batch_size=4)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            trainer = lightning.Trainer(
                max_steps=10, accelerator="cpu", devices=1, accumulate_grad_batches=2,
                val_check_interval=4, limit_val_batches=2, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=d,
                callbacks=[ModeKeeperCallback(environ={}, samples_fn=lambda b: len(b[0]))])
            out = io.StringIO()
            with redirect_stdout(out), redirect_stderr(io.StringIO()):
                trainer.fit(Tiny(), loader, loader)
            recs = records(out.getvalue())
            self.assertEqual([r["step"] for r in recs], list(range(1, 11)))
            for r in recs:
                self.assertGreater(r["step_time_ms"], 0)
                self.assertGreaterEqual(r["step_time_ms"], r["data_wait_ms"])
                self.assertIsInstance(r["loss"], (int, float))
                self.assertEqual(r["lr"], 0.05)
                self.assertGreater(r["samples_per_s"], 0)
            path = os.path.join(d, "fit.log")
            with open(path, "w", encoding="utf-8") as f:
                f.write(out.getvalue())
            observe(self, path, 10)


if __name__ == "__main__":
    unittest.main()
