//! `cargo xtask bench`: the per-packet cost of each verdict path of the real XDP program through
//! BPF_PROG_TEST_RUN, next to a pass-everything program measured in the same run, and the lookup
//! and load cost with 100, 10,000 and 1,000,000 prefixes loaded.
//!
//! Frames are only handed to the kernel's test runner: nothing is sent on any interface, so the
//! prefixes may come from the whole address space.
//!
//! Then the slow path: the latency the hand-up adds to an INVITE (p50, p99) at 1,000 and 5,000
//! INVITEs a second, next to the same load on the fast path in the same run, and the highest rate
//! at which every INVITE is still decided by the daemon (none under the failure policy, none
//! lost). Real packets over a veth pair between two network namespaces of this process.
//!
//! Each SIP row is also set against its floor: the authorized-prefix row (the network lookups
//! every packet needs first) plus what reading the UDP payload once costs (a reference program
//! that sums it with 8-byte loads, less the do-nothing program on the same frame).
//!
//! The flood benchmark (`flood`): the CPU per packet each filter spends on a flood, in
//! live-frames mode (see `callguard_tests::flood`), side by side on the same traffic.
//!
//! `callguard-bench [REPEAT] [all|kernel|flood|flood-short|slow-path]`

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use callguard::{
    config::{Bucket, Config},
    kernel::datapath::Datapath as _,
    net::{self, NetAction, NetRule, Scope},
};
use callguard_tests::{
    TestKernel, default_signatures, flood,
    frame::Frame,
    load::{self, Measured},
    netns::{Instance, Kamailio, Topology, reason_packets, sh},
    rule,
    sipmsg::{self, SvTool},
};

/// Rounds per row. The fastest is reported: on a shared VM other tenants only ever add time, so
/// the fastest round is the one least disturbed, and it varies far less from run to run than the
/// median (see the README's measured figures).
const ROUNDS: usize = 9;

/// Fastest ns per packet over `ROUNDS` runs of `repeat` repetitions.
fn per_packet(prog: &mut Xdp, frame: &[u8], repeat: u32) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
            let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
            r.duration.as_nanos() as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

/// `count` distinct /24 prefixes spread over unicast IPv4 space, away from 198.18.0.0/15.
fn prefixes(count: usize, first_id: u32) -> Vec<NetRule> {
    let mut seen = BTreeSet::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        // xorshift: deterministic, so every run loads the same set.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = 1 + (x % 222) as u8;
        let (b, c) = ((x >> 8) as u8, (x >> 16) as u8);
        if (a, b & 0xfe) == (198, 18) || !seen.insert((a, b, c)) {
            continue;
        }
        let id = first_id + out.len() as u32;
        out.push(rule(id, &format!("{a}.{b}.{c}.0/24"), NetAction::Deny, Scope::Sip));
    }
    out
}

fn main() {
    let repeat: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let only = std::env::args().nth(2).unwrap_or_else(|| "all".into());
    let parts: &[&str] = match only.as_str() {
        "all" => &["kernel", "flood", "slow-path"],
        "kernel" => &["kernel"],
        "flood" => &["flood"],
        "flood-short" => &["flood-short"],
        "slow-path" => &["slow-path"],
        other => panic!("unknown part {other}: all, kernel, flood, flood-short or slow-path"),
    };
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        match *part {
            "kernel" => kernel(repeat),
            "flood" => flood_bench(false),
            "flood-short" => flood_bench(true),
            _ => slow_path(),
        }
    }
}

/// The filters of the flood benchmark, in the order of its columns.
const FILTERS: [&str; 8] =
    ["none", "nftables", "iptables bm", "iptables kmp", "xdp-filter", "kamailio", "callguard", "XDP drop"];

/// The blocked network of the network-rule row: a /19, since xdp-filter holds single addresses
/// only, at most 10,000 of them, and this is as large as a power of two gets within that.
const BLOCKED: &str = "100.64.0.0/19";

