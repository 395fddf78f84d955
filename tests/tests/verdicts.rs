//! Kernel verdict tests: the real XDP program, loaded in this kernel, run on crafted frames
//! through BPF_PROG_TEST_RUN. Each test asserts the verdict and the counters a user would read.

use std::{path::PathBuf, time::Duration};

use aya::maps::{Array, HashMap, MapData, MapInfo};
use callguard::{
    config::Config,
    kernel::{datapath::Datapath as _, upgrade},
    net::{NetAction, NetRule, Scope},
};
use callguard_common::{
    Action, Reason,
    limits::{SourceState, source_key_v4},
    maps,
    sig::DfaBank,
};
use callguard_tests::{
    TestKernel,
    frame::{self, Frame, ICMP, TPID_8021AD, TPID_8021Q, ext},
    rule, unique,
};

const SIP: u16 = 5060;

fn count(k: &TestKernel, action: Action, reason: Reason) -> u64 {
    k.counter(action, reason).packets
}

#[test]
fn blocked_prefix_drops_on_guarded_port_and_counts() {
    let mut k = TestKernel::new();
    k.set_rules(&[rule(7, "198.18.66.0/24", NetAction::Deny, Scope::Sip)]);
    let f = Frame::udp("198.18.66.9", SIP).build();
    assert_eq!(k.run(&f), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.67.9", SIP).build()), Action::Pass);
    let c = k.counter(Action::Drop, Reason::Denied);
    assert_eq!((c.packets, c.bytes), (1, f.len() as u64));
    assert_eq!(k.rule_counter(7).packets, 1);
    assert_eq!(k.rule_counter(7).bytes, f.len() as u64);
    k.assert_counters(&[(Action::Drop, Reason::Denied, 1), (Action::Pass, Reason::Clean, 1)]);
}

#[test]
fn ipv6_prefix_and_exact_address() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "2001:db8:bad::/48", NetAction::Deny, Scope::Sip),
        rule(2, "2001:db8:bad::7", NetAction::Allow, Scope::Sip),
        rule(3, "2001:db8:ff::9", NetAction::Deny, Scope::Sip),
    ]);
    assert_eq!(k.run(&Frame::udp("2001:db8:bad::1", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("2001:db8:bad::7", SIP).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("2001:db8:ff::9", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("2001:db8:ff::8", SIP).build()), Action::Pass);
    assert_eq!(k.run(&Frame::tcp("2001:db8:bad::2", 5061).build()), Action::Drop);
    assert_eq!([1, 2, 3].map(|id| k.rule_counter(id).packets), [2, 1, 1]);
    k.assert_counters(&[
        (Action::Drop, Reason::Denied, 3),
        (Action::Pass, Reason::Allowed, 1),
        (Action::Pass, Reason::Clean, 1),
    ]);
}

#[test]
fn ipv4_exact_address_beats_prefix() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "198.18.0.0/16", NetAction::Allow, Scope::Sip),
        rule(2, "198.18.3.3/32", NetAction::Deny, Scope::Sip),
    ]);
    assert_eq!(k.run(&Frame::udp("198.18.3.3", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.3.4", SIP).build()), Action::Pass);
    assert_eq!(count(&k, Action::Pass, Reason::Allowed), 1);
}

/// The IPv4 rule hints let the program skip the lookups of a source no rule can match; an
/// attacker would want them to skip one that does. A source sharing a hint bit with a banned
/// address, rules written while a source sends, a rule removed beside another that shares its
/// bit, and hints an older build left cleared: each rule still decides.
#[test]
fn rule_hints_never_hide_a_rule() {
    use callguard_common::net::{HINT_VALUES, NetHints, exact_hint_bit};
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    let udp = |a: &str| Frame::udp(a, SIP).build();
    let banned = [203, 0, 113, 9];
    let twin = (u32::from_be_bytes([11, 0, 0, 0])..=u32::MAX)
        .map(u32::to_be_bytes)
        .find(|a| *a != banned && exact_hint_bit(*a) == exact_hint_bit(banned))
        .expect("another address with the same exact bit");
    let mut rules = vec![
        rule(1, "203.0.113.9/32", NetAction::Deny, Scope::Sip),
        rule(2, "192.0.2.64/28", NetAction::Deny, Scope::Sip),
        rule(3, "192.0.2.128/28", NetAction::Deny, Scope::Sip),
    ];
    let mut k = TestKernel::new();
    k.set_rules(&rules);
    assert_eq!(k.run(&udp(&ip(banned))), Action::Drop);
    // The twin shares the banned address's bit, and no rule is its own.
    assert_eq!(k.run(&udp(&ip(twin))), Action::Pass);
    assert_eq!(k.run(&udp("203.0.113.7")), Action::Pass);

    // Rules written while a source sends apply to its next packet.
    assert_eq!(k.run(&udp("198.51.100.7")), Action::Pass);
    assert_eq!(k.run(&udp("100.100.1.1")), Action::Pass);
    rules.push(rule(4, "198.51.100.7/32", NetAction::Deny, Scope::Sip));
    rules.push(rule(5, "100.64.0.0/10", NetAction::Deny, Scope::Sip));
    rules.push(rule(6, &format!("{}/32", ip(twin)), NetAction::Deny, Scope::Sip));
    k.set_rules(&rules);
    for src in ["198.51.100.7", "100.100.1.1", "100.127.255.254", &ip(twin)] {
        assert_eq!(k.run(&udp(src)), Action::Drop, "{src}");
    }

    // Rules removed beside others that share their bits: the others still decide.
    rules.retain(|r| r.id != 1 && r.id != 2);
    k.set_rules(&rules);
    assert_eq!(k.run(&udp(&ip(banned))), Action::Pass);
    assert_eq!(k.run(&udp(&ip(twin))), Action::Drop);
    assert_eq!(k.run(&udp("192.0.2.70")), Action::Pass);
    assert_eq!(k.run(&udp("192.0.2.130")), Action::Drop);
    assert_eq!(k.rule_counter(3).packets, 1);

    // Hints cleared under rules that are in the maps (what a map pinned by an older build would
    // hold): the program skips those rules, which is why a daemon writes every hint at load.
    let path = k.kernel.pin_dir().join(maps::NET_V4_HINTS);
    let data = MapData::from_pin(&path).expect("the pinned CG_NET4_HINTS");
    let mut hints: Array<MapData, NetHints> =
        Array::try_from(aya::maps::Map::Array(data)).expect("CG_NET4_HINTS is an array");
    for i in 0..HINT_VALUES {
        hints.set(i, NetHints::default(), 0).unwrap();
    }
    assert_eq!(k.run(&udp("192.0.2.130")), Action::Pass, "the program does not read the hints");
    let dir = k.kernel.pin_dir().to_owned();
    let _next = callguard::kernel::Kernel::load(&dir, &Config::default().tables).expect("a second load");
    for src in ["192.0.2.130", "198.51.100.7", "100.100.1.1", &ip(twin)] {
        assert_eq!(k.run(&udp(src)), Action::Drop, "{src} after the next load");
    }
    assert_eq!(k.run(&udp("192.0.2.70")), Action::Pass);
}

/// The program reads a single IPv4 address's rule from its slot of `CG_NET4_DIRECT` before the
/// exact map; an attacker would want a slot to give one address another's verdict, or an old
/// one. A source sharing a banned address's slot, a rule changed and removed while both send, a
/// slot caught half written, and a table an older daemon left stale: each address still gets
/// its own rule, as it stands.
#[test]
fn a_single_address_slot_never_gives_an_address_another_s_verdict() {
    use callguard_common::net::{DIRECT_SLOTS, DirectSlot, NetEntry, SCOPE_ALL, direct_slot};
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    let udp = |a: [u8; 4]| Frame::udp(&ip(a), SIP).build();
    let banned = [203, 0, 113, 9];
    // Above the banned address, so that the daemon, which writes in address order, gives the
    // slot to the banned one.
    let twin = (u32::from_be_bytes([204, 0, 0, 0])..=u32::MAX)
        .map(u32::to_be_bytes)
        .find(|a| direct_slot(*a) == direct_slot(banned))
        .expect("another address with the same slot");
    let ban = rule(1, &format!("{}/32", ip(banned)), NetAction::Deny, Scope::Sip);
    let trusted = rule(2, &format!("{}/32", ip(twin)), NetAction::Allow, Scope::Sip);
    let mut k = TestKernel::new();
    let table = |k: &TestKernel| -> Array<MapData, DirectSlot> {
        let data = MapData::from_pin(k.kernel.pin_dir().join(maps::NET_V4_DIRECT)).expect("the pinned table");
        Array::try_from(aya::maps::Map::Array(data)).expect("CG_NET4_DIRECT is an array")
    };
    let named = |k: &TestKernel| table(k).get(&direct_slot(banned), 0).expect("the shared slot").address();

    // The banned address has the slot; the twin, which shares it, is looked up in the exact map.
    k.set_rules(&[ban.clone(), trusted.clone()]);
    assert_eq!(named(&k), Some(banned));
    assert_eq!(k.run(&udp(banned)), Action::Drop);
    assert_eq!(k.run(&udp(twin)), Action::Pass);
    assert_eq!((k.rule_counter(1).packets, k.rule_counter(2).packets), (1, 1));

    // A rule changed while the address sends applies to its next packet.
    k.set_rules(&[rule(1, &format!("{}/32", ip(banned)), NetAction::Allow, Scope::Sip), trusted.clone()]);
    assert_eq!(k.run(&udp(banned)), Action::Pass);
    assert_eq!(count(&k, Action::Pass, Reason::Allowed), 2);

    // Removed: the slot goes to the twin, with the twin's rule; the address meets no rule.
    k.set_rules(std::slice::from_ref(&trusted));
    assert_eq!(named(&k), Some(twin));
    assert_eq!(k.run(&udp(banned)), Action::Pass);
    assert_eq!(count(&k, Action::Pass, Reason::Clean), 1);
    assert_eq!(k.run(&udp(twin)), Action::Pass);
    assert_eq!(k.rule_counter(2).packets, 2);
    // Banned again: the slot stays the twin's, the ban is the exact map's, and both hold.
    k.set_rules(&[ban.clone(), trusted.clone()]);
    assert_eq!(named(&k), Some(twin));
    assert_eq!(k.run(&udp(banned)), Action::Drop);
    assert_eq!(k.run(&udp(twin)), Action::Pass);
    // (A rule removed and written again counts afresh.)
    assert_eq!((k.rule_counter(1).packets, k.rule_counter(2).packets), (1, 3));

    // The program reads the table: a slot written by hand to allow the banned address decides
    // it (the next load puts it right, below). Caught half written (an even version), the same
    // slot decides nothing: the exact map's ban holds.
    k.set_rules(std::slice::from_ref(&ban));
    assert_eq!(named(&k), Some(banned));
    let slot = direct_slot(banned);
    let held = table(&k).get(&slot, 0).expect("the slot");
    let allow = NetEntry { allow_rule: 2, prefix_len: 32, ..NetEntry::default() };
    let half = DirectSlot { tag: DirectSlot::tag_of(banned, held.version() + 1), entry: allow };
    table(&k).set(slot, half, 0).expect("writing the slot");
    assert_eq!(k.run(&udp(banned)), Action::Drop, "a slot being written is not read");
    let forged = DirectSlot { tag: DirectSlot::tag_of(banned, held.version() + 2), entry: allow };
    table(&k).set(slot, forged, 0).expect("writing the slot");
    assert_eq!(k.run(&udp(banned)), Action::Pass, "the program does not read the table");
    // What a daemon of an older release leaves: that slot, and one naming an address whose rule
    // it removed from the exact map without emptying the slot.
    let gone = [198, 51, 100, 7];
    let deny_all = NetEntry { deny_rule: 3, deny_scope: SCOPE_ALL, prefix_len: 32, ..NetEntry::default() };
    table(&k)
        .set(direct_slot(gone), DirectSlot { tag: DirectSlot::tag_of(gone, 1), entry: deny_all }, 0)
        .expect("writing the slot");
    let dir = k.kernel.pin_dir().to_owned();
    let _next = callguard::kernel::Kernel::load(&dir, &Config::default().tables).expect("a second load");
    assert_eq!(k.run(&udp(banned)), Action::Drop, "after the next load");
    assert_eq!(k.run(&udp(gone)), Action::Pass, "after the next load");
    let t = table(&k);
    let all: Vec<DirectSlot> = (0..DIRECT_SLOTS).map(|i| t.get(&i, 0).expect("a slot")).collect();
    let names: Vec<[u8; 4]> = all.iter().filter_map(DirectSlot::address).collect();
    assert_eq!(names, [banned], "only the one address of the exact map is named");
}

#[test]
fn allow_inside_deny_and_deny_inside_allow() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "198.18.0.0/15", NetAction::Deny, Scope::Sip),
        rule(2, "198.18.10.0/24", NetAction::Allow, Scope::Sip),
        rule(3, "198.18.10.128/26", NetAction::Deny, Scope::Sip),
        rule(4, "198.18.10.130/31", NetAction::Allow, Scope::Sip),
    ]);
    let cases = [
        ("198.19.200.1", Action::Drop, 1),
        ("198.18.10.1", Action::Pass, 2),
        ("198.18.10.129", Action::Drop, 3),
        ("198.18.10.131", Action::Pass, 4),
        ("198.18.10.200", Action::Pass, 2),
    ];
    for (src, want, rule_id) in cases {
        assert_eq!(k.run(&Frame::udp(src, SIP).build()), want, "{src}");
        assert_eq!(
            k.rule_counter(rule_id).packets,
            1 + u64::from(rule_id == 2 && src == "198.18.10.200"),
            "{src}"
        );
    }
    k.assert_counters(&[(Action::Drop, Reason::Denied, 2), (Action::Pass, Reason::Allowed, 3)]);
}

