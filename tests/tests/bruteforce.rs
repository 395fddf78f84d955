//! Password guessing against a real registrar (Kamailio with digest authentication,
//! `tests/kamailio/registrar.cfg`) behind callguard with its defaults, in network namespaces:
//! the attack of issue 17, carried out by `tests/kamailio/guess.py`.

use std::process::Output;

use callguard_tests::netns::{Instance, Kamailio, Netns, Topology};

const PBX: &str = Topology::PBX_V4;

/// Runs the guesser in `ns` from `bind` as `user`: `wrong` wrong passwords, then the right one,
/// at `rate` guesses a second, with `extra` arguments; returns its JSON summary and its output.
fn guess(
    ns: &Netns,
    bind: &str,
    user: &str,
    wrong: u32,
    rate: &str,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kamailio/guess.py");
    let right = format!("correct-horse-{user}");
    let wrong = wrong.to_string();
    let target = format!("{PBX}:5060");
    let mut args = vec![
        "python3", script, "--target", &target, "--bind", bind, "--user", user, "--wrong", &wrong, "--right",
        &right, "--rate", rate,
    ];
    args.extend_from_slice(extra);
    let out: Output = ns.exec(&args);
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
    let kamailio = registrar(&t);

    // A phone that mistypes once, from another address: registered.
    let phone = format!("{}:5070", Topology::SOURCES_V4[0]);
    let (summary, out) = guess(&t.peer, &phone, "102", 1, "4", &[]);
    assert_eq!(summary["found"], "correct-horse-102", "the phone registers: {out}");

    // The guesser: twenty wrong passwords, then the right one.
    let (summary, out) = guess(&t.peer, "198.18.0.2:5070", "101", 20, "4", &[]);
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
    let (summary, out) = guess(&t.peer, &phone, "102", 0, "4", &[]);
    assert_eq!(summary["found"], "correct-horse-102", "the phone registers again: {out}");
}

