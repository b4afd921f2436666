//! `passport templates|show|validate`, driven through the binary.

use std::path::Path;

use assert_cmd::Command;

fn mk() -> Command {
    Command::cargo_bin("kubectl-modekeeper").unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = mk()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// Runs `passport validate --file` on `text`; returns (exit code, stdout, stderr).
fn validate(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = mk()
        .current_dir(dir)
        .args(["passport", "validate", "--file", name])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const NAMES: [&str; 7] = ["comm", "cost", "io", "perf", "pilot", "recovery", "safe"];

#[test]
fn templates_lists_the_seven_names_sorted() {
    assert_eq!(
        stdout_of(&["passport", "templates"]),
        NAMES.map(|n| format!("{n}\n")).concat()
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["-o", "json", "passport", "templates"])).unwrap();
    assert_eq!(v["schema_version"], "passport_templates.v1");
    let names: Vec<&str> = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NAMES);
    assert!(
        v["templates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["version"] == "1.0.0" && !t["description"].as_str().unwrap().is_empty())
    );
}

#[test]
fn show_output_validates_for_every_template() {
    let tmp = tempfile::tempdir().unwrap();
    for name in NAMES {
        let shown = stdout_of(&["passport", "show", name]);
        let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(v["schema_version"], "passport.v1");
        assert_eq!(v["name"], name);
        let (code, out, err) = validate(tmp.path(), &format!("{name}.json"), &shown);
        assert_eq!((code, err.as_str()), (0, ""), "{name}");
        assert_eq!(out, format!("ok: {name}.json: passport {name} 1.0.0\n"));
        // The legacy flag prints the same document.
        assert_eq!(stdout_of(&["passport", "show", "--template", name]), shown);
    }
}

#[test]
fn show_safe_snapshot() {
    insta::assert_snapshot!(
        "passport_show_safe",
        stdout_of(&["passport", "show", "safe"])
    );
}

#[test]
fn show_unknown_template_is_one_line_exit_2() {
    let out = mk().args(["passport", "show", "turbo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: unknown passport template \"turbo\" (templates: comm, cost, io, perf, pilot, recovery, safe)\n"
    );
    assert!(out.stdout.is_empty());
}

/// The first implementation's bad inputs (original-samples/_inputs/passport_*.json), verbatim.
const BAD_JSON: &str = "{not-json\n";
const SAFE_V0_HEAD: &str = r#"{"schema_version": "passport.v0", "name": "safe", "description": "Safe production starter: all safe chords, guarded movement, no apply by default.", "allowed_chords": ["NORMAL-HOLD", "DRIFT-RETUNE", "BURST-ABSORB", "INPUT-STRAGGLER", "RECOVER", "RELOCK""#;
const SAFE_V0_ACTUATORS: &str = r#"], "allowed_actuators": {"hot": ["concurrency"], "cold": ["grad_accum_steps", "microbatch_size", "dataloader_prefetch_factor", "dataloader_num_workers"]}, "limits": {"cooldown_s": 90, "max_delta_per_step": 1, "#;
const SAFE_V0_TAIL: &str = r#"}, "invariants": ["keep_global_batch_stable", "avoid_tail_latency_regression"], "cooldowns": {"drift_retune_s": 120, "burst_absorb_s": 90, "recover_s": 180}, "gates": {"default_mode": "plan_verify_only", "apply": false, "require_verify_ok": true, "require_paid": true, "require_kill_switch_off": true}}"#;

fn safe_v0(extra_chord: &str, limits: &str) -> String {
    format!("{SAFE_V0_HEAD}{extra_chord}{SAFE_V0_ACTUATORS}{limits}{SAFE_V0_TAIL}")
}

const GOOD_LIMITS: &str = r#""relock_stable_intervals": 3, "knob_limits": {"grad_accum_steps": {"min": 1, "max": 12}, "microbatch_size": {"min": 8, "max": 96}, "concurrency": {"min": 1, "max": 16}}"#;

#[test]
fn the_reference_bad_passports_each_give_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "passport_bad.json",
            BAD_JSON.to_string(),
            "error: passport_bad.json: invalid JSON: key must be a string at line 1 column 2\n",
        ),
        (
            "passport_badchord.json",
            safe_v0(r#", "TIMEOUT-GUARD""#, GOOD_LIMITS),
            "error: passport_badchord.json: allowed_chords: unknown chord(s) TIMEOUT-GUARD (passport.v0 allows BURST-ABSORB, \
             DRIFT-RETUNE, INPUT-STRAGGLER, NORMAL-HOLD, RECOVER, RELOCK); TIMEOUT-GUARD is advanced: write a passport.v1 and \
             permit it in advanced_chords\n",
        ),
        (
            "passport_badlimits.json",
            safe_v0(
                "",
                &GOOD_LIMITS.replace(
                    r#""concurrency": {"min": 1, "max": 16}"#,
                    r#""concurrency": {"min": 10, "max": 1}"#,
                ),
            ),
            "error: passport_badlimits.json: limits.knob_limits.concurrency: min 10 is greater than max 1\n",
        ),
        (
            "passport_missinglimit.json",
            safe_v0(
                "",
                &GOOD_LIMITS.replace(r#""relock_stable_intervals": 3, "#, ""),
            ),
            "error: passport_missinglimit.json: limits: missing relock_stable_intervals\n",
        ),
    ];
    for (name, text, want) in cases {
        let (code, out, err) = validate(tmp.path(), name, &text);
        assert_eq!((code, out.as_str(), err.as_str()), (2, "", want), "{name}");
    }
    // The good v0 original is accepted and named as legacy.
    let (code, out, _) = validate(tmp.path(), "safe_v0.json", &safe_v0("", GOOD_LIMITS));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "ok: safe_v0.json: legacy passport.v0 passport safe; `passport show --file` prints its passport.v1 form\n"
    );
    // …and its v1 form is the built-in template.
    let shown = stdout_of(&[
        "passport",
        "show",
        "--file",
        tmp.path().join("safe_v0.json").to_str().unwrap(),
    ]);
    assert_eq!(shown, stdout_of(&["passport", "show", "safe"]));
}

