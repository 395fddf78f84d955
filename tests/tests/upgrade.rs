//! An upgrade that changes a map's layout, as an operator makes one: the daemon guards the PBX
//! end of a veth pair with 50,000 rules from a feed; it stops (the filter stays), the kernel bans
//! a flooding source on its own meanwhile, and a daemon with other table sizes starts, which no
//! pinned map fits. Sources on the far side keep sending throughout: one in a denied network,
//! the banned one, a clean one. Not one packet of the first two may reach the host, and the
//! clean one's must. Then the way it was before, `callguard detach` and a start, for the
//! figure of what a gap lets through.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use callguard_tests::{
    netns::{Instance, Topology, reason_packets},
    sipmsg::{self, SvTool},
};

const PBX: &str = Topology::PBX_V4;
/// In a network the feed denies.
const DENIED: &str = "198.18.0.10";
/// Sends above its rate until the kernel bans it.
const BANNED: &str = "198.18.0.12";
/// Sends below every limit.
const CLEAN: &str = "198.18.0.13";
/// A scanner, after the upgrade.
const SCANNER: &str = "198.18.0.77";
/// A scanner that sends one request while no daemon runs: the kernel's ban of it is held only
/// by its source cache slot (it never sent again), and must outlast the upgrade.
const SCANNED_ONCE: &str = "198.18.0.78";

/// Packets from one source that the host stack received on the SIP port.
fn delivered(t: &Topology, name: &str) -> u64 {
    t.pbx.nft_counter("upgrade", name)
}