#[test]
fn allow_beats_deny_at_equal_prefix() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "2001:db8:5::/64", NetAction::Deny, Scope::All),
        rule(2, "2001:db8:5::/64", NetAction::Allow, Scope::Sip),
    ]);
    assert_eq!(k.run(&Frame::udp("2001:db8:5::1", SIP).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("2001:db8:5::1", 80).build()), Action::Pass);
    assert_eq!(k.rule_counter(2).packets, 1);
    assert_eq!(k.rule_counter(1).packets, 0);
}

#[test]
fn scope_sip_spares_other_ports_scope_all_does_not() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "198.18.1.0/24", NetAction::Deny, Scope::Sip),
        rule(2, "198.18.2.0/24", NetAction::Deny, Scope::All),
    ]);
    assert_eq!(k.run(&Frame::udp("198.18.1.1", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.1.1", 53).build()), Action::Pass);
    assert_eq!(k.run(&Frame::tcp("198.18.1.1", 443).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("198.18.1.1", 0).proto(ICMP).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("198.18.2.1", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.2.1", 53).build()), Action::Drop);
    assert_eq!(k.run(&Frame::tcp("198.18.2.1", 443).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.2.1", 0).proto(ICMP).build()), Action::Drop);
    k.assert_counters(&[(Action::Drop, Reason::Denied, 5), (Action::Pass, Reason::Unguarded, 3)]);
    assert_eq!((k.rule_counter(1).packets, k.rule_counter(2).packets), (1, 4));
}

#[test]
fn unguarded_ports_and_configured_ranges() {
    let cfg = Config::parse("[ports]\nudp = [\"5080-5090\"]\ntcp = [5061]\n").unwrap();
    let mut k = TestKernel::with_config(&cfg);
    k.set_rules(&[rule(1, "198.18.0.0/16", NetAction::Deny, Scope::Sip)]);
    assert_eq!(k.run(&Frame::udp("198.18.0.5", 5060).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("198.18.0.5", 5080).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.0.5", 5090).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.0.5", 5091).build()), Action::Pass);
    assert_eq!(k.run(&Frame::tcp("198.18.0.5", 5061).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.0.5", 5061).build()), Action::Pass);
    k.assert_counters(&[(Action::Drop, Reason::Denied, 3), (Action::Pass, Reason::Unguarded, 3)]);
}

#[test]
fn vlan_and_qinq_are_looked_through() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "198.18.7.0/24", NetAction::Deny, Scope::Sip),
        rule(2, "2001:db8:7::/48", NetAction::Deny, Scope::Sip),
    ]);
    for tags in [&[TPID_8021Q][..], &[TPID_8021AD, TPID_8021Q], &[TPID_8021Q, TPID_8021Q]] {
        assert_eq!(k.run(&Frame::udp("198.18.7.7", SIP).vlans(tags).build()), Action::Drop, "{tags:x?}");
        assert_eq!(k.run(&Frame::udp("2001:db8:7::7", SIP).vlans(tags).build()), Action::Drop, "{tags:x?}");
        assert_eq!(k.run(&Frame::udp("198.18.8.8", SIP).vlans(tags).build()), Action::Pass, "{tags:x?}");
    }
    // A third tag is beyond what the program walks: passed and counted, never dropped.
    let three = Frame::udp("198.18.7.7", SIP).vlans(&[TPID_8021AD, TPID_8021Q, TPID_8021Q]).build();
    assert_eq!(k.run(&three), Action::Pass);
    k.assert_counters(&[
        (Action::Drop, Reason::Denied, 6),
        (Action::Pass, Reason::Clean, 3),
        (Action::Pass, Reason::HeaderChainTooLong, 1),
    ]);
}

#[test]
fn ipv4_options_move_the_transport_header() {
    let mut k = TestKernel::new();
    k.set_rules(&[rule(1, "198.18.9.0/24", NetAction::Deny, Scope::Sip)]);
    for opts in [vec![1u8; 4], vec![1u8; 20], vec![1u8; 40]] {
        let mut f = Frame::udp("198.18.9.9", SIP);
        f.ipv4_options = opts.clone();
        assert_eq!(k.run(&f.build()), Action::Drop, "{} option bytes", opts.len());
        // The same options towards an unguarded port: the port is read after the options.
        f.dport = 5999;
        assert_eq!(k.run(&f.build()), Action::Pass, "{} option bytes", opts.len());
    }
    k.assert_counters(&[(Action::Drop, Reason::Denied, 3), (Action::Pass, Reason::Unguarded, 3)]);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let mut k = TestKernel::new();
    k.set_rules(&[rule(1, "2001:db8:e::/48", NetAction::Deny, Scope::Sip)]);
    let chains: [&[u8]; 4] = [
        &[ext::HOP_BY_HOP],
        &[ext::HOP_BY_HOP, ext::ROUTING, ext::DEST_OPTS],
        &[ext::DEST_OPTS, ext::DEST_OPTS, ext::DEST_OPTS, ext::DEST_OPTS],
        &[ext::HOP_BY_HOP, ext::DEST_OPTS, ext::ROUTING, ext::DEST_OPTS, ext::DEST_OPTS, ext::DEST_OPTS],
    ];
    for chain in chains {
        let mut f = Frame::udp("2001:db8:e::1", SIP);
        f.ipv6_ext = chain.to_vec();
        assert_eq!(k.run(&f.build()), Action::Drop, "{chain:?}");
        f.dport = 80;
        assert_eq!(k.run(&f.build()), Action::Pass, "{chain:?}");
    }
    k.assert_counters(&[(Action::Drop, Reason::Denied, 4), (Action::Pass, Reason::Unguarded, 4)]);
}

/// H4: seven or more extension headers hide the port from the program, and Linux delivers such a
/// packet all the same. The source is known, so deny-all rules still apply; from a source in
/// neither list it is dropped (it could be SIP to a guarded port), from an authorized one passed.
#[test]
fn a_long_ipv6_extension_chain_hides_nothing() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "2001:db8:a::/48", NetAction::Allow, Scope::Sip),
        rule(2, "2001:db8:e::/48", NetAction::Deny, Scope::All),
        rule(3, "2001:db8:d::/48", NetAction::Deny, Scope::Sip),
    ]);
    for n in [7, 12, 40] {
        for dport in [SIP, 80] {
            let mut f = Frame::udp("2001:db8:66::1", dport);
            f.ipv6_ext = vec![ext::DEST_OPTS; n];
            assert_eq!(k.run(&f.build()), Action::Drop, "{n} headers, port {dport}, no rule");
            f.src = "2001:db8:d::1".parse().unwrap();
            assert_eq!(k.run(&f.build()), Action::Drop, "{n} headers, port {dport}, denied (sip)");
            f.src = "2001:db8:e::1".parse().unwrap();
            assert_eq!(k.run(&f.build()), Action::Drop, "{n} headers, port {dport}, denied (all)");
            f.src = "2001:db8:a::1".parse().unwrap();
            assert_eq!(k.run(&f.build()), Action::Pass, "{n} headers, port {dport}, authorized");
        }
    }
    // A fragment header counts as one of the chain, as in the stack.
    let mut f = Frame::udp("2001:db8:66::1", SIP).fragment(0, true);
    f.ipv6_ext = vec![ext::DEST_OPTS; 6];
    assert_eq!(k.run(&f.build()), Action::Drop);
    k.assert_counters(&[
        (Action::Drop, Reason::HeaderChainTooLong, 13),
        (Action::Drop, Reason::Denied, 6),
        (Action::Pass, Reason::Allowed, 6),
    ]);
    assert_eq!(k.rule_counter(2).packets, 6, "deny-all rules apply before the chain is walked");

    // The operator can choose to pass them.
    let mut k = TestKernel::with_config(&Config::parse("[policy]\nipv6_long_chains = \"pass\"\n").unwrap());
    let mut f = Frame::udp("2001:db8:66::1", SIP);
    f.ipv6_ext = vec![ext::DEST_OPTS; 7];
    assert_eq!(k.run(&f.build()), Action::Pass);
    k.assert_counters(&[(Action::Pass, Reason::HeaderChainTooLong, 1)]);
}

