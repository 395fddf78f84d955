//! Number-level call checks end to end: real SIPp calls from one namespace to a real SIPp UAS
//! behind callguard in another, with the rules written through the management API.
//!
//! Scenarios (each SIPp run must complete every call exactly as its scenario expects: a `200 OK`
//! for `tests/sipp/uac_call.xml`, a `403 Forbidden` for `uac_forbidden.xml`):
//! allowed numbers complete; a barred prefix, a blacklisted caller and a disallowed country get
//! 403; a barred number dialed with a valid authorization code completes and the UAS sees it
//! without the code; a wrong code gets 403. The UAS's message log shows it never received a
//! barred INVITE, and nftables in the PBX namespace shows each allowed INVITE arrived with the
//! caller's own address and port. A retransmitted INVITE gets the same 403, To tag included,
//! without a second decision; every decision shows in `callguard events` and the daemon's log with
//! the rule that made it. Then the daemon is killed: with `fail = "open"` a barred call
//! gets through; with `fail = "closed"` an allowed call does not; restarted, it works again.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use callguard_tests::{
    load,
    netns::{Instance, Netns, Topology, reason_packets, sipp_stat},
};

const PBX: &str = Topology::PBX_V4;
const CALLER: &str = "198.18.0.2";
/// Calls per scenario.
const CALLS: u32 = 5;

fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sipp").join(name).to_string_lossy().into_owned()
}

/// One SIPp client run from the caller: `calls` calls from `user@host` to `dialed`, with
/// `scenario_file`; returns (completed, failed, what SIPp printed).
fn place(
    inst: &Instance,
    peer: &Netns,
    scenario_file: &str,
    user: &str,
    dialed: &str,
    calls: u32,
) -> (u64, u64, String) {
    place_from(inst, peer, CALLER, scenario_file, user, dialed, calls)
}

/// [`place`], from the address `from`.
fn place_from(
    inst: &Instance,
    peer: &Netns,
    from: &str,
    scenario_file: &str,
    user: &str,
    dialed: &str,
    calls: u32,
) -> (u64, u64, String) {
    let dir = inst.dir.path();
    let tag = callguard_tests::unique("uac");
    let inf = dir.join(format!("{tag}.csv"));
    std::fs::write(&inf, format!("SEQUENTIAL\n{user};tenant.example;\n")).expect("injection file");
    let stats = dir.join(format!("{tag}-stats.csv"));
    let log = dir.join(format!("{tag}.log"));
    let cmd = format!(
        "sipp {PBX}:5060 -sf {} -inf {} -s {dialed} -i {from} -p 5070 -nostdin -r 10 -m {calls} \
         -timeout 15 -timeout_error -recv_timeout 4000 -trace_stat -stf {}",
        scenario(scenario_file),
        inf.display(),
        stats.display()
    );
    let args: Vec<&str> = cmd.split(' ').collect();
    let (_, out) = peer.spawn(&args, &log).wait(Duration::from_secs(30));
    let csv = std::fs::read_to_string(&stats).unwrap_or_default();
    if csv.is_empty() {
        return (0, u64::from(calls), out);
    }
    (sipp_stat(&csv, "SuccessfulCall(C)"), sipp_stat(&csv, "FailedCall(C)"), out)
}

/// SIPp's UAS on the PBX, answering every call `200 OK`, and the file it logs messages to.
fn uas(t: &Topology, dir: &std::path::Path) -> (callguard_tests::netns::Spawned, PathBuf) {
    let messages = dir.join("uas-messages.log");
    let uas = t.pbx.spawn(
        &[
            "sipp",
            "-sn",
            "uas",
            "-i",
            PBX,
            "-p",
            "5060",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            &messages.to_string_lossy(),
        ],
        &dir.join("uas.log"),
    );
    std::thread::sleep(Duration::from_millis(300));
    (uas, messages)
}

