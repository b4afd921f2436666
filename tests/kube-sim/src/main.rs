//! `kube-sim --port 0 --seed seed.json [--kubeconfig-out PATH] [--token TOKEN] [--host ADDR]`
//!
//! Serves the emulator until killed. The first stdout line is the server URL; with
//! `--kubeconfig-out` a kubeconfig for it is written first (user: `--token`, else the first
//! token of the seed, else anonymous).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use kube_sim::{KubeSim, KubeconfigOptions, Seed};

const USAGE: &str = "usage: kube-sim [--port PORT] [--host ADDR] [--seed seed.json] [--kubeconfig-out PATH] [--token TOKEN]";

struct Args {
    port: u16,
    host: IpAddr,
    seed: Option<String>,
    kubeconfig_out: Option<String>,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        host: IpAddr::from([127, 0, 0, 1]),
        seed: None,
        kubeconfig_out: None,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(USAGE.into());
        }
        if !["--port", "--host", "--seed", "--kubeconfig-out", "--token"].contains(&name.as_str()) {
            return Err(format!("unknown flag {name}\n{USAGE}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        match name.as_str() {
            "--port" => args.port = value.parse().map_err(|e| format!("--port {value}: {e}"))?,
            "--host" => args.host = value.parse().map_err(|e| format!("--host {value}: {e}"))?,
            "--seed" => args.seed = Some(value),
            "--kubeconfig-out" => args.kubeconfig_out = Some(value),
            "--token" => args.token = Some(value),
            _ => unreachable!("checked above"),
        }
    }
    Ok(args)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let seed: Seed = match &args.seed {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => Seed::default(),
    };
    let token = args
        .token
        .clone()
        .or_else(|| seed.tokens.first().map(|t| t.token.clone()));
    let sim = KubeSim::builder()
        .seed(seed)
        .bind(SocketAddr::new(args.host, args.port))
        .start_blocking()
        .map_err(|e| format!("starting server: {e}"))?;
    if let Some(path) = &args.kubeconfig_out {
        let opts = KubeconfigOptions {
            token,
            ..KubeconfigOptions::default()
        };
        sim.write_kubeconfig_with(path, &opts)
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", sim.url())
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    drop(out);
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            ExitCode::from(2)
        }
    }
}
