//! Per-reader line tests, including dirty variants (prefixes, ANSI, CRLF), and the assembler.

use super::assemble::{Assembler, Emit};
use super::*;

fn one(line: &str) -> TrainerLine {
    parse_text_line(line.as_bytes(), None).unwrap_or_else(|| panic!("not read: {line}"))
}

#[test]
fn megatron_variants() {
    let t = one(
        " iteration        3/    1000 | consumed samples:         3072 | elapsed time per iteration (ms): 123997.6 | learning rate: 5.625E-05 | global batch size:  1024 | lm loss: 4.424266E+01 | loss scale: 12.0 |",
    );
    assert_eq!(
        (t.reader, t.role, t.step, t.step_time_ms),
        (
            TextReader::Megatron,
            Role::Iteration,
            Some(3),
            Some(123997.6)
        )
    );
    assert_eq!(t.loss, Some(44.24266));
    assert_eq!(t.global_batch, Some(1024));
    // lm-loss, a timestamp and an srun rank prefix, CRLF.
    let t = one(
        "[2024-10-24 21:02:46] 3:  iteration       10/  500 | elapsed time per iteration (ms): 812.5 | throughput per GPU (TFLOP/s/GPU): 402.1 | lm-loss: 2.500000E+00 |\r\n",
    );
    assert_eq!(t.step, Some(10));
    assert_eq!(t.loss, Some(2.5));
    assert_eq!(t.rank, Some(3));
    assert_eq!(t.ts_ms, Some(1_729_803_766_000));
    // The old colon-less loss, and nan.
    let t = one(" iteration 7/ 9 | elapsed time per iteration (ms): 5.0 | lm loss 2.2E-03 |");
    assert_eq!(t.loss, Some(0.0022));
    let t = one(" iteration 8/ 9 | elapsed time per iteration (ms): 5.0 | lm loss: nan |");
    assert!(t.loss.unwrap().is_nan());
    // Not a training line.
    assert!(
        parse_text_line(
            b"WARNING: could not find latest_checkpointed_iteration.txt",
            None
        )
        .is_none()
    );
    assert!(
        parse_text_line(
            b"[Rank 3] (after 1 iterations) memory (MB) | allocated: 15492.8",
            None
        )
        .is_none()
    );
}

#[test]
fn nemo_progress_bar() {
    let t = one(
        "Epoch 0: :  10%|█         | 100/1000 [01:23<12:34, reduced_train_loss=3.210, global_step=99.00, consumed_samples=25600.0, train_step_timing in s=0.812]",
    );
    assert_eq!(
        (t.reader, t.step, t.loss, t.step_time_ms),
        (TextReader::Megatron, Some(99), Some(3.21), Some(812.0))
    );
}

#[test]
fn megatron_timer_lines() {
    let t = one(
        "time (ms) | forward-compute: 28079.12 | backward-params-all-reduce: 17.51 | backward-embedding-all-reduce: 4163.70 | optimizer: 76.88 | batch-generator: 192.44",
    );
    assert_eq!((t.reader, t.role), (TextReader::Megatron, Role::Timer));
    assert!((t.comm_ms.unwrap() - 4181.21).abs() < 1e-9);
    assert_eq!(t.data_wait_ms, Some(192.44));
    let t = one("time (ms) | forward: 10.0 | backward: 20.0 | allreduce: 3.5 | data loader: 1.5");
    assert_eq!((t.comm_ms, t.data_wait_ms), (Some(3.5), Some(1.5)));
    // A timer line with nothing we use is just text.
    assert!(parse_text_line(b"time (ms) | load-checkpoint: 0.23", None).is_none());
    // The block form across ranks.
    let t = one("    all-grads-sync .................................: (12.30, 15.75)");
    assert_eq!(t.comm_ms, Some(15.75));
}