#[test]
fn fragments_follow_the_policy_and_first_fragments_are_judged() {
    let mut k = TestKernel::new();
    k.set_rules(&[
        rule(1, "198.18.4.0/24", NetAction::Deny, Scope::Sip),
        rule(2, "198.18.5.0/24", NetAction::Deny, Scope::All),
        rule(3, "2001:db8:4::/48", NetAction::Deny, Scope::Sip),
    ]);
    // First fragments carry the transport header: judged like whole datagrams.
    assert_eq!(k.run(&Frame::udp("198.18.4.1", SIP).fragment(0, true).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("2001:db8:4::1", SIP).fragment(0, true).build()), Action::Drop);
    // Later fragments: default policy passes them, counted; scope all still drops.
    assert_eq!(k.run(&Frame::udp("198.18.4.1", SIP).fragment(185, false).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("2001:db8:4::1", SIP).fragment(185, true).build()), Action::Pass);
    assert_eq!(k.run(&Frame::udp("198.18.5.1", SIP).fragment(185, false).build()), Action::Drop);
    k.assert_counters(&[(Action::Drop, Reason::Denied, 3), (Action::Pass, Reason::Fragment, 2)]);

    let mut k = TestKernel::with_config(&Config::parse("[policy]\nfragments = \"drop\"\n").unwrap());
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).fragment(185, false).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("2001:db8:77::1", 80).fragment(1, false).build()), Action::Drop);
    k.assert_counters(&[(Action::Drop, Reason::Fragment, 2)]);
}

