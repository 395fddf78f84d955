//! SIP-aware verdicts: the real XDP program on SIP requests built as sipvicious builds them,
//! requests from common phones, responses, keepalives and junk, through BPF_PROG_TEST_RUN.

use callguard::{
    config::{Config, MethodName, PassDrop},
    net::{NetAction, Scope},
    sig::{SigField, SigMatch, SigMode},
};
use callguard_common::{Action, Reason, sig::field, sip};
use callguard_tests::{
    TestKernel, default_signatures,
    frame::Frame,
    rule, signature,
    sipmsg::{self, SvTool},
};

const SIP: u16 = 5060;
const SCANNER: &str = "198.18.0.66";

fn sip_frame(src: &str, payload: &[u8]) -> Vec<u8> {
    Frame::udp(src, SIP).payload(payload).build()
}

/// Slot of the default signature with this field and text.
fn default_slot(field: SigField, text: &str) -> u16 {
    default_signatures().iter().find(|s| s.sig.field == field && s.sig.text == text).expect("a default").slot
}

#[test]
fn sipvicious_is_dropped_by_the_default_signatures_in_both_forms() {
    let mut k = TestKernel::new();
    k.set_signatures(&default_signatures());
    let ua = default_slot(SigField::UserAgent, "friendly-scanner");
    let name = default_slot(SigField::FromTo, "sipvicious");
    let target = "198.18.0.1";
    let mut expect_ua = 0;
    let mut expect_name = 0;
    for method in ["OPTIONS", "REGISTER", "INVITE"] {
        for tool in [SvTool::Svmap, SvTool::Svwar, SvTool::Svcrack] {
            let msg = sipmsg::sipvicious(tool, method, "1001", target, false);
            assert_eq!(k.run(&sip_frame(SCANNER, &msg)), Action::Drop, "{tool:?} {method}");
            expect_ua += 1;
            // With -c there is no User-Agent; svmap's display name still gives it away.
            let compact = sipmsg::sipvicious(tool, method, "1001", target, true);
            let verdict = k.run(&sip_frame(SCANNER, &compact));
            if tool == SvTool::Svmap {
                assert_eq!(verdict, Action::Drop, "{tool:?} -c {method}");
                expect_name += 1;
            } else {
                // svwar/svcrack -c carry nothing of sipvicious: rate limits and enumeration
                // detection are what stop them.
                assert_eq!(verdict, Action::Pass, "{tool:?} -c {method}");
            }
        }
    }
    assert_eq!(k.sig_counter(ua).packets, expect_ua);
    assert_eq!(k.sig_counter(name).packets, expect_name);
    k.assert_counters(&[
        (Action::Drop, Reason::Signature, expect_ua + expect_name),
        (Action::Pass, Reason::Clean, 6),
    ]);
}

#[test]
fn phones_softphones_trunks_and_responses_pass() {
    let mut k = TestKernel::new();
    k.set_signatures(&default_signatures());
    let phones = sipmsg::phones();
    for (who, msg) in &phones {
        assert_eq!(k.run(&sip_frame("198.18.0.20", msg)), Action::Pass, "{who}");
        assert_eq!(k.run(&sip_frame("2001:db8::20", msg)), Action::Pass, "{who} over IPv6");
    }
    let responses = sipmsg::responses();
    for msg in &responses {
        assert_eq!(k.run(&sip_frame("198.18.0.20", msg)), Action::Pass);
    }
    assert_eq!(k.run(&sip_frame("198.18.0.20", b"\r\n\r\n")), Action::Pass);
    assert_eq!(k.run(&sip_frame("198.18.0.20", b"\r\n")), Action::Pass);
    let n = (2 * phones.len() + responses.len()) as u64;
    k.assert_counters(&[(Action::Pass, Reason::Clean, n), (Action::Pass, Reason::Keepalive, 2)]);
}

