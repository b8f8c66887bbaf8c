//! `roamctl policy check|eval|fmt` against the command-line contract in
//! docs/policy-language.md, run as a user runs it: the real binary, real files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn roamctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roamctl"))
        .args(args)
        .output()
        .expect("roamctl runs")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy/examples")
}

fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roamctl-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `roamctl policy eval POLICY --state STATE EXTRA...`.
fn eval(policy: &str, state: &str, extra: &[&str]) -> Output {
    let mut args = vec!["policy", "eval", policy, "--state", state];
    args.extend_from_slice(extra);
    roamctl(&args)
}

/// [`eval`], which must succeed; the decision it printed.
fn eval_ok(policy: &str, state: &str, extra: &[&str]) -> serde_json::Value {
    let out = eval(policy, state, extra);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("eval prints the decision as JSON")
}

#[test]
fn check_accepts_a_valid_file_with_a_one_line_summary() {
    let out = roamctl(&["policy", "check", &example("handset.roam")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("ok: 4 link classes, a default block, 4 app blocks"),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn check_rejects_an_error_with_file_line_col_source_and_caret() {
    let path = scratch(
        "typo.roam",
        b"link wifi = kind wifi\nlink cell = kind cellular\n\ndefault {\n  prefer wfi over cell\n}\n",
    );
    let out = roamctl(&["policy", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!("{}:5:10: error: unknown link class `wfi`", path.display())
    );
    assert!(lines[2].ends_with("|   prefer wfi over cell"), "{stderr}");
    assert_eq!(
        lines[3].find('^').unwrap() - lines[3].find('|').unwrap(),
        11,
        "{stderr}"
    );
    assert!(lines[3].contains("did you mean `wifi`?"), "{stderr}");
}

#[test]
fn check_never_panics_whatever_the_bytes() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x41],
        b"default { avoid x if "
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'(', 50_000))
            .collect(),
        std::iter::repeat_n(b'{', 100_000).collect(),
        b"\"".to_vec(),
        b"link = = = =".to_vec(),
        vec![],
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let path = scratch(&format!("hostile-{i}.roam"), bytes);
        let out = roamctl(&["policy", "check", path.to_str().unwrap()]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "case {i}: {code:?} {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"), "case {i}");
    }
    // Not UTF-8: the position of the first bad byte.
    let path = scratch("latin1.roam", b"link wifi = kind wifi\n# caf\xe9\n");
    let out = roamctl(&["policy", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(":2:6: error: the policy file is not UTF-8"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = roamctl(&["policy", "check", "/nonexistent/p.roam"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read the policy file /nonexistent/p.roam"));
}

#[test]
fn eval_prints_the_decision_as_json() {
    let decision = eval_ok(&example("handset.roam"), &example("state-voip.json"), &[]);
    assert_eq!(
        decision,
        serde_json::json!({
            "app": "com.example.voip",
            "multipath": "interactive",
            "paths": [
                {"interface": "rmnet0", "link": "cell", "role": "primary"},
                {"interface": "wlan0", "link": "wifi", "role": "backup"}
            ],
            "explain": ["line 19: prefer cell over wifi (wifi.rtt 210ms > 150ms)"]
        })
    );
}

#[test]
fn eval_app_flag_wins_over_the_state_file() {
    let d = eval_ok(
        &example("handset.roam"),
        &example("state-voip.json"),
        &["--app", "com.example.video"],
    );
    assert_eq!(d["app"], "com.example.video");
    assert_eq!(d["multipath"], "handover");
    assert_eq!(
        d["paths"],
        serde_json::json!([{"interface": "wlan0", "link": "wifi", "role": "primary"}])
    );
}

#[test]
fn eval_without_app_id_uses_only_the_default_block() {
    let state = scratch(
        "noapp.json",
        br#"{"interfaces": [{"name": "wlan0", "kind": "wifi", "state": "validated", "rtt_ms": 400},
                           {"name": "rmnet0", "kind": "cellular", "state": "validated"}]}"#,
    );
    let d = eval_ok(&example("handset.roam"), state.to_str().unwrap(), &[]);
    assert_eq!(d["app"], serde_json::Value::Null);
    assert_eq!(d["paths"][0]["interface"], "wlan0");
}

#[test]
fn eval_rejects_unknown_fields_with_their_position() {
    let state = scratch(
        "typo.json",
        b"{\"interfaces\": [\n  {\"name\": \"wlan0\", \"kind\": \"wifi\", \"state\": \"up\", \"rtt\": 3}]}",
    );
    let out = eval(&example("handset.roam"), state.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(":2:"), "{stderr}");
    assert!(stderr.contains("unknown field `rtt`"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn eval_of_an_invalid_policy_prints_its_errors_and_no_json() {
    let path = scratch("bad.roam", b"default { hold 10 }\n");
    let out = eval(path.to_str().unwrap(), &example("state-voip.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains(":1:16: error: `10` needs a unit"));
}

#[test]
fn fmt_prints_checks_and_writes_canonical_form() {
    let path = scratch(
        "messy.roam",
        b"link wifi=kind wifi # w\ndefault{use wifi only}\n",
    );
    let p = path.to_str().unwrap();
    let out = roamctl(&["policy", "fmt", p]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "link wifi = kind wifi  # w\n\ndefault {\n  use wifi only\n}\n"
    );
    assert_eq!(
        roamctl(&["policy", "fmt", "--check", p]).status.code(),
        Some(1)
    );
    assert!(roamctl(&["policy", "fmt", "--write", p]).status.success());
    assert!(roamctl(&["policy", "fmt", "--check", p]).status.success());
    assert_eq!(std::fs::read(&path).unwrap(), out.stdout);
}

#[test]
fn every_example_checks() {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "roam") {
            let out = roamctl(&["policy", "check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
        }
    }
}