/// H2: the program reads only the first fragment of a datagram, so the rest of a fragmented
/// request (a User-Agent, a second To, anything) would reach the PBX unseen. From a source in
/// neither list, a fragmented datagram to a guarded UDP port is dropped unless its first
/// fragment is a SIP response; from an authorized source it passes.
#[test]
fn a_fragmented_sip_request_from_an_unknown_source_is_dropped() {
    let mut k = TestKernel::with_config(&TestKernel::quiet());
    k.set_rules(&[rule(1, "198.18.9.0/24", NetAction::Allow, Scope::Sip)]);
    let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1;branch=z9hG4bK1\r\n".as_slice();
    let not_sip = [0x55u8; 64];
    let cases: [(&str, &[u8], u16, Action, Reason); 9] = [
        ("198.18.77.1", b"OPTIONS sip:100@198.18.0.1 SIP/2.0\r\n", SIP, Action::Drop, Reason::Fragmented),
        ("2001:db8:77::1", b"INVITE sip:100@198.18.0.1 SIP/2.0\r\n", SIP, Action::Drop, Reason::Fragmented),
        ("198.18.77.1", b"REGISTER sip:x SIP/2.0\r\nUser-Agent: ", SIP, Action::Drop, Reason::Fragmented),
        // Not SIP at all, or a request line that ends in the next fragment.
        ("198.18.77.1", &not_sip, SIP, Action::Drop, Reason::Fragmented),
        ("198.18.77.1", b"INVITE sip:100@198.18.0.1 SIP/", SIP, Action::Drop, Reason::Fragmented),
        // A response (a large 200 OK with SDP from a trunk) is inspected on its first fragment.
        ("198.18.77.1", response, SIP, Action::Pass, Reason::Clean),
        ("2001:db8:77::1", response, SIP, Action::Pass, Reason::Clean),
        // Authorized sources and other ports are not concerned.
        ("198.18.9.9", b"INVITE sip:100@198.18.0.1 SIP/2.0\r\n", SIP, Action::Pass, Reason::Allowed),
        ("198.18.77.1", b"INVITE sip:100@198.18.0.1 SIP/2.0\r\n", 80, Action::Pass, Reason::Unguarded),
    ];
    for (n, (src, payload, port, action, reason)) in cases.into_iter().enumerate() {
        let before = k.counter(action, reason).packets;
        let f = Frame::udp(src, port).payload(payload).fragment(0, true).build();
        assert_eq!(k.run(&f), action, "case {n}: {src} {}", payload.escape_ascii());
        assert_eq!(k.counter(action, reason).packets, before + 1, "case {n}: counted as {reason:?}");
    }
    // The same requests whole are judged as usual.
    let whole = Frame::udp("198.18.77.1", SIP).payload(b"OPTIONS sip:100@198.18.0.1 SIP/2.0\r\n\r\n").build();
    assert_eq!(k.run(&whole), Action::Pass);

    // `sip.fragmented = "pass"`: the first fragment is inspected like a whole datagram.
    let mut cfg = TestKernel::quiet();
    cfg.sip.fragmented = callguard::config::PassDrop::Pass;
    let mut k = TestKernel::with_config(&cfg);
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).fragment(0, true).build()), Action::Pass);
    k.assert_counters(&[(Action::Pass, Reason::Clean, 1)]);
}

