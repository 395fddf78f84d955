//! `callguard top` as a person uses it: in a terminal (tmux, 160 by 48), against a daemon
//! guarding the PBX end of a veth pair while a scanner sends its OPTIONS from the other end.
//! The screen is read as tmux shows it; keys are sent as typed.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use callguard_tests::{
    netns::{Instance, Topology, binary},
    sipmsg::{self, SvTool},
    unique,
};

const PBX: &str = Topology::PBX_V4;
const SCANNER: &str = "198.18.0.77";

/// A tmux session, killed on drop.
struct Tmux(String);

impl Tmux {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(args).output().expect("running tmux")
    }

    /// What the screen shows now.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.0]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(self.tmux(&["send-keys", "-t", &self.0, keys]).status.success());
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", &self.0]).status.success()
    }

    /// Waits until the screen satisfies `ok`; the screen.
    fn until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
    }
}

/// The words of a screen line, the table borders left out.
fn cells(line: &str) -> Vec<&str> {
    line.split(['│', ' ']).filter(|c| !c.is_empty()).collect()
}

/// The packets-a-second figure of the `drop <reason>` row on `screen`.
fn drop_rate(screen: &str, reason: &str) -> Option<f64> {
    screen.lines().find_map(|l| {
        let cells = cells(l);
        let at = cells.windows(2).position(|w| w == ["drop", reason])?;
        cells.get(at + 2)?.parse().ok()
    })
}

#[test]
fn top_shows_the_scanner_being_stopped_and_answers_its_keys() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let daemon = inst.start();
    let session = Tmux(unique("cgtop"));
    let cmd = format!(
        "nsenter --net=/run/netns/{} {} -c {} top --every 500ms",
        t.pbx.name,
        binary().display(),
        inst.config.display()
    );
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session.0, "-x", "160", "-y", "48", &cmd])
        .status()
        .expect("starting tmux");
    assert!(started.success());
    let idle = session.until("the view", |s| s.contains("Packets by reason") && s.contains("keys: s sort"));
    assert!(idle.contains(&format!("guarding {}", t.pbx_if)), "{idle}");

    // A scanner keeps sending: its first OPTIONS is dropped by signature and bans it (a deny
    // rule for its address), the rest are dropped as denied.
    t.peer.ip(&["addr", "add", &format!("{SCANNER}/32"), "dev", &t.peer_if]);
    let sock = t.peer.udp(format!("{SCANNER}:5070").parse().expect("address"));
    let pbx: SocketAddr = format!("{PBX}:5060").parse().expect("address");
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", PBX, false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sock.send_to(&svmap, pbx);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let busy = session.until("the scanner stopped", |s| {
        drop_rate(s, "denied").is_some_and(|r| r > 0.0)
            && s.contains("friendly-scanner")
            && s.contains(SCANNER)
            && s.contains(&format!("ban signature  {SCANNER}"))
    });
    println!("{busy}");
    assert_eq!(
        busy.lines().filter(|l| l.contains("drop") && l.contains("signature")).count(),
        1,
        "one signature row:\n{busy}"
    );
    assert!(busy.contains("CG_SOURCES"), "the kernel tables:\n{busy}");

    // p freezes the view (the daemon goes on), p again thaws it.
    session.keys("p");
    let paused = session.until("PAUSED", |s| s.contains("PAUSED"));
    let frozen = drop_rate(&paused, "denied");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(drop_rate(&session.screen(), "denied"), frozen, "a paused view changed");
    session.keys("p");
    session.until("the view thawed", |s| !s.contains("PAUSED"));

    // s sorts the reasons by total, then by name.
    session.keys("s");
    let by_total = session.until("sorted by total", |s| s.contains("sorted by total"));
    let first = by_total
        .lines()
        .find(|l| matches!(cells(l).first().copied(), Some("pass" | "drop" | "handup")))
        .unwrap_or_default()
        .to_owned();
    assert!(first.contains("denied"), "the most packets are the scanner's, denied:\n{by_total}");
    session.keys("s");
    session.until("sorted by name", |s| s.contains("sorted by name"));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().expect("the sender");
    session.keys("q");
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.alive() {
        assert!(Instant::now() < deadline, "q did not end callguard top:\n{}", session.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop();

    // Without a terminal it says what to use instead.
    let out = inst.cli_output(&["top"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("needs a terminal"), "{said}");
}
