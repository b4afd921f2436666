"""The core module: standard library only, runs with any Python 3.8+."""

import io
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

from support import HERE, REPO, FakeClock, strict_loads

from modekeeper_telemetry import StepTimer, TelemetryWriter, rank_from_env

GOLDEN = os.path.join(REPO, "tests", "data", "python-telemetry", "plain_loop.log")


class Broken:
    def write(self, _):
        raise OSError(28, "No space left on device")

    def flush(self):
        pass


class RankFromEnv(unittest.TestCase):
    def test_launcher_variables_in_order(self):
        self.assertIsNone(rank_from_env({}))
        self.assertEqual(rank_from_env({"RANK": "3", "LOCAL_RANK": "1"}), 3)
        self.assertEqual(rank_from_env({"LOCAL_RANK": "1"}), 1)
        self.assertEqual(rank_from_env({"SLURM_PROCID": "7", "LOCAL_RANK": "1"}), 7)
        self.assertEqual(rank_from_env({"OMPI_COMM_WORLD_RANK": "5"}), 5)
        self.assertEqual(rank_from_env({"PMI_RANK": "4"}), 4)
        # A variable that is not a rank is passed over, not an error.
        self.assertEqual(rank_from_env({"RANK": "x", "LOCAL_RANK": "2"}), 2)
        self.assertEqual(rank_from_env({"RANK": "-1", "LOCAL_RANK": " 2 "}), 2)


