//! `kube-sim-bench --workloads N --trace FILE [--rate 10] [--namespace bench] [--port 0]
//! [--kubeconfig-out PATH] [--controller-namespace modekeeper-system]`
//!
//! The controller's scale bench (not in CI; see `scripts/bench-controller.sh`): kube-sim with N
//! Deployments `t0000`.. labelled `modekeeper.io/enabled=true` (one running pod each, container
//! `trainer`), the controller's namespace with an empty `modekeeper-settings` ConfigMap (every
//! key at its default), and a feeder that appends the lines of a real trace (JSON lines; each
//! workload starts at its own offset and wraps) at `--rate` lines per second per workload, stamped
//! with the current time (kubelet timestamp, and the record's own `"ts"` in ms when it has one;
//! `"step"` counts from 1 on, across the trace's wrap-around).
//! Prints the URL as its first stdout line (after writing the kubeconfig), then a stats line on
//! stderr every 10 s (lines appended, how late the feeder runs), until killed.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube_sim::{KubeSim, KubeconfigOptions, ResourceKind, Rule, WorkloadSeed};
use serde_json::json;

const USAGE: &str = "usage: kube-sim-bench --workloads N --trace FILE [--rate 10] [--namespace bench] [--port 0] [--host 127.0.0.1] [--kubeconfig-out PATH] [--controller-namespace modekeeper-system]";
const TOKEN: &str = "bench";
/// The feeder works in this many slices per period: workload `i` is fed in slice `i % SLICES`,
/// so the appends are spread out instead of arriving in one burst per period.
const SLICES: usize = 10;

struct Args {
    workloads: usize,
    trace: String,
    rate: f64,
    namespace: String,
    controller_namespace: String,
    addr: SocketAddr,
    kubeconfig_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut workloads = None;
    let mut trace = None;
    let mut rate = 10.0;
    let mut namespace = "bench".to_string();
    let mut controller_namespace = "modekeeper-system".to_string();
    let mut host: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut port = 0u16;
    let mut kubeconfig_out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--workloads" => workloads = Some(value.parse::<usize>().map_err(|e| bad(&e))?),
            "--trace" => trace = Some(value),
            "--rate" => rate = value.parse::<f64>().map_err(|e| bad(&e))?,
            "--namespace" => namespace = value,
            "--controller-namespace" => controller_namespace = value,
            "--host" => host = value.parse().map_err(|e| bad(&e))?,
            "--port" => port = value.parse().map_err(|e| bad(&e))?,
            "--kubeconfig-out" => kubeconfig_out = Some(value),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let workloads = workloads.ok_or_else(|| format!("--workloads is required\n{USAGE}"))?;
    if !(rate > 0.0 && rate <= 1000.0) {
        return Err(format!("--rate {rate}: must be in (0, 1000]"));
    }
    Ok(Args {
        workloads,
        trace: trace.ok_or_else(|| format!("--trace is required\n{USAGE}"))?,
        rate,
        namespace,
        controller_namespace,
        addr: SocketAddr::new(host, port),
        kubeconfig_out,
    })
}

/// A number the feeder writes into a trace line.
#[derive(Clone, Copy)]
enum Hole {
    /// `"ts"`: now, in ms.
    Ts,
    /// `"step"`: counts on across the trace's wrap-around, so a workload's steps keep rising.
    Step,
}

/// A trace line split around the digits of its `"ts"` and `"step"` values, so stamping it costs
/// no parse.
struct TraceLine {
    /// Literal text, then a hole, then literal text ... (one more literal than holes).
    literals: Vec<String>,
    holes: Vec<Hole>,
}

impl TraceLine {
    fn new(line: &str) -> TraceLine {
        let mut found: Vec<(usize, usize, Hole)> =
            [("\"ts\": ", Hole::Ts), ("\"step\": ", Hole::Step)]
                .into_iter()
                .filter_map(|(key, hole)| {
                    let start = line.find(key)? + key.len();
                    let digits = line[start..].bytes().take_while(u8::is_ascii_digit).count();
                    (digits > 0).then_some((start, start + digits, hole))
                })
                .collect();
        found.sort_by_key(|f| f.0);
        let (mut literals, mut holes, mut at) = (vec![], vec![], 0);
        for (start, end, hole) in found {
            literals.push(line[at..start].to_string());
            holes.push(hole);
            at = end;
        }
        literals.push(line[at..].to_string());
        TraceLine { literals, holes }
    }

