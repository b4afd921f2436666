//! Policy metadata, read from the component's `modekeeper-policy` custom section with wasmparser
//! before anything is compiled: a component without valid metadata is never handed to the compiler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload};

use super::error::PolicyError;

/// Name of the top-level custom section that carries [`PolicyMetadata`] as JSON.
pub const METADATA_SECTION: &str = "modekeeper-policy";
/// WIT versions this host can run (major 1).
pub const SUPPORTED_WIT_MAJOR: &str = "1.";
/// The WIT text of each supported version, for `policy inspect`.
pub const WIT_V1_0_0: &str = include_str!("../../wit/v1.0.0/policy.wit");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMetadata {
    pub schema: String,
    pub id: String,
    pub version: String,
    pub wit_version: String,
    pub world: String,
    /// Chord ids the policy may return.
    pub chords: Vec<String>,
    /// Knobs the policy may propose.
    pub knobs: Vec<String>,
    /// Which knobs each chord proposes, so each proposal can be attributed to its chord (the
    /// envelope checks chords against the passport). Chords not listed get their decision's
    /// primary chord.
    #[serde(default)]
    pub chord_knobs: BTreeMap<String, Vec<String>>,
    /// Features it reads (informational).
    pub signals: Vec<String>,
    /// Advanced policies run only when explicitly enabled.
    pub advanced: bool,
    #[serde(default)]
    pub description: String,
}

impl PolicyMetadata {
    pub fn wit_text(&self) -> Option<&'static str> {
        (self.wit_version == "1.0.0").then_some(WIT_V1_0_0)
    }

    fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!(
                "policy id {:?} must be 1-64 characters of a-z, 0-9 and '-'",
                self.id
            ));
        }
        if !is_semver(&self.version) {
            return Err(format!(
                "version {:?} is not MAJOR.MINOR.PATCH",
                self.version
            ));
        }
        if !self.wit_version.starts_with(SUPPORTED_WIT_MAJOR) || !is_semver(&self.wit_version) {
            return Err(format!(
                "WIT version {} is not supported (this host runs modekeeper:policy 1.x)",
                self.wit_version
            ));
        }
        if !self.chords.iter().any(|c| c == super::types::NORMAL_HOLD) {
            return Err("chords must include NORMAL-HOLD".into());
        }
        let bad_name =
            |s: &String| s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic());
        if let Some(c) = self.chords.iter().chain(&self.knobs).find(|s| bad_name(s)) {
            return Err(format!("invalid chord or knob name {c:?}"));
        }
        for (chord, knobs) in &self.chord_knobs {
            if !self.chords.contains(chord) {
                return Err(format!(
                    "chord_knobs names {chord:?}, which is not among the chords"
                ));
            }
            if let Some(k) = knobs.iter().find(|k| !self.knobs.contains(k)) {
                return Err(format!(
                    "chord_knobs gives {chord} the knob {k:?}, which is not among the knobs"
                ));
            }
        }
        Ok(())
    }

    /// The chord a proposal for `knob` belongs to: the first of `active` (then `primary`) whose
    /// declared knobs include it, else `primary`.
    pub fn chord_for_knob<'a>(
        &self,
        primary: &'a str,
        active: &'a [String],
        knob: &str,
    ) -> &'a str {
        active
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(primary))
            .find(|c| {
                self.chord_knobs
                    .get(*c)
                    .is_some_and(|ks| ks.iter().any(|k| k == knob))
            })
            .unwrap_or(primary)
    }
}

fn is_semver(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads and validates the metadata section of a component. Checks only the binary's framing, not
/// the code: compiling is the engine's job, after this succeeds.
pub fn read_metadata(bytes: &[u8]) -> Result<PolicyMetadata, PolicyError> {
    let mut depth = 0usize;
    let mut found: Option<&[u8]> = None;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PolicyError::NotAComponent(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && !is_component => {
                is_component = encoding == wasmparser::Encoding::Component;
                if !is_component {
                    return Err(PolicyError::NotAComponent(
                        "a core module, not a component (build it with scripts/build-policies.sh)"
                            .into(),
                    ));
                }
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && c.name() == METADATA_SECTION => {
                if found.is_some() {
                    return Err(PolicyError::Metadata("two metadata sections".into()));
                }
                found = Some(c.data());
            }
            _ => {}
        }
    }
    let data = found
        .ok_or_else(|| PolicyError::Metadata(format!("no `{METADATA_SECTION}` custom section")))?;
    let md: PolicyMetadata =
        serde_json::from_slice(data).map_err(|e| PolicyError::Metadata(e.to_string()))?;
    md.validate().map_err(PolicyError::Metadata)?;
    Ok(md)
}

/// Capabilities a component imports (type equalities left out) and what it exports, at its top
/// level (for `policy inspect`).
pub fn component_surface(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), PolicyError> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| PolicyError::NotAComponent(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    let i = i.map_err(|e| PolicyError::NotAComponent(e.to_string()))?;
                    // World-level types appear as type imports: equalities, not capabilities.
                    if !matches!(i.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(i.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(
                        e.map_err(|e| PolicyError::NotAComponent(e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}