class Writer(unittest.TestCase):
    def writer(self, **kw):
        buf = io.StringIO()
        kw.setdefault("environ", {})
        kw.setdefault("node", "n1")
        return buf, TelemetryWriter(out=buf, clock=lambda: 1795348483.1234, **kw)

    def test_record_shape_and_order(self):
        buf, w = self.writer(rank=2, ranks="all")
        w.write(loss=2.5, step_time_ms=36.41234, step=7, lr=0.0015, data_wait_ms=None, extra="x")
        self.assertEqual(
            buf.getvalue(),
            '{"ts":1795348483.123,"step":7,"step_time_ms":36.412,"loss":2.5,"lr":0.0015,'
            '"rank":2,"node":"n1","extra":"x"}\n')

    def test_only_rank_zero_prints_by_default(self):
        for rank, printed in ((None, True), (0, True), (1, False)):
            buf, w = self.writer(rank=rank)
            w.write(step=1, step_time_ms=1.0)
            self.assertEqual(bool(buf.getvalue()), printed, rank)

    def test_every_rank_or_a_list_of_ranks(self):
        buf, w = self.writer(rank=3, ranks="all")
        w.write(step=1, step_time_ms=1.0)
        self.assertEqual(strict_loads(buf.getvalue())["rank"], 3)
        for ranks, printed in (("0,3", True), ([1, 2], False), ({3}, True)):
            buf, w = self.writer(rank=3, ranks=ranks)
            w.write(step=1, step_time_ms=1.0)
            self.assertEqual(bool(buf.getvalue()), printed, ranks)

    def test_environment_overrides(self):
        buf, w = self.writer(environ={"RANK": "1", "MODEKEEPER_TELEMETRY_RANKS": "all"})
        w.write(step=1, step_time_ms=1.0)
        self.assertEqual(strict_loads(buf.getvalue())["rank"], 1)
        buf, w = self.writer(environ={"MODEKEEPER_TELEMETRY": "0"})
        w.write(step=1, step_time_ms=1.0)
        self.assertEqual(buf.getvalue(), "")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sub", "tel-{rank}.jsonl")
            w = TelemetryWriter(environ={"MODEKEEPER_TELEMETRY_OUT": path, "RANK": "0"})
            w.write(step=1, step_time_ms=1.0)
            w.close()
            with open(os.path.join(d, "sub", "tel-0.jsonl")) as f:
                self.assertEqual(strict_loads(f.read())["step"], 1)

    def test_file_output_appends_per_rank(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tel-{rank}.jsonl")
            for step in (1, 2):
                w = TelemetryWriter(out=path, rank=4, ranks="all", environ={})
                w.write(step=step, step_time_ms=1.0)
                w.close()
            with open(os.path.join(d, "tel-4.jsonl")) as f:
                self.assertEqual([strict_loads(x)["step"] for x in f], [1, 2])

    def test_a_closed_file_is_opened_again_by_the_next_record(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tel.jsonl")
            w = TelemetryWriter(out=path, environ={})
            w.write(step=1, step_time_ms=1.0)
            w.close()
            w.write(step=2, step_time_ms=1.0)
            w.close()
            with open(path) as f:
                self.assertEqual([strict_loads(x)["step"] for x in f], [1, 2])
            self.assertEqual(w.errors, 0)

    def test_stdout_is_the_default(self):
        out = io.StringIO()
        w = TelemetryWriter(environ={})
        with redirect_stdout(out):
            w.write(step=1, step_time_ms=2.0)
        self.assertEqual(strict_loads(out.getvalue())["step_time_ms"], 2)

    def test_non_finite_loss_is_kept_as_strict_json(self):
        buf, w = self.writer()
        w.write(step=1, step_time_ms=1.0, loss=float("nan"), grad_norm=float("inf"),
                lr=float("-inf"))
        rec = strict_loads(buf.getvalue())
        self.assertEqual((rec["loss"], rec["grad_norm"], rec["lr"]), ("NaN", "Infinity", "-Infinity"))

    def test_tensor_like_values_are_read_without_torch(self):
        class Tensor:
            def __init__(self, v):
                self.v = v

            def detach(self):
                return self

            def item(self):
                return self.v

        buf, w = self.writer()
        w.write(step=Tensor(3), step_time_ms=1.0, loss=Tensor(1.25))
        rec = strict_loads(buf.getvalue())
        self.assertEqual((rec["step"], rec["loss"]), (3, 1.25))

    def test_failures_never_raise_and_warn_once(self):
        err = io.StringIO()
        w = TelemetryWriter(out=Broken(), environ={})
        with redirect_stderr(err):
            self.assertIsNone(w.write(step=1, step_time_ms=1.0))
            self.assertIsNone(w.write(step=2, step_time_ms=1.0))
        self.assertEqual(w.errors, 2)
        self.assertEqual(err.getvalue().count("\n"), 1, err.getvalue())
        self.assertIn("No space left on device", err.getvalue())
        with tempfile.TemporaryDirectory() as d, redirect_stderr(io.StringIO()):
            w = TelemetryWriter(out=d, environ={})  # a directory: open() fails
            self.assertIsNone(w.write(step=1, step_time_ms=1.0))
            self.assertEqual(w.errors, 1)
            w = TelemetryWriter(ranks="zero,one", environ={})  # a bad setting disables, no raise
            self.assertFalse(w.active)
            self.assertEqual(w.errors, 1)
            buf = io.StringIO()
            w = TelemetryWriter(out=buf, environ={})
            w.write(step=1, step_time_ms=1.0, odd=object())  # unknown types become strings
            self.assertEqual(w.errors, 0)
            self.assertIn('"odd":"<object', buf.getvalue())


class Timer(unittest.TestCase):
    def timer(self, **kw):
        clock = FakeClock()
        buf = io.StringIO()
        w = TelemetryWriter(out=buf, node="n", clock=lambda: 1795348483.0 + clock(), environ={})
        return clock, buf, StepTimer(w, clock=clock, **kw)

    def records(self, buf):
        return [strict_loads(x) for x in buf.getvalue().splitlines()]

    def test_iterate_times_data_wait_and_step(self):
        clock, buf, t = self.timer()

        def loader():
            for i in range(3):
                clock.advance(0.002 * (i + 1))
                yield i

        for i in t.iterate(loader()):
            clock.advance(0.030)
            t.end(loss=2.0 - i, tokens=300, samples=3)
        recs = self.records(buf)
        self.assertEqual([r["step"] for r in recs], [0, 1, 2])
        self.assertEqual([r["data_wait_ms"] for r in recs], [2, 4, 6])
        self.assertEqual([r["step_time_ms"] for r in recs], [32, 34, 36])
        self.assertEqual(recs[0]["tokens_per_s"], 9375)  # 300 tokens / 0.032 s
        self.assertEqual(recs[0]["samples_per_s"], 93.75)
        self.assertEqual(recs[2]["ts"], 1795348483.102)

    def test_step_block_with_accumulation_and_sync(self):
        synced = []
        clock, buf, t = self.timer(start_step=100)
        t.sync = lambda: (synced.append(1), clock.advance(0.005))
        with t.step(phase="train") as s:
            for _ in range(4):
                with t.data():
                    clock.advance(0.001)
                clock.advance(0.010)
            s.set(loss=1.5)
        (rec,) = self.records(buf)
        self.assertEqual(synced, [1])
        self.assertEqual((rec["step"], rec["step_time_ms"], rec["data_wait_ms"]), (100, 49, 4))
        self.assertEqual((rec["loss"], rec["phase"]), (1.5, "train"))
        t.end(step=7)
        self.assertEqual(t.next_step, 8)

    def test_end_alone_times_the_period_between_ends(self):
        clock, buf, t = self.timer()
        clock.advance(0.020)
        t.end()
        clock.advance(0.025)
        t.end()
        self.assertEqual([r["step_time_ms"] for r in self.records(buf)], [20, 25])
        self.assertEqual([r["data_wait_ms"] for r in self.records(buf)], [0, 0])

    def test_an_error_in_the_step_propagates_and_writes_nothing(self):
        clock, buf, t = self.timer()
        with self.assertRaises(ZeroDivisionError):
            with t.step():
                clock.advance(1.0)
                1 / 0
        self.assertEqual(buf.getvalue(), "")
        with t.step():
            clock.advance(0.010)
        (rec,) = self.records(buf)
        self.assertEqual(rec["step_time_ms"], 10)  # the failed step's second is not counted

    def test_a_failing_sync_does_not_raise(self):
        clock, buf, t = self.timer()

        def sync():
            raise RuntimeError("CUDA error: device lost")

        t.sync = sync
        with redirect_stderr(io.StringIO()):
            self.assertIsNone(t.end(loss=1.0))
        self.assertEqual(t.writer.errors, 1)


class NoThirdPartyImports(unittest.TestCase):
    def test_the_core_imports_no_framework(self):
        code = ("import sys, modekeeper_telemetry; "
                "print(sorted(m for m in ('torch', 'transformers', 'lightning', 'pytorch_lightning', "
                "'numpy') if m in sys.modules))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=os.path.join(HERE, ".."))
        self.assertEqual(run.stdout.strip(), "[]")


class GoldenSample(unittest.TestCase):
    def test_golden_run_prints_the_committed_sample(self):
        out = subprocess.run([sys.executable, os.path.join(HERE, "golden_run.py")],
                             capture_output=True, text=True, check=True).stdout
        with open(GOLDEN, encoding="utf-8") as f:
            self.assertEqual(out, f.read(), "regenerate with the command in golden_run.py")
        recs = [strict_loads(x) for x in out.splitlines() if x.startswith("{")]
        self.assertEqual(len(recs), 300)


if __name__ == "__main__":
    unittest.main()