#[test]
fn a_response_carrying_a_signature_is_dropped_too() {
    let mut k = TestKernel::new();
    k.set_signatures(&default_signatures());
    let svcrash = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK-1\r\n\
                    From: \"sipvicious\"<sip:100@198.18.0.1>;tag=1\r\nTo: <sip:100@198.18.0.1>;tag=2\r\n\
                    Call-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(k.run(&sip_frame(SCANNER, svcrash)), Action::Drop);
    k.assert_counters(&[(Action::Drop, Reason::Signature, 1)]);
}

#[test]
fn not_sip_to_a_guarded_port_follows_the_policy() {
    let junk: [&[u8]; 4] = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x01\x02\x03", b"hello", b""];
    let mut k = TestKernel::new();
    for j in junk {
        assert_eq!(k.run(&sip_frame("198.18.0.20", j)), Action::Drop, "{j:?}");
    }
    // Not guarded: not inspected.
    assert_eq!(k.run(&Frame::udp("198.18.0.20", 5999).payload(b"hello").build()), Action::Pass);
    // Authorized sources are not inspected either.
    k.set_rules(&[rule(1, "198.18.0.20/32", NetAction::Allow, Scope::Sip)]);
    assert_eq!(k.run(&sip_frame("198.18.0.20", b"hello")), Action::Pass);
    k.assert_counters(&[
        (Action::Drop, Reason::NotSip, 4),
        (Action::Pass, Reason::Unguarded, 1),
        (Action::Pass, Reason::Allowed, 1),
    ]);

    let mut cfg = Config::default();
    cfg.sip.not_sip = PassDrop::Pass;
    let mut k = TestKernel::with_config(&cfg);
    for j in junk {
        assert_eq!(k.run(&sip_frame("198.18.0.20", j)), Action::Pass, "{j:?}");
    }
    k.assert_counters(&[(Action::Pass, Reason::NotSip, 4)]);
}

#[test]
fn method_policy_applies_to_unauthorized_sources_only() {
    let unknown = b"FOO sip:100@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.66\r\n\r\n";
    let options = sipmsg::phones().into_iter().find(|(w, _)| w.contains("OPTIONS")).unwrap().1;
    // Default: unknown methods dropped, OPTIONS passed.
    let mut k = TestKernel::new();
    assert_eq!(k.run(&sip_frame(SCANNER, unknown)), Action::Drop);
    assert_eq!(k.run(&sip_frame(SCANNER, &options)), Action::Pass);
    k.assert_counters(&[(Action::Drop, Reason::Method, 1), (Action::Pass, Reason::Clean, 1)]);
    // Hardened: OPTIONS dropped too, except from an authorized trunk.
    let mut cfg = Config::default();
    cfg.sip.drop_methods = vec![MethodName(sip::method::UNKNOWN), MethodName(sip::method::OPTIONS)];
    let mut k = TestKernel::with_config(&cfg);
    k.set_rules(&[rule(1, "198.18.0.30/32", NetAction::Allow, Scope::Sip)]);
    assert_eq!(k.run(&sip_frame(SCANNER, &options)), Action::Drop);
    assert_eq!(k.run(&sip_frame("198.18.0.30", &options)), Action::Pass);
    let invite = &sipmsg::phones()[0].1;
    assert_eq!(k.run(&sip_frame(SCANNER, invite)), Action::Pass);
    k.assert_counters(&[
        (Action::Drop, Reason::Method, 1),
        (Action::Pass, Reason::Allowed, 1),
        (Action::Pass, Reason::Clean, 1),
    ]);
}

#[test]
fn dry_run_counts_without_dropping_and_enforce_wins() {
    let mut k = TestKernel::new();
    k.set_signatures(&[
        signature(1, SigField::UserAgent, SigMatch::Contains, "sip-t46", SigMode::DryRun),
        signature(2, SigField::FromTo, SigMatch::Contains, "desk", SigMode::Enforce),
    ]);
    let (_, yealink) = &sipmsg::phones()[0]; // Yealink SIP-T46S, "Front Desk"
    let (_, polycom) = &sipmsg::phones()[1];
    let yealink_other = String::from_utf8_lossy(yealink).replace("Front Desk", "Lobby").into_bytes();
    assert_eq!(k.run(&sip_frame("198.18.0.20", yealink)), Action::Drop, "enforce beats dry-run");
    assert_eq!(k.run(&sip_frame("198.18.0.20", &yealink_other)), Action::Pass, "dry-run only");
    assert_eq!(k.run(&sip_frame("198.18.0.20", polycom)), Action::Pass);
    assert_eq!(k.sig_counter(1).packets, 1);
    assert_eq!(k.sig_counter(2).packets, 1);
    k.assert_counters(&[
        (Action::Drop, Reason::Signature, 1),
        (Action::Pass, Reason::Signature, 1),
        (Action::Pass, Reason::Clean, 1),
    ]);
}