/// The iptables rules of the `iptables` columns, as operators deploy them (one `iptables`
/// command each, after the ipset): the blocked networks as an ipset, a ban list (`recent`)
/// checked first, a string match per enforcing default signature on the User-Agent line
/// (`algo`: bm or kmp; case-insensitive, as callguard's) that drops and bans its source, and a
/// per-source rate limit (`hashlimit`) at callguard's default for all requests (50 a second,
/// burst 100). All in the raw table, before
/// connection tracking.
fn iptables_rules(algo: &str) -> Vec<Vec<String>> {
    let pre = |rest: &str| -> Vec<String> {
        let mut v: Vec<String> = ["iptables", "-t", "raw", "-A", "PREROUTING"].map(String::from).to_vec();
        v.extend(rest.split_whitespace().map(String::from));
        v
    };
    let mut rules = vec![
        pre("-m set --match-set cgbench_blocked src -j DROP"),
        pre("-p udp --dport 5060 -m recent --name cgban --rcheck --seconds 300 -j DROP"),
    ];
    for (field, text, mode, _) in callguard::sig::DEFAULTS {
        if *mode == callguard::sig::SigMode::Enforce && *field == callguard::sig::SigField::UserAgent {
            let mut r = pre(&format!("-p udp --dport 5060 -m string --algo {algo} --icase --string"));
            r.push(format!("User-Agent: {text}"));
            r.extend(["-m", "recent", "--name", "cgban", "--set", "-j", "DROP"].map(String::from));
            rules.push(r);
        }
    }
    rules.push(pre("-p udp --dport 5060 -m hashlimit --hashlimit-mode srcip --hashlimit-above 50/sec \
         --hashlimit-burst 100 --hashlimit-name cgrate -j DROP"));
    rules
}

/// xdp-filter loaded on an interface; unloaded on drop (a panic included), which removes its
/// pins under /sys/fs/bpf/xdp-filter.
struct XdpFilter {
    iface: String,
    /// Its program, once loaded and filled.
    prog: Option<Xdp>,
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = std::process::Command::new("xdp-filter").args(["unload", &self.iface]).output();
    }
}

/// Loads xdp-filter (Debian's xdp-tools) on `iface` in the calling thread's namespace, in
/// native mode, denying every address of [`BLOCKED`] as a source (written straight into its
/// map: one `xdp-filter ip` per address would take minutes); its program, to run.
fn xdp_filter_up(iface: &str) -> XdpFilter {
    use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
    // xdp-filter's flags (xdp-tools, xdp-filter/common_kern_user.h): the address is a source
    // to match; its packet counter lives above bit 6.
    const MAP_FLAG_SRC: u64 = 1;
    // Its pin directory is one for the host: a host that runs xdp-filter would share its maps
    // with the benchmark's, which writes into them.
    assert!(
        !Path::new("/sys/fs/bpf/xdp-filter").exists(),
        "xdp-filter is in use on this host (/sys/fs/bpf/xdp-filter exists): the benchmark would write \
         into its maps; run it on a host without xdp-filter"
    );
    sh(&["xdp-filter", "load", iface, "--mode", "native"]);
    // From here on it is unloaded however this ends.
    let mut loaded = XdpFilter { iface: iface.to_owned(), prog: None };
    let map = MapData::from_pin("/sys/fs/bpf/xdp-filter/filter_ipv4").expect("xdp-filter's address map");
    let map = aya::maps::Map::from_map_data(map).expect("a map aya knows");
    let mut map: PerCpuHashMap<MapData, u32, u64> = PerCpuHashMap::try_from(map).expect("a per-CPU hash");
    let cpus = aya::util::nr_cpus().expect("CPUs");
    let blocked: ipnet::Ipv4Net = BLOCKED.parse().expect("a prefix");
    // Every address, network and broadcast included: the spoofer draws from all of them.
    for a in u32::from(blocked.network())..=u32::from(blocked.broadcast()) {
        let v = PerCpuValues::try_from(vec![MAP_FLAG_SRC; cpus]).expect("per-CPU values");
        map.insert(u32::from_ne_bytes(a.to_be_bytes()), v, 0).expect("an xdp-filter entry");
    }
    let pin = format!("/sys/fs/bpf/xdp-filter/programs/{iface}/xdpfilt_alw_all");
    loaded.prog =
        Some(Xdp::from_pin(&pin, aya_obj::programs::XdpAttachType::Interface).expect("xdp-filter's program"));
    loaded
}