#[test]
fn nanogpt_modded_llmc() {
    let t = one("iter 100: loss 4.2345, time 123.45ms, mfu 35.12%");
    assert_eq!(
        (t.reader, t.step, t.loss, t.step_time_ms),
        (TextReader::NanoGpt, Some(100), Some(4.2345), Some(123.45))
    );
    let t = one("iter 101: loss nan, time 120.00ms, mfu 35.12%");
    assert!(t.loss.unwrap().is_nan());
    let t = one("step 100: train loss 4.1000, val loss 4.3000");
    assert_eq!(
        (t.reader, t.role, t.step),
        (TextReader::NanoGpt, Role::Eval, Some(100))
    );

    let t = one("step:1234/20344 train_loss:3.1234 train_time:2091234ms step_avg:1703.56ms");
    assert_eq!(
        (t.reader, t.step, t.cumulative_ms, t.loss),
        (
            TextReader::ModdedNanoGpt,
            Some(1234),
            Some(2091234.0),
            Some(3.1234)
        )
    );
    let t = one("step:125/1390 val_loss:4.2345 train_time:30000ms step_avg:240.00ms");
    assert_eq!(t.role, Role::Eval);

    let t = one(
        "step    1/19560 | loss 11.010252 (+nanz)| norm 15.1374 (+nanz)| lr 8.57e-07 | 4688.25 ms | 28.8% bf16 MFU | 111830 tok/s",
    );
    assert_eq!(
        (t.reader, t.step, t.loss, t.step_time_ms, t.tokens_per_s),
        (
            TextReader::Llmc,
            Some(1),
            Some(11.010252),
            Some(4688.25),
            Some(111830.0)
        )
    );
}

#[test]
fn torchtitan_with_ansi_and_deepspeed() {
    let t = one(
        "[rank0]:[titan] 2025-01-01 12:00:00,000 - root - INFO - \x1b[31mstep: 10  \x1b[32mloss:  7.8123  \x1b[33mmemory: 30.12GiB(31.7%)  \x1b[34mtps: 5,123  \x1b[36mtflops: 250.1  \x1b[35mmfu: 25.3%\x1b[39m",
    );
    assert_eq!(
        (
            t.reader,
            t.step,
            t.loss,
            t.tokens_per_s,
            t.step_time_ms,
            t.rank
        ),
        (
            TextReader::Torchtitan,
            Some(10),
            Some(7.8123),
            Some(5123.0),
            None,
            Some(0)
        )
    );
    let t = one("[Rank 0] step=100, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]");
    assert_eq!(
        (t.reader, t.step, t.rank),
        (TextReader::DeepSpeed, Some(100), Some(0))
    );
    let t = one(
        "time (ms) | fwd: 10.50 | bwd: 20.25 | bwd_inner: 15.00 | bwd_allreduce: 5.25 | step: 4.25",
    );
    assert_eq!((t.reader, t.role), (TextReader::DeepSpeed, Role::Timer));
    assert_eq!((t.step_time_ms, t.comm_ms), (Some(35.0), Some(5.25)));
    let t = one(
        "[Rank 0] epoch=0/micro_step=100/global_step=100, RunningAvgSamplesPerSec=12.3, CurrSamplesPerSec=12.1, MemAllocated=1.2GB",
    );
    assert_eq!(
        (t.role, t.step, t.samples_per_s),
        (Role::Metrics, Some(100), Some(12.1))
    );
}

#[test]
fn hf_trainer_stdout() {
    let t = one("{'loss': 1.375, 'grad_norm': 10.55, 'learning_rate': 5e-05, 'epoch': 0.1}");
    assert_eq!(
        (t.reader, t.role, t.loss),
        (TextReader::HfTrainer, Role::Metrics, Some(1.375))
    );
    let t = one("{'eval_loss': 0.32, 'eval_runtime': 17.2, 'epoch': 1.0}");
    assert_eq!(t.role, Role::Eval);
    // tqdm: the last redraw of a `\r`-joined bar counts; s/it and it/s.
    let t = one(
        " 10%|█         | 99/1000 [00:30<04:30,  3.30it/s]\r 10%|█         | 100/1000 [00:31<04:30,  3.21it/s]",
    );
    assert_eq!(t.step, Some(100));
    assert!((t.step_time_ms.unwrap() - 1000.0 / 3.21).abs() < 1e-9);
    let t = one("  2%|▏         | 5/250 [01:34<1:16:47, 18.80s/it]");
    assert_eq!((t.step, t.step_time_ms), (Some(5), Some(18800.0)));
    assert!(
        parse_text_line(b"Map:  50%|#####     | 500/1000 [00:01<00:01, ?it/s]", None).is_none()
    );
    // A forced format tries nothing else.
    assert!(parse_text_line(b"iter 1: loss 2, time 3ms", Some(TextReader::Megatron)).is_none());
}

