//! Integration tests: the daemon guards one end of a veth pair between two network namespaces;
//! a peer with several IPv4 and IPv6 source addresses sends UDP and TCP to guarded and unguarded
//! ports. Each test asserts exactly which datagrams arrive and that the counters equal what was
//! sent. Everything (namespaces, daemon, pins) is removed when a test ends, passed or failed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use callguard_tests::netns::{Instance, Topology, reason_packets};

const GUARDED: u16 = 5060;
const OTHER: u16 = 5999;
const PER_SOURCE: usize = 20;

/// UDP listeners on the PBX, one per (family, port).
struct Listeners(Vec<(u16, UdpSocket)>);

impl Listeners {
    fn new(t: &Topology) -> Self {
        let mut v = Vec::new();
        for port in [GUARDED, OTHER] {
            for host in [Topology::PBX_V4, Topology::PBX_V6] {
                let s = t.pbx.udp(SocketAddr::new(host.parse().unwrap(), port));
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                v.push((port, s));
            }
        }
        Self(v)
    }

    /// Datagrams received since the last call, by (source address, port).
    fn drain(&self) -> BTreeMap<(IpAddr, u16), usize> {
        let mut got = BTreeMap::new();
        let mut buf = [0u8; 2048];
        for (port, s) in &self.0 {
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                *got.entry((from.ip(), *port)).or_default() += 1;
            }
        }
        got
    }
}

/// Sends `n` datagrams from `src` to the PBX's address of the same family on `port`.
fn send(t: &Topology, src: &str, port: u16, n: usize) {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr =
        if src.is_ipv4() { Topology::PBX_V4.parse().unwrap() } else { Topology::PBX_V6.parse().unwrap() };
    let sock = t.peer.udp(SocketAddr::new(src, 0));
    let payload = b"OPTIONS sip:100@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2\r\n\r\n";
    for _ in 0..n {
        sock.send_to(payload, SocketAddr::new(dst, port)).unwrap();
        // Paced so that no socket buffer overflows: every loss must be callguard's.
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn rule_packets(stats: &serde_json::Value, cidr: &str) -> u64 {
    stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cidr"] == cidr)
        .map_or(0, |r| r["packets"].as_u64().unwrap())
}

#[test]
fn exactly_the_denied_traffic_is_dropped() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    inst.cli(&["net", "deny", "198.18.0.10"]);
    inst.cli(&["net", "deny", "198.18.0.12/31", "--scope", "all"]);
    inst.cli(&["net", "allow", "198.18.0.13"]);
    inst.cli(&["net", "deny", "2001:db8::10/127"]);
    inst.cli(&["net", "allow", "2001:db8::11"]);
    let listeners = Listeners::new(&t);
    let tcp = t.pbx.tcp_listener(SocketAddr::new(Topology::PBX_V4.parse().unwrap(), GUARDED));
    let tcp_other = t.pbx.tcp_listener(SocketAddr::new(Topology::PBX_V4.parse().unwrap(), OTHER));

    let sources = Topology::SOURCES_V4.iter().chain(&Topology::SOURCES_V6);
    for src in sources.clone() {
        send(&t, src, GUARDED, PER_SOURCE);
        send(&t, src, OTHER, PER_SOURCE);
    }
    let got = listeners.drain();
    // What must arrive: (source, port) → datagrams.
    let expect = |src: &str, port: u16| -> usize {
        let dropped =
            matches!((src, port), ("198.18.0.10", GUARDED) | ("198.18.0.12", _) | ("2001:db8::10", GUARDED));
        if dropped { 0 } else { PER_SOURCE }
    };
    for src in sources {
        for port in [GUARDED, OTHER] {
            let ip: IpAddr = src.parse().unwrap();
            assert_eq!(got.get(&(ip, port)).copied().unwrap_or(0), expect(src, port), "{src} → port {port}");
        }
    }
    // TCP: a connection from a scope-sip denied source reaches port 5999 but not 5060; scope all
    // stops both; the allowed host inside the denied /31 connects everywhere.
    let timeout = Duration::from_millis(500);
    let pbx = |port| SocketAddr::new(Topology::PBX_V4.parse().unwrap(), port);
    let connects = |src: &str, port| t.peer.tcp_connects(src.parse().unwrap(), pbx(port), timeout);
    assert!(!connects("198.18.0.10", GUARDED));
    assert!(connects("198.18.0.10", OTHER));
    assert!(!connects("198.18.0.12", OTHER));
    assert!(connects("198.18.0.13", GUARDED));
    assert!(connects("198.18.0.11", GUARDED));
    drop((tcp, tcp_other));

    // The counters equal what was sent: per rule, UDP datagrams plus the one SYN of each
    // refused connection (the timeout is shorter than the first SYN retransmission).
    let stats = inst.stats();
    let n = PER_SOURCE as u64;
    assert_eq!(rule_packets(&stats, "198.18.0.10/32"), n + 1);
    assert_eq!(rule_packets(&stats, "198.18.0.12/31"), 2 * n + 1);
    assert_eq!(rule_packets(&stats, "2001:db8::10/127"), n);
    // Allowed: 20 UDP to the guarded port plus the accepted connection's packets to 5060.
    assert!(rule_packets(&stats, "198.18.0.13/32") > n);
    assert!(rule_packets(&stats, "2001:db8::11/128") >= n);
    assert_eq!(reason_packets(&stats, "drop", "denied"), 4 * n + 2);
    assert!(reason_packets(&stats, "pass", "clean") >= n, "198.18.0.11 to the guarded port");
}

#[test]
fn a_runtime_deny_takes_effect_for_the_next_packet() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    let listeners = Listeners::new(&t);
    send(&t, "2001:db8::12", GUARDED, 1);
    assert_eq!(listeners.drain().values().sum::<usize>(), 1);
    inst.cli(&["net", "deny", "2001:db8::/64"]);
    send(&t, "2001:db8::12", GUARDED, 1);
    send(&t, "198.18.0.11", GUARDED, 1);
    let got = listeners.drain();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got.contains_key(&("198.18.0.11".parse().unwrap(), GUARDED)));
    inst.cli(&["net", "del", "2001:db8::/64"]);
    send(&t, "2001:db8::12", GUARDED, 1);
    assert_eq!(listeners.drain().values().sum::<usize>(), 1);
}