/// Sets a netfilter column's rules up in the calling thread's namespace.
fn netfilter_up(filter: &str, nft_rules: &Path) {
    match filter {
        "nftables" => {
            sh(&["nft", "-f", &nft_rules.to_string_lossy()]);
        }
        _ => {
            let algo = if filter.ends_with("kmp") { "kmp" } else { "bm" };
            sh(&["ipset", "create", "cgbench_blocked", "hash:net"]);
            sh(&["ipset", "add", "cgbench_blocked", BLOCKED]);
            for r in iptables_rules(algo) {
                sh(&r.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
}

/// Removes what [`netfilter_up`] set up.
fn netfilter_down(filter: &str) {
    match filter {
        "nftables" => {
            sh(&["nft", "delete", "table", "inet", "cgbench"]);
        }
        _ => {
            sh(&["iptables", "-t", "raw", "-F", "PREROUTING"]);
            sh(&["ipset", "destroy", "cgbench_blocked"]);
        }
    }
}

/// The nftables ruleset of the `nftables` column: what nftables can express of callguard's
/// defaults. The blocked network as an interval set, and a per-source rate limit (a dynamic
/// set, the meter of older versions) at callguard's default for all requests, 50 a second, burst
/// 100.
/// nftables cannot look for a scanner's User-Agent at a varying offset (its payload matches
/// are at fixed offsets), so the OPTIONS floods pass it until a source exceeds its rate.
const NFT_RULES: &str = "table inet cgbench {
    set blocked4 { type ipv4_addr; flags interval; elements = { 100.64.0.0/19 } }
    set rate4 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 60s; }
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        ip saddr @blocked4 counter drop
        udp dport 5060 update @rate4 { ip saddr limit rate over 50/second burst 100 packets } counter drop
    }
}";

/// One traffic of the flood benchmark: its frames, sent in turn, the packets split evenly
/// between them; with `spoof`, every packet's source is rewritten to a random one in that
/// prefix (the spoofer, `callguard_spoof`) before the filter sees it.
struct Traffic {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    spoof: Option<ipnet::Ipv4Net>,
}

/// The program a filter's packets run through first: one of the reference programs of the
/// benchmark's own kernel object (pass-everything: no filter, or netfilter behind it; drop
/// everything), or another (callguard's, xdp-filter's).
enum First<'a> {
    PassEverything,
    DropAll,
    Other(&'a Xdp),
}

/// A reference program of `k`.
fn reference_program(k: &mut callguard::kernel::Kernel, pass: bool) -> &mut Xdp {
    if pass {
        k.baseline().expect("the pass-everything program")
    } else {
        k.drop_all().expect("the drop-all program")
    }
}

/// CPU per packet of `traffic` through `first`, `repeat` packets in all; `k` is the benchmark's
/// own kernel object (its reference programs and the spoofer).
fn flood_cell(
    k: &mut callguard::kernel::Kernel,
    first: First<'_>,
    t: &Traffic,
    ifindex: u32,
    repeat: u32,
) -> Duration {
    let fd = match &first {
        First::PassEverything | First::DropAll => {
            reference_program(k, matches!(first, First::PassEverything)).fd().expect("loaded").try_clone()
        }
        First::Other(x) => x.fd().expect("loaded").try_clone(),
    }
    .expect("a program fd");
    let prog: &Xdp = match (t.spoof, first) {
        (Some(net), _) => k.spoofer(net, &fd).expect("the spoofer"),
        (None, First::Other(x)) => x,
        (None, f) => reference_program(k, matches!(f, First::PassEverything)),
    };
    let per = repeat / t.frames.len() as u32;
    t.frames.iter().map(|f| flood::live(prog, f, ifindex, per)).sum::<Duration>() / t.frames.len() as u32
}

/// The flood benchmark's state in the receiving namespace (its thread has entered it).
struct FloodRun<'a> {
    pbx: &'a callguard_tests::netns::Netns,
    iface: &'a str,
    ifindex: u32,
    /// The benchmark's own kernel object: the reference programs and the spoofer.
    reference: TestKernel,
    nft_rules: &'a Path,
    repeat: u32,
    /// The short run's one callguard, kept across its rows: loading the program (the verifier)
    /// is most of a short run's time, and its figures are not read.
    kept: Option<TestKernel>,
    short: bool,
}