fn feed(asm: &mut Assembler, lines: &[&str]) -> Vec<TrainerLine> {
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        if let Some(t) = parse_text_line(l.as_bytes(), None) {
            for e in asm
                .push(t, l.len() as u64, i as u64 + 1)
                .into_iter()
                .flatten()
            {
                if let Emit::Record(t, _) = e {
                    out.push(t);
                }
            }
        }
    }
    if let Some(Emit::Record(t, _)) = asm.flush() {
        out.push(t);
    }
    out
}

#[test]
fn timer_lines_join_the_iteration_before_them() {
    let mut asm = Assembler::new(Format::Auto, StepTimeUnit::Auto);
    let got = feed(
        &mut asm,
        &[
            "time (ms) | load-checkpoint: 0.23 | batch-generator: 1.0",
            " iteration 1/ 9 | elapsed time per iteration (ms): 100.0 | lm loss: 3.0 |",
            "time (ms) | forward-compute: 50 | backward-params-all-reduce: 7.5 | batch-generator: 2.5",
            " iteration 2/ 9 | elapsed time per iteration (ms): 90.0 | lm loss: 2.9 |",
            "validation loss at iteration 2 | lm loss value: 2.8 |",
            " iteration 3/ 9 | elapsed time per iteration (ms): 400.0 | lm loss: 2.8 |",
        ],
    );
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].comm_ms, got[0].data_wait_ms),
        (Some(7.5), Some(2.5))
    );
    assert_eq!(got[1].comm_ms, None);
    // The evaluation ran inside the interval that iteration 3 reports.
    assert_eq!(
        got.iter().map(|t| t.event).collect::<Vec<_>>(),
        [None, None, Some(TrainerEvent::Evaluation)]
    );
}

#[test]
fn cumulative_train_time_is_differenced_and_restarts() {
    let mut asm = Assembler::new(Format::Auto, StepTimeUnit::Auto);
    let got = feed(
        &mut asm,
        &[
            "step:0/20 val_loss:10.8 train_time:0ms step_avg:nanms",
            "step:1/20 train_loss:10.5 train_time:500ms step_avg:500.00ms",
            "step:2/20 train_loss:10.1 train_time:700ms step_avg:350.00ms",
            "step:4/20 train_loss:9.9 train_time:1100ms step_avg:275.00ms",
            // The timer restarts after warm-up.
            "step:11/20 train_loss:9.0 train_time:201ms step_avg:201.00ms",
            "step:12/20 train_loss:8.9 train_time:402ms step_avg:201.00ms",
        ],
    );
    let times: Vec<_> = got.iter().map(|t| t.step_time_ms).collect();
    assert_eq!(
        times,
        [Some(500.0), Some(200.0), Some(200.0), None, Some(201.0)]
    );
    // The validation at step 0 marks step 1.
    assert_eq!(got[0].event, Some(TrainerEvent::Evaluation));
}