/// H3: RFC 3261 allows one To, From and Call-ID; of two, readers differ on which counts (the
/// program read the last To, the daemon the first), and one order or the other made an initial
/// INVITE look in-dialog to callguard. A request with two, in any mix of long and compact forms,
/// is dropped; a response is left alone (it answers the PBX's own request).
#[test]
fn a_request_with_two_to_from_or_call_id_headers_is_dropped() {
    let mut k = TestKernel::with_config(&TestKernel::quiet());
    let base = "INVITE sip:+882777@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\n\
                From: <sip:101@example>;tag=1\r\nTo: <sip:+882777@198.18.0.1>\r\nCall-ID: c1\r\n";
    for extra in
        ["t: <sip:x@y>;tag=zz", "TO: <sip:+882777@198.18.0.1>", "f: <sip:102@example>;tag=2", "i: c2"]
    {
        let payload = format!("{base}{extra}\r\nCSeq: 1 INVITE\r\n\r\n");
        let f = Frame::udp("198.18.77.1", SIP).payload(payload.as_bytes()).build();
        assert_eq!(k.run(&f), Action::Drop, "{extra}");
    }
    k.assert_counters(&[(Action::Drop, Reason::DuplicateHeader, 4)]);
    // One of each (compact forms included) passes; so does a response with two To.
    let single = format!("{base}CSeq: 1 INVITE\r\n\r\n").replace("To:", "t:");
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).payload(single.as_bytes()).build()), Action::Pass);
    let response = "SIP/2.0 200 OK\r\nTo: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\n\r\n";
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).payload(response.as_bytes()).build()), Action::Pass);
}

