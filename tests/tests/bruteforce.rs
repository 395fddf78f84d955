//! Password guessing against a real registrar (Kamailio with digest authentication,
//! `tests/kamailio/registrar.cfg`) behind callguard with its defaults, in network namespaces:
//! the attack of issue 17, carried out by `tests/kamailio/guess.py`.

use std::process::Output;

use callguard_tests::netns::{Instance, Kamailio, Netns, Topology};

const PBX: &str = Topology::PBX_V4;

/// Runs the guesser in `ns` from `bind` as `user`: `wrong` wrong passwords, then the right one,
/// at `rate` guesses a second; returns its JSON summary and its output.
fn guess(ns: &Netns, bind: &str, user: &str, wrong: u32, rate: &str) -> (serde_json::Value, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kamailio/guess.py");
    let right = format!("correct-horse-{user}");
    let wrong = wrong.to_string();
    let out: Output = ns.exec(&[
        "python3",
        script,
        "--target",
        &format!("{PBX}:5060"),
        "--bind",
        bind,
        "--user",
        user,
        "--wrong",
        &wrong,
        "--right",
        &right,
        "--rate",
        rate,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default();
    let summary = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("guess.py: {e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (summary, text)
}

/// fail2ban's promise, kept without the PBX's log: a guesser below every rate limit (4 guesses
/// a second, a phone's User-Agent, one extension) is banned after `auth.failures` (5) wrong
/// passwords; no more than five reach the registrar, and the right password, tried next, never
/// gets there. A phone that mistypes its password once still registers during the attack.
#[test]
fn a_patient_password_guesser_is_banned_after_five_failures() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    let kamailio = Kamailio::start(&t.pbx, "registrar.cfg", &format!("{PBX}:5060"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kamailio.log().to_lowercase().contains("listening on") {
        assert!(std::time::Instant::now() < deadline, "Kamailio did not start: {}", kamailio.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A phone that mistypes once, from another address: registered.
    let phone = format!("{}:5070", Topology::SOURCES_V4[0]);
    let (summary, out) = guess(&t.peer, &phone, "102", 1, "4");
    assert_eq!(summary["found"], "correct-horse-102", "the phone registers: {out}");

    // The guesser: twenty wrong passwords, then the right one.
    let (summary, out) = guess(&t.peer, "198.18.0.2:5070", "101", 20, "4");
    println!("the guesser saw:\n{out}");
    assert_eq!(summary["found"], serde_json::Value::Null, "the guesser found the password: {out}");
    assert_eq!(summary["answers"]["401"], 5, "five wrong guesses answered, then none: {out}");
    let log = kamailio.log();
    let failures = log.lines().filter(|l| l.contains("AUTH user=101 src=198.18.0.2 rc=-2")).count();
    assert_eq!(failures, 5, "wrong passwords that reached the registrar:\n{log}");
    assert!(!log.contains("AUTH user=101 src=198.18.0.2 rc=1"), "the right password reached it");

    // The ban is an automatic deny rule, saying why; the phone is not banned.
    let nets: serde_json::Value = serde_json::from_str(&inst.cli(&["net", "list", "--json"])).unwrap();
    let rules = nets.as_array().unwrap();
    let ban = rules.iter().find(|r| r["cidr"] == "198.18.0.2/32").unwrap_or_else(|| panic!("no ban: {nets}"));
    assert_eq!(ban["origin"], "auto");
    assert!(ban["comment"].as_str().unwrap().contains("failed authentications"), "{ban}");
    assert!(!rules.iter().any(|r| r["cidr"] == format!("{}/32", Topology::SOURCES_V4[0])), "{nets}");
    let (summary, out) = guess(&t.peer, &phone, "102", 0, "4");
    assert_eq!(summary["found"], "correct-horse-102", "the phone registers again: {out}");
}
