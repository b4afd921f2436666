"""The Hugging Face callback against the real `transformers` (pinned in requirements-test.txt)."""

import io
import os
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

from support import FakeClock, observe, records, required, strict_loads

try:
    import transformers
    from transformers.trainer_callback import (CallbackHandler, DefaultFlowCallback, TrainerControl,
                                               TrainerState)
    from transformers import TrainingArguments
except ImportError:
    transformers = None

from modekeeper_telemetry import TelemetryWriter


def setUpModule():
    if transformers is None:
        required("transformers")


class Broken:
    def write(self, _):
        raise OSError("broken pipe")

    def flush(self):
        pass


class DrivenCallback(unittest.TestCase):
    """The Trainer's CallbackHandler calling our callback in the order Trainer._inner_training_loop
    does (5.x): on_step_begin after the step's batches are fetched, on_step_end after the optimizer
    step, then on_log / on_evaluate / on_save. A fake clock makes the times exact."""

    def setUp(self):
        from modekeeper_telemetry.huggingface import ModeKeeperCallback

        self.tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.buf = io.StringIO()
        writer = TelemetryWriter(out=self.buf, node="n", environ={})
        self.cb = ModeKeeperCallback(writer=writer, clock=self.clock)
        self.args = TrainingArguments(output_dir=self.tmp.name, per_device_train_batch_size=4,
                                      gradient_accumulation_steps=2, logging_steps=1,
                                      report_to="none", use_cpu=True)
        self.state = TrainerState()
        self.handler = CallbackHandler([DefaultFlowCallback(), self.cb], None, None, None, None)
        self.control = TrainerControl()

    def tearDown(self):
        self.tmp.cleanup()

    def event(self, name, **kw):
        self.control = getattr(self.handler, name)(self.args, self.state, self.control, **kw)

    def step(self, fetch_s, compute_s, loss=None, lr=None):
        self.clock.advance(fetch_s)
        self.event("on_step_begin")
        self.clock.advance(compute_s)
        self.state.global_step += 1
        self.event("on_step_end")
        if loss is not None:
            self.event("on_log", logs={"loss": loss, "grad_norm": 0.5, "learning_rate": lr,
                                       "epoch": 0.1})

    def test_one_record_per_step_with_the_logged_loss(self):
        self.event("on_train_begin")
        self.step(0.004, 0.030, loss=2.5, lr=3e-4)
        self.step(0.001, 0.040, loss=2.4, lr=2e-4)
        self.clock.advance(2.0)  # evaluation and a checkpoint: not part of any step
        self.event("on_log", logs={"eval_loss": 2.6})
        self.event("on_evaluate", metrics={"eval_loss": 2.6})
        self.event("on_save")
        self.step(0.002, 0.020, loss=float("nan"), lr=1e-4)
        self.step(0.002, 0.020)  # not a logging step: written when the next event comes
        self.event("on_train_end")
        recs = [strict_loads(x) for x in self.buf.getvalue().splitlines()]
        self.assertEqual([r["step"] for r in recs], [1, 2, 3, 4])
        self.assertEqual([r["step_time_ms"] for r in recs], [34, 41, 22, 22])
        self.assertEqual([r["data_wait_ms"] for r in recs], [4, 1, 2, 2])
        self.assertEqual([r.get("loss") for r in recs], [2.5, 2.4, "NaN", None])
        self.assertEqual([r.get("lr") for r in recs], [3e-4, 2e-4, 1e-4, None])
        self.assertEqual(recs[0]["grad_norm"], 0.5)
        # 4 per device x 2 accumulation x world size 1 = 8 samples in 34 ms
        self.assertAlmostEqual(recs[0]["samples_per_s"], 8 / 0.034, places=2)
        self.assertNotIn("eval_loss", recs[1])

    def test_tokens_per_s_from_num_input_tokens_seen(self):
        self.event("on_train_begin")
        self.state.num_input_tokens_seen = 1000
        self.step(0.0, 0.050, loss=1.0, lr=1.0)
        (rec,) = [strict_loads(x) for x in self.buf.getvalue().splitlines()]
        self.assertEqual(rec["tokens_per_s"], 20000)

    def test_telemetry_errors_never_reach_the_trainer(self):
        self.cb.writer = TelemetryWriter(out=Broken(), environ={})
        with redirect_stderr(io.StringIO()) as err:
            self.event("on_train_begin")
            self.step(0.001, 0.01, loss=1.0, lr=1.0)
            self.cb.clock = None  # even a broken clock
            self.step(0.001, 0.01, loss=1.0, lr=1.0)
            self.event("on_train_end")
        self.assertGreaterEqual(self.cb.writer.errors, 2)
        self.assertIn("broken pipe", err.getvalue())
        self.assertIsInstance(self.control, TrainerControl)

    def test_other_ranks_stay_quiet_by_default(self):
        from modekeeper_telemetry.huggingface import ModeKeeperCallback

        buf = io.StringIO()
        cb = ModeKeeperCallback(out=buf, environ={"RANK": "1", "LOCAL_RANK": "1"})
        self.handler = CallbackHandler([DefaultFlowCallback(), cb], None, None, None, None)
        self.event("on_train_begin")
        self.step(0.0, 0.01, loss=1.0, lr=1.0)
        self.event("on_train_end")
        self.assertEqual(buf.getvalue(), "")


class LiveTrainer(unittest.TestCase):
    """A real Trainer.train() of a tiny randomly initialised model on the CPU, with gradient
    accumulation and evaluation; its telemetry file goes to `observe`."""

    def test_trainer_run_is_read_by_observe(self):
        try:
            import torch
        except ImportError:
            required("torch")
        from transformers import Trainer

        from modekeeper_telemetry.huggingface import ModeKeeperCallback

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(8, 2)

            def forward(self, x=None, labels=None):
                logits = self.lin(x)
                return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

        g = torch.Generator().manual_seed(0)
        data = [{"x": torch.randn(8, generator=g), "labels": torch.tensor(i % 2)} for i in range(64)]
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            args = TrainingArguments(output_dir=d, per_device_train_batch_size=4,
                                     gradient_accumulation_steps=2, max_steps=12, logging_steps=1,
                                     eval_strategy="steps", eval_steps=5, save_strategy="no",
                                     learning_rate=1e-2, report_to="none", use_cpu=True,
                                     disable_tqdm=True, dataloader_num_workers=0)
            # To a file: the Trainer prints its own log dicts on stdout (`{'loss': '0.6542', ...}`,
            # Python literals), which today's reader counts as invalid_json lines.
            path = os.path.join(d, "telemetry-{rank}.jsonl")
            trainer = Trainer(model=Tiny(), args=args, train_dataset=data, eval_dataset=data[:8],
                              callbacks=[ModeKeeperCallback(out=path, environ={})])
            out = io.StringIO()
            with redirect_stdout(out):
                trainer.train()
            self.assertIn("{'loss': ", out.getvalue())
            self.assertEqual(records(out.getvalue()), [])
            path = path.replace("{rank}", "0")
            with open(path, encoding="utf-8") as f:
                recs = records(f.read())
            self.assertEqual([r["step"] for r in recs], list(range(1, 13)))
            for r in recs:
                self.assertGreater(r["step_time_ms"], 0)
                self.assertGreaterEqual(r["step_time_ms"], r["data_wait_ms"])
                self.assertIsInstance(r["loss"], (int, float))
                self.assertGreater(r["lr"], 0)
                self.assertGreater(r["samples_per_s"], 0)
            observe(self, path, 12)


if __name__ == "__main__":
    unittest.main()
