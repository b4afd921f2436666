//! The published JSON Schemas (schemas/) against what the built binary writes: the main commands
//! run into temporary directories (observe, closed-loop run and watch, k8s render/verify/apply and
//! the rollback, closed-loop run --apply, license keygen/mint/verify, report, doctor, support-bundle)
//! and every file they
//! leave is validated (a JSON document or JSONL line by its `schema_version`, explain.jsonl by its
//! name), as is every `-o json` output. A JSON artifact without a schema, or a schema nothing
//! produced, fails the test. docs/artifacts.md is generated from the schemas (regenerate with
//! `MODEKEEPER_BLESS=1 cargo test --test schemas`).

mod apply_support;
mod closed_loop_support;
mod k8s_common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use apply_support::{Dev, lic_args, run_apply, verify, write_plan};
use closed_loop_support::{bin, run_ok, std_bin, trace};
use k8s_common::{Case, KNOB, standard};
use serde_json::{Value, json};

/// `MODEKEEPER_SCHEMA_SAMPLES=DIR`: collect every document into DIR/<schema_version>/ instead of
/// validating (a starting point when a new artifact needs a schema).
fn dump_dir() -> Option<PathBuf> {
    std::env::var_os("MODEKEEPER_SCHEMA_SAMPLES").map(PathBuf::from)
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every schema in schemas/, by the `schema_version` it describes.
fn schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(repo("schemas")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name == "README.md" {
            continue;
        }
        let Some(version) = name.strip_suffix(".schema.json") else {
            panic!("schemas/{name}: only <schema_version>.schema.json files belong there");
        };
        let s: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("schemas/{name}: {e}"));
        out.insert(version.to_string(), s);
    }
    out
}

/// Schemas of files without a `schema_version`, found by their file name.
const NAMED_BY_FILE: [&str; 2] = ["explain_event.v1", "keyring.v1"];

/// Validates documents and remembers which schemas were used.
struct Checker {
    schemas: BTreeMap<String, Value>,
    validators: BTreeMap<String, jsonschema::Validator>,
    used: Mutex<BTreeSet<String>>,
}

impl Checker {
    fn new() -> Checker {
        let schemas = schemas();
        let validators = schemas
            .iter()
            .map(|(k, s)| {
                let v = jsonschema::draft202012::new(s)
                    .unwrap_or_else(|e| panic!("schemas/{k}.schema.json: {e}"));
                (k.clone(), v)
            })
            .collect();
        Checker {
            schemas,
            validators,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// Validates `doc` against the schema `version`; `what` names it in a failure.
    fn check_as(&self, version: &str, doc: &Value, what: &str) {
        if let Some(dir) = dump_dir() {
            // Writing schemas: collect samples per schema instead of validating.
            let d = dir.join(version);
            fs::create_dir_all(&d).unwrap();
            let n = fs::read_dir(&d).unwrap().count();
            fs::write(d.join(format!("{n}.json")), doc.to_string()).unwrap();
            let _ = what;
            self.used.lock().unwrap().insert(version.to_string());
            return;
        }
        let v = self
            .validators
            .get(version)
            .unwrap_or_else(|| panic!("{what}: no schemas/{version}.schema.json"));
        let errors: Vec<String> = v
            .iter_errors(doc)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .take(10)
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not match schemas/{version}.schema.json:\n{}",
            errors.join("\n")
        );
        self.used.lock().unwrap().insert(version.to_string());
    }

    /// Validates a document by its own `schema_version`.
    fn check(&self, doc: &Value, what: &str) {
        let version = doc["schema_version"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no schema_version: {doc}"));
        self.check_as(version, doc, what);
    }

    /// Validates one `-o json` output.
    fn check_stdout(&self, stdout: &[u8], what: &str) {
        let v: Value = serde_json::from_slice(stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e})"));
        self.check(&v, what);
    }

    /// Validates every file under `dir` (recursively); returns how many JSON documents and lines.
    fn check_dir(&self, dir: &Path) -> usize {
        let mut n = 0;
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let what = p.display().to_string();
            if p.is_dir() {
                n += self.check_dir(&p);
            } else if name == "explain.jsonl" {
                for (i, l) in fs::read_to_string(&p).unwrap().lines().enumerate() {
                    let v: Value = serde_json::from_str(l).unwrap();
                    self.check_as("explain_event.v1", &v, &format!("{what}:{}", i + 1));
                    n += 1;
                }
            } else if name.ends_with(".jsonl") {
                for (i, l) in fs::read_to_string(&p).unwrap().lines().enumerate() {
                    let v: Value = serde_json::from_str(l).unwrap();
                    self.check(&v, &format!("{what}:{}", i + 1));
                    n += 1;
                }
            } else if name.ends_with(".json") || name == "policies.lock" {
                let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
                self.check(&v, &what);
                n += 1;
            } else {
                // Not JSON: Markdown summaries, kubectl scripts, HTML pages, keys.
                assert!(
                    [".md", ".sh", ".html", ".key"]
                        .iter()
                        .any(|ext| name.ends_with(ext)),
                    "{what}: an artifact neither JSON nor known to be something else"
                );
            }
        }
        n
    }
}