/// Two User-Agent headers: the program read the last, PBXs (Asterisk, Kamailio, FreeSWITCH) the
/// first, so a scanner's User-Agent followed by a phone's passed the signatures. Now the first
/// is the one read, and a second drops the request (`duplicate_header`), whichever comes first.
/// A vertical tab (`\n` ^ 1) right after a line break, in the same word, was read as a line
/// end, so `\x0bUser-Agent: …` gave the program a header the PBX never sees: tried at every
/// alignment of that line.
#[test]
fn a_second_user_agent_cannot_hide_a_scanner() {
    let mut k = TestKernel::with_config(&TestKernel::quiet());
    k.set_signatures(&callguard_tests::default_signatures());
    let request = |pad: usize, agents: &str| {
        format!(
            "OPTIONS sip:100@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\n\
             From: <sip:100@example>;tag=1\r\nTo: <sip:100@198.18.0.1>\r\nCall-ID: c{}\r\n\
             CSeq: 1 OPTIONS\r\n{agents}\r\n\r\n",
            "1".repeat(pad)
        )
    };
    let mut drops = 0;
    for pad in 0..8 {
        for agents in [
            "User-Agent: friendly-scanner\r\nUser-Agent: Polycom VVX 411",
            "User-Agent: Polycom VVX 411\r\nUser-Agent: friendly-scanner",
            "User-Agent: friendly-scanner\r\n\x0bUser-Agent: Polycom VVX 411",
        ] {
            let f = Frame::udp("198.18.77.1", SIP).payload(request(pad, agents).as_bytes()).build();
            assert_eq!(k.run(&f), Action::Drop, "pad {pad}: {agents:?}");
            drops += 1;
        }
        // One User-Agent, a phone's, after a line that starts with a vertical tab: passes.
        let f = Frame::udp("198.18.77.1", SIP)
            .payload(request(pad, "X-Note: a\r\n\x0bb\r\nUser-Agent: Polycom VVX 411").as_bytes())
            .build();
        assert_eq!(k.run(&f), Action::Pass, "pad {pad}");
    }
    // The scanner's first: its signature; the phone's first: the duplicate.
    k.assert_counters(&[
        (Action::Drop, Reason::Signature, drops * 2 / 3),
        (Action::Drop, Reason::DuplicateHeader, drops / 3),
        (Action::Pass, Reason::Clean, 8),
    ]);
}

/// Kamailio reads `To          : <…>` (any whitespace before the colon) as a To header; the
/// program skips at most eight spaces or tabs. So a first To past that, untagged, then a tagged
/// one, made an initial INVITE look in-dialog to the program alone (tests/kamailio, case d6), and
/// a User-Agent written so was out of the signatures' sight. A request with such a line is
/// dropped; up to eight spaces are read as the header they are.
#[test]
fn a_header_line_the_program_cannot_read_is_dropped() {
    let mut k = TestKernel::with_config(&TestKernel::quiet());
    k.set_signatures(&callguard_tests::default_signatures());
    let base = "INVITE sip:+882777@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\n\
                From: <sip:101@example>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n";
    for line in [
        "To          : <sip:+882777@198.18.0.1>\r\nTo: <sip:+882777@198.18.0.1>;tag=t2",
        "To: <sip:+882777@198.18.0.1>\r\nUser-Agent\t\t\t\t\t\t\t\t\t: friendly-scanner",
        "To: <sip:+882777@198.18.0.1>\r\nFrom <sip:a@b>",
    ] {
        let payload = format!("{base}{line}\r\n\r\n");
        let f = Frame::udp("198.18.77.1", SIP).payload(payload.as_bytes()).build();
        assert_eq!(k.run(&f), Action::Drop, "{line}");
    }
    k.assert_counters(&[(Action::Drop, Reason::AmbiguousHeader, 3)]);
    let eight = format!("{base}To        : <sip:+882777@198.18.0.1>\r\n\r\n");
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).payload(eight.as_bytes()).build()), Action::Pass);
    let signed = format!("{base}To: <sip:1@h>\r\nUser-Agent        : friendly-scanner\r\n\r\n");
    assert_eq!(k.run(&Frame::udp("198.18.77.1", SIP).payload(signed.as_bytes()).build()), Action::Drop);
    assert_eq!(k.counter(Action::Drop, Reason::Signature).packets, 1, "eight tabs: the signature sees it");
}

/// H3 (c): the program reads the payload only as far as the UDP length says, as the stack
/// delivers it: bytes an attacker appends past it (which the stack trims) cannot add a header.
#[test]
fn bytes_past_the_udp_length_are_not_read() {
    let mut k = TestKernel::with_config(&TestKernel::quiet());
    let sigs = callguard_tests::default_signatures();
    k.set_signatures(&sigs);
    let head = b"OPTIONS sip:100@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2\r\nCSeq: 1 OPTIONS\r\n";
    let tail = b"User-Agent: friendly-scanner\r\n\r\n";
    let mut f = Frame::udp("198.18.77.1", SIP).payload(&[head.as_slice(), tail].concat());
    // The whole datagram: the signature is seen.
    assert_eq!(k.run(&f.build()), Action::Drop);
    // The UDP length ends before the User-Agent: what the stack delivers has none.
    f.udp_len = Some((8 + head.len()) as u16);
    assert_eq!(k.run(&f.build()), Action::Pass);
    k.assert_counters(&[(Action::Drop, Reason::Signature, 1), (Action::Pass, Reason::Clean, 1)]);
}