#[test]
fn authorized_networks_are_not_checked_and_denied_ones_stay_denied() {
    let mut k = TestKernel::new();
    k.set_signatures(&default_signatures());
    k.set_rules(&[
        rule(1, "198.18.0.64/30", NetAction::Allow, Scope::Sip),
        rule(2, "2001:db8:66::/48", NetAction::Deny, Scope::Sip),
    ]);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    assert_eq!(k.run(&sip_frame(SCANNER, &svmap)), Action::Pass);
    assert_eq!(k.run(&sip_frame("2001:db8:66::1", &sipmsg::phones()[0].1)), Action::Drop);
    k.assert_counters(&[(Action::Pass, Reason::Allowed, 1), (Action::Drop, Reason::Denied, 1)]);
    assert_eq!(k.sig_counter(1).packets, 0);
}

#[test]
fn signature_sets_are_replaced_whole() {
    let mut k = TestKernel::new();
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let yealink = &sipmsg::phones()[0].1;
    k.set_signatures(&default_signatures());
    assert_eq!(k.run(&sip_frame(SCANNER, &svmap)), Action::Drop);
    // A set without sipvicious but with Yealink (both banks get used in turn).
    for _ in 0..2 {
        k.set_signatures(&[signature(
            40,
            SigField::UserAgent,
            SigMatch::Prefix,
            "yealink",
            SigMode::Enforce,
        )]);
        assert_eq!(k.run(&sip_frame(SCANNER, &svmap)), Action::Pass);
        assert_eq!(k.run(&sip_frame(SCANNER, yealink)), Action::Drop);
    }
    k.set_signatures(&[]);
    assert_eq!(k.run(&sip_frame(SCANNER, &svmap)), Action::Pass);
    assert_eq!(k.run(&sip_frame(SCANNER, yealink)), Action::Pass);
    assert_eq!(k.sig_counter(40).packets, 2);
}

#[test]
fn the_kernel_agrees_with_the_userspace_model_on_every_message() {
    let mut k = TestKernel::new();
    let sigs = {
        let mut s = default_signatures();
        s.push(signature(90, SigField::UserAgent, SigMatch::Contains, "sip-t", SigMode::Enforce));
        s.push(signature(91, SigField::FromTo, SigMatch::Contains, "100", SigMode::DryRun));
        s
    };
    let model = k.set_signatures(&sigs);
    let mut corpus: Vec<Vec<u8>> = sipmsg::phones().into_iter().map(|p| p.1).collect();
    corpus.extend(sipmsg::responses());
    for tool in [SvTool::Svmap, SvTool::Svwar, SvTool::Svcrack] {
        for compact in [false, true] {
            corpus.push(sipmsg::sipvicious(tool, "OPTIONS", "100", "198.18.0.1", compact));
        }
    }
    for msg in &corpus {
        let (scratch, n) = sip::Scratch::new(msg);
        let info = sip::parse(&scratch, n);
        let text = |s: sip::Span| &scratch.buf[usize::from(s.off)..usize::from(s.off) + usize::from(s.len)];
        let hits = [
            model.walk(field::USER_AGENT, text(info.user_agent)),
            model.walk(field::FROM, text(info.from)),
            model.walk(field::TO, text(info.to)),
        ];
        let enforce = hits.iter().any(|h| h.mode == callguard_common::sig::MODE_ENFORCE);
        let want = if enforce { Action::Drop } else { Action::Pass };
        assert_eq!(k.run(&sip_frame(SCANNER, msg)), want, "{}", String::from_utf8_lossy(msg));
    }
}