fn ok(o: &std::process::Output) -> &[u8] {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    &o.stdout
}

/// observe, closed-loop run/watch, k8s render, report, passport and policy outputs.
fn offline_commands(c: &Checker, tmp: &Path) {
    // observe on a trace with incidents, and on the trainer's mixed stdout.
    for (name, path) in [
        ("observe-combo", trace("combo")),
        (
            "observe-stdout",
            repo("tests/data/traces/combo.stdout.log.gz"),
        ),
    ] {
        let out = tmp.join(name);
        let o = bin()
            .args(["-o", "json", "observe", "--path"])
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        c.check_stdout(ok(&o), &format!("observe -o json ({name})"));
        assert!(c.check_dir(&out) > 10);
    }

    // closed-loop run (plan only) and the render of its plan, a replay of it.
    let run = tmp.join("run");
    let o = run_ok(&trace("combo"), &run, &["-o", "json"]);
    c.check_stdout(&o.stdout, "closed-loop run -o json");
    let o = bin()
        .args(["-o", "json", "closed-loop", "run", "--replay"])
        .arg(&run)
        .arg("--out")
        .arg(tmp.join("replay"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "closed-loop run --replay -o json");
    c.check_dir(&tmp.join("replay"));
    let o = bin()
        .args(["-o", "json", "roi", "--gpus", "8", "--in"])
        .arg(&run)
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "roi -o json");
    let o = bin()
        .args(["-o", "json", "k8s", "render", "--plan"])
        .arg(run.join("k8s_plan.json"))
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "k8s render -o json");

    // report over the closed-loop directory.
    let o = bin()
        .args(["-o", "json", "report", "--in"])
        .arg(&run)
        .arg("--out")
        .arg(run.join("report.html"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "report -o json");
    assert!(c.check_dir(&run) > 10);

    // closed-loop watch over a file, to its end.
    let watch = tmp.join("watch");
    let o = std_bin()
        .args(["-o", "json", "closed-loop", "watch", "--path"])
        .arg(trace("drift"))
        .arg("--out")
        .arg(&watch)
        .args(["--max-iterations", "3"])
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "closed-loop watch -o json");
    c.check_dir(&watch);

    // passport and policy outputs.
    let o = bin()
        .args(["-o", "json", "passport", "templates"])
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "passport templates -o json");
    let o = bin().args(["passport", "show", "safe"]).output().unwrap();
    c.check_stdout(ok(&o), "passport show safe");
    fs::write(tmp.join("safe.json"), &o.stdout).unwrap();
    let o = bin()
        .args(["-o", "json", "passport", "validate", "--file"])
        .arg(tmp.join("safe.json"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "passport validate -o json");
    let o = bin()
        .args(["-o", "json", "policy", "list"])
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "policy list -o json");
    let o = bin()
        .args(["-o", "json", "policy", "inspect", "safe-chords"])
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "policy inspect -o json");
    // A policy directory: add a component, lock, verify.
    let pdir = tmp.join("policies");
    fs::create_dir_all(&pdir).unwrap();
    let o = bin()
        .env("MODEKEEPER_POLICY_DIR", &pdir)
        .args(["-o", "json", "policy", "add"])
        .arg(repo("policies/dist/timeout-guard.wasm"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "policy add -o json");
    for sub in ["lock", "verify"] {
        let o = bin()
            .env("MODEKEEPER_POLICY_DIR", &pdir)
            .args(["-o", "json", "policy", sub])
            .output()
            .unwrap();
        c.check_stdout(ok(&o), &format!("policy {sub} -o json"));
    }
    let o = bin()
        .args(["-o", "json", "policy", "test", "--trace"])
        .arg(trace("burst"))
        .arg("--labels")
        .arg(repo("tests/data/traces/burst.labels.json"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "policy test -o json");
}

/// license keygen/mint/verify; k8s verify, apply and the rollback against kube-sim;
/// closed-loop run --apply.
fn cluster_commands(c: &Checker, tmp: &Path) {
    let keys = tmp.join("keys");
    let o = bin()
        .env("HOME", tmp)
        .args(["-o", "json", "license", "keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "license keygen -o json");
    let key_file = serde_json::from_slice::<Value>(&o.stdout).unwrap()["private_key"]
        .as_str()
        .unwrap()
        .to_string();
    let o = bin()
        .args(["license", "mint", "--key", &key_file])
        .args(["--subject", "schema test", "--entitlements", "apply"])
        .args(["--expires", "2099-01-01T00:00:00Z", "--out"])
        .arg(keys.join("license.json"))
        .output()
        .unwrap();
    ok(&o);
    let lic_out = tmp.join("license-verify");
    let o = bin()
        .args(["-o", "json", "license", "verify", "--license"])
        .arg(keys.join("license.json"))
        .arg("--keyring")
        .arg(keys.join("keyring.json"))
        .arg("--out")
        .arg(&lic_out)
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "license verify -o json");
    c.check_dir(&lic_out);
    // The key directory: keyring.json, the signing key, the license.
    for e in fs::read_dir(&keys).unwrap() {
        let p = e.unwrap().path();
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        if p.ends_with("keyring.json") {
            // A keyring is a bare {kid: public key} map: found by its name.
            c.check_as("keyring.v1", &v, &p.display().to_string());
        } else {
            c.check(&v, &p.display().to_string());
        }
    }

    // The trainer's knobs ConfigMap: closed-loop run --apply writes hot knobs there (k8s_plan.v2).
    let sim = standard()
        .object(
            kube_sim::ResourceKind::ConfigMap,
            json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"}, "data": {}}),
        )
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let lic = dev.good();
    let plan = write_plan(
        case.path(),
        "plan.json",
        &json!({"schema_version": "k8s_plan.v1", "items": [
            {"namespace": "ml", "name": "trainer", "kind": "Deployment",
             "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}}]}),
    );
    let out = case.path().join("out");
    verify(&case, &out, &plan, true);
    let mut args = lic_args(&dev, &lic);
    args.extend(["-o", "json"]);
    let a = run_apply(&case, &out, &plan, &args, &[]);
    assert_eq!(a.code, 0, "{a:#?}");
    c.check_stdout(a.stdout.as_bytes(), "k8s apply -o json");
    // The rollback plan goes through the same verify and apply.
    let back = case.path().join("back");
    verify(&case, &back, &out.join("rollback_plan.json"), true);
    let a = run_apply(
        &case,
        &back,
        &out.join("rollback_plan.json"),
        &lic_args(&dev, &lic),
        &[],
    );
    assert_eq!(a.code, 0, "{a:#?}");
    // A verify that finds a blocker writes its report too.
    let blocked = case.path().join("blocked");
    let missing = write_plan(
        case.path(),
        "missing.json",
        &json!({"schema_version": "k8s_plan.v1", "items": [
            {"namespace": "nope", "name": "trainer",
             "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}}]}),
    );
    let o = case
        .command()
        .args(["-o", "json", "k8s", "verify", "--plan"])
        .arg(&missing)
        .arg("--out")
        .arg(&blocked)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .output()
        .unwrap();
    c.check_stdout(&o.stdout, "k8s verify -o json (blocked)");
    for d in [&out, &back, &blocked] {
        assert!(c.check_dir(d) > 3);
    }

    // closed-loop run --apply: the apply fields flattened into the report; verify and apply reports
    // next to it.
    let cl = case.path().join("closed-loop-apply");
    let mut p: Value =
        serde_json::to_value(modekeeper::passport::template("safe").unwrap().unwrap()).unwrap();
    p["name"] = "safe-apply".into();
    p["gates"]["apply"] = true.into();
    let passport = case.path().join("passport.json");
    fs::write(&passport, serde_json::to_vec(&p).unwrap()).unwrap();
    let o = bin()
        .env("HOME", case.path())
        .args(["-o", "json", "closed-loop", "run", "--path"])
        .arg(trace("burst"))
        .arg("--out")
        .arg(&cl)
        .args(["--apply", "--kubeconfig"])
        .arg(&case.kubeconfig)
        .args(["-n", "ml", "--deployment", "trainer", "--passport"])
        .arg(&passport)
        .args(lic_args(&dev, &lic))
        .output()
        .unwrap();
    c.check_stdout(&o.stdout, "closed-loop run --apply -o json");
    c.check_dir(&cl);

    // doctor (the standard trainer has no knob volume and no telemetry: some checks fail).
    let o = bin()
        .env("HOME", case.path())
        .args(["-o", "json", "doctor", "-n", "ml", "--kubeconfig"])
        .arg(&case.kubeconfig)
        .args(lic_args(&dev, &lic))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    c.check_stdout(&o.stdout, "doctor -o json");
    // support-bundle of the closed-loop directory.
    let o = bin()
        .args(["-o", "json", "support-bundle", "--in"])
        .arg(&cl)
        .arg("--out")
        .arg(case.path().join("bundle.tar.gz"))
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "support-bundle -o json");

    // fleet: every row state (a session, none yet, an orphan with --all).
    let sim = k8s_common::fleet_sim().start_blocking().unwrap();
    k8s_common::seed_fleet_state(&sim);
    let case = Case::new(&sim, "t0");
    let o = bin()
        .args(["-o", "json", "fleet", "-A", "--all", "--kubeconfig"])
        .arg(&case.kubeconfig)
        .output()
        .unwrap();
    c.check_stdout(ok(&o), "fleet -o json");
}

#[test]
fn every_artifact_and_json_output_matches_its_published_schema() {
    let c = Checker::new();
    let tmp = tempfile::tempdir().unwrap();
    offline_commands(&c, tmp.path());
    cluster_commands(&c, tmp.path());
    if dump_dir().is_some() {
        return;
    }
    let used = c.used.lock().unwrap().clone();
    let unused: Vec<&String> = c.schemas.keys().filter(|k| !used.contains(*k)).collect();
    assert!(
        unused.is_empty(),
        "schemas nothing in this test produced (cover them, or delete them): {unused:?}"
    );
}

#[test]
fn schemas_are_valid_2020_12_and_name_their_version() {
    for (version, s) in schemas() {
        assert!(
            jsonschema::meta::is_valid(&s),
            "schemas/{version}.schema.json is not a valid JSON Schema"
        );
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{version}"
        );
        assert_eq!(
            s["$id"],
            format!("https://modekeeper.dev/schemas/{version}.schema.json"),
            "{version}"
        );
        assert!(
            s["title"].is_string() && s["description"].is_string(),
            "{version}"
        );
        // A document names its schema: schema_version is required and pinned (explain lines and
        // keyrings are the exceptions, found by file name).
        if !NAMED_BY_FILE.contains(&version.as_str()) {
            assert_eq!(
                s["properties"]["schema_version"]["const"], version,
                "{version}: schema_version must be const"
            );
            assert!(
                s["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("schema_version"))),
                "{version}: schema_version must be required"
            );
        }
    }
}

/// The validator rejects what breaks the contract: a missing required field, a wrong type.
#[test]
fn a_broken_artifact_is_rejected() {
    let c = Checker::new();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    ok(&bin()
        .args(["observe", "--path"])
        .arg(trace("stable"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    let good: Value =
        serde_json::from_slice(&fs::read(out.join("observe_latest.json")).unwrap()).unwrap();
    c.check(&good, "observe_latest.json");
    let v = &c.validators["observe.v1"];
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("verdict");
    assert!(!v.is_valid(&missing));
    let mut wrong = good.clone();
    wrong["ingest"]["lines_read"] = json!("many");
    assert!(!v.is_valid(&wrong));
    let mut other = good;
    other["schema_version"] = json!("observe.v2");
    assert!(!v.is_valid(&other));
}

/// docs/artifacts.md as the schemas describe it.
fn artifacts_doc() -> String {
    let mut s = String::from(
        "# Artifacts and JSON outputs\n\n\
         <!-- Generated from schemas/ by `MODEKEEPER_BLESS=1 cargo test --test schemas`; do not edit. -->\n\n",
    );
    let intro = fs::read_to_string(repo("schemas/README.md")).unwrap();
    s += intro.trim_end();
    s += "\n\n";
    let all = schemas();
    s += "| schema | title |\n| --- | --- |\n";
    for (version, sc) in &all {
        s += &format!(
            "| [`{version}`](#{}) | {} |\n",
            anchor(version),
            sc["title"].as_str().unwrap()
        );
    }
    s += "\n";
    for (version, sc) in &all {
        s += &format!("## {version}\n\n");
        s += &format!("**{}.** ", sc["title"].as_str().unwrap());
        s += sc["description"].as_str().unwrap();
        s += &format!(
            "\n\nSchema: [`schemas/{version}.schema.json`](../schemas/{version}.schema.json)\n\n"
        );
        s += "| field | type | required | description |\n| --- | --- | --- | --- |\n";
        fields(sc, sc, "", &mut s);
        s += "\n";
    }
    s
}

fn anchor(version: &str) -> String {
    version.replace('.', "").to_lowercase()
}

/// Follows a local `$ref` (`#/$defs/x`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
            &root["$defs"][name]
        }
        None => node,
    }
}

fn type_of(root: &Value, node: &Value) -> String {
    let node = resolve(root, node);
    if let Some(c) = node.get("const") {
        return format!("`{c}`");
    }
    if let Some(e) = node["enum"].as_array() {
        return e
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    let t = match &node["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" \\| "),
        _ if node.get("oneOf").or(node.get("anyOf")).is_some() => "one of several".into(),
        _ => "any".into(),
    };
    if t.starts_with("array")
        && let Some(items) = node.get("items")
    {
        let inner = type_of(root, items);
        return t.replacen("array", &format!("array of {inner}"), 1);
    }
    t
}

/// One table row per property, nested objects (and arrays of objects) flattened with dotted paths.
fn fields(root: &Value, node: &Value, prefix: &str, out: &mut String) {
    let node = resolve(root, node);
    let Some(props) = node["properties"].as_object() else {
        return;
    };
    let required: BTreeSet<&str> = node["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, p) in props {
        let path = format!("{prefix}{name}");
        let desc = resolve(root, p)["description"]
            .as_str()
            .or(p["description"].as_str())
            .unwrap_or("")
            .replace('|', "\\|")
            .replace('\n', " ");
        out.push_str(&format!(
            "| `{path}` | {} | {} | {desc} |\n",
            type_of(root, p),
            if required.contains(name.as_str()) {
                "yes"
            } else {
                "no"
            }
        ));
        let r = resolve(root, p);
        if r.get("properties").is_some() {
            fields(root, r, &format!("{path}."), out);
        } else if let Some(items) = r.get("items")
            && resolve(root, items).get("properties").is_some()
        {
            fields(root, items, &format!("{path}[]."), out);
        }
    }
}

#[test]
fn docs_artifacts_md_is_generated_from_the_schemas() {
    let want = artifacts_doc();
    let path = repo("docs/artifacts.md");
    if std::env::var("MODEKEEPER_BLESS").is_ok_and(|v| v == "1") {
        fs::write(&path, &want).unwrap();
        return;
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/artifacts.md is stale: regenerate it with `MODEKEEPER_BLESS=1 cargo test --test schemas`"
    );
}