/// A webhook receiver on `addr` in `ns`: answers the first request 503 and every later one 200,
/// and keeps each request's body.
fn webhook(ns: &Netns, addr: &str) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = ns.tcp_listener(addr.parse().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|k| k > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            kept.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            let status = if n == 0 { "503 Service Unavailable" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    bodies
}

fn api(inst: &Instance, method: &str, path: &str, body: &str) {
    inst.cli(&["api", method, path, body]);
}

#[test]
fn sipp_calls_are_decided_by_number_rules_and_the_failure_policy_applies_when_the_daemon_dies() {
    let t = Topology::new();
    // Rate limits off: this test places more INVITEs from one source than the defaults allow.
    // Fraud thresholds off: with any set, every INVITE is handed up, and this test shows that
    // nothing is until a rule needs it (`a_burst_of_calls_is_cut_at_the_fraud_thresholds`).
    let cfg = "[rate]\nrequests = { rate = 0, burst = 0 }\ninvite = { rate = 0, burst = 0 }\n\
               [calls.fraud]\nenabled = false\n";
    let inst = Instance::new(&t.pbx, &t.pbx_if, cfg);
    let daemon = inst.start();
    let dir = inst.dir.path().to_owned();
    // What reaches the PBX host stack from the caller: re-injected requests arrive on `lo`.
    t.pbx.nft(&format!(
        "table inet cg {{
            counter reinjected {{}}
            chain in {{
                type filter hook input priority 0;
                iifname \"lo\" ip saddr {CALLER} udp sport 5070 udp dport 5060 counter name \"reinjected\"
            }}
        }}"
    ));
    let (_uas, uas_messages) = uas(&t, &dir);

    // Before any number rule exists nothing is handed up.
    let (ok, failed, out) = place(&inst, &t.peer, "uac_call.xml", "101", "0086101234", 1);
    assert_eq!((ok, failed), (1, 0), "{out}");
    assert_eq!(reason_packets(&inst.stats(), "handup", "handed_up"), 0);

    // The rules, through the management API (on the control socket, as the system admin).
    api(&inst, "POST", "/api/allowed_country_codes", r#"{"items": ["44", "+49", "1"]}"#);
    api(&inst, "POST", "/api/disallowed_codes", r#"{"number_prefix": "+882", "description": "satellite"}"#);
    api(&inst, "POST", "/api/blacklisted_numbers", r#"{"number": "+15551234567", "description": "fraud"}"#);
    api(&inst, "POST", "/api/v1/tenants", r#"{"id": "t1", "name": "T1", "domain": "tenant.example"}"#);
    api(&inst, "POST", "/api/v1/tenants/t1/groups", r#"{"id": "g1"}"#);
    api(
        &inst,
        "POST",
        "/api/v1/users",
        r#"{"tenant": "t1", "group": "g1", "username": "101", "password": "user-101-pass", "role": "StandardUser"}"#,
    );
    api(
        &inst,
        "POST",
        "/api/v1/users",
        r#"{"tenant": "t1", "group": "g1", "username": "102", "password": "user-102-pass", "role": "StandardInternationalUser"}"#,
    );
    api(
        &inst,
        "POST",
        "/api/v1/tenants/t1/groups/g1/users/101/services/outgoing_call_barring/codes/",
        r#"{"code": "4711", "description": "boss"}"#,
    );
    let stats = inst.stats();
    assert_eq!(stats["calls"]["hand_up_invites"], true, "{}", stats["calls"]);

    let scenarios: [(&str, &str, &str, &str); 8] = [
        ("allowed number, a StandardInternationalUser", "uac_call.xml", "102", "004930123"),
        ("international call by a StandardUser", "uac_forbidden.xml", "101", "004930123"),
        ("national call by a StandardUser", "uac_call.xml", "101", "0301234"),
        ("barred prefix", "uac_forbidden.xml", "101", "+882123456"),
        ("blacklisted caller", "uac_forbidden.xml", "+15551234567", "004930123"),
        ("disallowed country", "uac_forbidden.xml", "101", "0086201234"),
        ("barred country with a valid authorization code", "uac_call.xml", "101", "*4711*0086101234"),
        ("barred country with a wrong authorization code", "uac_forbidden.xml", "101", "*1234*0086301234"),
    ];
    let mut summary = Vec::new();
    for (name, file, user, dialed) in scenarios {
        let (ok, failed, out) = place(&inst, &t.peer, file, user, dialed, CALLS);
        let want = if file == "uac_call.xml" { "200" } else { "403" };
        summary.push(format!("{name} ({user} dials {dialed}): {ok} of {CALLS} got {want}, {failed} failed"));
        assert_eq!((ok, failed), (u64::from(CALLS), 0), "{name}: {out}\n{}", daemon.log());
    }
    let stats = inst.stats();
    let handed_up = reason_packets(&stats, "handup", "handed_up");
    summary.push(format!("handed up: {handed_up}, slow path: {}", stats["slow_path"]));
    println!("{}", summary.join("\n"));

    // The UAS saw the allowed INVITEs, the authorization code removed, and nothing barred.
    let seen = std::fs::read_to_string(&uas_messages).expect("the UAS's message log");
    let invites: Vec<&str> = seen.lines().filter(|l| l.starts_with("INVITE ")).collect();
    let count = |user: &str| invites.iter().filter(|l| l.starts_with(&format!("INVITE sip:{user}@"))).count();
    // Exactly the allowed scenario's: the StandardUser and the blacklisted caller dialed the same
    // number.
    assert_eq!(count("004930123"), CALLS as usize, "{invites:?}");
    assert_eq!(count("0086101234"), CALLS as usize + 1, "{invites:?}"); // + the call before any rule
    for barred in ["+882123456", "0086201234", "0086301234", "*4711*"] {
        assert!(!invites.iter().any(|l| l.contains(barred)), "the UAS received {barred}: {invites:?}");
    }
    // Every allowed INVITE came up through the slow path with the caller's address and port.
    let reinjected = t.pbx.nft_counter("cg", "reinjected");
    assert!(reinjected >= u64::from(2 * CALLS), "re-injected: {reinjected}");
    let decisions = &stats["slow_path"]["decisions"];
    assert_eq!(decisions["allow/default"], 2 * CALLS, "{decisions}");
    assert_eq!(decisions["deny/role"], CALLS, "{decisions}");
    assert_eq!(decisions["allow/authcode"], CALLS, "{decisions}");
    assert_eq!(decisions["deny/disallowed_code"], CALLS, "{decisions}");
    assert_eq!(decisions["deny/blacklist"], CALLS, "{decisions}");
    assert_eq!(decisions["deny/country"], CALLS, "{decisions}");
    assert_eq!(decisions["deny/authcode"], CALLS, "{decisions}");

    // A retransmitted INVITE gets the same 403 (same To tag) without a second decision.
    let retransmitted_before = stats["slow_path"]["retransmissions"].as_u64().unwrap();
    let sock = t.peer.udp(format!("{CALLER}:5090").parse().unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let invite = format!(
        "INVITE sip:+882777@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER}:5090;branch=z9hG4bKretx\r\n\
         Max-Forwards: 70\r\nFrom: <sip:101@tenant.example>;tag=r1\r\nTo: <sip:+882777@{PBX}>\r\n\
         Call-ID: retx@{CALLER}\r\nCSeq: 1 INVITE\r\nContact: <sip:101@{CALLER}:5090>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let mut answers = Vec::new();
    for _ in 0..2 {
        sock.send_to(invite.as_bytes(), format!("{PBX}:5060")).unwrap();
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).expect("a 403 for each transmission");
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let to_line = |a: &str| a.lines().find(|l| l.starts_with("To:")).unwrap_or_default().to_owned();
    assert!(answers[0].starts_with("SIP/2.0 403 Forbidden\r\n"), "{}", answers[0]);
    assert!(to_line(&answers[0]).contains(";tag="), "{}", answers[0]);
    assert_eq!(answers[0], answers[1], "a retransmission gets the same answer");
    let stats = inst.stats();
    assert_eq!(stats["slow_path"]["retransmissions"], retransmitted_before + 1, "{}", stats["slow_path"]);
    assert_eq!(stats["slow_path"]["decisions"]["deny/disallowed_code"], CALLS + 1);

    // Every decision is an event (`callguard events`) and a log line, naming the rule.
    let events = inst.cli(&["events", "--json"]);
    let calls: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON event a line"))
        .filter(|e| e["kind"] == "call")
        .collect();
    assert!(
        calls
            .iter()
            .any(|e| e["reason"] == "deny/disallowed_code" && e["detail"].as_str().unwrap().contains("+882")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|e| e["reason"] == "allow/authcode"), "{calls:?}");
    let log = daemon.log();
    assert!(log.contains("call decided") && log.contains("deny/blacklist"), "{log}");

    // explain names the rule without sending anything.
    let invite = dir.join("invite.txt");
    std::fs::write(
        &invite,
        "INVITE sip:+882123456@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bKx\r\n\
         From: <sip:101@tenant.example>;tag=1\r\nTo: <sip:+882123456@198.18.0.1>\r\nCall-ID: x@y\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let explained = inst.cli(&["explain", &invite.to_string_lossy(), "--source", CALLER]);
    println!("callguard explain:\n{explained}");
    assert!(explained.contains("verdict:   deny") && explained.contains("disallowed code"), "{explained}");

    // Fail-open (the default): the daemon dies, and within two seconds a barred call gets through.
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, failed, out) = place(&inst, &t.peer, "uac_call.xml", "101", "+882999", 1);
    assert_eq!((ok, failed), (1, 0), "fail-open: a barred call completes while the daemon is gone: {out}");

    // Fail-closed: configured, the daemon started (so the kernel knows), then killed.
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(&inst.config, format!("{text}\n[calls]\nfail = \"closed\"\n")).unwrap();
    let daemon = inst.start();
    let stats = inst.stats();
    assert!(reason_packets(&stats, "pass", "daemon_gone") >= 1, "{}", stats["reasons"]);
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, _, _) = place(&inst, &t.peer, "uac_call.xml", "102", "004930777", 1);
    assert_eq!(ok, 0, "fail-closed: no call gets through while the daemon is gone");
    let _daemon = inst.start();
    let stats = inst.stats();
    let closed = reason_packets(&stats, "drop", "daemon_gone");
    assert!(closed >= 1, "{}", stats["reasons"]);
    let seen = std::fs::read_to_string(&uas_messages).unwrap();
    assert!(!seen.contains("INVITE sip:004930777@"), "the UAS received a call while closed");
    // Back up: calls are decided again.
    let (ok, failed, out) = place(&inst, &t.peer, "uac_call.xml", "102", "004930123", 1);
    assert_eq!((ok, failed), (1, 0), "after the restart: {out}");
    println!(
        "failure policy: open passed {} requests, closed dropped {closed}",
        reason_packets(&stats, "pass", "daemon_gone")
    );
}

/// Issue 17, item 3: allow rules with call profiles. A trunk's inbound calls meet the rules
/// about callers (its blacklisted caller is refused, a barred number it delivers is not: that
/// is the callee's number); phones' outbound calls meet the rules about dialed numbers (the
/// barred prefix is refused, their caller IDs are their own extensions); a trusted network's
/// calls are never handed up; a source outside every allow rule meets both.
#[test]
fn allow_rules_check_calls_by_their_profile() {
    let t = Topology::new();
    let cfg = "[rate]\nrequests = { rate = 0, burst = 0 }\ninvite = { rate = 0, burst = 0 }\n\
               [calls.fraud]\nenabled = false\n";
    let inst = Instance::new(&t.pbx, &t.pbx_if, cfg);
    let daemon = inst.start();
    let (_uas, uas_messages) = uas(&t, inst.dir.path());
    let [trunk, phones, trusted, _] = Topology::SOURCES_V4;
    for (net, profile) in [(trunk, "trunk"), (phones, "phones"), (trusted, "trusted")] {
        let out = inst.cli(&["net", "allow", net, "--profile", profile, "--comment", profile]);
        assert!(out.contains(&format!("allow {net}/32")), "{out}");
    }
    // Re-adding a rule (a new comment) keeps its profile.
    inst.cli(&["net", "allow", phones, "--comment", "office phones"]);
    let listed = inst.cli(&["net", "check", phones]);
    assert!(listed.contains("profile phones"), "{listed}");
    api(&inst, "POST", "/api/disallowed_codes", r#"{"number_prefix": "+882", "description": "satellite"}"#);
    api(&inst, "POST", "/api/blacklisted_numbers", r#"{"number": "+15551234567", "description": "fraud"}"#);

    let (blacklisted, barred) = ("+15551234567", "+882123456");
    let cases = [
        (trunk, "a trunk delivers a blacklisted caller", "uac_forbidden.xml", blacklisted, "0301234"),
        (trunk, "a trunk delivers a call to a barred number", "uac_call.xml", "100", barred),
        (phones, "a phone dials a barred prefix", "uac_forbidden.xml", "101", barred),
        (phones, "a phone whose caller ID is blacklisted", "uac_call.xml", blacklisted, "0301234"),
        (trusted, "a trusted network, both", "uac_call.xml", blacklisted, barred),
        (CALLER, "outside every allow rule, a barred prefix", "uac_forbidden.xml", "101", barred),
        (
            CALLER,
            "outside every allow rule, a blacklisted caller",
            "uac_forbidden.xml",
            blacklisted,
            "0301234",
        ),
    ];
    for (from, name, file, user, dialed) in cases {
        let (ok, failed, out) = place_from(&inst, &t.peer, from, file, user, dialed, 2);
        assert_eq!((ok, failed), (2, 0), "{name}: {out}\n{}", daemon.log());
    }
    let stats = inst.stats();
    let decisions = &stats["slow_path"]["decisions"];
    assert_eq!(decisions["deny/blacklist"], 4, "{decisions}");
    assert_eq!(decisions["deny/disallowed_code"], 4, "{decisions}");
    assert_eq!(decisions["allow/default"], 4, "the trunk's and the phone's allowed calls: {decisions}");
    let handed_up = reason_packets(&stats, "handup", "handed_up");
    assert!(handed_up >= 12, "every INVITE but the trusted network's: {handed_up}");
    let seen = std::fs::read_to_string(&uas_messages).expect("the UAS's message log");
    let reached =
        |dialed: &str| seen.lines().filter(|l| l.starts_with(&format!("INVITE sip:{dialed}@"))).count();
    assert_eq!(reached(barred), 4, "the trunk's and the trusted network's calls to +882…");

    // explain says which profile decided.
    let invite = inst.dir.path().join("invite.txt");
    std::fs::write(
        &invite,
        format!(
            "INVITE sip:{barred}@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {trunk}:5070;branch=z9hG4bKx\r\n\
             From: <sip:100@carrier.example>;tag=1\r\nTo: <sip:{barred}@198.18.0.1>\r\nCall-ID: x@y\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .unwrap();
    let explained = inst.cli(&["explain", &invite.to_string_lossy(), "--source", trunk]);
    assert!(explained.contains("profile trunk"), "{explained}");
}

/// IPv6: INVITEs from an IPv6 caller are handed up, decided and re-injected with the caller's
/// own address and port; a barred one gets its 403 back over IPv6.
#[test]
fn ipv6_calls_are_handed_up_decided_and_answered() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, load::TRUNK_CONFIG);
    let daemon = inst.start();
    api(&inst, "POST", "/api/disallowed_codes", r#"{"number_prefix": "+882", "description": "satellite"}"#);
    let caller: SocketAddr = "[2001:db8::2]:5070".parse().unwrap();
    let pbx: SocketAddr = format!("[{}]:5060", Topology::PBX_V6).parse().unwrap();
    t.pbx.nft(
        "table inet cg {
            counter reinjected {}
            chain in {
                type filter hook input priority 0;
                iifname \"lo\" ip6 saddr 2001:db8::2 udp sport 5070 udp dport 5060 counter name \"reinjected\"
            }
        }",
    );

    let m = load::run(&t.peer, caller, &t.pbx, pbx, 200, Duration::from_secs(1));
    let stats = inst.stats();
    assert_eq!(m.received(), m.sent, "every allowed IPv6 INVITE reaches the PBX: {}", daemon.log());
    assert_eq!(reason_packets(&stats, "handup", "handed_up"), m.sent, "{}", stats["reasons"]);
    assert_eq!(stats["slow_path"]["decisions"]["allow/default"], m.sent, "{}", stats["slow_path"]);
    assert_eq!(
        t.pbx.nft_counter("cg", "reinjected"),
        m.sent,
        "re-injected with the caller's address and port"
    );

    let sock = t.peer.udp("[2001:db8::2]:5091".parse().unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let invite = format!(
        "INVITE sip:+882123@[{pbx6}] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::2]:5091;branch=z9hG4bK6\r\n\
         Max-Forwards: 70\r\nFrom: <sip:101@tenant.example>;tag=v6\r\nTo: <sip:+882123@[{pbx6}]>\r\n\
         Call-ID: v6@2001:db8::2\r\nCSeq: 1 INVITE\r\nContact: <sip:101@[2001:db8::2]:5091>\r\n\
         Content-Length: 0\r\n\r\n",
        pbx6 = Topology::PBX_V6
    );
    sock.send_to(invite.as_bytes(), pbx).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("a 403 over IPv6");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 403 Forbidden\r\n"), "{answer}");
    assert_eq!(from, pbx, "the 403 comes from the address and port that was called");
    println!(
        "IPv6: {} of {} INVITEs decided and delivered; the barred one answered 403",
        m.received(),
        m.sent
    );
}

/// Issue 17, item 2: an extension with a stolen password dialing international numbers as fast
/// as SIPp can (the bill OpenSIPS' fraud_detection is meant to stop). With a limit of three
/// international calls an hour per caller, the first three complete and the rest get `403`
/// (`deny/fraud`), an event naming the threshold. Numbers that count up are refused the same
/// way, from a phone whose calls are national and slow. A caller threshold never bans (anyone
/// can write the From header); a source past a source threshold is banned when
/// `calls.fraud.ban_secs` is set and the source is proven (it acknowledged a 403): an automatic
/// deny rule, a `ban` event with reason `fraud`, and its next call never reaches the PBX. Each
/// refusal and the ban are alerts (item 5): POSTed as JSON to a webhook (a receiver in the test,
/// which fails the first delivery: callguard tries again) and handed to a command.
#[test]
fn a_burst_of_calls_is_cut_at_the_fraud_thresholds() {
    let t = Topology::new();
    let alerts_dir = tempfile::tempdir().unwrap();
    let alerts_file = alerts_dir.path().join("alerts.jsonl");
    let cfg = format!(
        "[rate]\nrequests = {{ rate = 0, burst = 0 }}\ninvite = {{ rate = 0, burst = 0 }}\n\
         [enumeration]\nusers = 0\n\
         [alerts]\nwebhook = \"http://127.0.0.1:8099/callguard\"\n\
         command = [\"sh\", \"-c\", \"cat >> {0}; echo >> {0}\"]\n\
         [calls.fraud]\nban_secs = 600\n\
         [calls.fraud.caller]\nsequential = 4\n\
         [calls.fraud.source]\ncalls_per_minute = 5\n",
        alerts_file.display()
    );
    let hook = webhook(&t.pbx, "127.0.0.1:8099");
    let inst = Instance::new(&t.pbx, &t.pbx_if, &cfg);
    let daemon = inst.start();
    let dir = inst.dir.path().to_owned();
    let (_uas, uas_messages) = uas(&t, &dir);
    // The international limit through the CLI (PUT /v1/fraud), over the file's default of 30;
    // the file's other settings are kept.
    let bad = inst.cli_output(&["fraud", "set", "premium=09x"]);
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && said.contains("`09x` is not a number prefix"), "{said}");
    let set = inst.cli(&["fraud", "set", "caller.international_per_hour=3"]);
    assert!(set.contains("written through the API"), "{set}");
    let shown: serde_json::Value = serde_json::from_str(&inst.cli(&["fraud", "show", "--json"])).unwrap();
    assert_eq!(shown["origin"], "api", "{shown}");
    assert_eq!(shown["thresholds"]["caller"]["international_per_hour"], 3, "{shown}");
    assert_eq!(shown["thresholds"]["caller"]["sequential"], 4, "the file's setting is kept: {shown}");
    assert_eq!(shown["thresholds"]["ban_secs"], 600, "{shown}");
    let stats = inst.stats();
    assert_eq!(
        stats["calls"]["hand_up_invites"], true,
        "the thresholds need the INVITEs: {}",
        stats["calls"]
    );
    api(&inst, "POST", "/api/disallowed_codes", r#"{"number_prefix": "+882", "description": "satellite"}"#);

    // The final answer to a call from `src`:5090 as 103 to `number` (the UAS answers 100 and
    // 200, and retransmits the 200s of earlier calls, which are never acknowledged; callguard
    // answers 403), or "none".
    let dial = |src: &str, number: &str| {
        let sock = t.peer.udp(format!("{src}:5090").parse().unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let invite = format!(
            "INVITE sip:{number}@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5090;branch=z9hG4bK{number}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:103@tenant.example>;tag=s{number}\r\nTo: <sip:{number}@{PBX}>\r\n\
             Call-ID: {number}@{src}\r\nCSeq: 1 INVITE\r\nContact: <sip:103@{src}:5090>\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(invite.as_bytes(), format!("{PBX}:5060")).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok(k) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..k]).into_owned();
            let code = text.split(' ').nth(1).unwrap_or_default().to_owned();
            if text.contains(&format!("Call-ID: {number}@")) && !code.starts_with('1') {
                return code;
            }
        }
        "none".to_owned()
    };

    // Numbers in sequence, one call at a time, from a phone: the fifth is refused.
    let phone = Topology::SOURCES_V4[0];
    let codes: Vec<String> = (0..5).map(|n| dial(phone, &format!("030100{n}"))).collect();
    assert_eq!(codes, ["200", "200", "200", "200", "403"], "{}", daemon.log());

    // The burst: six international calls as one caller; three complete.
    let (ok, failed, out) = place(&inst, &t.peer, "uac_call.xml", "102", "004930123", 6);
    println!("six international calls as 102: {ok} completed, {failed} failed");
    assert_eq!((ok, failed), (3, 3), "{out}");
    let seen = std::fs::read_to_string(&uas_messages).expect("the UAS's message log");
    let at_uas = seen.lines().filter(|l| l.starts_with("INVITE sip:004930123@")).count();
    assert_eq!(at_uas, 3, "international calls that reached the PBX");

    // The caller's source, proven, then past its limit of five calls a minute: the third of
    // these is its sixth call, refused, and the source banned.
    callguard_tests::netns::acknowledge_a_403(&t.peer, CALLER, PBX, "+882777");
    let (ok, failed, out) = place(&inst, &t.peer, "uac_call.xml", "104", "0301234", 3);
    assert_eq!((ok, failed), (2, 1), "{out}");

    let stats = inst.stats();
    assert_eq!(stats["slow_path"]["fraud_refusals"], 5, "{}", stats["slow_path"]);
    assert_eq!(stats["slow_path"]["decisions"]["deny/fraud"], 5, "{}", stats["slow_path"]);
    let events: Vec<serde_json::Value> = inst
        .cli(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    let refused: Vec<&serde_json::Value> = events.iter().filter(|e| e["reason"] == "deny/fraud").collect();
    for rule in ["caller.sequential = 4", "caller.international_per_hour = 3", "source.calls_per_minute = 5"]
    {
        assert!(
            refused.iter().any(|e| e["detail"].as_str().unwrap_or_default().contains(rule)),
            "no refusal by {rule}: {refused:?}"
        );
    }
    let bans: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["kind"] == "ban" && e["reason"] == "fraud").collect();
    assert_eq!(bans.len(), 1, "{events:?}");
    assert_eq!(bans[0]["source"], CALLER, "{events:?}");
    let nets: serde_json::Value = serde_json::from_str(&inst.cli(&["net", "list", "--json"])).unwrap();
    let rules = nets.as_array().unwrap();
    let ban = rules.iter().find(|r| r["cidr"] == format!("{CALLER}/32")).unwrap_or_else(|| panic!("{nets}"));
    assert!(ban["comment"].as_str().unwrap().contains("fraud"), "{ban}");
    assert!(!rules.iter().any(|r| r["cidr"] == format!("{phone}/32")), "a caller threshold banned: {nets}");
    // Banned: the source's next call never reaches the PBX; the phone's still does.
    assert_eq!(dial(CALLER, "0309999"), "none", "a banned source was answered");
    assert_eq!(dial(phone, "0309999"), "200");

    // The alerts: five refusals and the ban, by the webhook (the first delivery was refused
    // with a 503 and came again) and by the command.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hook.lock().unwrap().len() < 7 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let posted: Vec<serde_json::Value> =
        hook.lock().unwrap().iter().map(|b| serde_json::from_str(b).expect("a JSON event")).collect();
    assert_eq!(posted.len(), 7, "six alerts and one retry: {posted:?}");
    assert!(posted[1..].contains(&posted[0]), "the refused delivery came again: {posted:?}");
    let once = &posted[1..];
    assert_eq!(once.iter().filter(|e| e["reason"] == "deny/fraud").count(), 5, "{posted:?}");
    assert_eq!(once.iter().filter(|e| e["kind"] == "ban").count(), 1, "{posted:?}");
    let ran = std::fs::read_to_string(&alerts_file).unwrap_or_default();
    assert_eq!(ran.lines().filter(|l| !l.is_empty()).count(), 6, "the command's alerts:\n{ran}");
}