#[test]
fn detection_locks_and_rechecks() {
    let mut asm = Assembler::new(Format::Auto, StepTimeUnit::Auto);
    let mut lines = vec!["iter 1: loss 2.0, time 10ms"];
    lines.extend(std::iter::repeat_n(
        " iteration 5/ 9 | elapsed time per iteration (ms): 1.0 | lm loss: 3.0 |",
        3,
    ));
    let got = feed(&mut asm, &lines);
    // Locked on nanoGPT; three Megatron lines are too few to take over.
    assert_eq!(got.len(), 1);
    let d = asm.detection(Format::Auto);
    assert_eq!(d.name, Some(Format::Nanogpt));
    assert_eq!(d.ignored_lines, 3);
    // Twenty lines of another format, twice as many as the locked one, take over.
    let mut asm = Assembler::new(Format::Auto, StepTimeUnit::Auto);
    let mut lines = vec!["iter 1: loss 2.0, time 10ms"];
    let megatron: Vec<String> = (1..=25)
        .map(|i| {
            format!(" iteration {i}/ 99 | elapsed time per iteration (ms): 1.0 | lm loss: 3.0 |")
        })
        .collect();
    lines.extend(megatron.iter().map(String::as_str));
    feed(&mut asm, &lines);
    let d = asm.detection(Format::Auto);
    assert_eq!(d.name, Some(Format::Megatron));
    assert!(d.switched.is_some(), "{d:?}");
    assert!(d.evidence.contains("re-checked"), "{}", d.evidence);
}

fn read(
    format: Format,
    text: &[u8],
) -> (Vec<crate::telemetry::Sample>, crate::telemetry::IngestStats) {
    use crate::telemetry::{Ingest, IngestOptions};
    let mut ing = Ingest::new(format, &IngestOptions::default());
    let mut got = vec![];
    let mut r = std::io::BufReader::new(text);
    ing.read_all(&mut r, &mut |_| {}, &mut |s| got.push(s.clone()))
        .unwrap();
    let st = ing.finish(&mut |s| got.push(s.clone()));
    (got, st)
}

const MEGATRON: &[u8] = include_bytes!("../../../tests/data/formats/megatron_lm.log");

#[test]
fn samples_carry_what_the_trainers_print() {
    let (got, st) = read(Format::Auto, MEGATRON);
    assert_eq!(got.len(), 300);
    assert_eq!(
        st.lines_read,
        MEGATRON.iter().filter(|c| **c == b'\n').count() as u64
    );
    let s = &got[100];
    assert_eq!(s.step, Some(101));
    assert_eq!(s.event, Some(TrainerEvent::Evaluation));
    assert_eq!(s.global_batch_size, Some(256));
    assert_eq!(s.rank, Some(3));
    assert!(s.comm_ms.is_some() && s.data_wait_ms.is_some());
    assert_eq!(got.iter().filter(|s| s.event.is_some()).count(), 2);

    let text = b" iteration 1/ 9 | elapsed time per iteration (ms): 5.0 | lm loss: 2.0 |\n iteration 2/ 9 | elapsed time per iteration (ms): 5.0 | lm loss: nan |\n";
    let (got, _) = read(Format::Auto, text);
    assert!(!got[0].loss_non_finite);
    assert!(got[1].loss_non_finite && got[1].loss.is_none());

    let (got, _) = read(
        Format::Auto,
        include_bytes!("../../../tests/data/formats/llmc.log"),
    );
    assert!(got.iter().all(|s| s.tokens_per_s.is_some()));
    assert_eq!(got.iter().filter(|s| s.event.is_some()).count(), 3);
    let (got, _) = read(
        Format::Auto,
        include_bytes!("../../../tests/data/formats/deepspeed.log"),
    );
    assert!(
        got.iter()
            .all(|s| s.samples_per_s.is_some() && s.comm_ms.is_some())
    );
    let (got, _) = read(
        Format::Auto,
        include_bytes!("../../../tests/data/formats/nanogpt.log"),
    );
    assert_eq!(got[100].step, Some(100));
    assert_eq!(got[100].event, Some(TrainerEvent::Evaluation));
}