#[test]
fn v1_errors_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["passport", "show", "io"])).unwrap();
    v["knobs"]["concurrency"]["baseline"] = 99.into();
    let (code, _, err) = validate(tmp.path(), "io.json", &v.to_string());
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "error: io.json: knobs.concurrency.baseline: 99 lies outside [1, 16]\n"
        )
    );

    v["knobs"]["concurrency"]["baseline"] = 4.into();
    v["allowed_chords"] = serde_json::json!(["NORMAL-HOLD", "COMM-CONGESTION"]);
    let (code, _, err) = validate(tmp.path(), "io.json", &v.to_string());
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: io.json: allowed_chords[1]: COMM-CONGESTION is an advanced chord; permit it explicitly in advanced_chords\n"
    );

    v["allowed_chords"] = serde_json::json!(["NORMAL-HOLD"]);
    v["advanced_chords"] = serde_json::json!(["COMM-CONGESTION"]);
    let (code, out, _) = validate(tmp.path(), "io.json", &v.to_string());
    assert_eq!(
        (code, out.as_str()),
        (0, "ok: io.json: passport io 1.0.0\n")
    );
}

#[test]
fn validate_missing_file_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mk()
        .current_dir(tmp.path())
        .args(["passport", "validate", "--file", "absent.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: absent.json: cannot read: ") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn validate_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.json"),
        stdout_of(&["passport", "show", "perf"]),
    )
    .unwrap();
    let out = mk()
        .current_dir(tmp.path())
        .args(["-o", "json", "passport", "validate", "--file", "p.json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"schema_version": "passport_validate.v1", "ok": true, "file": "p.json",
                           "passport_schema": "passport.v1", "name": "perf", "version": "1.0.0"})
    );
}

#[test]
fn help_text() {
    insta::assert_snapshot!("passport_help", stdout_of(&["passport", "--help"]));
    insta::assert_snapshot!(
        "passport_show_help",
        stdout_of(&["passport", "show", "--help"])
    );
}

#[cfg(unix)]
#[test]
fn validate_refuses_a_device_or_fifo_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (file, what) in [
        ("/dev/zero".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
    ] {
        let out = mk()
            .args(["passport", "validate", "--file", &file])
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err,
            format!("error: {file}: cannot read: not a regular file ({what})\n")
        );
    }
}