    fn render(&self, ts_ms: i64, step: u64) -> String {
        let mut out = self.literals[0].clone();
        for (hole, lit) in self.holes.iter().zip(&self.literals[1..]) {
            match hole {
                Hole::Ts => out.push_str(&ts_ms.to_string()),
                Hole::Step => out.push_str(&step.to_string()),
            }
            out.push_str(lit);
        }
        out
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let text =
        std::fs::read_to_string(&args.trace).map_err(|e| format!("reading {}: {e}", args.trace))?;
    let trace: Vec<TraceLine> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(TraceLine::new)
        .collect();
    if trace.is_empty() {
        return Err(format!("{}: no JSON lines", args.trace));
    }
    let mut b = KubeSim::builder()
        .namespace(&args.namespace)
        .namespace(&args.controller_namespace)
        .token(TOKEN, "bench-admin", [Rule::admin()])
        .object(
            ResourceKind::ConfigMap,
            json!({"metadata": {"name": "modekeeper-settings", "namespace": args.controller_namespace},
                   "data": {}}),
        )
        .bind(args.addr);
    let names: Vec<String> = (0..args.workloads).map(|i| format!("t{i:04}")).collect();
    for n in &names {
        b = b.workload(
            WorkloadSeed::deployment(&args.namespace, n).label("modekeeper.io/enabled", "true"),
        );
    }
    let sim = b
        .start_blocking()
        .map_err(|e| format!("starting server: {e}"))?;
    if let Some(path) = &args.kubeconfig_out {
        let opts = KubeconfigOptions {
            token: Some(TOKEN.into()),
            namespace: Some(args.namespace.clone()),
            ..KubeconfigOptions::default()
        };
        sim.write_kubeconfig_with(path, &opts)
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    let pods: Vec<String> = names
        .iter()
        .map(|n| {
            sim.pod_names(ResourceKind::Deployment, &args.namespace, n)
                .into_iter()
                .next()
                .ok_or_else(|| format!("deployment {n} has no pod"))
        })
        .collect::<Result<_, _>>()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", sim.url())
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    drop(out);
    feed(&sim, &args, &pods, &trace);
    Ok(())
}

/// Appends one line per workload per period, forever.
fn feed(sim: &KubeSim, args: &Args, pods: &[String], trace: &[TraceLine]) {
    let slice = Duration::from_secs_f64(1.0 / args.rate / SLICES as f64);
    let start = Instant::now();
    let mut next = start;
    let mut tick: u64 = 0;
    let mut appended: u64 = 0;
    let mut late_max = Duration::ZERO;
    let mut report = start + Duration::from_secs(10);
    loop {
        let s = (tick % SLICES as u64) as usize;
        let period = tick / SLICES as u64;
        for (i, pod) in pods.iter().enumerate().skip(s).step_by(SLICES) {
            let now = Utc::now();
            let line = &trace[(i * 97 + period as usize) % trace.len()];
            let text = line.render(now.timestamp_millis(), period + 1);
            sim.append_log_at(&args.namespace, pod, "trainer", now, &text);
            appended += 1;
        }
        tick += 1;
        next += slice;
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        } else {
            late_max = late_max.max(now - next);
        }
        if now >= report {
            eprintln!(
                "kube-sim-bench: {appended} lines appended in {:.0} s ({:.0}/s), feeder at most {} ms late",
                start.elapsed().as_secs_f64(),
                appended as f64 / start.elapsed().as_secs_f64(),
                late_max.as_millis()
            );
            late_max = Duration::ZERO;
            report = now + Duration::from_secs(10);
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-sim-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TraceLine;

    #[test]
    fn ts_and_step_are_rewritten_in_place() {
        let l = TraceLine::new(r#"{"ts": 1795348483164, "step": 12, "loss": 2.5}"#);
        assert_eq!(l.render(7, 3000), r#"{"ts": 7, "step": 3000, "loss": 2.5}"#);
        let l = TraceLine::new(r#"{"step": 4, "x": 1, "ts": 9}"#);
        assert_eq!(l.render(1, 2), r#"{"step": 2, "x": 1, "ts": 1}"#);
        let l = TraceLine::new(r#"{"loss": 2.5}"#);
        assert_eq!(l.render(1, 2), r#"{"loss": 2.5}"#);
    }
}
