#!/usr/bin/env python3
"""Deterministic trainer stdout in the shapes `observe` reads (issue 12), for the format benchmark.
Usage: gen-trainer-logs.py LINES OUTDIR  -> OUTDIR/{megatron,nanogpt,modded,llmc,deepspeed,hf}.log
Each file has about LINES lines (DeepSpeed and Megatron spread a step over several lines)."""
import math, os, random, sys

def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(42)
    def st(i):
        return 812.5 + 20 * math.sin(i / 50) + rng.uniform(-5, 5)
    def w(name, lines):
        with open(os.path.join(out, name), "w") as f:
            f.writelines(lines)
    w("megatron.log", (
        (f"[2024-10-24 21:02:46] 3:  iteration {i:8d}/ {n:8d} | consumed samples: {i*256:12d} | elapsed time per iteration (ms): {st(i):.1f} | throughput per GPU (TFLOP/s/GPU): 402.1 | learning rate: 1.000000E-04 | global batch size:   256 | lm loss: {2.5 - i / n:.6E} | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |\n"
         if i % 2 else
         f"0: time (ms) | forward-compute: {st(i)*0.3:.2f} | backward-compute: {st(i)*0.6:.2f} | allreduce: {st(i)*0.05:.2f} | data loader: {st(i)*0.01:.2f}\n")
        for i in range(1, n + 1)))
    w("nanogpt.log", (f"iter {i}: loss {4.2 - i / n:.4f}, time {st(i):.2f}ms, mfu 35.12%\n" for i in range(1, n + 1)))
    w("modded.log", (f"step:{i}/{n} train_loss:{3.5 - i / n:.4f} train_time:{i * 240 + (i % 7)}ms step_avg:{240 + (i % 7) / i:.2f}ms\n" for i in range(1, n + 1)))
    w("llmc.log", (f"step {i:4d}/{n} | loss {11.0 - i / n:.6f} (+nanz)| norm 15.1374 (+nanz)| lr 8.57e-07 | {st(i):.2f} ms | 28.8% bf16 MFU | 111830 tok/s\n" for i in range(1, n + 1)))
    def ds(i):
        s = i // 3 + 1
        k = i % 3
        if k == 0:
            return f"[Rank 0] epoch=0/micro_step={s}/global_step={s}, RunningAvgSamplesPerSec=12.3, CurrSamplesPerSec=12.1, MemAllocated=1.2GB, MaxMemAllocated=3.4GB\n"
        if k == 1:
            return f"[Rank 0] step={s}, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]\n"
        return f"[Rank 0] time (ms) | fwd: 10.50 | bwd: 20.25 | bwd_inner: 15.00 | bwd_allreduce: 5.25 | step: {4 + (i % 5) / 10:.2f}\n"
    w("deepspeed.log", (ds(i) for i in range(n)))
    w("hf.log", (
        (f"{{'loss': {1.375 - i / n:.4f}, 'grad_norm': 10.55, 'learning_rate': 5e-05, 'epoch': {i / n:.2f}}}\n"
         if i % 2 else
         f" {100 * i // n:3d}%|#         | {i}/{n} [01:34<1:16:47, {18 + (i % 9) / 10:.2f}s/it]\n")
        for i in range(1, n + 1)))

main()
