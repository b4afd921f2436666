"""A Hugging Face ``transformers`` TrainerCallback that prints ModeKeeper telemetry records.

    from modekeeper_telemetry.huggingface import ModeKeeperCallback
    trainer = Trainer(..., callbacks=[ModeKeeperCallback()])

One record per optimizer step (``state.global_step``). The step time runs from the end of the previous
step's callbacks (logging, evaluation and checkpointing are not part of a step) to ``on_step_end``,
so it includes fetching the step's batches, which is its ``data_wait_ms`` (the time before
``on_step_begin``; the Trainer fetches all micro-batches of a step before it). The Trainer hands
callbacks its loss and learning rate only when it logs, right after ``on_step_end``: a step's record
is written at its ``on_log`` (with ``loss``, ``lr``, ``grad_norm``), or when the next step begins.
Set ``logging_steps=1`` for a loss in every record.
"""

import time

from transformers import TrainerCallback

from . import TelemetryWriter, _number

__all__ = ["ModeKeeperCallback"]


def _callback(mark=True):
    """Telemetry must never raise into the Trainer's loop. After each callback but on_step_begin the
    loop has control again: the next step (its data fetch first) starts from there."""

    def decorate(fn):
        def wrapped(self, args, state, control, **kwargs):
            try:
                fn(self, args, state, control, **kwargs)
            except Exception as e:
                self.writer._error(e)
            if mark:
                try:
                    self._mark = self.clock()
                except Exception as e:
                    self.writer._error(e)
            return None  # None: the Trainer keeps its own TrainerControl

        wrapped.__name__ = fn.__name__
        wrapped.__doc__ = fn.__doc__
        return wrapped

    return decorate


class ModeKeeperCallback(TrainerCallback):
    """Prints one telemetry record per optimizer step. Keyword arguments go to ``TelemetryWriter``
    (``out``, ``ranks``, ``rank``, ``node``), or pass a ``writer``.

    tokens_per_s comes from ``state.num_input_tokens_seen`` (``include_num_input_tokens_seen=True``);
    samples_per_s from the batch size, gradient accumulation and world size."""

    def __init__(self, writer=None, clock=time.perf_counter, **writer_kw):
        self.writer = writer if writer is not None else TelemetryWriter(**writer_kw)
        self.clock = clock
        self._mark = None  # when the last callback (or training) handed control back to the loop
        self._begin = None
        self._pending = None
        self._tokens_seen = None

    def _flush(self):
        if self._pending is not None:
            rec, self._pending = self._pending, None
            self.writer.write(**rec)

    @_callback()
    def on_train_begin(self, args, state, control, **kwargs):
        self._flush()
        self._tokens_seen = getattr(state, "num_input_tokens_seen", None)

    @_callback(mark=False)
    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()
        self._begin = self.clock()

    @_callback()
    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        start = self._mark if self._mark is not None else now
        begin = self._begin if self._begin is not None else start
        elapsed = max(0.0, now - start)
        rec = {
            "ts": round(time.time(), 3),
            "step": state.global_step,
            "step_time_ms": elapsed * 1000.0,
            "data_wait_ms": max(0.0, begin - start) * 1000.0,
        }
        seen = _number(getattr(state, "num_input_tokens_seen", None))
        if seen and self._tokens_seen is not None and elapsed > 0:
            before = _number(self._tokens_seen) or 0.0
            if seen > before:
                rec["tokens_per_s"] = (seen - before) / elapsed
        self._tokens_seen = getattr(state, "num_input_tokens_seen", None)
        samples = _samples_per_step(args)
        if samples and elapsed > 0:
            rec["samples_per_s"] = samples / elapsed
        self._begin = None
        self._pending = rec

    @_callback()
    def on_log(self, args, state, control, logs=None, **kwargs):
        rec = self._pending
        if rec is None or not logs or rec["step"] != state.global_step:
            return
        if "loss" in logs:
            rec["loss"] = _number(logs["loss"])
        for key, field in (("learning_rate", "lr"), ("grad_norm", "grad_norm")):
            if key in logs and _number(logs[key]) is not None:
                rec[field] = _number(logs[key])
        self._flush()

    @_callback()
    def on_evaluate(self, args, state, control, **kwargs):
        self._flush()

    @_callback()
    def on_save(self, args, state, control, **kwargs):
        self._flush()

    @_callback()
    def on_train_end(self, args, state, control, **kwargs):
        self._flush()
        self.writer.close()  # a file is opened again by the next record (another train())



def _samples_per_step(args):
    """Samples per optimizer step over all ranks, or None when the arguments do not say."""
    try:
        per_device = int(args.per_device_train_batch_size)
        accum = int(args.gradient_accumulation_steps)
        try:
            world = int(args.world_size)  # needs torch; without it, count this process only
        except Exception:
            world = 1
        return per_device * accum * max(1, world)
    except Exception:
        return None
