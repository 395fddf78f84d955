//! `cargo xtask demo`: callguard in front of a UDP "PBX" listener, in two network namespaces
//! joined by a veth pair. A peer with several source addresses sends SIP-port and other traffic;
//! the demo prints what arrived and callguard's counters. A second act plays a SIP scanner and a
//! REGISTER flood next to a phone: a signature drops the scanner and bans it, so its next tool is
//! dropped too; the flood is rate-limited, then banned; the phone gets through. Then the
//! demo removes everything it made.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use callguard_tests::{
    netns::{Instance, Topology},
    sipmsg::{self, SvTool},
};

const PER_SOURCE: usize = 50;

fn main() {
    println!("== callguard demo: namespaces, veth pair, XDP on the PBX side ==\n");
    let t = Topology::new();
    println!("pbx namespace  {} ({}, {}) on {}", t.pbx.name, Topology::PBX_V4, Topology::PBX_V6, t.pbx_if);
    println!(
        "peer namespace {} (sources {:?} {:?})\n",
        t.peer.name,
        Topology::SOURCES_V4,
        Topology::SOURCES_V6
    );
    // Short ban delay so the second act shows a ban within seconds (default: 10 s).
    let inst = Instance::new(
        &t.pbx,
        &t.pbx_if,
        "[rate]\nregister = { rate = 5, burst = 10 }\nban_after_secs = 1\n[events]\nsample = 25\n",
    );
    let daemon = inst.start();
    println!("$ callguard status");
    print!("{}", inst.cli(&["status"]));

    let rules: [&[&str]; 5] = [
        &["net", "deny", "198.18.0.10", "--comment", "scanner"],
        &["net", "deny", "198.18.0.12/31", "--scope", "all", "--comment", "hostile network, every port"],
        &["net", "allow", "198.18.0.13", "--comment", "trunk provider inside it"],
        &["net", "deny", "2001:db8::10/127", "--expires", "1h", "--comment", "brute force"],
        &["net", "allow", "2001:db8::11", "--comment", "office phone"],
    ];
    println!();
    for r in rules {
        println!("$ callguard {}", r.join(" "));
        print!("{}", inst.cli(r));
    }
    println!("\n$ callguard net list");
    print!("{}", inst.cli(&["net", "list"]));

    let mut listeners = Vec::new();
    for port in [5060u16, 5999] {
        for host in [Topology::PBX_V4, Topology::PBX_V6] {
            let s = t.pbx.udp(SocketAddr::new(host.parse().unwrap(), port));
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            listeners.push((port, s));
        }
    }
    let sources: Vec<&str> = Topology::SOURCES_V4.iter().chain(&Topology::SOURCES_V6).copied().collect();
    for src in &sources {
        let ip: IpAddr = src.parse().unwrap();
        let dst: IpAddr =
            if ip.is_ipv4() { Topology::PBX_V4.parse().unwrap() } else { Topology::PBX_V6.parse().unwrap() };
        let sock = t.peer.udp(SocketAddr::new(ip, 0));
        for port in [5060u16, 5999] {
            for _ in 0..PER_SOURCE {
                sock.send_to(b"OPTIONS sip:100@pbx SIP/2.0\r\n\r\n", SocketAddr::new(dst, port)).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    let mut got: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    for (port, s) in &listeners {
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            *got.entry((from.ip(), *port)).or_default() += 1;
        }
    }
    println!("\nUDP sent from the peer, received by the PBX namespace:");
    println!("{:<16} {:>14} {:>14}", "source", "to 5060 (SIP)", "to 5999");
    for src in &sources {
        let ip: IpAddr = src.parse().unwrap();
        let cell = |port| format!("{}/{PER_SOURCE}", got.get(&(ip, port)).copied().unwrap_or(0));
        println!("{src:<16} {:>14} {:>14}", cell(5060), cell(5999));
    }
    println!("\n$ callguard net check 198.18.0.13");
    print!("{}", inst.cli(&["net", "check", "198.18.0.13"]));

    println!("\n== act 2: a SIP scanner and a REGISTER flood, next to a phone ==\n");
    let (v4, v6) = (Topology::PBX_V4, Topology::PBX_V6);
    let acts: [(&str, &str, Vec<u8>, usize, u64); 4] = [
        (
            "sipvicious svmap OPTIONS",
            "198.18.0.11",
            sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", v4, false),
            20,
            10,
        ),
        (
            "then svcrack -c (no signature at all)",
            "198.18.0.11",
            sipmsg::sipvicious(SvTool::Svcrack, "REGISTER", "100", v4, true),
            20,
            10,
        ),
        (
            "REGISTER flood, 200/s for 2 s",
            "2001:db8::12",
            sipmsg::sipvicious(SvTool::Svcrack, "REGISTER", "100", v6, true),
            400,
            5,
        ),
        ("a phone's INVITE", "198.18.0.2", sipmsg::phones().remove(0).1, 20, 10),
    ];
    println!("{:<38} {:<14} {:>10}", "traffic", "source", "received");
    for (what, src, msg, n, gap_ms) in acts {
        let ip: IpAddr = src.parse().unwrap();
        let dst: IpAddr = if ip.is_ipv4() { v4.parse().unwrap() } else { v6.parse().unwrap() };
        let sock = t.peer.udp(SocketAddr::new(ip, 0));
        for _ in 0..n {
            sock.send_to(&msg, SocketAddr::new(dst, 5060)).unwrap();
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        let mut received = 0;
        for (port, s) in &listeners {
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                if *port == 5060 && from.ip() == ip {
                    received += 1;
                }
            }
        }
        println!("{what:<38} {src:<14} {:>10}", format!("{received}/{n}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    println!("\n$ callguard net list          (the scanner's and the flood's bans, origin auto)");
    print!("{}", inst.cli(&["net", "list", "--allowed", "false"]));
    println!("\n$ callguard events            (bans, and the first sampled drop of each reason)");
    let events = inst.cli(&["events"]);
    let mut seen = std::collections::BTreeSet::new();
    for l in events.lines() {
        let mut f = l.split_whitespace().skip(1);
        let (kind, reason) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if kind == "ban" || seen.insert(reason.to_owned()) {
            println!("{l}");
        }
    }
    println!("\n$ callguard stats");
    print!("{}", inst.cli(&["stats"]));
    daemon.stop();
    println!("\ndaemon stopped; removing the namespaces and pins.");
}
