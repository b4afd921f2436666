"""Print ModeKeeper telemetry records from a training job.

One JSON object per line (docs/telemetry.md): ``ts``, ``step``, ``step_time_ms``, ``data_wait_ms``,
``loss``, ``lr``, ``tokens_per_s``, ``samples_per_s``, ``rank``, ``node``. The core has no third-party
imports; the Hugging Face and Lightning callbacks live in ``modekeeper_telemetry.huggingface`` and
``modekeeper_telemetry.lightning`` and import their framework only there.

Telemetry must never stop a training job: every public method catches its own errors, warns once
on stderr and counts them in ``TelemetryWriter.errors``. Errors raised by the training code inside a
``StepTimer.step()`` block are the trainer's and propagate unchanged.
"""

import json
import math
import os
import socket
import sys
import threading
import time

__all__ = ["TelemetryWriter", "StepTimer", "rank_from_env", "node_from_env", "make_record"]
__version__ = "0.1.0"

# Launchers and the variable each sets for the process's global rank: torchrun/accelerate/DeepSpeed,
# Slurm, Open MPI, MPICH/Intel MPI. LOCAL_RANK last: it is only the rank on one node.
RANK_ENV_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")

# Canonical field order of a record (docs/telemetry.md); extra fields follow in the caller's order.
FIELD_ORDER = ("ts", "step", "step_time_ms", "data_wait_ms", "loss", "lr", "tokens_per_s",
               "samples_per_s", "comm_ms", "gpu_util_pct", "gpu_mem_util_pct", "rank", "node")


def rank_from_env(environ=None):
    """The global rank the launcher gave this process, or None when no launcher variable is set."""
    env = os.environ if environ is None else environ
    for name in RANK_ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            try:
                rank = int(value)
            except ValueError:
                continue
            if rank >= 0:
                return rank
    return None


def node_from_env(environ=None):
    """The node name: NODE_NAME (set it from the downward API's spec.nodeName), else the host name."""
    env = os.environ if environ is None else environ
    name = env.get("NODE_NAME", "").strip()
    if name:
        return name
    try:
        return socket.gethostname() or None
    except OSError:
        return None


def _number(value):
    """A plain float from an int, float, numpy scalar or one-element tensor; None when it is not one.

    Non-finite values are kept: a NaN loss is a signal (divergence), not something to hide."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        if hasattr(value, "detach"):  # a torch tensor: no torch import needed to read it
            value = value.detach()
        if hasattr(value, "item"):
            value = value.item()
        return float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None


def _json_value(key, value):
    """Finite floats as numbers, non-finite ones as the strings "NaN", "Infinity", "-Infinity":
    strict JSON, which log pipelines parse, and which ModeKeeper reads as non-finite."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if key in ("step", "rank"):
        return int(value)
    if key == "ts" or key.endswith("_ms"):
        value = round(value, 3)  # times to the microsecond
    else:
        value = float(f"{value:.6g}")  # loss, learning rate, rates: six significant digits
    return int(value) if value == int(value) and abs(value) < 2**53 else value


def make_record(fields):
    """A record dict in canonical field order, with None values left out and numbers made JSON-safe."""
    rec = {}
    for key in FIELD_ORDER:
        if fields.get(key) is not None:
            rec[key] = fields[key]
    for key, value in fields.items():
        if key not in rec and value is not None:
            rec[key] = value
    for key, value in rec.items():
        if isinstance(value, (str, bool, list, tuple, dict)):
            continue
        number = _number(value)
        if number is not None:
            rec[key] = _json_value(key, number)
    return rec


class TelemetryWriter:
    """Writes records, one JSON object per line, flushed.

    out: None or "-" for stdout, a path (``{rank}`` in it is replaced by the rank; the file is
      appended to and opened on the first record), or any object with ``write``.
    ranks: "zero" (default: only rank 0 prints, as one record per step is what ModeKeeper needs),
      "all" (every rank prints, each record carries its rank), or an iterable of ranks.
    rank, node: override what the environment says.
    Environment overrides (so a job can be switched without code changes):
      MODEKEEPER_TELEMETRY_OUT, MODEKEEPER_TELEMETRY_RANKS ("zero", "all" or "0,3"),
      MODEKEEPER_TELEMETRY=0 turns printing off.
    """

    def __init__(self, out=None, ranks=None, rank=None, node=None, clock=time.time, environ=None):
        env = os.environ if environ is None else environ
        self.errors = 0
        self.written = 0
        self._warned = False
        self._lock = threading.Lock()
        self._file = None
        self._owns_file = False
        self.clock = clock
        try:
            self.rank = rank if rank is not None else rank_from_env(env)
            self.node = node if node is not None else node_from_env(env)
            out = env.get("MODEKEEPER_TELEMETRY_OUT") or out
            ranks = env.get("MODEKEEPER_TELEMETRY_RANKS") or ranks or "zero"
            self.enabled = env.get("MODEKEEPER_TELEMETRY", "1").strip().lower() not in (
                "0", "off", "false", "no")
            self.ranks = self._parse_ranks(ranks)
            self._out = out
        except Exception as e:  # a bad setting disables telemetry, never the job
            self.enabled = False
            self._error(e)

    @staticmethod
    def _parse_ranks(ranks):
        if isinstance(ranks, str):
            word = ranks.strip().lower()
            if word == "all":
                return None
            if word == "zero":
                return frozenset([0])
            return frozenset(int(r) for r in word.replace(" ", "").split(",") if r)
        return frozenset(int(r) for r in ranks)

    @property
    def active(self):
        """True when this process prints (telemetry on and its rank selected)."""
        if not self.enabled:
            return False
        return self.ranks is None or (self.rank or 0) in self.ranks

    def _error(self, exc):
        self.errors += 1
        if self._warned:
            return
        self._warned = True
        try:
            sys.stderr.write(f"modekeeper_telemetry: a telemetry record was not written "
                             f"(later errors are only counted): {type(exc).__name__}: {exc}\n")
            sys.stderr.flush()
        except Exception:
            pass

    def _stream(self):
        if self._file is not None:
            return self._file
        out = self._out
        if out is None or out == "-":
            return sys.stdout  # looked up at each write: test runners and notebooks swap it
        if hasattr(out, "write"):
            self._file = out
        else:
            path = os.fspath(out).replace("{rank}", str(self.rank if self.rank is not None else 0))
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")
            self._owns_file = True
        return self._file

    def write(self, **fields):
        """Writes one record; returns the dict written, or None (rank not selected, or an error).

        ``ts`` defaults to now and ``rank``/``node`` to the writer's. Fields with value None are left
        out; a non-finite number is written as a string ("NaN")."""
        if not self.active:
            return None
        try:
            fields.setdefault("ts", round(self.clock(), 3))
            fields.setdefault("rank", self.rank)
            fields.setdefault("node", self.node)
            rec = make_record(fields)
            line = json.dumps(rec, separators=(",", ":"), allow_nan=False, default=str) + "\n"
            with self._lock:
                stream = self._stream()
                stream.write(line)
                stream.flush()
            self.written += 1
            return rec
        except Exception as e:
            self._error(e)
            return None

    def close(self):
        try:
            if self._owns_file and self._file is not None:
                self._file.close()
            self._file = None
        except Exception as e:
            self._error(e)