#[test]
fn filtering_survives_stop_restart_and_kill9_without_losing_rules() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let listeners = Listeners::new(&t);
    let blocked = |n| {
        send(&t, "198.18.0.10", GUARDED, n);
        send(&t, "198.18.0.11", GUARDED, n);
        let got = listeners.drain();
        assert_eq!(got.get(&("198.18.0.10".parse().unwrap(), GUARDED)), None, "{got:?}");
        assert_eq!(got.get(&("198.18.0.11".parse().unwrap(), GUARDED)), Some(&n), "{got:?}");
    };

    let daemon = inst.start();
    inst.cli(&["net", "deny", "198.18.0.10", "--comment", "kept"]);
    blocked(5);
    daemon.stop();
    // No daemon: the pinned program keeps enforcing.
    blocked(5);

    let daemon = inst.start();
    assert!(daemon.log().contains("Adopted"), "{}", daemon.log());
    assert!(inst.cli(&["net", "list"]).contains("198.18.0.10/32"));
    inst.cli(&["net", "deny", "198.18.0.11", "--comment", "acknowledged just before kill -9"]);
    daemon.kill9();
    send(&t, "198.18.0.11", GUARDED, 3);
    assert_eq!(listeners.drain().values().sum::<usize>(), 0, "the rule acknowledged before kill -9 enforces");

    let _daemon = inst.start();
    let list = inst.cli(&["net", "list", "--json"]);
    let rules: serde_json::Value = serde_json::from_str(&list).unwrap();
    let cidrs: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["198.18.0.10/32", "198.18.0.11/32"]);
    inst.cli(&["net", "del", "198.18.0.11"]);
    blocked(4);

    // Counters live in pinned maps: they survived both restarts.
    let stats = inst.stats();
    assert_eq!(rule_packets(&stats, "198.18.0.10/32"), 14);

    // detach removes everything: traffic flows again.
    inst.cli(&["detach"]);
    send(&t, "198.18.0.10", GUARDED, 2);
    assert_eq!(listeners.drain().values().sum::<usize>(), 2);
}

