//! `kubectl-modekeeper`: a kubectl plugin that reads an ML training job's telemetry, recognises its
//! regime, and proposes bounded, reviewable knob changes. See README.md and docs/.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use modekeeper::cli::{self, Cli, Command};
use modekeeper::error;

fn main() -> ExitCode {
    // `kubectl_complete-modekeeper` (kubectl's plugin completion) asks here, before any parsing.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "__complete")
    {
        let words: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        print!("{}", cli::completion::complete(&words));
        return ExitCode::SUCCESS;
    }
    let name = cli::display_name();
    let matches = match Cli::command()
        .bin_name(name)
        .display_name(name)
        .try_get_matches()
    {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match &cli.command {
        Command::Observe(a) => cli::observe::run(&cli.global, a),
        Command::Plan(a) => cli::plan::run(&cli.global, a),
        Command::Render(a) => cli::k8s_render::run(&cli.global, a),
        Command::Verify(a) => cli::k8s_verify::run(&cli.global, a),
        Command::Apply(a) => cli::k8s_apply::run(&cli.global, a),
        Command::Version => cli::version::run(&cli.global),
        Command::ClosedLoop(a) => cli::closed_loop::run(&cli.global, a),
        Command::Policy(a) => cli::policy::run(&cli.global, a),
        Command::Passport(a) => cli::passport::run(&cli.global, a),
        Command::K8s(a) => cli::k8s::run(&cli.global, a),
        Command::License(a) => cli::license::run(&cli.global, a),
        Command::Report(a) => cli::report::run(&cli.global, a),
        Command::Roi(a) => cli::roi::run(&cli.global, a),
        Command::Completion(a) => cli::completion::run(a),
        Command::Doctor(a) => cli::doctor::run(&cli.global, a),
        Command::SupportBundle(a) => cli::support_bundle::run(&cli.global, a),
        Command::Install(a) => cli::install::run(&cli.global, a),
        Command::Controller(a) => cli::controller::run(&cli.global, a),
        Command::Fleet(a) => cli::fleet::run(&cli.global, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
    }
}

/// clap errors: help and version go to stdout with exit 0; a usage error is one line and exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap puts the subject of some errors on the lines after the first (the missing
            // arguments, one per line): keep everything up to the blank line before `Usage:`.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            // "did you mean": clap's suggestion follows the blank line (`tip: a similar …`).
            let tips: String = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("tip: a similar"))
                .map(|l| format!("; {l}"))
                .collect();
            let message = match message.join(" ") {
                m if m.is_empty() => "error: invalid arguments".to_string(),
                m => m,
            };
            eprintln!("{message} (see --help){tips}");
            ExitCode::from(2)
        }
    }
}
