"""A PyTorch Lightning Callback that prints ModeKeeper telemetry records.

    from modekeeper_telemetry.lightning import ModeKeeperCallback
    trainer = lightning.Trainer(..., callbacks=[ModeKeeperCallback()])

Uses ``lightning.pytorch`` when installed, else ``pytorch_lightning``. One record per optimizer step
(``trainer.global_step``, so every ``accumulate_grad_batches`` batches). The step time runs from the
end of the previous step (or of validation) to the end of the step's last batch; the time before each
``on_train_batch_start`` (Lightning fetches the batch then) is its ``data_wait_ms``. Validation is
not part of a step. Callbacks that run after this one in the same hook (Lightning runs
ModelCheckpoint last) count toward the next step's data wait.
"""

import time

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from . import TelemetryWriter, _number

__all__ = ["ModeKeeperCallback"]


def _guarded(fn):
    """Telemetry must never raise into the training loop."""

    def wrapped(self, *args, **kwargs):
        try:
            fn(self, *args, **kwargs)
        except Exception as e:
            self.writer._error(e)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


class ModeKeeperCallback(Callback):
    """Prints one telemetry record per optimizer step. Keyword arguments go to ``TelemetryWriter``
    (``out``, ``ranks``, ``rank``, ``node``), or pass a ``writer``. ``tokens_fn(batch)`` and
    ``samples_fn(batch)`` give a batch's token and sample counts for ``tokens_per_s`` and
    ``samples_per_s`` (this rank's)."""

    def __init__(self, writer=None, tokens_fn=None, samples_fn=None, clock=time.perf_counter,
                 **writer_kw):
        super().__init__()
        self.writer = writer if writer is not None else TelemetryWriter(**writer_kw)
        self.tokens_fn = tokens_fn
        self.samples_fn = samples_fn
        self.clock = clock
        self._mark = None
        self._reset_step()
        self._last_step = None

    def _reset_step(self):
        self._start = None
        self._wait = 0.0
        self._loss = None
        self._tokens = 0.0
        self._samples = 0.0

    @_guarded
    def on_train_start(self, trainer, pl_module):
        if self.writer.rank is None:
            self.writer.rank = int(trainer.global_rank)
        self._last_step = int(trainer.global_step)
        self._reset_step()
        self._mark = self.clock()

    @_guarded
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = self.clock()
        mark = self._mark if self._mark is not None else now
        if self._start is None:
            self._start = mark
        self._wait += max(0.0, now - mark)

    @_guarded
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "detach"):
            # Kept on the device and summed: one host sync per step, not per batch. Lightning hands
            # each batch's loss divided by accumulate_grad_batches, so the sum is the step's mean.
            loss = loss.detach()
            self._loss = loss if self._loss is None else self._loss + loss
        elif _number(loss) is not None:
            self._loss = _number(loss) + (_number(self._loss) or 0.0)
        if self.tokens_fn is not None:
            self._tokens += _number(self.tokens_fn(batch)) or 0.0
        if self.samples_fn is not None:
            self._samples += _number(self.samples_fn(batch)) or 0.0
        step = int(trainer.global_step)
        if self._last_step is not None and step == self._last_step:
            self._mark = self.clock()
            return  # gradient accumulation: the optimizer step is not done yet
        self._last_step = step
        now = self.clock()
        start = self._start if self._start is not None else now
        elapsed = max(0.0, now - start)
        lr = None
        optimizers = getattr(trainer, "optimizers", None) or []
        if optimizers:
            lr = optimizers[0].param_groups[0].get("lr")
        rates = {}
        if elapsed > 0 and self.tokens_fn is not None:
            rates["tokens_per_s"] = self._tokens / elapsed
        if elapsed > 0 and self.samples_fn is not None:
            rates["samples_per_s"] = self._samples / elapsed
        self.writer.write(step=step, step_time_ms=elapsed * 1000.0, data_wait_ms=self._wait * 1000.0,
                          loss=_number(self._loss), lr=_number(lr), **rates)
        self._reset_step()
        self._mark = self.clock()

    @_guarded
    def on_validation_end(self, trainer, pl_module):
        self._mark = self.clock()  # validation is not part of the next step

    @_guarded
    def on_train_end(self, trainer, pl_module):
        self.writer.close()  # a file is opened again by the next record (another fit())