/// The distributed guess of issue 17: five addresses of one /24, each below `auth.failures`
/// (four wrong passwords each), take turns at one extension. When its failures reach
/// `auth.user_failures` (10), the kernel guards user 101: the third address's later guesses and
/// everything from the last two, the right password included, are dropped before the registrar
/// sees them; the operator is told (an event naming the user); the phone the PBX registered
/// before the attack re-registers; the same phone from a new address does not (the price of
/// the guard, until it ends); another user registers.
#[test]
fn a_guess_spread_over_a_24_is_stopped_by_guarding_the_user() {
    let t = Topology::new();
    let guessers: Vec<String> = (100..105).map(|i| format!("198.18.0.{i}")).collect();
    for a in &guessers {
        t.peer.ip(&["addr", "add", &format!("{a}/24"), "dev", &t.peer_if]);
    }
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    let kamailio = registrar(&t);
    let phone = format!("{}:5070", Topology::SOURCES_V4[0]);
    let (summary, out) = guess(&t.peer, &phone, "101", 0, "4", &[]);
    assert_eq!(summary["found"], "correct-horse-101", "the phone registers before the attack: {out}");

    let mut seen = Vec::new();
    for (i, a) in guessers.iter().enumerate() {
        let last: &[&str] = if i + 1 == guessers.len() { &[] } else { &["--no-right"] };
        let (summary, out) = guess(&t.peer, &format!("{a}:5070"), "101", 4, "4", last);
        assert_eq!(summary["found"], serde_json::Value::Null, "{a} found the password: {out}");
        seen.push(format!("{a}: {out}"));
    }
    let log = kamailio.log();
    let reached = |rc: &str| {
        log.lines()
            .filter(|l| guessers.iter().any(|a| l.contains(&format!("AUTH user=101 src={a} rc={rc}"))))
            .count()
    };
    assert_eq!(reached("-2"), 10, "wrong passwords that reached the registrar:\n{}\n{log}", seen.join("\n"));
    assert_eq!(reached("1"), 0, "the right password reached the registrar:\n{log}");
    for a in &guessers {
        let banned = inst.cli(&["net", "list", "--json"]).contains(&format!("\"{a}/32\""));
        assert!(!banned, "{a} stayed below auth.failures: not banned");
    }

    let events: Vec<serde_json::Value> = inst
        .cli(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    let guards: Vec<_> = events.iter().filter(|e| e["kind"] == "guard").collect();
    assert_eq!(guards.len(), 1, "{events:?}");
    assert_eq!(guards[0]["user"], "101");
    assert_eq!(guards[0]["source"], guessers[2].as_str(), "the source of the tenth failure");
    assert!(
        guards[0]["detail"].as_str().unwrap().contains("REGISTERs for user 101 are dropped"),
        "{}",
        guards[0]
    );
    let stats = inst.stats();
    assert!(callguard_tests::netns::reason_packets(&stats, "drop", "guarded_user") >= 4, "{stats}");

    let (summary, out) = guess(&t.peer, &phone, "101", 0, "4", &[]);
    assert_eq!(summary["found"], "correct-horse-101", "the registered phone re-registers: {out}");
    let roaming = format!("{}:5070", Topology::SOURCES_V4[1]);
    let (summary, out) = guess(&t.peer, &roaming, "101", 0, "4", &[]);
    assert_eq!(summary["error"], "no challenge", "101 from a new address waits for the guard to end: {out}");
    let (summary, out) = guess(&t.peer, &roaming, "102", 0, "4", &[]);
    assert_eq!(summary["found"], "correct-horse-102", "another user registers: {out}");
}

/// The registrar of `tests/kamailio/registrar.cfg` on the PBX, once it listens.
fn registrar(t: &Topology) -> Kamailio {
    let kamailio = Kamailio::start(&t.pbx, "registrar.cfg", &format!("{PBX}:5060"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kamailio.log().to_lowercase().contains("listening on") {
        assert!(std::time::Instant::now() < deadline, "Kamailio did not start: {}", kamailio.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    kamailio
}

/// The PBX copies a request's CSeq into its answer, and the egress program reads the method
/// from there: a request whose CSeq names another method than its request line would have the
/// kernel misread the answer. Two tricks an attacker would try, both refused at the NIC as
/// `ambiguous_header` before the PBX sees them: wrong guesses written `CSeq: n OPTIONS`, whose
/// 401s would read as answers to OPTIONS and never count (with the bug: twenty wrong passwords
/// and then the right one reached the registrar), and an OPTIONS written `CSeq: 1 REGISTER`
/// from a spoofed address, whose `200` would read as a registration and give the address the
/// registered phones' queue. Padding that pushes the CSeq out of the parser's sight is refused
/// the same way.
#[test]
fn the_cseq_tricks_neither_hide_a_guess_nor_register_a_source() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    let kamailio = registrar(&t);

    let (summary, out) = guess(&t.peer, "198.18.0.2:5070", "101", 20, "4", &["--cseq-method", "OPTIONS"]);
    println!("the guesser saw:\n{out}");
    assert_eq!(summary["found"], serde_json::Value::Null, "the guesser found the password: {out}");
    let log = kamailio.log();
    let tried = log.lines().filter(|l| l.contains("AUTH user=101 src=198.18.0.2 rc=")).count();
    assert_eq!(tried, 1, "only the first REGISTER, without credentials, reached the registrar:\n{log}");

    // OPTIONS from an address that never registered, as it would be written to register it, and
    // with the CSeq pushed past the 64 lines the parser reads; then an honest OPTIONS.
    let spoofed = Topology::SOURCES_V4[1];
    let sock = t.peer.udp(format!("{spoofed}:5071").parse().unwrap());
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let options = |cseq: &str, pad: &str| {
        format!(
            "OPTIONS sip:101@callguard.test SIP/2.0\r\nVia: SIP/2.0/UDP {spoofed}:5071;branch=z9hG4bK{cseq:.1}\r\n\
             From: <sip:probe@callguard.test>;tag=p\r\nTo: <sip:101@callguard.test>\r\nCall-ID: probe-{}\r\n\
             {pad}CSeq: {cseq}\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n",
            pad.len()
        )
    };
    let answer = |msg: String| {
        sock.send_to(msg.as_bytes(), format!("{PBX}:5060")).unwrap();
        let mut buf = [0u8; 2048];
        sock.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // Seventy short lines: past the 64 the parser reads, in one unfragmented datagram.
    let pad = "X-P: 0\r\n".repeat(70);
    assert_eq!(answer(options("1 REGISTER", "")), None, "the PBX answered the disguised OPTIONS");
    assert_eq!(answer(options("2 INVITE", "")), None, "the PBX answered the disguised OPTIONS");
    assert_eq!(answer(options("3 REGISTER", &pad)), None, "the PBX answered the padded OPTIONS");
    let honest = answer(options("4 OPTIONS", "")).expect("the honest OPTIONS is answered");
    assert!(honest.starts_with("SIP/2.0 200"), "{honest}");

    let stats = inst.stats();
    assert_eq!(stats["answers"]["registrations"], 0, "{}", stats["answers"]);
    assert_eq!(stats["answers"]["registered_sources"], 0, "{}", stats["answers"]);
    let refused = callguard_tests::netns::reason_packets(&stats, "drop", "ambiguous_header");
    assert!(refused >= 3 + 3, "three disguised guesses and three OPTIONS refused: {refused}");
}