impl FloodRun<'_> {
    /// CPU per packet of `traffic` through `filter`, set up for it and taken down after.
    fn cell(&mut self, filter: &str, traffic: &Traffic) -> Duration {
        let (ifindex, repeat) = (self.ifindex, self.repeat);
        // The SIP server's socket, never read: the floods fill it, then the stack drops at it, as
        // a busy server's would. Kamailio's own takes its place.
        let _server = (filter != "kamailio").then(|| {
            std::net::UdpSocket::bind(format!("{}:5060", Topology::PBX_V4)).expect("the server's socket")
        });
        let reference = &mut self.reference.kernel;
        match filter {
            "none" => flood_cell(reference, First::PassEverything, traffic, ifindex, repeat),
            "XDP drop" => flood_cell(reference, First::DropAll, traffic, ifindex, repeat),
            "callguard" => {
                // A fresh callguard per traffic: no bans carried from the row before (but in the
                // short run, see `kept`).
                let fresh = || {
                    let mut k = TestKernel::with_config(&Config::default());
                    k.set_signatures(&default_signatures());
                    k.set_rules(&[rule(1, BLOCKED, NetAction::Deny, Scope::Sip)]);
                    k
                };
                let k = if self.short { self.kept.get_or_insert_with(fresh) } else { &mut fresh() };
                flood_cell(reference, First::Other(k.kernel.program()), traffic, ifindex, repeat)
            }
            "xdp-filter" => {
                let loaded = xdp_filter_up(self.iface);
                let prog = loaded.prog.as_ref().expect("loaded by xdp_filter_up");
                flood_cell(reference, First::Other(prog), traffic, ifindex, repeat)
            }
            "kamailio" => {
                let db = format!("\"text://{}/kamailio/shield-db\"", env!("CARGO_MANIFEST_DIR"));
                let listen = format!("{}:5060", Topology::PBX_V4);
                let k = Kamailio::start_with(self.pbx, "shield.cfg", &listen, &[("SHIELD_DB", &db)]);
                flood::await_listener(5060, Duration::from_secs(10));
                let (cpu, read) = (k.cpu(), flood::udp_datagrams_read());
                let d = flood_cell(reference, First::PassEverything, traffic, ifindex, repeat);
                // What it read before the run ended, it finishes within this.
                std::thread::sleep(Duration::from_millis(500));
                let (cpu, read) = (k.cpu() - cpu, flood::udp_datagrams_read() - read);
                // Each packet it filtered cost the stack's share (the run) and its own.
                d + cpu / u32::try_from(read.max(1)).unwrap_or(u32::MAX)
            }
            _ => {
                // This thread is in the namespace, and so is what it starts.
                netfilter_up(filter, self.nft_rules);
                let d = flood_cell(reference, First::PassEverything, traffic, ifindex, repeat);
                netfilter_down(filter);
                d
            }
        }
    }
}