class _Span:
    """The context manager of ``StepTimer.step()``: fields set on it land in the step's record."""

    def __init__(self, timer, fields):
        self._timer = timer
        self.fields = fields

    def set(self, **fields):
        self.fields.update(fields)

    def __enter__(self):
        self._timer._begin()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._timer.end(**self.fields)
        else:
            self._timer._reset()  # a failed step has no step time; the trainer's error propagates
        return False


class _Wait:
    def __init__(self, timer):
        self._timer = timer

    def __enter__(self):
        self._t0 = self._timer._begin()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._timer._add_wait(self._t0)
        return False


class StepTimer:
    """Times the steps of a plain training loop and writes one record per step.

    A step's time runs from its first data wait (or from entering ``step()``; with neither, from the
    previous step's end) to its end, so it includes the data wait, as ``step_time_ms`` should
    (docs/trainer.md)::

        timer = StepTimer()
        for batch in timer.iterate(loader):          # time in next(loader) is data wait
            loss = train_step(batch)
            timer.end(loss=loss, lr=opt.param_groups[0]["lr"], tokens=batch_tokens)

    or with explicit blocks (gradient accumulation, several loaders)::

        with timer.step() as s:
            for _ in range(accum):
                with timer.data():
                    batch = next(it)
                ...
            s.set(loss=loss)

    sync: a callable run before reading the clock at a step's end (``torch.cuda.synchronize``), so
    that queued GPU work is counted. tokens/samples given per step become ``tokens_per_s`` and
    ``samples_per_s``. Steps count from ``start_step`` unless ``step=`` is given.
    """

    def __init__(self, writer=None, sync=None, start_step=0, clock=time.perf_counter, **writer_kw):
        self.writer = writer if writer is not None else TelemetryWriter(**writer_kw)
        self.sync = sync
        self.clock = clock
        self.next_step = start_step
        self.last = None  # the last record written
        self._last_end = clock()  # a step with no marked start began when the previous one ended
        self._reset()

    def _reset(self):
        self._start = None
        self._wait = 0.0

    def _begin(self):
        now = self.clock()
        if self._start is None:
            self._start = now
        return now

    def _add_wait(self, t0):
        try:
            self._wait += self.clock() - t0
        except Exception as e:
            self.writer._error(e)

    def data(self):
        """A block whose time counts as data wait of the current step."""
        return _Wait(self)

    def step(self, **fields):
        """A block that is one step; its record is written when the block ends without an error."""
        return _Span(self, dict(fields))

    def iterate(self, iterable):
        """Yields the items of ``iterable``, timing each ``next()`` as data wait."""
        it = iter(iterable)
        while True:
            t0 = self._begin()
            try:
                item = next(it)
            except StopIteration:
                self._reset()  # the wait for the end of the data is no step
                return
            self._add_wait(t0)
            yield item

    def end(self, step=None, tokens=None, samples=None, **fields):
        """Ends the current step and writes its record. Returns the record, or None."""
        try:
            if self.sync is not None:
                self.sync()
            now = self.clock()
            start = self._start if self._start is not None else self._last_end
            elapsed = max(0.0, now - start)
            self._last_end = now
            if step is None:
                step = self.next_step
            self.next_step = int(step) + 1
            fields["step"] = step
            fields["step_time_ms"] = elapsed * 1000.0
            fields.setdefault("data_wait_ms", self._wait * 1000.0)
            rate_tokens, rate_samples = _number(tokens), _number(samples)
            if elapsed > 0 and rate_tokens is not None:
                fields.setdefault("tokens_per_s", rate_tokens / elapsed)
            if elapsed > 0 and rate_samples is not None:
                fields.setdefault("samples_per_s", rate_samples / elapsed)
            self.last = self.writer.write(**fields)
            return self.last
        except Exception as e:
            self.writer._error(e)
            return None
        finally:
            self._reset()