/// Two daemons on one pin directory would each write their own store's rules into the same maps
/// (and swap their program into each other's links): a second `callguard run`, with a store and
/// socket of its own (nothing but the pins shared, so its socket check cannot catch it), must
/// refuse before it touches them or its own store, naming the first, and the first's rule keeps
/// enforcing.
#[test]
fn a_second_daemon_on_the_same_pins_is_refused_and_changes_nothing() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let listeners = Listeners::new(&t);
    let daemon = inst.start();
    inst.cli(&["net", "deny", "198.18.0.10"]);

    let second = inst.sharing_pins();
    let (ok, log) = second.spawn_run().wait(Duration::from_secs(20));
    // Its empty store wrote nothing: the first one's rule holds, in the kernel and in its API.
    send(&t, "198.18.0.10", GUARDED, 3);
    send(&t, "198.18.0.11", GUARDED, 3);
    let got = listeners.drain();
    assert_eq!(got.get(&("198.18.0.10".parse().unwrap(), GUARDED)), None, "{got:?}\n{log}");
    assert_eq!(got.get(&("198.18.0.11".parse().unwrap(), GUARDED)), Some(&3), "{got:?}");
    assert!(inst.cli(&["net", "list"]).contains("198.18.0.10/32"));
    let refused = format!("pin directory {} is held by process {}", inst.pin_dir.display(), daemon.pid());
    assert!(!ok, "a second daemon ran on the same pins:\n{log}");
    assert!(log.contains(&refused), "{log}");
    assert!(!second.dir.path().join("rules.db").exists(), "the second daemon opened its database");

    // `callguard detach` beside the running daemon takes the filter off, and says the daemon
    // still runs; the directory stays held, so a second daemon is still refused (were it
    // removed, one would start on a new directory of the same name beside the first).
    let said = inst.cli(&["detach"]);
    assert!(said.contains(&format!("a daemon (process {}) holds", daemon.pid())), "{said}");
    send(&t, "198.18.0.10", GUARDED, 2);
    assert_eq!(listeners.drain().values().sum::<usize>(), 2, "the filter is off");
    let (ok, log) = second.spawn_run().wait(Duration::from_secs(20));
    assert!(!ok && log.contains(&refused), "{log}");

    // Once the first has stopped, the pins are free.
    daemon.stop();
    let _daemon = second.start();
}

#[test]
fn reload_applies_the_configuration_difference() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "[[networks]]\ncidr = \"198.18.0.10\"\naction = \"deny\"\n");
    let daemon = inst.start();
    let listeners = Listeners::new(&t);
    send(&t, "198.18.0.10", GUARDED, 2);
    send(&t, "198.18.0.11", 5070, 2);
    assert_eq!(listeners.drain().len(), 0, "5070 has no listener; .10 is denied");

    // New file: .10 no longer denied, .11 denied, port 5070 guarded too; a bad file changes
    // nothing.
    let base = std::fs::read_to_string(&inst.config).unwrap();
    let head = base.split("[[networks]]").next().unwrap().to_owned();
    std::fs::write(&inst.config, format!("{head}[ports]\nudp = [\"5060-5061\", 5070]\n[[networks]]\ncidr = \"198.18.0.11\"\naction = \"deny\"\n"))
        .unwrap();
    let good = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(&inst.config, format!("{good}bogus = 1\n")).unwrap();
    let out = inst.cli_output(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `bogus`"));
    send(&t, "198.18.0.10", GUARDED, 1);
    assert_eq!(listeners.drain().len(), 0, "still the old rules");

    std::fs::write(&inst.config, good).unwrap();
    let out = inst.cli(&["reload"]);
    assert!(out.contains("reloaded"), "{out}");
    send(&t, "198.18.0.10", GUARDED, 3);
    send(&t, "198.18.0.11", GUARDED, 3);
    let got = listeners.drain();
    assert_eq!(got.get(&("198.18.0.10".parse().unwrap(), GUARDED)), Some(&3));
    assert_eq!(got.get(&("198.18.0.11".parse().unwrap(), GUARDED)), None);
    let list = inst.cli(&["net", "list"]);
    assert!(list.contains("198.18.0.11/32") && !list.contains("198.18.0.10/32"), "{list}");
    drop(daemon);
}