#[test]
fn truncated_at_every_header_boundary_is_never_dropped() {
    let mut k = TestKernel::new();
    // Even with every source denied (scope sip), a frame cut short is passed and counted.
    k.set_rules(&[
        rule(1, "0.0.0.0/0", NetAction::Deny, Scope::Sip),
        rule(2, "::/0", NetAction::Deny, Scope::Sip),
    ]);
    let mut v4 = Frame::udp("198.18.1.1", SIP).vlans(&[TPID_8021AD, TPID_8021Q]);
    v4.ipv4_options = vec![1; 8];
    let mut v6 = Frame::tcp("2001:db8::5", SIP).vlans(&[TPID_8021Q]);
    v6.ipv6_ext = vec![ext::HOP_BY_HOP, ext::DEST_OPTS];
    let mut runs = 0;
    for f in [v4, v6] {
        let full = f.build();
        let bounds = frame::boundaries(&f);
        let transport = bounds[bounds.len() - 2];
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (EINVAL), so the
        // shortest frame tried is the bare Ethernet header.
        for cut in 14..transport + 4 {
            assert_eq!(k.run(&full[..cut]), Action::Pass, "{} cut at {cut}", f.src);
            runs += 1;
        }
        // Cut inside the transport header, beyond the ports: the port is known but the header
        // is short. Default policy passes it.
        assert_eq!(k.run(&full[..transport + 6]), Action::Pass);
        runs += 1;
        // The whole frame is dropped: the rule is there.
        assert_eq!(k.run(&full), Action::Drop);
    }
    let total: u64 =
        k.counters().iter().filter(|(a, _, _)| *a == Action::Pass).map(|(_, _, c)| c.packets).sum();
    assert_eq!(total, runs);
    assert_eq!(count(&k, Action::Drop, Reason::Denied), 2);
    for reason in [Reason::TruncatedL2, Reason::TruncatedL3, Reason::TruncatedL4, Reason::BadL4Header] {
        assert!(count(&k, Action::Pass, reason) > 0, "{reason:?}");
    }
}

#[test]
fn malformed_transport_headers_follow_the_policy() {
    let mut bad_udp = Frame::udp("198.18.1.1", SIP);
    bad_udp.udp_len = Some(4);
    let mut long_udp = Frame::udp("198.18.1.1", SIP);
    long_udp.udp_len = Some(1400);
    let mut bad_tcp = Frame::tcp("2001:db8::1", SIP);
    bad_tcp.tcp_doff = Some(3);
    let mut unguarded = bad_udp.clone();
    unguarded.dport = 53;

    let mut k = TestKernel::new();
    for f in [&bad_udp, &long_udp, &bad_tcp, &unguarded] {
        assert_eq!(k.run(&f.build()), Action::Pass);
    }
    k.assert_counters(&[(Action::Pass, Reason::BadL4Header, 4)]);

    let mut k = TestKernel::with_config(&Config::parse("[policy]\nmalformed = \"drop\"\n").unwrap());
    for f in [&bad_udp, &long_udp, &bad_tcp] {
        assert_eq!(k.run(&f.build()), Action::Drop);
    }
    assert_eq!(k.run(&unguarded.build()), Action::Pass, "an unguarded port is never dropped");
    k.assert_counters(&[(Action::Drop, Reason::BadL4Header, 3), (Action::Pass, Reason::BadL4Header, 1)]);
}

