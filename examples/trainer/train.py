#!/usr/bin/env python3
"""A small PyTorch trainer wired for ModeKeeper.

It does the two things a trainer needs to do (docs/trainer.md):

1. Read its knobs from two channels and re-read both every few seconds while running:
   - cold knobs: the pod's `modekeeper/knob.<knob>` annotations, which the Deployment exposes as a
     file through the downward API (a volume with `fieldRef: metadata.annotations`);
   - hot knobs: the workload's knobs ConfigMap (`<workload>-modekeeper-knobs`) mounted as a
     directory, one file per knob (`/etc/modekeeper-knobs/<knob>`). The kubelet swaps the files in
     place when the ConfigMap changes, so a new value reaches the running process, no restart.
   A ConfigMap value wins over an annotation of the same knob (it is the later, live channel).
2. Print one JSON telemetry record per step on stdout (docs/telemetry.md), between its ordinary log
   lines; `kubectl logs` is then all ModeKeeper needs.

The model is a small MLP on synthetic data, so the example runs on a CPU in any cluster. `--no-torch`
replaces the model with a simulated step (no PyTorch needed) to check the knob and telemetry wiring.
"""

import argparse
import json
import os
import random
import sys
import time

ANNOTATIONS_FILE = os.environ.get("MODEKEEPER_ANNOTATIONS", "/etc/modekeeper/annotations")
KNOBS_DIR = os.environ.get("MODEKEEPER_KNOBS_DIR", "/etc/modekeeper-knobs")
KNOB_PREFIX = "modekeeper/knob."
# What the trainer uses when an annotation is missing or unreadable.
DEFAULT_KNOBS = {
    "grad_accum_steps": 4,
    "microbatch_size": 32,
    "dataloader_num_workers": 2,
    "dataloader_prefetch_factor": 2,
}
# Knob limits the trainer enforces itself, whatever an annotation says.
KNOB_LIMITS = {
    "grad_accum_steps": (1, 64),
    "microbatch_size": (1, 1024),
    "dataloader_num_workers": (0, 32),
    "dataloader_prefetch_factor": (1, 16),
}


def unquote(value):
    """Undo the quoting of a downward API annotations file (`key="value"`, Go-style escapes)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value


def parse_annotations(text):
    """`key="value"` lines -> dict. Lines that do not parse are skipped."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            out[key.strip()] = unquote(value)
    return out


def knobs_from_annotations(annotations, log=print, base=None):
    """The knob values to use: `base` (the defaults) overridden by valid `modekeeper/knob.*`
    annotations."""
    knobs = dict(DEFAULT_KNOBS if base is None else base)
    for key, raw in annotations.items():
        if not key.startswith(KNOB_PREFIX):
            continue
        name = key[len(KNOB_PREFIX):]
        if name not in KNOB_LIMITS:
            log(f"ignoring unknown knob {name}={raw!r}")
            continue
        try:
            value = int(float(raw))
        except ValueError:
            log(f"ignoring knob {name}={raw!r}: not a number")
            continue
        lo, hi = KNOB_LIMITS[name]
        if not lo <= value <= hi:
            log(f"ignoring knob {name}={value}: outside [{lo}, {hi}]")
            continue
        knobs[name] = value
    return knobs


def read_knobs_dir(path):
    """A mounted knobs ConfigMap: one file per key. The kubelet keeps the real files under a
    `..data` symlink it swaps atomically, so each file read is one consistent value; names starting
    with `.` are its bookkeeping. Returns {} when the directory is absent (not wired for hot knobs)."""
    out = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return out
    for name in names:
        if name.startswith("."):
            continue
        try:
            with open(os.path.join(path, name), encoding="utf-8") as f:
                out[KNOB_PREFIX + name] = f.read().strip()
        except OSError:
            continue  # swapped away between listdir and open: the next poll reads the new one
    return out


def read_knobs(path=ANNOTATIONS_FILE, log=print, knobs_dir=None):
    try:
        with open(path, encoding="utf-8") as f:
            knobs = knobs_from_annotations(parse_annotations(f.read()), log)
    except OSError as e:
        log(f"no annotations file ({e}); using default knobs")
        knobs = dict(DEFAULT_KNOBS)
    if knobs_dir:
        knobs = knobs_from_annotations(read_knobs_dir(knobs_dir), log, base=knobs)
    return knobs


def telemetry_record(step, step_time_ms, loss, data_wait_ms, knobs, gpu_util_pct=None,
                     gpu_mem_util_pct=None, now=None):
    """One record of docs/telemetry.md (plus the knobs in force, which ModeKeeper ignores)."""
    rec = {
        "ts": round(time.time() if now is None else now, 3),
        "step": step,
        "step_time_ms": round(step_time_ms, 3),
        "loss": round(loss, 6),
        "data_wait_ms": round(data_wait_ms, 3),
        "node": os.environ.get("NODE_NAME", "local"),
        "rank": int(os.environ.get("RANK", "0")),
        "knobs": knobs,
    }
    if gpu_util_pct is not None:
        rec["gpu_util_pct"] = gpu_util_pct
    if gpu_mem_util_pct is not None:
        rec["gpu_mem_util_pct"] = gpu_mem_util_pct
    return rec


