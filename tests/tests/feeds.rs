//! Blocklist feeds as an operator meets them: the daemon guards the PBX end of a veth pair and
//! fetches a FireHOL-style netset from an HTTP server on the far side, and an `ipset save` file
//! from disk. The server then turns broken (a 500, an HTML error page, an empty list), slow
//! (past the feed's timeout) and huge (120,000 networks), and each time the test checks what a
//! packet from a listed source meets in the kernel: the last good copy stays in force, and a
//! refresh that rewrites the whole feed never lets a listed source through, not even during it.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use callguard_tests::{
    netns::{Instance, Topology},
    sipmsg,
};

const PBX: &str = Topology::PBX_V4;
/// Listed by the HTTP feed throughout.
const LISTED: &str = "198.18.0.10";
/// Listed by the file feed.
const FILED: &str = "198.18.0.11";
/// Never listed.
const CLEAN: &str = "198.18.0.12";
const SERVER: &str = "198.18.0.2:8080";

/// What the feed server answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body.
    Body(String),
    /// This status, a short body.
    Status(u16),
    /// Nothing for this long, then the body.
    Slow(Duration, String),
}

/// An HTTP/1.1 server in the peer namespace that answers every request with the current
/// [`Answer`], one connection at a time, and counts the requests.
struct FeedServer {
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<u64>>,
}

impl FeedServer {
    fn start(listener: TcpListener, first: Answer) -> Self {
        let answer = Arc::new(Mutex::new(first));
        let requests = Arc::new(Mutex::new(0));
        let (a, n) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (a, n) = (a.clone(), n.clone());
                // A thread per connection: a slow answer must not hold the next request.
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => req.extend_from_slice(&buf[..k]),
                        }
                    }
                    *n.lock().unwrap() += 1;
                    let answer = a.lock().unwrap().clone();
                    let (status, body) = match answer {
                        Answer::Body(b) => (200, b),
                        Answer::Status(s) => (s, "<html><body>server error</body></html>\n".into()),
                        Answer::Slow(wait, b) => {
                            std::thread::sleep(wait);
                            (200, b)
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(body.as_bytes()));
                });
            }
        });
        Self { answer, requests }
    }

    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

/// A FireHOL netset: the listed source, `extra`, and a header as FireHOL writes it.
fn netset(extra: &[&str]) -> String {
    let mut s = "#\n# firehol_level1\n#\n# Maintainer: FireHOL\n#\n".to_owned();
    for n in [LISTED, "203.0.113.0/24"].iter().chain(extra) {
        s.push_str(n);
        s.push('\n');
    }
    s
}

fn json(inst: &Instance, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&inst.cli(args)).unwrap_or_else(|e| panic!("callguard {args:?}: {e}"))
}

fn feed<'a>(all: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    all.as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {all}"))
}

/// `callguard feeds refresh NAME --json`: the feed's status after a refresh that ended.
fn refresh(inst: &Instance, name: &str) -> serde_json::Value {
    json(inst, &["feeds", "refresh", name, "--json"])
}

/// What `net check` says of `ip`: (verdict, the deciding rule's origin and list, whether the
/// kernel holds it).
fn check(inst: &Instance, ip: &str) -> (String, String, String, bool) {
    let c = json(inst, &["net", "check", ip, "--json"]);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&c["verdict"]),
        s(&c["rule"]["origin"]),
        s(&c["rule"]["list"]),
        c["in_kernel"].as_bool().unwrap_or(false),
    )
}

/// Packets from each test source that the host stack received on the SIP port.
fn delivered(t: &Topology, name: &str) -> u64 {
    t.pbx.nft_counter("feeds", name)
}

