//! Helpers for the `k8s apply` tests: a development license signed by a key generated for the test
//! and trusted only through `--keyring`, running the built binary (verify, apply) against kube-sim,
//! and reading what a run left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use ed25519_dalek::SigningKey;
use kube_sim::{KubeSim, ResourceKind};
use modekeeper::license::{self, Keyring, LicenseClaims};
use serde_json::{Value, json};

use crate::k8s_common::{Case, KNOB, item, standard};

pub const MICRO: &str = "modekeeper/knob.microbatch_size";

/// Writes to the cluster: PATCHes that are not dry runs.
pub fn writes(sim: &KubeSim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun"))
        .count()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn claims(entitlements: &[&str]) -> LicenseClaims {
    LicenseClaims {
        license_id: "lic-test-cluster".into(),
        subject: "ModeKeeper test cluster".into(),
        issued_at: now() - 60,
        not_before: now() - 60,
        expires_at: now() + 86_400,
        entitlements: entitlements.iter().map(|s| s.to_string()).collect(),
        bindings: Default::default(),
    }
}

/// A development key of this test, its keyring file and license files made with it.
pub struct Dev {
    pub key: SigningKey,
    pub dir: tempfile::TempDir,
    pub keyring: PathBuf,
}

impl Dev {
    pub fn new() -> Dev {
        let key = license::generate_signing_key().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.json");
        std::fs::write(
            &keyring,
            Keyring::from_keys([key.verifying_key()]).to_json(),
        )
        .unwrap();
        Dev { key, dir, keyring }
    }

    pub fn license(&self, name: &str, c: &LicenseClaims) -> PathBuf {
        self.license_with(&self.key, name, c, true)
    }

    pub fn license_with(
        &self,
        key: &SigningKey,
        name: &str,
        c: &LicenseClaims,
        kid: bool,
    ) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, license::mint(key, c, kid).unwrap()).unwrap();
        p
    }

    pub fn good(&self) -> PathBuf {
        self.license("good.json", &claims(&["apply"]))
    }
}

/// One `k8s apply` run and what it left behind.
#[derive(Debug)]
pub struct Applied {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<Value>,
    pub explain: Vec<Value>,
    pub out: PathBuf,
}

impl Applied {
    pub fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no report: {self:#?}"))
    }

    /// A blocked run: exit 2, the reason in the report and on stderr.
    pub fn blocked(&self) -> &str {
        assert_eq!(self.code, 2, "{self:#?}");
        let r = self.report();
        assert_eq!(r["ok"], false);
        assert_eq!(r["blocked"], true);
        assert_eq!(r["apply_attempted"], false);
        let reason = r["block_reason"].as_str().unwrap();
        assert!(
            self.stderr.contains(&format!("apply blocked: {reason}")),
            "{}",
            self.stderr
        );
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        let blocked: Vec<&Value> = self.events("k8s_apply_blocked");
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0]["reason"], reason);
        reason
    }

    /// This run's events (explain.jsonl is appended across runs in one directory).
    pub fn events(&self, name: &str) -> Vec<&Value> {
        let start = self
            .explain
            .iter()
            .rposition(|e| e["event"] == "k8s_apply_start")
            .unwrap_or(0);
        self.explain[start..]
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| &e["payload"])
            .collect()
    }
}

