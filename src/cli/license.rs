//! `license keygen|mint|verify`: make a signing key, issue a license, check one. The format and
//! the checks live in `crate::license`; this file reads files, the clock and the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::artifacts::{ExplainLog, OutDir, write_atomic};
use crate::error::input_error;
use crate::license::{
    self, BINDING_CLUSTER_SERVER, ClusterIdentity, KNOWN_ENTITLEMENTS, KeyringInfo, LicenseClaims,
    LicenseVerdict, kid_of,
};

#[derive(Debug, Args)]
pub struct LicenseArgs {
    #[command(subcommand)]
    pub command: LicenseCommand,
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Generate an ed25519 signing key (0600) and add its public key to DIR/keyring.json
    Keygen(KeygenArgs),
    /// Sign a license.v1 with a signing key
    Mint(MintArgs),
    /// Check a license against the trusted keyring and write a license_verify.v1 report
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory for the private key file and keyring.json (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// The signing key file written by `license keygen`
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// Who the license is for (an organisation or team name)
    #[arg(long, value_name = "TEXT")]
    pub subject: String,
    /// Comma-separated entitlements: apply, chords.advanced
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
    pub entitlements: Vec<String>,
    /// End of validity: RFC 3339, epoch seconds, or now+30d / now-1h (units s, m, h, d)
    #[arg(long, value_name = "TIME")]
    pub expires: String,
    /// Start of validity (same forms; default now)
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub not_before: String,
    /// License id (default: lic- and 16 random hex digits)
    #[arg(long, value_name = "ID")]
    pub license_id: Option<String>,
    /// Bind the license to the cluster whose API server has this URL
    #[arg(long, value_name = "URL")]
    pub bind_server: Option<String>,
    /// Leave the key id out (verifiers then try every trusted key)
    #[arg(long)]
    pub no_kid: bool,
    /// Write the license here instead of stdout
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The license file (default: $MODEKEEPER_LICENSE_PATH, then ~/.config/modekeeper/license.json)
    #[arg(long, value_name = "PATH")]
    pub license: Option<PathBuf>,
    /// Trust this keyring instead of the built-in production keys (recorded in the report);
    /// also MODEKEEPER_KEYRING
    #[arg(long, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// Also require these entitlements (repeatable or comma-separated)
    #[arg(long, value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub require: Vec<String>,
    /// Check a cluster_server binding against this API server URL
    #[arg(long, value_name = "URL")]
    pub cluster_server: Option<String>,
    /// Directory for the report and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
}

pub fn run(global: &GlobalArgs, args: &LicenseArgs) -> anyhow::Result<()> {
    match &args.command {
        LicenseCommand::Keygen(a) => keygen(global, a),
        LicenseCommand::Mint(a) => mint(a),
        LicenseCommand::Verify(a) => verify(global, a),
    }
}

fn keygen(global: &GlobalArgs, args: &KeygenArgs) -> anyhow::Result<()> {
    let g = license::keygen(&args.out)?;
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let v = json!({"schema_version": "license_keygen.v1", "kid": g.kid, "private_key": g.private_key_path, "keyring": g.keyring_path,
                           "public_key": g.public_key_b64});
            crate::cli::output::print_structured(&mut out, global.output, &v)?;
        }
        OutputFormat::Text => {
            writeln!(out, "kid          {}", g.kid)?;
            writeln!(
                out,
                "private key  {} (mode 0600; keep it offline, never commit it)",
                g.private_key_path.display()
            )?;
            writeln!(out, "keyring      {}", g.keyring_path.display())?;
            writeln!(
                out,
                "keyring entry  \"{}\": \"{}\"",
                g.kid, g.public_key_b64
            )?;
        }
    }
    Ok(())
}

/// Parses a point in time: RFC 3339, epoch seconds, `now`, or `now±N<s|m|h|d>`.
pub fn parse_time(raw: &str, now: DateTime<Utc>) -> Result<i64, String> {
    let s = raw.trim();
    let bad =
        || format!("invalid time {raw:?} (use RFC 3339, epoch seconds, now, now+30d or now-1h)");
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now.timestamp());
        }
        let (sign, rest) = match rest.as_bytes()[0] {
            b'+' => (1, &rest[1..]),
            b'-' => (-1, &rest[1..]),
            _ => return Err(bad()),
        };
        let unit = rest.chars().last().ok_or_else(bad)?;
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = rest[..rest.len() - 1].parse().map_err(|_| bad())?;
        return n
            .checked_mul(mult)
            .and_then(|d| now.timestamp().checked_add(sign * d))
            .ok_or_else(bad);
    }
    if s.bytes().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        return s.parse().map_err(|_| bad());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|_| bad())
}

fn random_license_id() -> anyhow::Result<String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "lic-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