def emit(rec, out=sys.stdout):
    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    out.flush()


class KnobWatcher:
    """Re-reads the annotations file and the knobs directory at most every `every_s` seconds and
    logs changes."""

    def __init__(self, path=ANNOTATIONS_FILE, every_s=5.0, log=print, knobs_dir=None):
        self.path, self.every_s, self.log, self.knobs_dir = path, every_s, log, knobs_dir
        self.knobs = read_knobs(path, log, knobs_dir)
        self.checked = time.monotonic()
        log(f"knobs {json.dumps(self.knobs, sort_keys=True)}")

    def poll(self):
        if time.monotonic() - self.checked < self.every_s:
            return self.knobs
        self.checked = time.monotonic()
        new = read_knobs(self.path, self.log, self.knobs_dir)
        if new != self.knobs:
            self.log(f"knobs changed {json.dumps(self.knobs, sort_keys=True)} -> "
                     f"{json.dumps(new, sort_keys=True)}")
            self.knobs = new
        return self.knobs


def log_line(msg):
    # Ordinary log lines are fine between records: ModeKeeper counts and skips them.
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} INFO trainer: {msg}", flush=True)


def run_simulated(steps, watcher, seed, step_sleep_s=0.0):
    """Step times and loss from a simple model of a training job; no PyTorch."""
    rng = random.Random(seed)
    loss = 6.0
    for step in range(steps):
        if step_sleep_s:
            time.sleep(step_sleep_s)
        knobs = watcher.poll()
        wait = rng.uniform(1.0, 4.0) * 2.0 / max(1, knobs["dataloader_num_workers"])
        compute = 20.0 * knobs["grad_accum_steps"] * knobs["microbatch_size"] / 128.0
        step_ms = compute + wait + rng.uniform(-1.0, 1.0)
        loss = max(0.05, loss * 0.995 + rng.uniform(-0.01, 0.01))
        emit(telemetry_record(step, step_ms, loss, wait, knobs))


def gpu_utilisation(torch):
    if not torch.cuda.is_available():
        return None, None
    try:
        util = torch.cuda.utilization()
        free, total = torch.cuda.mem_get_info()
        return float(util), round(100.0 * (total - free) / total, 1)
    except Exception:  # pynvml missing or not permitted: leave GPU fields out
        return None, None


def run_torch(steps, watcher, seed):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    class Synthetic(Dataset):
        def __len__(self):
            return 1 << 30

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(256, generator=g)
            return x, (x[:16].sum() > 0).long()

    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 2)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def loader(knobs):
        workers = knobs["dataloader_num_workers"]
        return iter(DataLoader(
            Synthetic(), batch_size=knobs["microbatch_size"], num_workers=workers,
            prefetch_factor=knobs["dataloader_prefetch_factor"] if workers > 0 else None,
            persistent_workers=workers > 0))

    knobs = watcher.poll()
    batches = loader(knobs)
    for step in range(steps):
        new = watcher.poll()
        if new != knobs:
            knobs, batches = new, loader(new)  # data loader knobs take effect on a new loader
        t0 = time.perf_counter()
        wait = 0.0
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(knobs["grad_accum_steps"]):
            w0 = time.perf_counter()
            x, y = next(batches)
            wait += time.perf_counter() - w0
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y) / knobs["grad_accum_steps"]
            loss.backward()
            total += loss.item()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        step_ms = (time.perf_counter() - t0) * 1000.0
        util, mem = gpu_utilisation(torch)
        emit(telemetry_record(step, step_ms, total, wait * 1000.0, knobs, util, mem))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=int(os.environ.get("TRAIN_STEPS", "100000")))
    p.add_argument("--annotations", default=ANNOTATIONS_FILE)
    p.add_argument("--knobs-dir", default=KNOBS_DIR,
                   help="the mounted knobs ConfigMap (hot knobs), one file per knob")
    p.add_argument("--poll-s", type=float, default=5.0, help="how often the knobs are re-read")
    p.add_argument("--step-sleep-ms", type=float, default=0.0,
                   help="--no-torch: pause per simulated step (to watch a knob change live)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true",
                   help="simulate steps instead of training (checks the wiring without PyTorch)")
    a = p.parse_args(argv)
    watcher = KnobWatcher(a.annotations, every_s=a.poll_s, log=log_line, knobs_dir=a.knobs_dir)
    log_line(f"starting {'simulated' if a.no_torch else 'torch'} training for {a.steps} steps "
             f"(pid {os.getpid()})")
    if a.no_torch:
        run_simulated(a.steps, watcher, a.seed, a.step_sleep_ms / 1000.0)
    else:
        run_torch(a.steps, watcher, a.seed)
    log_line("done")


if __name__ == "__main__":
    main()