#[test]
fn import_is_all_or_nothing() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let _daemon = inst.start();
    let good = inst.dir.path().join("good.netset");
    let bad = inst.dir.path().join("bad.netset");
    std::fs::write(
        &good,
        "# FireHOL style\n198.18.0.10\n2001:db8::10/127\ncreate x hash:net\nadd x 198.18.0.12/31\n",
    )
    .unwrap();
    std::fs::write(&bad, "198.18.0.11\n\n198.18.0.999\n").unwrap();
    let out = inst.cli_output(&["net", "import", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("198.18.0.999") && err.contains("nothing was imported"),
        "{err}"
    );
    assert!(inst.cli(&["net", "list"]).contains("0 rules"));

    let out = inst.cli(&["net", "import", good.to_str().unwrap()]);
    assert!(out.contains("imported 3 deny rules"), "{out}");
    let listeners = Listeners::new(&t);
    for src in [
        "198.18.0.10",
        "198.18.0.11",
        "198.18.0.12",
        "198.18.0.13",
        "2001:db8::10",
        "2001:db8::11",
        "2001:db8::12",
    ] {
        send(&t, src, GUARDED, 1);
    }
    let got: Vec<String> = listeners.drain().keys().map(|(ip, _)| ip.to_string()).collect();
    assert_eq!(got, ["198.18.0.11", "2001:db8::12"]);
}

/// What a test killed by a signal leaves behind (a namespace with a process still running in
/// it, its daemon's pin directory) is removed by the next test process, and nothing of a process
/// that is alive is touched.
#[test]
fn leftovers_of_a_killed_test_are_swept() {
    use std::os::unix::process::ExitStatusExt as _;
    struct Cleanup(Vec<String>, Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for ns in &self.0 {
                // Most are gone by now: quietly.
                let _ = Command::new("ip")
                    .args(["netns", "delete", ns])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            for dir in &self.1 {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    // A process that has exited: its pid names the leftovers, as `unique` names a test's.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let (dead, alive) = (gone.id(), std::process::id());
    let names = [format!("cg-stale-{dead}-0"), format!("cg-stale-{alive}-999")];
    let pins = [dead, alive].map(|p| std::path::PathBuf::from(format!("/sys/fs/bpf/callguard-it-{p}-999")));
    let _cleanup = Cleanup(names.to_vec(), pins.to_vec());
    for ns in &names {
        assert!(Command::new("ip").args(["netns", "add", ns]).status().unwrap().success());
    }
    for dir in &pins {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut sleeper = Command::new("ip").args(["netns", "exec", &names[0], "sleep", "600"]).spawn().unwrap();
    let listed = || {
        let out = Command::new("ip").args(["netns", "pids", &names[0]]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == sleeper.id().to_string())
    };
    let t0 = std::time::Instant::now();
    while !listed() {
        assert!(t0.elapsed() < Duration::from_secs(5), "sleep never entered the namespace");
        std::thread::sleep(Duration::from_millis(20));
    }

    callguard_tests::sweep_stale();

    assert!(!std::path::Path::new("/run/netns").join(&names[0]).exists(), "stale namespace left");
    assert!(!pins[0].exists(), "stale pin directory left");
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL), "the process inside was killed");
    assert!(
        std::path::Path::new("/run/netns").join(&names[1]).exists(),
        "a live process's namespace was deleted"
    );
    assert!(pins[1].exists(), "a live process's pins were removed");
}