pub fn run_apply(
    case: &Case,
    out: &Path,
    plan: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Applied {
    let mut c = case.command();
    c.env_remove("MODEKEEPER_KILL_SWITCH")
        .env_remove("MODEKEEPER_KEYRING")
        .env_remove("MODEKEEPER_LICENSE_PATH");
    for (k, v) in envs {
        c.env(k, v);
    }
    let o: Output = c
        .args(["k8s", "apply", "--plan"])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    Applied {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        report: std::fs::read(out.join("k8s_apply_latest.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap()),
        explain: std::fs::read_to_string(out.join("explain.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        out: out.to_path_buf(),
    }
}

/// `k8s verify` of `plan` into `out` (must be ok unless `expect_ok` is false).
pub fn verify(case: &Case, out: &Path, plan: &Path, expect_ok: bool) -> Value {
    let o = case
        .command()
        .args(["k8s", "verify", "--plan"])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .output()
        .unwrap();
    // A blocked verify still writes its report, and exits 2.
    assert_eq!(
        o.status.code(),
        Some(if expect_ok { 0 } else { 2 }),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_verify_latest.json")).unwrap())
            .unwrap();
    assert_eq!(r["ok"], expect_ok, "{r:#}");
    r
}

/// Where `k8s verify` run through `case` keeps its evidence key (HOME is the case directory).
pub fn evidence_key(case: &Case) -> PathBuf {
    case.path().join(".local/state/modekeeper/evidence.key")
}

/// Edits a verify report and seals it again with `case`'s key: what only someone holding the
/// user's key can do.
pub fn edit_resealed(case: &Case, report: &Path, f: impl FnOnce(&mut Value)) {
    use modekeeper::apply::seal;
    let mut v: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove(seal::SEAL_FIELD);
    f(&mut v);
    let key = seal::load_key_from(&evidence_key(case)).unwrap();
    std::fs::write(report, seal::seal(&v, &key).unwrap().to_string()).unwrap();
}

/// A passport file: the `safe` template with `gates.apply` as given (and a name of its own).
pub fn passport_file(dir: &Path, name: &str, apply: bool) -> PathBuf {
    let mut p: Value =
        serde_json::to_value(modekeeper::passport::template("safe").unwrap().unwrap()).unwrap();
    p["name"] = name.into();
    p["gates"]["apply"] = apply.into();
    let path = dir.join(format!("{name}.passport.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    path
}

/// `plan` (an array of items) as a k8s_plan.v1 envelope naming the passport in `passport_path`.
pub fn plan_under(plan: &Value, passport_path: &Path) -> Value {
    let text = std::fs::read_to_string(passport_path).unwrap();
    let p = modekeeper::passport::parse_passport("p", &text)
        .unwrap()
        .passport;
    json!({"schema_version": "k8s_plan.v1", "items": plan,
           "passport": {"name": p.name, "version": p.version, "sha256": p.digest()}})
}

pub fn write_plan(dir: &Path, name: &str, plan: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(plan).unwrap()).unwrap();
    p
}

pub fn lic_args<'a>(dev: &'a Dev, lic: &'a Path) -> Vec<&'a str> {
    vec![
        "--license",
        lic.to_str().unwrap(),
        "--keyring",
        dev.keyring.to_str().unwrap(),
    ]
}

/// A verified plan and everything needed to apply it, for the gate tests.
pub struct Ready {
    pub sim: KubeSim,
    pub case: Case,
    pub dev: Dev,
    pub plan: PathBuf,
    pub out: PathBuf,
}

pub fn ready() -> Ready {
    ready_with(&json!([item("ml", "trainer", "8")]))
}

/// [`ready`] with another plan.
pub fn ready_with(plan: &Value) -> Ready {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let plan = write_plan(case.path(), "plan.json", plan);
    let out = case.path().join("out");
    verify(&case, &out, &plan, true);
    Ready {
        sim,
        case,
        dev,
        plan,
        out,
    }
}

impl Ready {
    pub fn apply(&self, args: &[&str], envs: &[(&str, &str)]) -> Applied {
        run_apply(&self.case, &self.out, &self.plan, args, envs)
    }

    pub fn apply_with_license(&self, lic: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Applied {
        let mut a = lic_args(&self.dev, lic);
        a.extend_from_slice(extra);
        self.apply(&a, envs)
    }

    /// Nothing was written, the knob is untouched.
    pub fn untouched(&self) {
        assert_eq!(writes(&self.sim), 0, "a write reached the cluster");
        assert_eq!(
            self.sim
                .template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
                .as_deref(),
            Some("4")
        );
    }
}