/// The sources' traffic: 2,000 a second from [`DENIED`], 200 from [`BANNED`], 10 from [`CLEAN`],
/// until dropped; counts what it sent from [`DENIED`].
struct Senders {
    stop: Arc<AtomicBool>,
    denied_sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Senders {
    fn start(t: &Topology) -> Self {
        let socks: Vec<_> = [DENIED, BANNED, CLEAN]
            .iter()
            .map(|s| (*s, t.peer.udp(format!("{s}:5062").parse().unwrap())))
            .collect();
        let (stop, denied_sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, denied_sent) = (stop.clone(), denied_sent.clone());
            std::thread::spawn(move || {
                let pbx: SocketAddr = format!("{PBX}:5060").parse().unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (src, sock) in &socks {
                        let burst = match *src {
                            DENIED => 10,
                            CLEAN if !n.is_multiple_of(20) => 0,
                            _ => 1,
                        };
                        for _ in 0..burst {
                            sock.send_to(&sipmsg::keepalive(src, PBX, n), pbx).unwrap();
                        }
                    }
                    denied_sent.fetch_add(10, Ordering::Relaxed);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self { stop, denied_sent, thread: Some(thread) }
    }

    fn sent(&self) -> u64 {
        self.denied_sent.load(Ordering::Relaxed)
    }
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn capacity(inst: &Instance, map: &str) -> u64 {
    let tables: serde_json::Value =
        serde_json::from_str(&inst.cli(&["api", "GET", "/v1/tables"])).expect("tables json");
    tables["tables"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["map"] == map))
        .and_then(|t| t["capacity"].as_u64())
        .unwrap_or_else(|| panic!("no {map} in {tables}"))
}

#[test]
fn an_upgrade_that_changes_the_maps_lets_nothing_through() {
    let t = Topology::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = dir.path().join("blocklist.txt");
    let mut list: String = (0..50_000u32).map(|i| format!("10.{}.{}.0/24\n", i >> 8, i & 255)).collect();
    list.push_str("198.18.0.10/31\n");
    std::fs::write(&feed, list).unwrap();
    let config = |sources: u32| {
        format!(
            "[rate]\nrequests = {{ rate = 20, burst = 20 }}\nban_after_secs = 1\nban_secs = 3600\n\
             [tables]\nsources = {sources}\n\
             [[feeds]]\nname = \"blocklist\"\nfile = \"{}\"\nformat = \"plain\"\ninterval_secs = 3600\n",
            feed.display()
        )
    };
    let inst = Instance::new(&t.pbx, &t.pbx_if, &config(65_536));
    t.pbx.nft(&format!(
        "table inet upgrade {{
            counter denied {{}}
            counter banned {{}}
            counter clean {{}}
            counter once {{}}
            chain in {{
                type filter hook input priority 0;
                ip saddr {DENIED} udp dport 5060 counter name \"denied\"
                ip saddr {BANNED} udp dport 5060 counter name \"banned\"
                ip saddr {CLEAN} udp dport 5060 counter name \"clean\"
                ip saddr {SCANNED_ONCE} udp dport 5060 counter name \"once\"
            }}
        }}"
    ));
    let daemon = inst.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inst.cli(&["net", "check", DENIED]).contains("blocklist") {
        assert!(Instant::now() < deadline, "the feed did not load: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(capacity(&inst, "CG_SOURCES"), 65_536);

    // The daemon stops; the program stays and goes on filtering, banning on its own.
    daemon.stop();
    let senders = Senders::start(&t);
    std::thread::sleep(Duration::from_millis(2500));
    let banned_before = delivered(&t, "banned");
    assert!(banned_before > 0, "the flooding source was never let through: is the harness sending?");
    settle();
    assert_eq!(delivered(&t, "banned"), banned_before, "the kernel did not ban the flooding source");
    let pbx: SocketAddr = format!("{PBX}:5060").parse().unwrap();
    t.peer.ip(&["addr", "add", &format!("{SCANNED_ONCE}/24"), "dev", &t.peer_if]);
    let once = t.peer.udp(format!("{SCANNED_ONCE}:5070").parse().unwrap());
    once.send_to(&sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", PBX, false), pbx).unwrap();

    // A start with other table sizes: no pinned map of the sources fits.
    std::fs::write(&inst.config, std::fs::read_to_string(&inst.config).unwrap().replace("65536", "131072"))
        .unwrap();
    let (sent_before, clean_before) = (senders.sent(), delivered(&t, "clean"));
    let started = Instant::now();
    let daemon = inst.start();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let sent = senders.sent() - sent_before;
    drop(senders);
    settle();
    let log = daemon.log();
    for l in log.lines().filter(|l| ["layout", "carried", "upgraded"].iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
    assert!(log.contains("upgraded in place"), "no upgrade in the log:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("carried over") && l.contains("map=\"CG_SOURCES\"")),
        "the sources' state was not carried:\n{log}"
    );
    assert_eq!(delivered(&t, "denied"), 0, "{sent} packets sent from a denied network across the upgrade");
    assert_eq!(
        delivered(&t, "banned"),
        banned_before,
        "the kernel's own ban (never stored: no daemon ran) was lost in the upgrade"
    );
    assert!(delivered(&t, "clean") > clean_before, "the clean source's packets stopped reaching the host");
    let banned = reason_packets(&inst.stats(), "drop", "banned");
    once.send_to(&sipmsg::keepalive(SCANNED_ONCE, PBX, 1), pbx).unwrap();
    settle();
    assert_eq!(delivered(&t, "once"), 0, "the ban of a scanner that sent once was lost in the upgrade");
    assert_eq!(
        reason_packets(&inst.stats(), "drop", "banned"),
        banned + 1,
        "its keepalive, dropped as banned"
    );
    assert_eq!(capacity(&inst, "CG_SOURCES"), 131_072);
    // The counters by reason were carried: they hold the old program's drops too.
    let denied = reason_packets(&inst.stats(), "drop", "denied");
    assert!(
        denied >= sent_before + sent,
        "{denied} drops counted of {} sent: the counters started afresh",
        sent_before + sent
    );
    let dirs: Vec<_> =
        std::fs::read_dir(&inst.pin_dir).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert!(dirs.is_empty(), "staging directories left: {dirs:?}");
    // The new program runs, with the new maps: a rule written now takes hold, and SIP
    // inspection (tail-called through a program array of the new set) still drops a scanner.
    inst.cli(&["net", "deny", CLEAN, "--comment", "after the upgrade"]);
    let clean = delivered(&t, "clean");
    let sock = t.peer.udp(format!("{CLEAN}:5064").parse().unwrap());
    sock.send_to(&sipmsg::keepalive(CLEAN, PBX, 1), format!("{PBX}:5060").parse::<SocketAddr>().unwrap())
        .unwrap();
    t.peer.ip(&["addr", "add", &format!("{SCANNER}/24"), "dev", &t.peer_if]);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", PBX, false);
    let before = reason_packets(&inst.stats(), "drop", "signature");
    t.peer
        .udp(format!("{SCANNER}:5070").parse().unwrap())
        .send_to(&svmap, format!("{PBX}:5060").parse::<SocketAddr>().unwrap())
        .unwrap();
    settle();
    assert_eq!(delivered(&t, "clean"), clean, "a rule written after the upgrade did not take hold");
    assert_eq!(
        reason_packets(&inst.stats(), "drop", "signature"),
        before + 1,
        "no signature drop after the upgrade"
    );
    println!(
        "upgrade in place ({took:?} from start to serving): {sent} packets from a denied network sent across it, \
         0 delivered; the kernel's ban of {BANNED} held"
    );

    // The way it was: detach, then start. The same traffic, for the figure.
    daemon.stop();
    let senders = Senders::start(&t);
    std::thread::sleep(Duration::from_millis(500));
    inst.cli(&["detach"]);
    let daemon = inst.start();
    std::thread::sleep(Duration::from_secs(1));
    let sent_gap = senders.sent();
    drop(senders);
    settle();
    let through = delivered(&t, "denied");
    assert!(through > 0, "detach and start let nothing through: the flood did not reach the host");
    println!("detach and start: {through} of {sent_gap} packets from the denied network delivered");
    drop(daemon);
}