fn epoch_text(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

fn mint(args: &MintArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut entitlements = BTreeSet::new();
    for e in args.entitlements.iter().map(|e| e.trim()) {
        if !KNOWN_ENTITLEMENTS.contains(&e) {
            return Err(input_error(
                "unknown_entitlement",
                format!(
                    "unknown entitlement {e:?} (known: {})",
                    KNOWN_ENTITLEMENTS.join(", ")
                ),
            ));
        }
        entitlements.insert(e.to_string());
    }
    let expires_at = parse_time(&args.expires, now).map_err(|e| input_error("invalid_time", e))?;
    let not_before =
        parse_time(&args.not_before, now).map_err(|e| input_error("invalid_time", e))?;
    let mut bindings = BTreeMap::new();
    if let Some(s) = &args.bind_server {
        bindings.insert(BINDING_CLUSTER_SERVER.to_string(), s.clone());
    }
    let claims = LicenseClaims {
        license_id: match &args.license_id {
            Some(id) => id.clone(),
            None => random_license_id()?,
        },
        subject: args.subject.clone(),
        issued_at: now.timestamp().min(not_before),
        not_before,
        expires_at,
        entitlements,
        bindings,
    };
    claims
        .check()
        .map_err(|e| input_error("invalid_claims", format!("cannot mint: {e}")))?;
    let key = license::load_signing_key(&args.key)?;
    let text = license::mint(&key, &claims, !args.no_kid)
        .map_err(|e| input_error("invalid_claims", format!("cannot mint: {e}")))?;
    if expires_at <= now.timestamp() {
        eprintln!(
            "warning: this license expired at {} (it will not verify)",
            epoch_text(expires_at)
        );
    }
    match &args.out {
        Some(p) => {
            write_atomic(p, |w| w.write_all(text.as_bytes()))?;
            let kid = kid_of(&key.verifying_key());
            println!(
                "minted {} ({}, kid {}{}, {} to {}, entitlements {})",
                p.display(),
                claims.license_id,
                kid,
                if args.no_kid { " not named" } else { "" },
                epoch_text(not_before),
                epoch_text(expires_at),
                claims
                    .entitlements
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// The `license_verify.v1` report.
#[derive(Debug, Serialize)]
pub struct LicenseVerifyReport {
    pub schema_version: &'static str,
    pub tool: serde_json::Value,
    pub checked_at: String,
    pub license_path: Option<PathBuf>,
    /// `flag`, `env`, `config`, or null when no license was found.
    pub license_source: Option<&'static str>,
    pub keyring: KeyringInfo,
    /// The cluster identity bindings were checked against (null = not checked).
    pub cluster: Option<ClusterIdentity>,
    #[serde(flatten)]
    pub verdict: LicenseVerdict,
}

fn verify(global: &GlobalArgs, args: &VerifyArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    let mut explain = ExplainLog::open(&args.out)?;
    explain.event(
        "license_verify_start",
        json!({"license": args.license, "keyring": args.keyring, "require": args.require}),
    )?;
    let required: Vec<&str> = args.require.iter().map(|s| s.trim()).collect();
    let cluster = args.cluster_server.as_ref().map(|s| ClusterIdentity {
        server: Some(s.clone()),
        uid: None,
    });
    let inputs = license::check_license_env(
        args.license.as_deref(),
        args.keyring.as_deref(),
        started.timestamp(),
        cluster.as_ref(),
        &required,
    );
    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let report = LicenseVerifyReport {
        schema_version: "license_verify.v1",
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        checked_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        license_path: inputs.license_path,
        license_source: inputs.license_source,
        keyring: inputs.keyring,
        cluster,
        verdict: inputs.verdict,
    };
    let (stamped, latest) = out.write_report("license_verify", &report)?;
    explain.event(
        "license_verify_report",
        json!({"path": stamped, "latest": latest, "ok": report.verdict.ok,
               "reason": report.verdict.reason, "keyring_override": report.keyring.is_override}),
    )?;

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, &report)?;
        }
        OutputFormat::Text => {
            let v = &report.verdict;
            writeln!(
                stdout,
                "license {}: {}",
                if v.ok { "ok" } else { "NOT ok" },
                v.reason
            )?;
            if let Some(l) = &v.license {
                writeln!(
                    stdout,
                    "  {} for {} ({} to {}), entitlements: {}",
                    l.claims.license_id,
                    l.claims.subject.escape_debug(),
                    epoch_text(l.claims.not_before),
                    epoch_text(l.claims.expires_at),
                    l.claims
                        .entitlements
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
            if report.keyring.is_override {
                writeln!(
                    stdout,
                    "  keyring OVERRIDE ({:?}) {}",
                    report.keyring.source,
                    report
                        .keyring
                        .path
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                )?;
            }
            writeln!(stdout, "  report  {}", latest.display())?;
        }
    }
    if report.verdict.ok {
        Ok(())
    } else {
        Err(input_error(
            "license_invalid",
            format!(
                "license {}: {}",
                report.verdict.reason,
                report.verdict.detail.as_deref().unwrap_or("")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(parse_time("now", now), Ok(1_800_000_000));
        assert_eq!(parse_time("now+1d", now), Ok(1_800_086_400));
        assert_eq!(parse_time("now-2h", now), Ok(1_799_992_800));
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000));
        assert_eq!(parse_time("2027-01-01T00:00:00Z", now), Ok(1_798_761_600));
        for bad in [
            "",
            "now+",
            "now+5y",
            "now*1d",
            "tomorrow",
            "-5",
            "now+99999999999999999d",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