/// The flood benchmark: CPU per packet of each filter, on the same traffic, in one run (see
/// `callguard_tests::flood`). `short`: a small run per cell, for CI, which only checks that
/// every filter was measured.
fn flood_bench(short: bool) {
    let t = Topology::new();
    t.pbx.ip(&["link", "set", "dev", &t.pbx_if, "address", flood::PBX_MAC]);
    let repeat: u32 = if short { 20_000 } else { 2_000_000 };
    println!(
        "callguard flood benchmark: live frames (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES) into the \
         stack of an interface in a namespace; CPU ns per packet on the receiving side, {repeat} packets a cell"
    );
    println!("none: pass-everything XDP program, stack, a UDP socket that is never read (full)");
    println!(
        "nftables: the same, with a blocked /19 set and a per-source rate meter (50/s, burst 100) in raw prerouting"
    );
    println!(
        "iptables bm / kmp: the same, in the raw table: ipset for the /19, a recent ban list, a string match per \
         enforcing User-Agent signature (sets the ban), hashlimit 50/s burst 100 (iptables-nft)"
    );
    println!(
        "xdp-filter: xdp-tools' filter in native mode, every address of the /19 denied as a source (it holds \
         addresses, not prefixes, 10,000 at most; it cannot read SIP)"
    );
    println!(
        "kamailio: Kamailio 5.6 with pike (100 requests in 2 s) and secfilter (the same User-Agents) in front of \
         the PBX: the run's time plus Kamailio's CPU per packet it read (packets its full socket refused \
         cost only the stack)"
    );
    println!(
        "callguard: its XDP program with the default configuration, signatures and a deny rule for the /19"
    );
    println!(
        "XDP drop: a program that drops everything at once, the floor of any XDP filter in this harness"
    );
    println!(
        "new source every packet: a spoofer program rewrites each frame's source, then tail-calls the filter's \
         XDP program (its cost is in every column)"
    );
    println!();
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", Topology::PBX_V4, false);
    let register =
        sipmsg::phones().into_iter().find(|(who, _)| who.contains("REGISTER")).expect("a REGISTER").1;
    let frame = |src: &str, payload: &[u8]| Frame::udp(src, 5060).payload(payload).build();
    let net = |s: &str| Some(s.parse::<ipnet::Ipv4Net>().expect("a prefix"));
    let traffic = [
        Traffic {
            name: "sipvicious OPTIONS, one source",
            frames: vec![frame("203.0.113.7", &svmap)],
            spoof: None,
        },
        Traffic {
            name: "sipvicious OPTIONS, new source every packet",
            frames: vec![frame("11.0.0.1", &svmap)],
            spoof: net("11.0.0.0/8"),
        },
        Traffic {
            name: "phone REGISTER, four sources (before a ban)",
            frames: (1..=4).map(|i| frame(&format!("203.0.113.{}", 20 + i), &register)).collect(),
            spoof: None,
        },
        Traffic {
            name: "OPTIONS from a blocked /19, new source each",
            frames: vec![frame("100.64.0.1", &svmap)],
            spoof: net(BLOCKED),
        },
    ];
    let (pbx, iface) = (&t.pbx, t.pbx_if.clone());
    let rules = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(rules.path(), NFT_RULES).expect("writing the nftables ruleset");
    let rows = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                callguard_tests::netns::enter(&pbx.name);
                let mut bench = FloodRun {
                    pbx,
                    iface: &iface,
                    ifindex: flood::ifindex(&iface),
                    reference: TestKernel::new(),
                    kept: None,
                    short,
                    nft_rules: rules.path(),
                    repeat,
                };
                traffic
                    .iter()
                    .map(|tr| {
                        (tr.name, FILTERS.iter().map(|f| bench.cell(f, tr).as_nanos() as f64).collect())
                    })
                    .collect::<Vec<(&str, Vec<f64>)>>()
            })
            .join()
            .expect("the flood benchmark's thread")
    });
    print!("{:<46}", "traffic");
    for f in FILTERS {
        print!(" {f:>12}");
    }
    println!(" {:>14} {:>14}", "cg/cheapest nf", "cg/kamailio");
    for (name, cells) in &rows {
        print!("{name:<46}");
        for c in cells {
            print!(" {c:>12.0}");
        }
        // The cheapest of the netfilter columns (nftables, iptables bm, iptables kmp).
        let cheapest = cells[1..4].iter().copied().fold(f64::INFINITY, f64::min);
        println!(" {:>13.2}x {:>13.3}x", cells[6] / cheapest, cells[6] / cells[5]);
    }
    println!(
        "nftables cannot match the User-Agent at a varying offset: it drops the OPTIONS floods only by \
         its rate meter, so none of the spoofed OPTIONS (each source new)"
    );
    let unmeasured: Vec<String> = rows
        .iter()
        .flat_map(|(name, cells)| {
            cells.iter().zip(FILTERS).filter(|(c, _)| **c <= 0.0).map(move |(_, f)| format!("{f} on {name}"))
        })
        .collect();
    assert!(unmeasured.is_empty(), "not measured: {unmeasured:?}");
    println!("every filter measured on every traffic: {} cells", rows.len() * FILTERS.len());
}

