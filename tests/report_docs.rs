//! Documentation that must not go stale: docs/cli-reference.md is generated from the clap
//! definitions (regenerate with `MODEKEEPER_BLESS=1 cargo test --test report_docs`), and every error
//! message docs/troubleshooting.md quotes must still be in the code.

use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use modekeeper::cli::Cli;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn section(cmd: &clap::Command, path: &str, depth: usize, out: &mut String) {
    let help = cmd.clone().render_long_help().to_string();
    let help: String = help
        .lines()
        .map(|l| l.trim_end().to_string() + "\n")
        .collect();
    out.push_str(&format!(
        "{} `{path}`\n\n```text\n{}```\n\n",
        "#".repeat(depth.min(4)),
        help.trim_end().to_string() + "\n"
    ));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        section(sub, &format!("{path} {}", sub.get_name()), depth + 1, out);
    }
}

/// The reference as it should read for the CLI this build has.
fn cli_reference() -> String {
    let mut cmd = Cli::command()
        .bin_name("kubectl modekeeper")
        .term_width(100);
    cmd.build();
    let mut out = String::from(
        "# CLI reference\n\n\
         Generated from the command definitions by `MODEKEEPER_BLESS=1 cargo test --test report_docs`;\n\
         do not edit by hand (the test fails when this file and the code disagree). Every command also\n\
         prints its section with `--help`.\n\n",
    );
    out.push_str("Commands:\n\n");
    fn index(cmd: &clap::Command, path: &str, out: &mut String) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" || sub.is_hide_set() {
                continue;
            }
            let p = format!("{path} {}", sub.get_name());
            let anchor: String = p
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            out.push_str(&format!("- [`{p}`](#{anchor}) — {about}\n"));
            index(sub, &p, out);
        }
    }
    index(&cmd, "kubectl modekeeper", &mut out);
    out.push('\n');
    section(&cmd, "kubectl modekeeper", 2, &mut out);
    out.push_str(
        "## Exit codes\n\n\
         Every command: **0** it did what was asked and its check passed; **2** invalid input, or a\n\
         check or gate said no (one line on stderr starting with `error:`; a usage error too); **1** an\n\
         I/O or cluster failure.\n\n",
    );
    out.push_str(&modekeeper::cli::exit_codes::markdown());
    out.trim_end().to_string() + "\n"
}

#[test]
fn cli_reference_is_current() {
    let want = cli_reference();
    let path = repo("docs/cli-reference.md");
    if std::env::var("MODEKEEPER_BLESS").is_ok_and(|v| v == "1") {
        fs::write(&path, &want).unwrap();
        return;
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "docs/cli-reference.md is stale (first difference at line {}: have {:?}, want {:?}); \
             regenerate it with `MODEKEEPER_BLESS=1 cargo test --test report_docs`",
            first + 1,
            have.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

/// The exit-code table names every command (a new command must say what its codes mean).
#[test]
fn every_command_has_its_exit_codes() {
    let table = modekeeper::cli::exit_codes::EXIT_CODES;
    let named: Vec<String> = table
        .iter()
        .flat_map(|(cmds, ..)| cmds.split(", "))
        .map(|c| c.split_whitespace().next().unwrap().to_string())
        .collect();
    for sub in Cli::command().get_subcommands() {
        assert!(
            named.iter().any(|n| n == sub.get_name()),
            "`{}` is missing from src/cli/exit_codes.rs",
            sub.get_name()
        );
    }
}

fn rust_sources(dir: &Path, out: &mut String) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&fs::read_to_string(&p).unwrap());
        }
    }
}

/// `### \`error: text … more text\`` headings: each literal piece between `…` must be in src/.
#[test]
fn troubleshooting_quotes_real_error_messages() {
    let doc = fs::read_to_string(repo("docs/troubleshooting.md")).unwrap();
    let mut src = String::new();
    rust_sources(&repo("src"), &mut src);
    let mut checked = 0;
    for line in doc.lines() {
        // A heading that is one code span: `### \`...\`` or, with backticks inside, `### \`\`...\`\``.
        let Some(quoted) = line
            .strip_prefix("### ")
            .filter(|l| l.len() > 2 && l.starts_with('`') && l.ends_with('`'))
            .map(|l| l.trim_matches('`').trim())
        else {
            continue;
        };
        let msg = quoted.strip_prefix("error: ").unwrap_or(quoted);
        let pieces = msg
            .split('…')
            .map(|p| p.trim_matches(|c: char| c == ':' || c.is_whitespace()));
        for piece in pieces.filter(|p| p.len() >= 4) {
            assert!(
                src.contains(piece),
                "docs/troubleshooting.md quotes {piece:?} (from {quoted:?}), which no longer is in src/"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} quoted messages found");
    assert!(
        src.contains("eprintln!(\"error: {e:#}\")"),
        "errors print as `error: ...`"
    );
}