#[test]
fn authorized_networks_still_get_malformed_checks() {
    let mut k = TestKernel::with_config(&Config::parse("[policy]\nmalformed = \"drop\"\n").unwrap());
    k.set_rules(&[rule(1, "198.18.0.0/24", NetAction::Allow, Scope::Sip)]);
    let mut bad = Frame::udp("198.18.0.1", SIP);
    bad.udp_len = Some(3);
    assert_eq!(k.run(&bad.build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.0.1", SIP).build()), Action::Pass);
    k.assert_counters(&[(Action::Drop, Reason::BadL4Header, 1), (Action::Pass, Reason::Allowed, 1)]);
}

#[test]
fn non_ip_and_bad_ip_headers_pass() {
    let mut k = TestKernel::new();
    k.set_rules(&[rule(1, "0.0.0.0/0", NetAction::Deny, Scope::All)]);
    let mut arp = Frame::udp("198.18.0.1", SIP).build();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(k.run(&arp), Action::Pass);
    let mut short_ihl = Frame::udp("198.18.0.1", SIP).build();
    short_ihl[14] = 0x44;
    assert_eq!(k.run(&short_ihl), Action::Pass);
    let mut wrong_version = Frame::udp("198.18.0.1", SIP).build();
    wrong_version[14] = 0x65;
    assert_eq!(k.run(&wrong_version), Action::Pass);
    k.assert_counters(&[(Action::Pass, Reason::NotIp, 1), (Action::Pass, Reason::BadL3Header, 2)]);
}

#[test]
fn expiry_is_enforced_by_the_kernel_itself() {
    let mut k = TestKernel::new();
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    let mut deny = rule(1, "198.18.50.0/24", NetAction::Deny, Scope::Sip);
    deny.expires_at = Some(soon);
    // An allow that expires uncovers the deny at the same prefix; an expiring /28 deny inside
    // a permanent /16 allow falls back to the /16 once it expires.
    let mut allow = rule(2, "198.18.60.0/24", NetAction::Allow, Scope::Sip);
    allow.expires_at = Some(soon);
    let deny_same = rule(3, "198.18.60.0/24", NetAction::Deny, Scope::Sip);
    let outer = rule(4, "198.19.0.0/16", NetAction::Allow, Scope::Sip);
    let mut inner = rule(5, "198.19.1.0/28", NetAction::Deny, Scope::Sip);
    inner.expires_at = Some(soon);
    k.set_rules(&[deny, allow, deny_same, outer, inner]);

    let probe = |k: &mut TestKernel| {
        ["198.18.50.1", "198.18.60.1", "198.19.1.1"].map(|src| k.run(&Frame::udp(src, SIP).build()))
    };
    assert_eq!(probe(&mut k), [Action::Drop, Action::Pass, Action::Drop]);
    // No daemon runs here: only the program can notice the time.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(probe(&mut k), [Action::Pass, Action::Drop, Action::Pass]);
    assert_eq!([1, 2, 3, 4, 5].map(|id| k.rule_counter(id).packets), [1, 1, 1, 1, 1]);
    k.assert_counters(&[
        (Action::Drop, Reason::Denied, 3),
        (Action::Pass, Reason::Allowed, 2),
        (Action::Pass, Reason::Clean, 1),
    ]);
}

#[test]
fn rule_removal_takes_effect_for_the_next_packet() {
    let mut k = TestKernel::new();
    let f = Frame::udp("2001:db8:99::1", SIP).build();
    k.set_rules(&[rule(1, "2001:db8:99::/64", NetAction::Deny, Scope::Sip)]);
    assert_eq!(k.run(&f), Action::Drop);
    k.set_rules(&[]);
    assert_eq!(k.run(&f), Action::Pass);
    assert!(k.kernel.nets().is_empty());
}

#[test]
fn a_new_rule_never_inherits_the_counters_of_a_deleted_one() {
    let mut k = TestKernel::new();
    let f = Frame::udp("198.18.30.1", SIP).build();
    k.set_rules(&[rule(1, "198.18.30.0/24", NetAction::Deny, Scope::Sip)]);
    for _ in 0..3 {
        assert_eq!(k.run(&f), Action::Drop);
    }
    assert_eq!(k.rule_counter(1).packets, 3);
    k.set_rules(&[]);
    // The next rule gets the freed counter slot; it must start from zero.
    k.set_rules(&[rule(2, "198.18.30.0/24", NetAction::Allow, Scope::Sip)]);
    assert_eq!(k.run(&f), Action::Pass);
    assert_eq!((k.rule_counter(1).packets, k.rule_counter(2).packets), (0, 1));
}

/// A feed's deny inside an allow carries the allow's id in its own entry (it yields to it):
/// when that entry goes, the allow still counts in its own, and a new rule never takes its
/// counter slot.
#[test]
fn an_allow_carried_into_a_listed_deny_keeps_its_counter() {
    let mut k = TestKernel::new();
    let allow = rule(1, "198.18.30.0/24", NetAction::Allow, Scope::Sip);
    let listed =
        NetRule { list: Some("firehol".into()), ..rule(2, "198.18.30.7/32", NetAction::Deny, Scope::Sip) };
    k.set_rules(&[allow.clone(), listed]);
    assert_eq!(k.run(&Frame::udp("198.18.30.7", SIP).build()), Action::Pass, "the listed address yields");
    assert_eq!(k.run(&Frame::udp("198.18.30.9", SIP).build()), Action::Pass);
    assert_eq!(k.rule_counter(1).packets, 2);
    // The feed drops the address; a new rule comes.
    k.set_rules(std::slice::from_ref(&allow));
    k.set_rules(&[allow, rule(3, "198.18.31.0/24", NetAction::Deny, Scope::Sip)]);
    assert_eq!(k.run(&Frame::udp("198.18.31.1", SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.30.9", SIP).build()), Action::Pass);
    assert_eq!((k.rule_counter(1).packets, k.rule_counter(3).packets), (3, 1));
}

/// An upgrade over maps another callguard version pinned (the signature table with 132-byte
/// rows, sources in a plain hash of 2,048): the load builds a whole new set of maps beside them
/// and leaves the old pins alone; the settle carries the ban the old table holds, which the new
/// program enforces, and leaves every pin with this build's layout and no staging directory (nor
/// what a crashed upgrade left in it).
#[test]
fn maps_of_another_layout_are_rebuilt_beside_and_their_state_carried() {
    let dir = PathBuf::from("/sys/fs/bpf").join(unique("callguard-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let old: Array<MapData, [u8; 132]> = Array::create(8192, 0).unwrap();
    old.pin(dir.join(maps::SIG_DFA)).unwrap();
    let banned = "198.18.40.7";
    let mut sources: HashMap<MapData, [u8; 16], SourceState> = HashMap::create(2048, 0).unwrap();
    let state =
        SourceState { banned_until: callguard::clock::boot_ns() + 3_600_000_000_000, ..Default::default() };
    sources.insert(source_key_v4([198, 18, 40, 7]), state, 0).unwrap();
    sources.pin(dir.join(maps::SOURCES)).unwrap();
    // What a daemon killed during an earlier upgrade left.
    let crashed = dir.join(format!("{}_1", upgrade::STAGING));
    std::fs::create_dir(&crashed).unwrap();
    let leftover: Array<MapData, u32> = Array::create(1, 0).unwrap();
    leftover.pin(crashed.join("CG_LEFTOVER")).unwrap();
    let shape = |name: &str| {
        let i = MapInfo::from_pin(dir.join(name)).unwrap();
        (i.value_size(), i.max_entries())
    };

    let mut k = TestKernel::in_dir(dir.clone(), &Config::default());
    assert_eq!(
        shape(maps::SIG_DFA),
        (132, 8192),
        "the running program's maps stay as they are until the swap"
    );
    let staging = dir.join(format!("{}_2", upgrade::STAGING));
    assert!(staging.join(maps::SIG_DFA).exists(), "the new maps are pinned beside the old");
    assert!(
        crashed.join("CG_LEFTOVER").exists(),
        "a crashed upgrade's pins stay until every link runs the new program"
    );
    let up = k.kernel.settle().unwrap().expect("an upgrade");
    let changed: Vec<&str> = up.changed.iter().map(|c| c.map.as_str()).collect();
    assert_eq!(changed, [maps::SIG_DFA, maps::SOURCES]);
    let carried = up.carried.iter().find(|c| c.map == maps::SOURCES).unwrap();
    assert_eq!((carried.entries, carried.not_carried.as_deref()), (1, None));
    assert_eq!(k.run(&Frame::udp(banned, SIP).build()), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.40.8", SIP).build()), Action::Pass);
    assert_eq!(count(&k, Action::Drop, Reason::Banned), 1);
    assert_eq!(shape(maps::SIG_DFA).0 as usize, size_of::<DfaBank>());
    assert_eq!(shape(maps::SOURCES), (size_of::<SourceState>() as u32, maps::SOURCES_MAX));
    let dirs: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert!(dirs.is_empty(), "staging directories left: {dirs:?}");
    assert_eq!(k.kernel.settle().unwrap(), None, "one upgrade, settled once");
}
