//! `passport templates|show|validate`: list the built-in passports, print one as `passport.v1` JSON,
//! check a passport file. The schema, templates and validation live in `crate::passport`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::error::input_error;
use crate::fsio::{ReadError, read_capped_text};
use crate::passport::{
    LoadedPassport, MAX_PASSPORT_BYTES, Passport, TEMPLATE_NAMES, parse_passport, template,
};

#[derive(Debug, Args)]
pub struct PassportArgs {
    #[command(subcommand)]
    pub command: PassportCommand,
}

#[derive(Debug, Subcommand)]
pub enum PassportCommand {
    /// List the built-in passport templates, one name per line
    Templates,
    /// Print a passport as passport.v1 JSON: a built-in template, or a file (v0 files are translated)
    Show(ShowArgs),
    /// Check a passport file: one ok line, or one error line and exit code 2
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Template name (see `passport templates`)
    #[arg(value_name = "NAME", required_unless_present_any = ["template", "file"])]
    pub name: Option<String>,
    /// Template name (the first implementation's flag)
    #[arg(long, value_name = "NAME", conflicts_with = "name", hide = true)]
    pub template: Option<String>,
    /// A passport file instead of a template
    #[arg(long, value_name = "PATH", conflicts_with_all = ["name", "template"])]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The passport file (passport.v1, or legacy passport.v0)
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
}

pub fn run(global: &GlobalArgs, args: &PassportArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match &args.command {
        PassportCommand::Templates => match global.output {
            OutputFormat::Text => {
                for name in TEMPLATE_NAMES {
                    writeln!(out, "{name}")?;
                }
            }
            OutputFormat::Json | OutputFormat::Yaml => {
                let list: Vec<_> = TEMPLATE_NAMES
                    .iter()
                    .map(|n| {
                        let p = builtin(n)?;
                        Ok(json!({"name": p.name, "version": p.version, "description": p.description}))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let doc = json!({"schema_version": "passport_templates.v1", "templates": list});
                crate::cli::output::print_structured(&mut out, global.output, &doc)?;
            }
        },
        PassportCommand::Show(a) => {
            let passport = match (&a.file, a.name.as_ref().or(a.template.as_ref())) {
                (Some(path), _) => load_file(path)?.passport,
                (None, Some(name)) => builtin(name)?,
                (None, None) => unreachable!("clap requires NAME, --template or --file"),
            };
            match global.output {
                OutputFormat::Yaml => {
                    let v: serde_json::Value = serde_json::from_str(&passport.to_json_pretty())?;
                    crate::cli::output::print_structured(&mut out, global.output, &v)?;
                }
                _ => writeln!(out, "{}", passport.to_json_pretty())?,
            }
        }
        PassportCommand::Validate(a) => {
            let loaded = load_file(&a.file)?;
            let p = &loaded.passport;
            match global.output {
                OutputFormat::Json | OutputFormat::Yaml => {
                    let v = json!({"schema_version": "passport_validate.v1", "ok": true, "file": a.file, "passport_schema": loaded.from_schema,
                                   "name": p.name, "version": p.version});
                    crate::cli::output::print_structured(&mut out, global.output, &v)?;
                }
                OutputFormat::Text if loaded.from_schema == crate::passport::SCHEMA_V1 => {
                    writeln!(
                        out,
                        "ok: {}: passport {} {}",
                        a.file.display(),
                        p.name,
                        p.version
                    )?;
                }
                OutputFormat::Text => writeln!(
                    out,
                    "ok: {}: legacy {} passport {}; `passport show --file` prints its passport.v1 form",
                    a.file.display(),
                    loaded.from_schema,
                    p.name
                )?,
            }
        }
    }
    Ok(())
}

fn builtin(name: &str) -> anyhow::Result<Passport> {
    match template(name) {
        Some(p) => Ok(p?),
        None => Err(input_error(
            "unknown_template",
            format!(
                "unknown passport template {name:?} (templates: {})",
                TEMPLATE_NAMES.join(", ")
            ),
        )),
    }
}

/// Reads and validates a passport file; every failure is an input error (exit 2) on one line.
pub fn load_file(path: &Path) -> anyhow::Result<LoadedPassport> {
    let source = path.display().to_string();
    let text = read_capped_text(path, MAX_PASSPORT_BYTES).map_err(|e| match e {
        ReadError::TooLarge { .. } => input_error(
            "invalid_passport",
            format!("{source}: larger than 1 MiB; not a passport"),
        ),
        ReadError::NotUtf8 => input_error(
            "invalid_passport",
            format!("{source}: invalid JSON: not UTF-8"),
        ),
        e => input_error("not_found", format!("{source}: cannot read: {e}")),
    })?;
    parse_passport(&source, &text).map_err(|e| input_error("invalid_passport", e.to_string()))
}