/// The parallel reader hands trainer lines to the sequential stage in input order: the same records
/// and counters as the sequential reader, whatever the chunking.
#[test]
fn parallel_reading_of_trainer_text_matches_sequential() {
    use crate::telemetry::parallel::{Tuning, read_all_parallel_tuned};
    use crate::telemetry::{Ingest, IngestOptions};
    for (text, fmt) in [
        (MEGATRON, Format::Auto),
        (
            &include_bytes!("../../../tests/data/formats/deepspeed.log")[..],
            Format::Deepspeed,
        ),
        (
            &include_bytes!("../../../tests/data/formats/hf_trainer.log")[..],
            Format::Auto,
        ),
    ] {
        let (want, want_st) = read(fmt, text);
        for chunk in [97, 1000, 1 << 16] {
            let mut ing = Ingest::new(fmt, &IngestOptions::default());
            let mut got = vec![];
            let tuning = Tuning {
                chunk_bytes: chunk,
                max_lines: chunk / 40 + 1,
                in_flight: 3,
                jitter: Some(chunk as u64),
            };
            let mut r = std::io::BufReader::new(text);
            read_all_parallel_tuned(&mut ing, &mut r, 2, tuning, &mut |_| {}, &mut |s| {
                got.push(s.clone())
            })
            .unwrap();
            let st = ing.finish(&mut |s| got.push(s.clone()));
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(st, want_st, "chunk {chunk}");
        }
    }
}

#[test]
fn lightning_rows() {
    let text = b"epoch,epoch_time,step,train_loss_epoch,train_loss_step,val_loss\n0,,49,,7.6,\n0,,99,,nan,\n0,,100,,,7.1\n0,2517.1,100,4.7,,\n0,,149,,7.3,\n";
    let (got, st) = read(Format::LightningCsv, text);
    // No step time: kept loss-only (the `nan` one flagged as a diverged loss).
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|s| s.step_time_ms.is_none()));
    assert!(got[1].loss_non_finite && got[1].loss.is_none());
    assert_eq!(st.skipped(crate::telemetry::SkipReason::MissingStepTime), 0);
    assert_eq!(st.log_lines, 2);
    assert_eq!(st.lines_read, 6);
}

#[test]
fn golden_values_mark_resumed_steps_where_the_peak_memory_falls() {
    let doc = br#"{"lm loss": {"start_step": 1, "end_step": 20, "step_interval": 5, "values": {"1": 12.6, "5": 11.0, "10": 10.0, "15": "nan", "20": "nan"}},
      "iteration-time": {"start_step": 1, "end_step": 20, "step_interval": 5, "values": {"1": 90.1, "5": 9.0, "10": 88.0, "15": "nan", "20": "nan"}},
      "mem-max-allocated-bytes": {"start_step": 1, "end_step": 20, "step_interval": 5, "values": {"1": 5.0, "5": 9.0, "10": 6.0, "15": "nan", "20": "nan"}}}"#;
    let (got, st) = read(Format::MegatronGolden, doc);
    assert_eq!(
        got.iter().map(|s| s.step.unwrap()).collect::<Vec<_>>(),
        [1, 5, 10]
    );
    assert_eq!(got[0].step_time_ms, Some(90_100.0));
    assert_eq!(got[2].event, Some(TrainerEvent::Resume));
    assert_eq!(got.iter().filter(|s| s.event.is_some()).count(), 1);
    assert_eq!(st.records_parsed, 3);
    // A document that is not JSON is an error, not a partial read.
    let e = crate::telemetry::Ingest::new(Format::MegatronGolden, &Default::default())
        .read_all(&mut &b"{\"lm loss\": ["[..], &mut |_| {}, &mut |_| {})
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not a megatron-golden JSON document"),
        "{e}"
    );
}