#[test]
fn torture_messages_pass_unless_they_hide_a_scanner_or_a_rule_refuses_them() {
    use sipmsg::Torture;
    // With the default method policy (unknown methods refused), then with none.
    for refuse_unknown in [true, false] {
        let mut k = if refuse_unknown {
            TestKernel::new()
        } else {
            let mut cfg = TestKernel::quiet();
            cfg.sip.drop_methods.clear();
            TestKernel::with_config(&cfg)
        };
        k.set_signatures(&default_signatures());
        let mut wrong = Vec::new();
        let mut want_counts = std::collections::BTreeMap::new();
        for (name, msg, what) in sipmsg::torture() {
            let want = match what {
                Torture::Legit => (Action::Pass, Reason::Clean),
                Torture::UnknownMethod if refuse_unknown => (Action::Drop, Reason::Method),
                Torture::UnknownMethod => (Action::Pass, Reason::Clean),
                Torture::Scanner => (Action::Drop, Reason::Signature),
            };
            let got = k.run(&sip_frame(SCANNER, &msg));
            if got != want.0 {
                wrong.push(format!("{name}: {got:?}, want {want:?}"));
            }
            *want_counts.entry(want).or_insert(0u64) += 1;
        }
        assert!(wrong.is_empty(), "refuse unknown methods: {refuse_unknown}: {wrong:#?}");
        // Each verdict for the expected reason: every message was read as SIP.
        let want: Vec<(Action, Reason, u64)> = want_counts.into_iter().map(|((a, r), n)| (a, r, n)).collect();
        k.assert_counters(&want);
    }
}

/// The daemon's own SIP parser (the slow path's) reads every legitimate torture message, phone
/// request and response the way the kernel does (same method, same From and To users), and
/// never panics on a million mutated or random payloads (the cargo-fuzz target
/// `fuzz/fuzz_targets/message.rs` runs the same code without end).
#[test]
fn the_daemon_parser_reads_the_torture_messages_and_survives_mutations() {
    use callguard::calls::message;
    let mut corpus: Vec<(String, Vec<u8>)> =
        sipmsg::torture().into_iter().map(|(name, m, _)| (name.to_owned(), m)).collect();
    corpus.extend(sipmsg::phones().into_iter().map(|(name, m)| (name.to_owned(), m)));
    for (name, m) in &corpus {
        let parsed = message::parse(m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (s, n) = sip::Scratch::new(m);
        let info = sip::parse(&s, n);
        let Some(method) = parsed.method() else {
            assert_eq!(info.kind, sip::Kind::Response, "{name}");
            continue;
        };
        let known = sip::method::NAMES.iter().position(|k| k.eq_ignore_ascii_case(method)).unwrap_or(0);
        assert_eq!(usize::from(info.method), known, "{name}: method {method}");
        let from = parsed.from().unwrap_or_else(|e| panic!("{name}: From: {e}"));
        let to = parsed.to().unwrap_or_else(|e| panic!("{name}: To: {e}"));
        assert!(from.uri.user.is_some() || to.uri.user.is_some(), "{name}: no user read");
        parsed.call_id().unwrap_or_else(|e| panic!("{name}: {e}"));
        parsed.cseq().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for r in sipmsg::responses() {
        let parsed = message::parse(&r).expect("a response");
        assert!(matches!(parsed.start, message::StartLine::Response { .. }));
    }
    let mut mutator = callguard_tests::mutate::Mutator::new(4475, &["198.18.0.9"]);
    let (mut read, n) = (0, 1_000_000);
    for _ in 0..n {
        let p = mutator.payload();
        if let Ok(m) = message::parse(&p) {
            read += 1;
            let _ = callguard::calls::policy::Facts::read(&m, "198.18.0.9".parse().unwrap());
            let _ = (m.top_via(), m.asserted_identities(), callguard::calls::slowpath::forbidden(&m, "t"));
        }
    }
    println!(
        "daemon parser: {} corpus messages read; {read} of {n} mutated payloads still parse",
        corpus.len()
    );
}
