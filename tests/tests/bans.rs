//! Automatic bans end to end: the daemon guards one end of a veth pair; sources on the other end
//! flood REGISTER or scan extensions. The kernel drops and bans, the daemon stores each ban as a
//! rule that `callguard net list` shows and that can be deleted like any other, and escalates to
//! the /24 when enough of its sources are banned. Namespaces, daemon and pins are removed when
//! the test ends, passed or failed.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use callguard_tests::{
    netns::{Instance, Topology, reason_packets},
    sipmsg::{self, SvTool},
};

const SIP: u16 = 5060;

fn pbx_addr(src: &str) -> SocketAddr {
    let src: IpAddr = src.parse().unwrap();
    let dst = if src.is_ipv4() { Topology::PBX_V4 } else { Topology::PBX_V6 };
    SocketAddr::new(dst.parse().unwrap(), SIP)
}

/// Sends `msgs` from `src`, one every `gap`.
fn send(t: &Topology, src: &str, msgs: &[Vec<u8>], gap: Duration) {
    let sock = t.peer.udp(SocketAddr::new(src.parse().unwrap(), 0));
    for m in msgs {
        sock.send_to(m, pbx_addr(src)).unwrap();
        std::thread::sleep(gap);
    }
}

/// Datagrams waiting on `sock`, by source address.
fn drain(sock: &UdpSocket) -> std::collections::BTreeMap<IpAddr, usize> {
    let mut got = std::collections::BTreeMap::new();
    let mut buf = [0u8; 2048];
    while let Ok((_, from)) = sock.recv_from(&mut buf) {
        *got.entry(from.ip()).or_default() += 1;
    }
    got
}

fn auto_rules(inst: &Instance) -> Vec<serde_json::Value> {
    let rules: Vec<serde_json::Value> =
        serde_json::from_str(&inst.cli(&["net", "list", "--json"])).expect("net list json");
    rules.into_iter().filter(|r| r["origin"] == "auto").collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn floods_are_banned_escalated_to_the_24_and_bans_are_ordinary_rules() {
    let t = Topology::new();
    let inst = Instance::new(
        &t.pbx,
        &t.pbx_if,
        "[rate]\nregister = { rate = 5, burst = 5 }\nban_after_secs = 1\nban_secs = 600\n\
         escalate_after = 3\nescalate_ban_secs = 900\n[events]\nsample = 20\n",
    );
    let _daemon = inst.start();
    // Escalation counts only sources proven real: each flooder first dials a barred number and
    // acknowledges the 403, as a real SIP stack does (a forged source could not).
    inst.cli(&[
        "api",
        "POST",
        "/api/disallowed_codes",
        r#"{"number_prefix": "+882", "description": "satellite"}"#,
    ]);
    for src in ["198.18.0.10", "198.18.0.11", "198.18.0.12"] {
        callguard_tests::netns::acknowledge_a_403(&t.peer, src, Topology::PBX_V4, "+882777");
    }
    wait_for("three proofs", || inst.stats()["slow_path"]["proofs"] == 3);
    let v4 = t.pbx.udp(pbx_addr("198.18.0.2"));
    let v6 = t.pbx.udp(pbx_addr("2001:db8::2"));
    for s in [&v4, &v6] {
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    }
    let register = sipmsg::sipvicious(SvTool::Svcrack, "REGISTER", "100", Topology::PBX_V4, true);
    let flood: Vec<Vec<u8>> = vec![register.clone(); 300]; // 300 x 5 ms: 1.5 s at 200/s

    // Two sources flood: each is rate-limited, then banned; no escalation yet.
    for src in ["198.18.0.10", "198.18.0.11"] {
        send(&t, src, &flood, Duration::from_millis(5));
    }
    wait_for("two automatic bans", || auto_rules(&inst).len() == 2);
    let got = drain(&v4);
    for src in ["198.18.0.10", "198.18.0.11"] {
        let n = got.get(&src.parse::<IpAddr>().unwrap()).copied().unwrap_or(0);
        // The burst plus about 5/s for the ~1 s before the ban; never the flood.
        assert!((5..=20).contains(&n), "{src}: {n} of 300 reached the PBX");
    }
    let stats = inst.stats();
    assert!(
        reason_packets(&stats, "drop", "rate") > 0 && reason_packets(&stats, "drop", "banned") > 0,
        "{stats}"
    );

    // A third source in the same /24: banned, and the /24 with it.
    send(&t, "198.18.0.12", &flood, Duration::from_millis(5));
    wait_for("escalation to the /24", || auto_rules(&inst).iter().any(|r| r["cidr"] == "198.18.0.0/24"));
    let rules = auto_rules(&inst);
    let cidrs: Vec<&str> = rules.iter().map(|r| r["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["198.18.0.10/32", "198.18.0.11/32", "198.18.0.12/32", "198.18.0.0/24"]);
    assert!(rules.iter().all(|r| r["action"] == "deny" && r["expires_at"].is_string()), "{rules:?}");
    let _ = drain(&v4);

    // The escalated /24 now stops a neighbour that never flooded; IPv6 is unaffected.
    let phone = sipmsg::phones().remove(5).1; // a REGISTER from a desk phone
    send(&t, "198.18.0.13", std::slice::from_ref(&phone), Duration::ZERO);
    send(&t, "2001:db8::10", std::slice::from_ref(&phone), Duration::ZERO);
    assert_eq!(drain(&v4).len(), 0);
    assert_eq!(drain(&v6).len(), 1);

    // Bans are rules like any other: deleting the /24 and one source lifts them.
    inst.cli(&["net", "del", "198.18.0.0/24"]);
    inst.cli(&["net", "del", "198.18.0.10/32"]);
    send(&t, "198.18.0.13", std::slice::from_ref(&phone), Duration::ZERO);
    send(&t, "198.18.0.10", std::slice::from_ref(&phone), Duration::ZERO);
    send(&t, "198.18.0.11", &[phone], Duration::ZERO);
    let got = drain(&v4);
    assert_eq!(got.len(), 2, "{got:?}: .13 and .10 pass, .11 stays banned");
    assert!(!got.contains_key(&"198.18.0.11".parse::<IpAddr>().unwrap()));

    // The bans were reported as events, with what the daemon did.
    let events: Vec<serde_json::Value> = inst
        .cli(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    let bans: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "ban").collect();
    assert_eq!(bans.len(), 3, "{events:?}");
    assert!(bans[2]["detail"].as_str().unwrap().contains("escalated: deny 198.18.0.0/24"), "{bans:?}");
    assert!(events.iter().any(|e| e["kind"] == "drop" && e["reason"] == "rate"));
}

#[test]
fn an_extension_scan_is_banned_as_its_64() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "[enumeration]\nusers = 10\nwindow_secs = 60\n");
    let _daemon = inst.start();
    let v6 = t.pbx.udp(pbx_addr("2001:db8::2"));
    v6.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // svwar -c: no User-Agent, no "sipvicious"; one extension after the other.
    let scan: Vec<Vec<u8>> = (100..160)
        .map(|ext| sipmsg::sipvicious(SvTool::Svwar, "REGISTER", &ext.to_string(), Topology::PBX_V6, true))
        .collect();
    send(&t, "2001:db8::11", &scan, Duration::from_millis(2));
    wait_for("the ban", || !auto_rules(&inst).is_empty());
    let rules = auto_rules(&inst);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["cidr"], "2001:db8::/64");
    assert!(rules[0]["comment"].as_str().unwrap().contains("distinct To values"), "{rules:?}");
    let got = drain(&v6).values().sum::<usize>();
    assert!((10..=14).contains(&got), "{got} of 60 extensions reached the PBX");
}
