//! `completion bash|zsh|fish`: prints a completion script for the binary.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// The shell to generate a script for
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    // Completions complete the binary's own name; kubectl's plugin completion calls
    // `kubectl_complete-modekeeper`, which users can point at this script.
    let mut cmd = super::Cli::command();
    clap_complete::generate(
        shell,
        &mut cmd,
        "kubectl-modekeeper",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// cobra's directives (the last line of a `__complete` answer).
const DIRECTIVE_DEFAULT: u8 = 0;
const DIRECTIVE_NO_FILE: u8 = 4;

/// `kubectl-modekeeper __complete WORD…` (hidden; what `kubectl_complete-modekeeper` runs): the
/// candidates for the last word after the others, in cobra's `__complete` format, which kubectl
/// passes through to the shell — one `candidate<TAB>description` per line, then `:<directive>`.
pub fn complete(words: &[String]) -> String {
    let root = super::Cli::command();
    let (last, before) = match words.split_last() {
        Some((l, b)) => (l.as_str(), b),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    // Flags that `global = true` propagates are defined on the root only (until clap builds).
    let mut expecting_value: Option<&clap::Arg> = None;
    for w in before {
        if expecting_value.take().is_some() {
            continue;
        }
        if let Some(name) = w.strip_prefix("--") {
            if !name.contains('=') {
                expecting_value = find_flag(&root, cmd, |a| {
                    a.get_long() == Some(name)
                        || a.get_visible_aliases().is_some_and(|v| v.contains(&name))
                })
                .filter(|a| takes_value(a));
            }
        } else if let Some(short) = w.strip_prefix('-').filter(|s| s.chars().count() == 1) {
            let c = short.chars().next();
            expecting_value =
                find_flag(&root, cmd, |a| a.get_short() == c).filter(|a| takes_value(a));
        } else if let Some(sub) = cmd.get_subcommands().find(|s| s.get_name() == w.as_str()) {
            cmd = sub;
        }
    }
    let mut out = String::new();
    let directive = if let Some(arg) = expecting_value {
        let values = arg.get_possible_values();
        if values.is_empty() {
            // A path, a name, a duration: let the shell complete files.
            DIRECTIVE_DEFAULT
        } else {
            for v in values.iter().filter(|v| v.get_name().starts_with(last)) {
                line(&mut out, v.get_name(), v.get_help().map(|h| h.to_string()));
            }
            DIRECTIVE_NO_FILE
        }
    } else if last.starts_with('-') {
        let mut flags: Vec<(String, Option<String>)> = cmd
            .get_arguments()
            .chain(root.get_arguments().filter(|a| a.is_global_set()))
            .filter(|a| !a.is_hide_set())
            .flat_map(|a| {
                let help = a.get_help().map(|h| h.to_string());
                a.get_long()
                    .into_iter()
                    .chain(a.get_visible_aliases().unwrap_or_default())
                    .map(move |l| (format!("--{l}"), help.clone()))
            })
            .collect();
        flags.push(("--help".into(), Some("Print help".into())));
        flags.sort();
        flags.dedup_by(|a, b| a.0 == b.0);
        for (f, help) in flags.into_iter().filter(|(f, _)| f.starts_with(last)) {
            line(&mut out, &f, help);
        }
        DIRECTIVE_NO_FILE
    } else {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name().starts_with(last))
            .collect();
        if subs.is_empty() && cmd.get_positionals().next().is_some() {
            // A positional (a shell name, a policy id): its values, if it has a fixed set.
            for a in cmd.get_positionals() {
                for v in a.get_possible_values() {
                    if v.get_name().starts_with(last) {
                        line(&mut out, v.get_name(), v.get_help().map(|h| h.to_string()));
                    }
                }
            }
        }
        for s in subs {
            line(&mut out, s.get_name(), s.get_about().map(|h| h.to_string()));
        }
        DIRECTIVE_NO_FILE
    };
    out.push_str(&format!(":{directive}\n"));
    out
}

fn find_flag<'a>(
    root: &'a clap::Command,
    cmd: &'a clap::Command,
    pred: impl Fn(&clap::Arg) -> bool,
) -> Option<&'a clap::Arg> {
    cmd.get_arguments()
        .find(|a| pred(a))
        .or_else(|| root.get_arguments().find(|a| a.is_global_set() && pred(a)))
}

fn takes_value(a: &clap::Arg) -> bool {
    a.get_num_args().is_none_or(|n| n.takes_values())
        && !matches!(
            a.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
        )
}

fn line(out: &mut String, candidate: &str, help: Option<String>) {
    out.push_str(candidate);
    if let Some(h) = help {
        // One line per candidate: the first line of the help.
        out.push('\t');
        out.push_str(h.lines().next().unwrap_or_default());
    }
    out.push('\n');
}
