//! Differential test: the XDP program (through BPF_PROG_TEST_RUN) against the userspace model of
//! the same rules ([`callguard_tests::model`]) on random and mutated packets.
//!
//! `CALLGUARD_DIFF_PACKETS` sets how many (default 1,000,000, what `cargo xtask test` runs);
//! `CALLGUARD_DIFF_SEED` the seed (default 4475), so a failure names a packet that can be
//! generated again. Every packet's action must agree, and so must its reason: the kernel's
//! counters by (action, reason) are compared with the model's every few thousand packets, and a
//! block that disagrees is run again packet by packet to name the packet.

use std::collections::BTreeMap;

use callguard::{
    config::MethodName,
    kernel::objects::Loops,
    net::{NetAction, NetRule, Scope},
    sig::{SigField, SigMatch, SigMode},
};
use callguard_common::{Action, Reason};
use callguard_tests::{
    TestKernel, default_signatures,
    frame::{Frame, UDP},
    model::Model,
    mutate::Mutator,
    rule, signature,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

fn rules() -> Vec<NetRule> {
    let mut expired = rule(8, "198.18.0.48/28", NetAction::Deny, Scope::All);
    expired.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(60));
    // A feed's denies inside allows: they yield to them, in the kernel as in the model.
    let listed = |id, cidr| NetRule {
        origin: callguard::net::Origin::Feed,
        list: Some("firehol".into()),
        ..rule(id, cidr, NetAction::Deny, Scope::All)
    };
    vec![
        listed(9, "198.18.0.6/32"),
        listed(10, "2001:db8:a::9/128"),
        rule(1, "198.18.0.0/28", NetAction::Allow, Scope::Sip),
        rule(2, "198.18.0.16/28", NetAction::Deny, Scope::Sip),
        rule(3, "198.18.0.32/28", NetAction::Deny, Scope::All),
        rule(4, "198.18.0.36/32", NetAction::Allow, Scope::Sip),
        rule(5, "2001:db8:a::/48", NetAction::Allow, Scope::Sip),
        rule(6, "2001:db8:d::/48", NetAction::Deny, Scope::Sip),
        rule(7, "2001:db8:e::/48", NetAction::Deny, Scope::All),
        expired,
    ]
}

/// Sources: one or two under each rule, and (most traffic) sources under none, which are
/// inspected.
const SOURCES: &[&str] = &[
    "198.18.0.5",
    "198.18.0.6",
    "2001:db8:a::9",
    "198.18.0.17",
    "198.18.0.33",
    "198.18.0.36",
    "198.18.0.49",
    "2001:db8:a::1",
    "2001:db8:d::1",
    "2001:db8:e::1",
    "198.18.0.66",
    "198.18.0.66",
    "198.18.0.67",
    "198.18.0.67",
    "198.18.0.99",
    "2001:db8:66::1",
    "2001:db8:66::2",
    "2001:db8:67::1",
];

/// Packets between two comparisons of the counters.
const BLOCK: usize = 4096;

/// The kernel's counters by (action, reason), zeros left out.
fn counts(k: &TestKernel) -> BTreeMap<(Action, Reason), u64> {
    k.counters().into_iter().filter(|c| c.2.packets != 0).map(|(a, r, c)| ((a, r), c.packets)).collect()
}

/// A packet, for a failure message: enough to see it and to generate it again.
fn describe(seed: u64, n: u64, f: &Frame, kernel: Action, model: (Action, Reason)) -> String {
    format!(
        "packet {n} of seed {seed}: kernel {kernel:?}, model {model:?} for {} -> {}/{} frag {:?} vlans {:?} \
         ipv6 extension headers {}, \
         payload ({} bytes):\n{}",
        f.src,
        if f.proto == UDP { "udp" } else { "tcp" },
        f.dport,
        f.frag,
        f.vlans,
        f.ipv6_ext.len(),
        f.payload.len(),
        f.payload.escape_ascii()
    )
}

#[test]
fn the_kernel_agrees_with_the_model_on_random_and_mutated_packets() {
    agree(Loops::of_this_kernel(), env_or("CALLGUARD_DIFF_PACKETS", 1_000_000));
}

/// The build for kernels before 6.9 (`callguard_common::loops`), on a quarter of the packets:
/// on a newer kernel it is the build the daemon does not load, and it must give every packet
/// the model's verdict as well.
#[test]
fn the_build_for_older_kernels_agrees_with_the_model_too() {
    agree(Loops::Callbacks, env_or("CALLGUARD_DIFF_PACKETS", 1_000_000) / 4);
}

fn agree(loops: Loops, packets: u64) {
    let seed = env_or("CALLGUARD_DIFF_SEED", 4475);
    let mut cfg = TestKernel::quiet();
    cfg.sip.drop_methods = vec![MethodName(0), MethodName(callguard_common::sip::method::MESSAGE)];
    let mut k = TestKernel::with_loops(&cfg, loops);
    let rules = rules();
    k.set_rules(&rules);
    let mut sigs = default_signatures();
    sigs.push(signature(90, SigField::UserAgent, SigMatch::Contains, "sip-t", SigMode::Enforce));
    sigs.push(signature(91, SigField::FromTo, SigMatch::Contains, "100", SigMode::DryRun));
    let compiled = k.set_signatures(&sigs);
    let model = Model { cfg: &cfg, rules: &rules, sigs: &sigs, compiled: &compiled, now: chrono::Utc::now() };

    let mut traffic = Mutator::new(seed, SOURCES);
    let mut want: BTreeMap<(Action, Reason), u64> = BTreeMap::new();
    let mut block: Vec<(u64, Frame, Reason)> = Vec::with_capacity(BLOCK);
    for n in 0..packets {
        let f = traffic.frame();
        let (action, reason) = model.verdict(&f);
        let got = k.run(&f.build());
        assert_eq!(got, action, "{}", describe(seed, n, &f, got, (action, reason)));
        *want.entry((action, reason)).or_default() += 1;
        block.push((n, f, reason));
        if block.len() == BLOCK || n + 1 == packets {
            // Reasons agree too: the counters after each block equal the model's so far; when
            // not, find the packet by running the block again one packet at a time.
            if counts(&k) != want {
                for (n, f, reason) in &block {
                    let before = counts(&k);
                    let got = k.run(&f.build());
                    let after = counts(&k);
                    let changed: Vec<_> =
                        after.iter().filter(|(key, c)| before.get(key) != Some(c)).collect();
                    assert_eq!(changed.len(), 1, "one counter per packet");
                    let (got_action, got_reason) = *changed[0].0;
                    assert_eq!(got_reason, *reason, "{}", describe(seed, *n, f, got, (got_action, *reason)));
                }
                panic!(
                    "counters disagree with the model in the block ending at packet {n}, but no packet does again"
                );
            }
            block.clear();
        }
    }
    let want: Vec<(Action, Reason, u64)> = want.into_iter().map(|((a, r), c)| (a, r, c)).collect();
    eprintln!("{} build, {packets} packets (seed {seed}), verdicts by reason: {want:?}", loops.describe());
    // The mix exercised every path of the decision table.
    for r in [Reason::Allowed, Reason::Denied, Reason::Fragment, Reason::Unguarded, Reason::NotSip] {
        assert!(want.iter().any(|w| w.1 == r), "no packet ended as {r:?}: {want:?}");
    }
    for r in [Reason::Signature, Reason::Method, Reason::Clean, Reason::Keepalive] {
        assert!(
            want.iter().any(|w| w.1 == r && w.2 >= 100),
            "fewer than 100 packets ended as {r:?}: {want:?}"
        );
    }
}
