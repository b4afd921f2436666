//! kubectl conventions through the built binary: the short forms (`plan`, `render`, `verify`,
//! `apply`), suggestions for unknown commands, `version`, the namespace rule (the context's, `-n`
//! overrides, a plan for another namespace is refused), verify's exit code, `-o yaml`, `-f`, the
//! embedded examples, completion (ours and through the real kubectl), and the messages that say what
//! to do next.

mod k8s_common;
mod yaml_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_common::{BIN, item, kubectl_or_skip, standard};
use serde_json::{Value, json};
use yaml_rust2::YamlLoader;
use yaml_support::yaml_to_json;

/// The binary with a private HOME, cache and policy directory, no kubeconfig from the environment.
fn mk(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    // A default `--out report` lands in the temp dir, never in the checkout.
    c.current_dir(home)
        .env_remove("_")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("MODEKEEPER_LICENSE_PATH")
        .env_remove("MODEKEEPER_KEYRING")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("MODEKEEPER_POLICY_DIR", home.join("policies"))
        // Compiling the policy components is slow in a debug build: one cache for this test binary.
        .env(
            "MODEKEEPER_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-conventions-cache"),
        );
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    mk(home).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A kubeconfig whose current context has namespace `ns`; its server is never contacted.
fn kubeconfig_with_namespace(dir: &Path, ns: &str) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: work\n  context:\n    cluster: c\n    user: u\n    namespace: {ns}\ncurrent-context: work\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    p
}

fn parse_yaml(text: &str) -> Value {
    let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(docs.len(), 1, "{text}");
    yaml_to_json(&docs[0])
}

#[test]
fn plan_and_render_are_the_short_forms_and_the_long_forms_still_work() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let short = h.join("short");
    let long = h.join("long");
    ok(&run(
        h,
        &[
            "plan",
            "--example",
            "straggler",
            "--out",
            short.to_str().unwrap(),
        ],
    ));
    ok(&run(
        h,
        &[
            "closed-loop",
            "run",
            "--example",
            "straggler",
            "--out",
            long.to_str().unwrap(),
        ],
    ));
    let a = json_file(&short.join("k8s_plan.json"));
    let b = json_file(&long.join("k8s_plan.json"));
    assert_eq!(a["plan_digest"], b["plan_digest"], "the same plan");
    assert_eq!(
        a["items"][0]["namespace"], "default",
        "no kubeconfig: default"
    );
    assert!(!a["items"].as_array().unwrap().is_empty(), "{a:#}");

    // render: `-f` and `--filename` as kubectl spells them, short and long forms.
    let plan = short.join("k8s_plan.json");
    ok(&run(
        h,
        &[
            "render",
            "-f",
            plan.to_str().unwrap(),
            "--out",
            short.to_str().unwrap(),
        ],
    ));
    let script = std::fs::read_to_string(short.join("k8s_plan.kubectl.sh")).unwrap();
    assert!(script.contains("kubectl"), "{script}");
    ok(&run(
        h,
        &[
            "k8s",
            "render",
            "--filename",
            plan.to_str().unwrap(),
            "--out",
            long.to_str().unwrap(),
        ],
    ));
    assert!(long.join("k8s_plan.kubectl.sh").is_file());

    // `plan` never applies: --apply is not one of its flags.
    let o = run(h, &["plan", "--example", "straggler", "--apply"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--apply"), "{}", stderr(&o));

    // verify and apply exist at the top level (their behaviour is tested below and in k8s_verify).
    for cmd in ["verify", "apply"] {
        let help = ok(&run(h, &[cmd, "--help"]));
        assert!(help.contains("-f, --plan <PATH>"), "{help}");
        assert!(help.contains("[alias: --filename]"), "{help}");
    }
}

#[test]
fn unknown_commands_get_a_did_you_mean() {
    let home = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["verfy"][..], "'verify'"),
        (&["k8s", "verfy"][..], "'verify'"),
        (&["closed-loop", "runn"][..], "'run'"),
    ] {
        let o = run(home.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(e.contains("unrecognized subcommand"), "{e}");
        assert!(e.contains("(see --help); tip:"), "{e}");
        assert!(
            e.contains("tip: a similar subcommand exists") && e.contains(want),
            "{e}"
        );
    }
}

