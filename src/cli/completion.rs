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