#[test]
fn feeds_refresh_keep_their_last_good_copy_and_never_open_a_window() {
    let t = Topology::new();
    let server = FeedServer::start(t.peer.tcp_listener(SERVER.parse().unwrap()), Answer::Body(netset(&[])));
    let dir = tempfile::tempdir().expect("tempdir");
    let ipset = dir.path().join("blocklist.ipset");
    std::fs::write(
        &ipset,
        format!("create blocklist hash:net family inet hashsize 1024 maxelem 65536\nadd blocklist {FILED}\n"),
    )
    .unwrap();
    let feeds = format!(
        "[[feeds]]\nname = \"firehol\"\nurl = \"http://{SERVER}/firehol_level1.netset\"\nformat = \"netset\"\n\
         interval_secs = 3600\ntimeout_secs = 2\n\
         [[feeds]]\nname = \"local\"\nfile = \"{}\"\nformat = \"ipset\"\ninterval_secs = 3600\n",
        ipset.display()
    );
    let inst = Instance::new(&t.pbx, &t.pbx_if, &feeds);
    t.pbx.nft(&format!(
        "table inet feeds {{
            counter listed {{}}
            counter filed {{}}
            counter clean {{}}
            chain in {{
                type filter hook input priority 0;
                ip saddr {LISTED} udp dport 5060 counter name \"listed\"
                ip saddr {FILED} udp dport 5060 counter name \"filed\"
                ip saddr {CLEAN} udp dport 5060 counter name \"clean\"
            }}
        }}"
    ));
    let daemon = inst.start();

    // Both feeds load at start, without being asked.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = json(&inst, &["feeds", "--json"]);
        if ["firehol", "local"].iter().all(|n| feed(&all, n)["refreshes"].as_u64() >= Some(1)) {
            assert_eq!(feed(&all, "firehol")["rules"], 2, "{all}");
            assert_eq!(feed(&all, "local")["rules"], 1, "{all}");
            break;
        }
        assert!(Instant::now() < deadline, "the feeds did not load: {all}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(check(&inst, LISTED), ("deny".into(), "feed".into(), "firehol".into(), true));
    assert_eq!(check(&inst, FILED), ("deny".into(), "feed".into(), "local".into(), true));
    let send = |src: &str, n: usize| {
        let sock = t.peer.udp(format!("{src}:5062").parse().unwrap());
        for _ in 0..n {
            sock.send_to(
                &sipmsg::keepalive(src, PBX, 77),
                format!("{PBX}:5060").parse::<SocketAddr>().unwrap(),
            )
            .unwrap();
        }
    };
    send(LISTED, 3);
    send(FILED, 3);
    send(CLEAN, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (delivered(&t, "listed"), delivered(&t, "filed"), delivered(&t, "clean")),
        (0, 0, 1),
        "the listed sources are dropped at the NIC, the clean one is not"
    );

    // An operator's rule for a network the feed lists later stays the operator's.
    inst.cli(&["net", "deny", "198.51.100.0/24", "--comment", "mine"]);
    server.set(Answer::Body(netset(&["198.51.100.0/24"]).replace("203.0.113.0/24\n", "")));
    let f = refresh(&inst, "firehol");
    assert_eq!((f["rules"].as_u64(), f["held_by_others"].as_u64()), (Some(1), Some(1)), "{f}");
    let list = json(&inst, &["net", "list", "--json"]);
    let rules = list.as_array().expect("rules");
    let mine = rules.iter().find(|r| r["cidr"] == "198.51.100.0/24").expect("the operator's rule");
    assert_eq!((mine["origin"].as_str(), mine["comment"].as_str()), (Some("manual"), Some("mine")));
    assert!(!rules.iter().any(|r| r["cidr"] == "203.0.113.0/24"), "the dropped network stays: {list}");

    // A feed's deny never overrides the operator's allow around it (a trunk's network): the
    // listed source gets through while the allow is there, and is dropped again once it goes.
    inst.cli(&["net", "allow", "198.18.0.8/29", "--comment", "trunk"]);
    assert_eq!(check(&inst, LISTED).0, "allow", "the allow around the listed address decides");
    send(LISTED, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(&t, "listed"), 2, "the kernel let the allowed network's listed address through");
    inst.cli(&["net", "del", "198.18.0.8/29"]);
    assert_eq!(check(&inst, LISTED).0, "deny");
    send(LISTED, 2);
    std::thread::sleep(Duration::from_millis(300));
    let allowed = delivered(&t, "listed");
    assert_eq!(allowed, 2, "the listed address is dropped again without the allow");

    // Broken, empty and slow answers change nothing: the last good copy stays in force.
    for (answer, says) in [
        (Answer::Status(500), "500"),
        (
            Answer::Body("<html>\n<head><title>502 Bad Gateway</title></head>\n</html>\n".into()),
            "not addresses",
        ),
        (Answer::Body("# firehol_level1\n#\n".into()), "names no network"),
        (Answer::Slow(Duration::from_secs(4), netset(&[])), "GET http://"),
    ] {
        server.set(answer);
        let before = server.requests();
        let f = refresh(&inst, "firehol");
        let error = f["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "expected `{says}` in the refusal: {f}");
        assert_eq!(f["rules"], 1, "{f}");
        assert!(server.requests() > before, "the daemon did not ask the server");
        assert_eq!(
            check(&inst, LISTED),
            ("deny".into(), "feed".into(), "firehol".into(), true),
            "after {says}"
        );
    }
    send(LISTED, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(&t, "listed"), allowed, "a listed source got through after a refused refresh");
    let text = inst.cli(&["feeds"]);
    assert!(text.contains("keeping the last good copy"), "{text}");
    println!(
        "$ callguard feeds\n{text}$ callguard net check {LISTED}\n{}",
        inst.cli(&["net", "check", LISTED])
    );

    // A huge document (120,000 networks) while the listed source keeps sending: the refresh
    // rewrites the whole feed, and not one of its packets reaches the host in the meantime.
    let huge: Vec<String> =
        (0..120_000u32).map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)).collect();
    let huge_refs: Vec<&str> = huge.iter().map(String::as_str).collect();
    server.set(Answer::Body(netset(&huge_refs)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (stop, sock) = (stop.clone(), t.peer.udp(format!("{LISTED}:5063").parse().unwrap()));
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sock.send_to(
                    &sipmsg::keepalive(LISTED, PBX, 77),
                    format!("{PBX}:5060").parse::<SocketAddr>().unwrap(),
                )
                .unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    let started = Instant::now();
    let f = refresh(&inst, "firehol");
    let took = started.elapsed();
    // The same document again: nothing changes, and finding that out must not take long.
    let started = Instant::now();
    let same = refresh(&inst, "firehol");
    let unchanged = started.elapsed();
    assert_eq!(same["rules"], 120_002, "{same}");
    // And back: the 120,000 leave again.
    server.set(Answer::Body(netset(&[])));
    let back = refresh(&inst, "firehol");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    assert_eq!(f["last_error"], serde_json::Value::Null, "{f}");
    assert_eq!(f["rules"], 120_002, "{f}");
    assert_eq!(back["rules"], 2, "{back}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        delivered(&t, "listed"),
        allowed,
        "{sent} packets sent across two refreshes; some got through"
    );
    let log = daemon.log();
    assert!(log.contains("applying a large feed") && log.contains("done="), "no progress shown:\n{log}");
    println!(
        "a 120,000-network refresh took {took:?}, the same document again {unchanged:?}; {sent} packets from \
         a listed source sent across three refreshes, 0 delivered"
    );

    // The last good copy survives a restart while the source is down.
    daemon.stop();
    server.set(Answer::Status(503));
    let daemon = inst.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = json(&inst, &["feeds", "--json"]);
        if feed(&f, "firehol")["failures"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no refresh after the restart: {f}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        check(&inst, LISTED),
        ("deny".into(), "feed".into(), "firehol".into(), true),
        "after a restart"
    );
    send(LISTED, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(&t, "listed"), allowed);

    // A feed removed from the file takes its rules with it.
    let text = std::fs::read_to_string(&inst.config).unwrap();
    let cut = text.find("[[feeds]]\nname = \"local\"").expect("the local feed");
    std::fs::write(&inst.config, &text[..cut]).unwrap();
    inst.cli(&["reload"]);
    assert_eq!(check(&inst, FILED).0, "none", "the removed feed's rule outlived the reload");
    let all = json(&inst, &["feeds", "--json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    drop(daemon);
}