fn kernel(repeat: u32) {
    // Rate limits off: a million packets from one source would otherwise measure the ban path.
    let mut k = TestKernel::new();
    k.set_signatures(&default_signatures());
    println!(
        "callguard kernel benchmark: BPF_PROG_TEST_RUN, {repeat} repetitions, fastest of {ROUNDS} rounds, ns/packet"
    );
    println!("kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();

    let sip_v4 = Frame::udp("198.18.66.9", 5060).build();
    let baseline = per_packet(k.kernel.baseline().expect("baseline program"), &sip_v4, repeat);
    let row = |name: &str, k: &mut TestKernel, frame: &[u8]| {
        let ns = per_packet(k.kernel.program(), frame, repeat);
        println!("{name:<48} {ns:>7.1} ns  {:>5.2}x", ns / baseline);
        ns
    };
    println!("{:<48} {baseline:>7.1} ns  {:>5.2}x", "pass-everything reference program", 1.0);

    k.set_rules(&[
        rule(1, "198.18.66.0/24", NetAction::Deny, Scope::Sip),
        rule(2, "198.18.77.0/24", NetAction::Allow, Scope::Sip),
        rule(3, "2001:db8:66::/48", NetAction::Deny, Scope::Sip),
        rule(4, "198.18.88.8/32", NetAction::Deny, Scope::All),
    ]);
    row("drop: blocked IPv4 prefix (/24, LPM)", &mut k, &sip_v4);
    row("drop: blocked IPv4 address (/32, exact hash)", &mut k, &Frame::udp("198.18.88.8", 5060).build());
    row("drop: blocked IPv6 prefix (/48, LPM)", &mut k, &Frame::udp("2001:db8:66::1", 5060).build());
    let authorized = row("pass: authorized IPv4 prefix", &mut k, &Frame::udp("198.18.77.7", 5060).build());
    row("pass: no rule, guarded port (clean)", &mut k, &Frame::udp("198.18.99.9", 5060).build());
    row("pass: no rule, unguarded port", &mut k, &Frame::udp("198.18.99.9", 53).build());
    row("pass: IPv6, two extension headers, no rule", &mut k, &{
        let mut f = Frame::udp("2001:db8:99::1", 5060);
        f.ipv6_ext = vec![0, 60];
        f.build()
    });
    row(
        "pass: QinQ-tagged IPv4, no rule",
        &mut k,
        &Frame::udp("198.18.99.9", 5060).vlans(&[0x88a8, 0x8100]).build(),
    );
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let svmap = Frame::udp("198.18.99.9", 5060).payload(&svmap).build();
    let svmap_ns = row(&format!("drop: sipvicious OPTIONS, signature ({} B)", svmap.len()), &mut k, &svmap);
    let invite = Frame::udp("198.18.99.9", 5060).payload(&sipmsg::phones()[0].1).build();
    let invite_ns = row(&format!("pass: phone INVITE, inspected ({} B)", invite.len()), &mut k, &invite);
    // The same INVITE's cost taken apart: the copy and first-line check alone (its bytes with
    // the request line broken, so the parse stops there), and the parse without any signature
    // to walk. The differences to the row above are what each later step adds.
    let mut junk = sipmsg::phones()[0].1.clone();
    junk[0] = b'#';
    let junk = Frame::udp("198.18.99.9", 5060).payload(&junk).build();
    row(&format!("  of which: copy + first line (not SIP, {} B)", junk.len()), &mut k, &junk);
    k.set_signatures(&[]);
    row("  of which: + header lines, no signatures", &mut k, &invite);
    k.set_signatures(&default_signatures());
    let mut cfg = Config::default();
    cfg.rate.invite = Bucket { rate: 1, burst: 1 };
    cfg.rate.ban_after_secs = 0;
    let mut limited = TestKernel::with_config(&cfg);
    limited.set_signatures(&default_signatures());
    let limited_ns =
        row(&format!("drop: phone INVITE over its rate limit ({} B)", invite.len()), &mut limited, &invite);

    // The floor of a SIP row: what no SIP-inspecting program can do for less. The network
    // lookups come first (the authorized-prefix row), then the packet must be read at least once:
    // what a program that reads every payload byte with 8-byte loads and does nothing else costs
    // over the do-nothing program, on the same frame.
    println!();
    println!(
        "floors: the authorized-prefix row + reading the payload once (read-once program - do-nothing, same frame)"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "SIP row", "ns", "read once", "floor", "x floor", "goal"
    );
    let mut floor_of = |frame: &[u8]| {
        let nothing = per_packet(k.kernel.baseline().expect("baseline program"), frame, repeat);
        let read = per_packet(k.kernel.read_once().expect("read-once program"), frame, repeat);
        (read - nothing, authorized + (read - nothing))
    };
    let (svmap_read, svmap_floor) = floor_of(&svmap);
    let (invite_read, invite_floor) = floor_of(&invite);
    for (name, ns, read, floor) in [
        ("drop: sipvicious OPTIONS, signature", svmap_ns, svmap_read, svmap_floor),
        ("pass: phone INVITE, inspected", invite_ns, invite_read, invite_floor),
        ("drop: phone INVITE over its rate limit", limited_ns, invite_read, invite_floor),
    ] {
        let ratio = ns / floor;
        let met = if ratio <= 2.0 { "met" } else { "not met" };
        println!("{name:<48} {ns:>10.1} {read:>10.1} {floor:>10.1} {ratio:>9.2}x {:>8}", format!("2x {met}"));
    }

    println!();
    println!(
        "{:<12} {:>12} {:>14} {:>14} {:>9}",
        "prefixes", "load (s)", "drop ns/pkt", "miss ns/pkt", "vs 100"
    );
    let mut base_drop = 0.0;
    for &n in &[100usize, 10_000, 1_000_000] {
        let mut k = TestKernel::with_config(&Config::default());
        let mut all = prefixes(n - 1, 100);
        all.push(rule(1, "198.18.66.0/24", NetAction::Deny, Scope::Sip));
        let t0 = Instant::now();
        let compiled = net::compile(&all, &callguard::clock::Clock::now());
        k.kernel.apply_nets(&compiled).expect("loading prefixes");
        let load = t0.elapsed().as_secs_f64();
        let drop_ns = per_packet(k.kernel.program(), &sip_v4, repeat);
        let miss_ns = per_packet(k.kernel.program(), &Frame::udp("198.18.99.9", 5060).build(), repeat);
        if n == 100 {
            base_drop = drop_ns;
        }
        println!("{n:<12} {load:>12.3} {drop_ns:>14.1} {miss_ns:>14.1} {:>8.2}x", drop_ns / base_drop);
        let t0 = Instant::now();
        drop(k);
        if n >= 1_000_000 {
            println!("{:<12} {:>12.3}  (unpinning and freeing the maps)", "", t0.elapsed().as_secs_f64());
        }
    }
}

/// Seconds of load per measured row.
const ROW: Duration = Duration::from_secs(3);

/// Requests the kernel put under the failure policy (any action): the daemon gone, its queue
/// full, or a request too large to hand up.
fn under_policy(stats: &serde_json::Value) -> u64 {
    ["pass", "drop"]
        .iter()
        .flat_map(|a| ["queue_full", "daemon_gone", "oversize"].map(|r| reason_packets(stats, a, r)))
        .sum()
}

/// One measured load: what arrived, and what the kernel did meanwhile.
struct Row {
    m: Measured,
    handed_up: u64,
    policy: u64,
}

fn measure(t: &Topology, inst: &Instance, rate: u32, duration: Duration) -> Row {
    let from: SocketAddr = "198.18.0.2:5070".parse().expect("address");
    let to: SocketAddr = format!("{}:5060", Topology::PBX_V4).parse().expect("address");
    let before = inst.stats();
    let m = load::run(&t.peer, from, &t.pbx, to, rate, duration);
    let after = inst.stats();
    let delta = |f: &dyn Fn(&serde_json::Value) -> u64| f(&after) - f(&before);
    Row { m, handed_up: delta(&|s| reason_packets(s, "handup", "handed_up")), policy: delta(&under_policy) }
}

fn print_row(rate: u32, path: &str, r: &Row) {
    println!(
        "{rate:>7} {path:<10} {:>7} {:>9.0} {:>8} {:>9} {:>8.0} {:>8.0} {:>8.0} {:>7}",
        r.m.sent,
        r.m.achieved,
        r.m.received(),
        r.handed_up,
        r.m.percentile_us(50.0),
        r.m.percentile_us(99.0),
        r.m.percentile_us(100.0),
        r.policy
    );
}

fn slow_path() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, load::TRUNK_CONFIG);
    let daemon = inst.start();
    let size =
        load::invite_size("198.18.0.2:5070".parse().expect("a"), "198.18.0.1:5060".parse().expect("a"));
    println!(
        "callguard slow-path benchmark: INVITEs ({size} B) over a veth pair into a UDP socket on the PBX, \
         {} s per row",
        ROW.as_secs()
    );
    println!("latency: sent by the caller's socket -> read by the PBX's socket (one clock), microseconds");
    println!(
        "fast path: no rule needs the daemon; hand-up: a disallowed code exists, every INVITE is decided"
    );
    println!("policy: INVITEs the kernel put under the failure policy (daemon gone, queue full, oversize)");
    println!();
    let rates = [1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 80_000];
    let mut fast = Vec::new();
    let _ = measure(&t, &inst, 1_000, Duration::from_millis(500)); // warm-up
    for rate in rates {
        let r = measure(&t, &inst, rate, ROW);
        let short = r.m.achieved < 0.95 * f64::from(rate);
        fast.push(r);
        if short {
            break;
        }
    }
    inst.cli(&[
        "api",
        "POST",
        "/api/disallowed_codes",
        r#"{"number_prefix": "+882", "description": "bench"}"#,
    ]);
    assert_eq!(inst.stats()["calls"]["hand_up_invites"], true, "the daemon did not turn the hand-up on");
    let _ = measure(&t, &inst, 1_000, Duration::from_millis(500)); // warm-up
    let mut slow = Vec::new();
    for &rate in rates.iter().take(fast.len()) {
        let r = measure(&t, &inst, rate, ROW);
        let whole = r.policy == 0 && r.handed_up == r.m.sent && r.m.received() == r.m.sent;
        slow.push(r);
        if !whole {
            break;
        }
    }
    daemon.stop();

    println!(
        "{:>7} {:<10} {:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "rate/s", "path", "sent", "achieved", "received", "handed up", "p50", "p99", "max", "policy"
    );
    for (i, &rate) in rates.iter().enumerate() {
        for (path, rows) in [("fast path", &fast), ("hand-up", &slow)] {
            if let Some(r) = rows.get(i) {
                print_row(rate, path, r);
            }
        }
    }
    println!();
    let (mut sustained, mut prompt) = (None, None);
    for ((&rate, f), s) in rates.iter().zip(&fast).zip(&slow) {
        let (p50, p99) = (s.m.percentile_us(50.0), s.m.percentile_us(99.0));
        println!(
            "added by the hand-up at {rate:>5}/s: p50 {:+6.0} us ({:4.1}x), p99 {:+6.0} us ({:5.1}x)",
            p50 - f.m.percentile_us(50.0),
            p50 / f.m.percentile_us(50.0),
            p99 - f.m.percentile_us(99.0),
            p99 / f.m.percentile_us(99.0),
        );
        if s.policy == 0 && s.handed_up == s.m.sent && s.m.received() == s.m.sent {
            let previous = sustained.replace(rate);
            // Prompt: this rate and every lower one kept p99 under the goal.
            if p99 < 1000.0 && prompt == previous {
                prompt = Some(rate);
            }
        }
    }
    if fast.last().is_some_and(|r| r.m.achieved < 0.95 * f64::from(rates[fast.len() - 1])) {
        println!("the sender could not offer {}/s on this machine", rates[fast.len() - 1]);
    }
    let show = |r: Option<u32>| r.map_or_else(|| "none of the rates tried".to_owned(), |r| format!("{r}/s"));
    println!(
        "highest rate with every INVITE decided by the daemon (none lost, none under the failure policy): {}",
        show(sustained)
    );
    println!("highest rate with every INVITE decided and p99 under 1 ms (goal: 5000/s): {}", show(prompt));
}