#[test]
fn version_prints_the_plugin_policy_and_wit_versions() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let v: Value = serde_json::from_str(&ok(&run(h, &["version", "-o", "json"]))).unwrap();
    assert_eq!(v["schema_version"], "version.v1");
    assert_eq!(v["plugin"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["wit"]["hosted"], json!(["1.0.0"]));
    let policies = v["policies"].as_array().unwrap();
    assert!(!policies.is_empty());
    for p in policies {
        assert!(p["id"].is_string() && p["version"].is_string(), "{p}");
        assert_eq!(p["wit_version"], "1.0.0", "{p}");
        assert!(p["sha256"].as_str().unwrap().len() == 64, "{p}");
    }
    let yaml = parse_yaml(&ok(&run(h, &["version", "-o", "yaml"])));
    assert_eq!(yaml, v, "yaml and json carry the same document");
    let text = ok(&run(h, &["version"]));
    assert!(
        text.starts_with(&format!(
            "kubectl-modekeeper {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("WIT       1.0.0"), "{text}");
}

#[test]
fn yaml_output_is_the_json_document() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for args in [
        &["passport", "templates"][..],
        &["passport", "show", "safe"][..],
        &["policy", "list"][..],
    ] {
        let j: Value =
            serde_json::from_str(&ok(&run(h, &[args, &["-o", "json"][..]].concat()))).unwrap();
        let y = parse_yaml(&ok(&run(h, &[args, &["-o", "yaml"][..]].concat())));
        assert_eq!(y, j, "{args:?}");
    }
    // A full report: observe of the embedded example.
    let out = h.join("obs");
    let y = parse_yaml(&ok(&run(
        h,
        &[
            "observe",
            "--example",
            "combo",
            "--out",
            out.to_str().unwrap(),
            "-o",
            "yaml",
        ],
    )));
    let file = json_file(&out.join("observe_latest.json"));
    assert_eq!(y["schema_version"], "observe.v1");
    assert_eq!(y["verdict"], file["verdict"]);
    assert_eq!(y["ingest"], file["ingest"]);
    assert_eq!(y["episodes"], file["episodes"]);
}

#[test]
fn the_embedded_examples_need_no_checkout() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = h.join("obs");
    let text = ok(&run(
        h,
        &[
            "observe",
            "--example",
            "combo",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let r = json_file(&out.join("observe_latest.json"));
    // The real H100 combo trace: trainer stdout (our JSON records among log lines, detected),
    // thousands of records.
    assert_eq!(r["source"]["format"], "auto", "{:#}", r["source"]);
    assert!(
        r["format_detected"]["name"].is_string(),
        "{:#}",
        r["format_detected"]
    );
    assert!(r["ingest"]["records_emitted"].as_u64().unwrap() > 1000);
    assert!(!r["episodes"].as_array().unwrap().is_empty(), "{text}");
    // The same as reading the file in tests/data.
    let direct = h.join("direct");
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces/combo.stdout.log.gz");
    ok(&run(
        h,
        &[
            "observe",
            "--filename",
            trace.to_str().unwrap(),
            "--out",
            direct.to_str().unwrap(),
        ],
    ));
    let d = json_file(&direct.join("observe_latest.json"));
    assert_eq!(r["ingest"], d["ingest"]);
    assert_eq!(r["episodes"], d["episodes"]);

    // --example and a path exclude each other.
    let o = run(h, &["observe", "--example", "combo", "-f", "x.log"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let o = run(h, &["observe", "--example", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("combo"), "{}", stderr(&o));
}

#[test]
fn the_namespace_is_the_contexts_and_n_overrides_it() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let kc = kubeconfig_with_namespace(h, "ml");
    let kc = kc.to_str().unwrap();
    let out = h.join("ctx");
    ok(&run(
        h,
        &[
            "plan",
            "--example",
            "straggler",
            "--kubeconfig",
            kc,
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let plan = json_file(&out.join("k8s_plan.json"));
    assert_eq!(plan["items"][0]["namespace"], "ml", "{plan:#}");
    let r = json_file(&out.join("closed_loop_latest.json"));
    assert_eq!(r["target"]["namespace"], "ml");

    // KUBECONFIG works the same as --kubeconfig.
    let env_out = h.join("env");
    let o = mk(h)
        .env("KUBECONFIG", kc)
        .args([
            "plan",
            "--example",
            "straggler",
            "--out",
            env_out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        json_file(&env_out.join("k8s_plan.json"))["items"][0]["namespace"],
        "ml"
    );

    let other = h.join("other");
    ok(&run(
        h,
        &[
            "plan",
            "--example",
            "straggler",
            "--kubeconfig",
            kc,
            "-n",
            "team-b",
            "--out",
            other.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        json_file(&other.join("k8s_plan.json"))["items"][0]["namespace"],
        "team-b"
    );

    // A stale KUBECONFIG nobody asked for does not stop a plan (it needs no cluster): a warning.
    let stale = h.join("stale");
    let o = mk(h)
        .env("KUBECONFIG", h.join("missing-kubeconfig"))
        .args([
            "plan",
            "--example",
            "straggler",
            "--out",
            stale.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    ok(&o);
    let r = json_file(&stale.join("closed_loop_latest.json"));
    assert_eq!(r["target"]["namespace"], "default");
    assert!(
        r["warnings"]
            .to_string()
            .contains("KUBECONFIG names no existing file"),
        "{r:#}"
    );

    // A context that is not in the kubeconfig is an input error, as in kubectl.
    let o = run(
        h,
        &[
            "plan",
            "--example",
            "straggler",
            "--kubeconfig",
            kc,
            "--context",
            "nope",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("context \"nope\" not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_plan_for_another_namespace_than_n_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let plan = h.join("plan.json");
    std::fs::write(&plan, json!([item("ml", "trainer", "8")]).to_string()).unwrap();
    let kc = kubeconfig_with_namespace(h, "ml");
    for cmd in [&["verify"][..], &["k8s", "verify"], &["render"], &["apply"]] {
        let out = h.join(format!("out-{}", cmd.join("-")));
        let args = [
            cmd,
            &[
                "-n",
                "team-b",
                "-f",
                plan.to_str().unwrap(),
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ][..],
        ]
        .concat();
        let o = run(h, &args);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("-n team-b: the plan targets namespace ml, not team-b"),
            "{cmd:?}: {e}"
        );
        assert_eq!(
            listing(&out),
            ["explain.jsonl"],
            "{cmd:?}: nothing but explain"
        );
    }
}

#[test]
fn verify_exits_2_on_a_blocker_and_still_writes_the_report() {
    let sim = standard().start_blocking().unwrap();
    let case = k8s_common::Case::new(&sim, "t0");
    // `verify -n ml` of a plan for ml: ok, exit 0.
    let plan = case.write_plan(&json!([item("ml", "trainer", "8")]));
    let o = case
        .command()
        .args(["-n", "ml", "verify", "-f"])
        .arg(&plan)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .arg("--out")
        .arg(case.out())
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        json_file(&case.out().join("k8s_verify_latest.json"))["ok"],
        true
    );

    // A namespace that does not exist: blocked, exit 2, the report written and named.
    let out = case.path().join("blocked");
    let plan = case.write_plan(&json!([item("nope", "trainer", "8")]));
    let o = case
        .command()
        .args(["verify", "-f"])
        .arg(&plan)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let r = json_file(&out.join("k8s_verify_latest.json"));
    assert_eq!(r["ok"], false);
    assert_eq!(r["verify_blocker"]["kind"], "namespace_missing");
    let e = stderr(&o);
    assert!(
        e.contains("error: verify blocked (namespace_missing)"),
        "{e}"
    );
    assert!(e.contains("k8s_verify_latest.json"), "{e}");
    assert!(stdout(&o).contains("verify BLOCKED (namespace_missing)"));
}

#[test]
fn our_completion_answers_in_cobras_format() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let top = ok(&run(h, &["__complete", ""]));
    assert!(top.ends_with(":4\n"), "{top}");
    for c in ["verify\t", "plan\t", "observe\t", "version\t", "k8s\t"] {
        assert!(top.lines().any(|l| l.starts_with(c)), "{c}: {top}");
    }
    let v = ok(&run(h, &["__complete", "ve"]));
    assert_eq!(
        v.lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect::<Vec<_>>(),
        ["verify", "version", ":4"]
    );
    let flags = ok(&run(h, &["__complete", "verify", "--"]));
    for f in [
        "--plan\t",
        "--filename\t",
        "--out\t",
        "--namespace\t",
        "--output\t",
    ] {
        assert!(flags.lines().any(|l| l.starts_with(f)), "{f}: {flags}");
    }
    let out = ok(&run(h, &["__complete", "-n", "ml", "observe", "-o", ""]));
    assert_eq!(
        out.lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect::<Vec<_>>(),
        ["text", "json", "yaml", ":4"]
    );
    let ex = ok(&run(h, &["__complete", "plan", "--example", "s"]));
    assert!(ex.starts_with("straggler\t"), "{ex}");
    // A path: the shell completes files.
    let f = ok(&run(h, &["__complete", "verify", "-f", ""]));
    assert_eq!(f, ":0\n");
}

#[test]
fn kubectl_finds_the_plugin_and_its_completion_helper() {
    let Some(kubectl) = kubectl_or_skip("kubectl_finds_the_plugin_and_its_completion_helper")
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bin = h.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("kubectl-modekeeper")).unwrap();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kubectl_complete-modekeeper");
    std::fs::copy(&helper, bin.join("kubectl_complete-modekeeper")).unwrap();
    // PATH: the temp dir first, then the system's (sh for the helper); kubectl by absolute path.
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let kube = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env("HOME", h)
            .env("KUBECONFIG", h.join("no-kubeconfig"))
            .env(
                "MODEKEEPER_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-conventions-cache"),
            )
            .output()
            .unwrap()
    };
    let list = kube(&["plugin", "list"]);
    let listed = stdout(&list);
    assert!(
        listed.contains(&bin.join("kubectl-modekeeper").display().to_string()),
        "{listed}\n{}",
        stderr(&list)
    );
    let o = kube(&["__complete", "modekeeper", ""]);
    let c = stdout(&o);
    for w in ["verify", "plan", "observe", "version"] {
        assert!(
            c.lines().any(|l| l.split('\t').next() == Some(w)),
            "{w}: {c}\n{}",
            stderr(&o)
        );
    }
    assert!(c.lines().any(|l| l == ":4"), "{c}");
    let o = kube(&["__complete", "modekeeper", "verify", "--fi"]);
    assert!(stdout(&o).starts_with("--filename"), "{}", stdout(&o));
    // And the plugin itself runs through kubectl.
    let o = kube(&["modekeeper", "version", "-o", "json"]);
    let v: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["plugin"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn messages_say_what_to_do_next() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // policy test on a trace without a labels file beside it: mention --labels.
    let trace = h.join("straggler.jsonl.gz");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces/straggler.jsonl.gz"),
        &trace,
    )
    .unwrap();
    let o = run(h, &["policy", "test", "-f", trace.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("cannot read labels") && e.contains("--labels FILE"),
        "{e}"
    );

    // No usable record: the reasons, counted.
    let junk = h.join("junk.jsonl");
    std::fs::write(
        &junk,
        // Loss-only records are usable (issue 12); records with neither step time nor loss are not.
        "{\"step\": 1, \"lr\": 0.1}\n{\"step\": 2, \"lr\": 0.1}\n{\"step\": 3}\nnot json\n",
    )
    .unwrap();
    let o = run(
        h,
        &[
            "observe",
            "-f",
            junk.to_str().unwrap(),
            "--out",
            h.join("j").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("no usable telemetry record"), "{e}");
    assert!(e.contains("(3 missing_step_time, 1 not_json)"), "{e}");
    assert!(e.contains("records need a step time or a loss"), "{e}");
    let o = run(
        h,
        &[
            "plan",
            "-f",
            junk.to_str().unwrap(),
            "--out",
            h.join("p").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("3 missing_step_time"), "{}", stderr(&o));

    // license_missing links the licensing page.
    let keys = h.join("keys");
    ok(&run(
        h,
        &["license", "keygen", "--out", keys.to_str().unwrap()],
    ));
    let o = run(
        h,
        &[
            "license",
            "verify",
            "--keyring",
            keys.join("keyring.json").to_str().unwrap(),
            "--out",
            h.join("lv").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let r = json_file(&h.join("lv/license_verify_latest.json"));
    assert_eq!(r["reason"], "license_missing");
    assert!(
        r["detail"].as_str().unwrap().ends_with("docs/licensing.md"),
        "{r:#}"
    );
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("docs/licensing.md"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn an_apply_without_a_license_links_the_licensing_page() {
    let sim = standard().start_blocking().unwrap();
    let case = k8s_common::Case::new(&sim, "t0");
    let h = case.path();
    let keys = h.join("keys");
    ok(&run(
        h,
        &["license", "keygen", "--out", keys.to_str().unwrap()],
    ));
    // A passport that allows applying (every built-in one is plan-only), so the license gate decides.
    let safe = ok(&run(h, &["passport", "show", "safe"]));
    let passport = h.join("passport.json");
    std::fs::write(
        &passport,
        safe.replace("\"apply\": false", "\"apply\": true"),
    )
    .unwrap();
    let plan = case.write_plan(&json!([item("ml", "trainer", "8")]));
    let o = case
        .command()
        .args(["apply", "-f"])
        .arg(&plan)
        .arg("--passport")
        .arg(&passport)
        .arg("--keyring")
        .arg(keys.join("keyring.json"))
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .arg("--out")
        .arg(case.out())
        .env_remove("MODEKEEPER_LICENSE_PATH")
        .env("XDG_CONFIG_HOME", h.join(".config"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("apply blocked: license_missing"), "{e}");
    assert!(e.ends_with("docs/licensing.md\n"), "{e}");
}