/// `closed-loop watch` checkpoints the ingest between lines: a held-back Megatron iteration, the
/// detection lock and a cumulative clock survive a snapshot and restore at any line.
#[test]
fn a_checkpoint_after_any_line_changes_nothing() {
    use crate::telemetry::{Ingest, IngestOptions, IngestSnapshot};
    let text: Vec<u8> = MEGATRON
        .split_inclusive(|c| *c == b'\n')
        .take(40)
        .chain(
            b"step:0/9 val_loss:4.0 train_time:0ms step_avg:nanms\nstep:1/9 train_loss:3.9 train_time:100ms step_avg:100ms\n"
                .split_inclusive(|c| *c == b'\n'),
        )
        .flatten()
        .copied()
        .collect();
    let lines: Vec<&[u8]> = text.split_inclusive(|c| *c == b'\n').collect();
    let opts = IngestOptions::default();
    let run = |cut: Option<usize>| {
        let mut ing = Ingest::new(Format::Auto, &opts);
        let mut got = vec![];
        for (i, l) in lines.iter().enumerate() {
            if Some(i) == cut {
                let snap: IngestSnapshot =
                    postcard::from_bytes(&postcard::to_allocvec(&ing.snapshot()).unwrap()).unwrap();
                ing = Ingest::restore(Format::Auto, &opts, &snap).unwrap();
            }
            ing.push_line(l, &mut |s| got.push(s.clone()));
        }
        let st = ing.finish(&mut |s| got.push(s.clone()));
        (got, st, ing.format_detected())
    };
    let whole = run(None);
    assert!(whole.0.len() > 10);
    for cut in 0..lines.len() {
        assert_eq!(run(Some(cut)), whole, "cut before line {cut}");
    }
}

/// The pre-filter only skips lines no reader takes: every line of every sample and real log, and
/// mutations of them, parse the same with and without it.
#[test]
fn the_pre_filter_changes_no_line() {
    let files: [&[u8]; 9] = [
        include_bytes!("../../../tests/data/formats/deepspeed.log"),
        include_bytes!("../../../tests/data/formats/hf_trainer.log"),
        include_bytes!("../../../tests/data/formats/llmc.log"),
        include_bytes!("../../../tests/data/formats/megatron_lm.log"),
        include_bytes!("../../../tests/data/formats/modded_nanogpt.txt"),
        include_bytes!("../../../tests/data/formats/nanogpt.log"),
        include_bytes!("../../../tests/data/formats/torchtitan.log"),
        include_bytes!(
            "../../../tests/data/real-logs/bigscience_meg_ds_3d_gpt2_perf_n16-ds-off.out"
        ),
        include_bytes!(
            "../../../tests/data/real-logs/bigscience_meg_ds_3d_gpt2_perf_n16-ds-on.out"
        ),
    ];
    let extra: [&[u8]; 8] = [
        b"Resuming training from out",
        b"val loss 4.5",
        b"validation loss at iteration 100",
        b"saving checkpoint at iteration 100",
        b" successfully loaded checkpoint from x at iteration 300",
        b"x",
        b"iteration 5 elapsed time per iteration (ms) 12",
        b"step 1 loss 2",
    ];
    let mut taken = 0;
    let mut check = |line: &[u8]| {
        let mut last = line.trim_ascii_end();
        if let Some(i) = memchr::memrchr(b'\r', last) {
            last = &last[i + 1..];
        }
        let clean = super::text::strip_ansi(last);
        let (prefix, rest) = super::text::strip_prefixes(&clean);
        for only in [None, Some(TextReader::Megatron), Some(TextReader::Llmc)] {
            let got = parse_text_line(line, only);
            let all = if rest.is_empty() {
                None
            } else {
                super::parse_stripped(rest, prefix, only)
            };
            assert_eq!(got, all, "{}", String::from_utf8_lossy(line));
            taken += usize::from(got.is_some());
        }
    };
    for f in files {
        for line in f.split(|c| *c == b'\n') {
            check(line);
            // Without the separators the filter looks for, a line must be no trainer line at all.
            let stripped: Vec<u8> = line
                .iter()
                .copied()
                .filter(|c| !matches!(c, b':' | b'|' | b'=' | b'/'))
                .collect();
            check(&stripped);
        }
    }
    for line in extra {
        check(line);
    }
    assert!(taken > 1000, "{taken}");
}
