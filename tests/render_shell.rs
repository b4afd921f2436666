//! The rendered kubectl script is safe to run: hostile annotation values reach kubectl as exactly one
//! argument each, byte for byte, and nothing else runs. Checked by running the script with bash
//! against a fake `kubectl` (and fake `id`, `touch`, … canaries) on PATH. Hostile names never get that
//! far: the plan is rejected.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use modekeeper::plan::{canonical_json, shell_quote};
use proptest::prelude::*;
use serde_json::{Value, json};

fn mk() -> Command {
    Command::cargo_bin("kubectl-modekeeper").unwrap()
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A directory with a fake kubectl that records its argv (length-prefixed, so any byte survives) and
/// canaries for commands a payload might try to run.
fn fake_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    write_exe(
        &bin.join("kubectl"),
        "#!/bin/bash\nexport LC_ALL=C\n{ printf 'call %d\\n' \"$#\"; for a in \"$@\"; do printf '%d:%s' \"${#a}\" \"$a\"; done; } >> \"$MK_KUBECTL_LOG\"\n\
         [ \"$1\" = config ] && echo fake-context\nexit 0\n",
    );
    for canary in [
        "id", "touch", "rm", "curl", "wget", "sh", "cat", "whoami", "uname", "sleep",
    ] {
        write_exe(
            &bin.join(canary),
            &format!("#!/bin/bash\necho {canary} >> \"$MK_CANARY_LOG\"\n"),
        );
    }
    bin
}

/// Parses the fake kubectl's log into one argv per call.
fn calls(log: &Path) -> Vec<Vec<Vec<u8>>> {
    let bytes = std::fs::read(log).unwrap_or_default();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let nl = i + bytes[i..].iter().position(|b| *b == b'\n').unwrap();
        let n: usize = std::str::from_utf8(&bytes[i + 5..nl])
            .unwrap()
            .parse()
            .unwrap();
        i = nl + 1;
        let mut argv = vec![];
        for _ in 0..n {
            let colon = i + bytes[i..].iter().position(|b| *b == b':').unwrap();
            let len: usize = std::str::from_utf8(&bytes[i..colon])
                .unwrap()
                .parse()
                .unwrap();
            argv.push(bytes[colon + 1..colon + 1 + len].to_vec());
            i = colon + 1 + len;
        }
        out.push(argv);
    }
    out
}

fn hostile_values(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("1; touch {c}"),
        format!("' ; touch {c} ; '"),
        format!("\"; touch {c}; \""),
        format!("x\ntouch {c}\n"),
        format!("&& touch {c} || id | id > {c}"),
        "$(id)".into(),
        "${IFS}$HOME$0$$!!".into(),
        "O'Reilly".into(),
        "'''".into(),
        "back\\slash \\' \\n \\\"".into(),
        "tab\there\rcr".into(),
        "\u{1b}[31mred\u{1b}[0m\u{7}".into(),
        "Grüße 日本 🚀 \u{202e}rtl".into(),
        "* ? [a] ~ {a,b}".into(),
        "%s%n%x".into(),
        String::new(),
        " lead and trail ".into(),
    ]
}

#[test]
fn hostile_values_reach_kubectl_verbatim_and_nothing_else_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let values = hostile_values(&canary);
    let annotations: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("modekeeper/knob.v_{i:02}"),
                Value::String(v.clone()),
            )
        })
        .collect();
    let patch_a = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
    let patch_b = json!({"metadata": {"annotations": {"modekeeper/knob.x": "$(id)'\n"}},
                         "spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": "$(id)'\n"}}}}});
    let plan = json!([
        {"namespace": "ns-a", "name": "dep.a", "patch": patch_a},
        {"namespace": "ns-b", "name": "set-b", "kind": "StatefulSet", "patch": patch_b},
    ]);
    std::fs::write(tmp.path().join("plan.json"), plan.to_string()).unwrap();
    mk().current_dir(tmp.path())
        .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
        .assert()
        .success();

    let bin = fake_bin(tmp.path());
    let (log, canary_log) = (
        tmp.path().join("kubectl.log"),
        tmp.path().join("canary.log"),
    );
    let run = std::process::Command::new(tmp.path().join("out/k8s_plan.kubectl.sh"))
        .current_dir(tmp.path())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", tmp.path())
        .env("MK_KUBECTL_LOG", &log)
        .env("MK_CANARY_LOG", &canary_log)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("fake-context"));

    let s = |x: &str| x.as_bytes().to_vec();
    let want = vec![
        vec![s("config"), s("current-context")],
        vec![
            s("-n"),
            s("ns-a"),
            s("patch"),
            s("deployment/dep.a"),
            s("--type"),
            s("merge"),
            s("-p"),
            s(&canonical_json(&patch_a)),
        ],
        vec![
            s("-n"),
            s("ns-b"),
            s("patch"),
            s("statefulset/set-b"),
            s("--type"),
            s("merge"),
            s("-p"),
            s(&canonical_json(&patch_b)),
        ],
    ];
    let got = calls(&log);
    assert_eq!(got, want);
    // The patch kubectl receives carries every hostile value unchanged.
    let received: Value = serde_json::from_slice(&got[1][7]).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            received["spec"]["template"]["metadata"]["annotations"]
                [format!("modekeeper/knob.v_{i:02}")],
            json!(v)
        );
    }
    assert!(!canary.exists(), "a payload ran touch");
    assert!(
        !canary_log.exists(),
        "a payload ran: {}",
        std::fs::read_to_string(&canary_log).unwrap_or_default()
    );
}

#[test]
fn hostile_names_are_rejected_before_any_script_exists() {
    let names = [
        "dep$(id)", "dep`id`", "dep;id", "dep'x", "dep\"x", "dep\nx", "dép", "dep x", "DEP",
        "-dep", "dep/x",
    ];
    for (i, name) in names.into_iter().enumerate() {
        for (ns, n) in [(name, "dep"), ("default", name)] {
            let tmp = tempfile::tempdir().unwrap();
            let plan = json!([{"namespace": ns, "name": n,
                               "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": "1"}}}}}}]);
            std::fs::write(tmp.path().join("plan.json"), plan.to_string()).unwrap();
            let out = mk()
                .current_dir(tmp.path())
                .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "case {i}: {ns:?} {n:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!tmp.path().join("out/k8s_plan.kubectl.sh").exists());
        }
    }
}

fn arb_word() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        6 => prop::sample::select(vec!['\'', '"', '\\', '$', '`', '(', ')', ';', '&', '|', '<', '>', '\n', '\t', ' ', '!', '*', '?', '~', '#', '{', '}', '[', ']', '%', '\r', '\u{1b}', '=']),
        3 => prop::char::range('a', 'z'),
        1 => prop::char::range('\u{80}', '\u{10ffff}'),
        1 => prop::char::range('\u{1}', '\u{1f}'),
    ];
    prop::collection::vec(chars, 0..24).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// bash turns every quoted word back into exactly the original string.
    #[test]
    fn shell_quote_round_trips_through_bash(words in prop::collection::vec(arb_word(), 1..32)) {
        let script = format!("printf '%s\\0' {}\n", words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "));
        let out = std::process::Command::new("bash").arg("-c").arg(&script).env_clear().output().unwrap();
        prop_assert!(out.status.success());
        let mut got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        prop_assert_eq!(got.pop(), Some(&b""[..]));
        let want: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        prop_assert_eq!(got, want);
    }
}
