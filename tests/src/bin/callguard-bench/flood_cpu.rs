//! The flood benchmark, part one: the CPU per packet each filter spends on a flood, in
//! live-frames mode (see `callguard_tests::flood`), side by side on the same traffic.

use std::{path::Path, time::Duration};

use aya::programs::Xdp;
use callguard::{
    config::Config,
    net::{NetAction, NetRule, Origin, Scope},
};
use callguard_tests::{
    TestKernel, default_signatures, flood,
    frame::Frame,
    netns::{Kamailio, Topology, sh},
    rule,
    sipmsg::{self, SvTool},
};
/// How many times the whole table is measured, each cell's fastest run reported: on a shared
/// machine other tenants only ever add time, and a round measures every cell once, so that a
/// busy moment costs one cell one round, not the table. (The kernel part takes the fastest of
/// its rounds likewise.)
const ROUNDS: u32 = 3;

/// The filters of the flood benchmark, in the order of its columns.
const FILTERS: [&str; 8] =
    ["none", "nftables", "iptables bm", "iptables kmp", "xdp-filter", "kamailio", "callguard", "XDP drop"];

/// A subset of the filters and traffics, for work on one of them: the environment variables
/// `CALLGUARD_BENCH_FILTERS` (filter names, comma-separated, as in [`FILTERS`]) and
/// `CALLGUARD_BENCH_TRAFFIC` (a piece of the traffic's name, as in the table). Unset: all. A
/// cell left out prints `-`, and so does a ratio that needs it. `CALLGUARD_BENCH_PACKETS` sets
/// the packets a cell (a longer cell to profile, say), `CALLGUARD_BENCH_ROUNDS` the rounds
/// ([`ROUNDS`]; 1 in the short run). The calls under flood take the same
/// subset (a filter only the first part has is ignored there) and one knob more (see
/// `flood_calls::rates`).
pub(crate) struct Subset {
    filters: Option<Vec<String>>,
    traffic: Option<String>,
}

impl Subset {
    pub(crate) fn from_env() -> Self {
        let filters = std::env::var("CALLGUARD_BENCH_FILTERS").ok().map(|v| {
            let names: Vec<String> = v.split(',').map(|f| f.trim().to_string()).collect();
            for n in &names {
                assert!(
                    FILTERS.contains(&n.as_str()),
                    "CALLGUARD_BENCH_FILTERS: no filter {n:?}; the filters: {FILTERS:?}"
                );
            }
            names
        });
        Self { filters, traffic: std::env::var("CALLGUARD_BENCH_TRAFFIC").ok() }
    }

    /// Whether the filter `f` is measured.
    pub(crate) fn filter(&self, f: &str) -> bool {
        self.filters.as_ref().is_none_or(|names| names.iter().any(|n| n == f))
    }

    /// Whether the traffic named `name` is measured.
    pub(crate) fn traffic(&self, name: &str) -> bool {
        self.traffic.as_ref().is_none_or(|t| name.contains(t.as_str()))
    }

    /// Whether every filter and traffic is measured.
    pub(crate) fn whole(&self) -> bool {
        self.filters.is_none() && self.traffic.is_none()
    }
}

/// The blocked network of the network-rule row: a /19, since xdp-filter holds single addresses
/// only, at most 10,000 of them, and this is as large as a power of two gets within that.
pub(crate) const BLOCKED: &str = "100.64.0.0/19";

/// The sources of the "4,096 sources" row: a scanner spread over a /20 (a botnet, or a cloud
/// tenant's addresses), each packet from one of them at random, each source seen about 500
/// times in a cell. Each is banned by its first packet (the signature), so the row is the
/// kernel's own ban over thousands of sources, their state no longer in the CPU's first caches.
const MANY_SOURCES: &str = "11.1.0.0/20";

/// The source of the "ban stored" row: callguard holds the ban the daemon stores for a scanner
/// a moment after the kernel's own ban (a /32 deny rule, scope SIP, expiring), which is what a
/// one-source flood meets from then on. The bench runs no daemon, so the rule is loaded up
/// front; for every other filter the row is the one-source row again.
const STORED_BAN: &str = "203.0.113.9";

/// The iptables rules of the `iptables` columns, as operators deploy them (one `iptables`
/// command each, after the ipset): the blocked networks as an ipset, a ban list (`recent`)
/// checked first, a string match per enforcing default signature on the User-Agent line
/// (`algo`: bm or kmp; case-insensitive, as callguard's) that drops and bans its source, and a
/// per-source rate limit (`hashlimit`) at callguard's default for all requests (50 a second,
/// burst 100). All in the raw table, before
/// connection tracking.
pub(crate) fn iptables_rules(algo: &str) -> Vec<Vec<String>> {
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
pub(crate) struct XdpFilter {
    iface: String,
    /// Its program, once loaded and filled.
    pub(crate) prog: Option<Xdp>,
    /// Whether [`LIBXDP_DIR`] existed before: if not, it goes when this does.
    libxdp_dir_was_there: bool,
}

/// The directory libxdp (under xdp-filter) creates in the BPF filesystem and leaves behind,
/// empty, after the last unload.
const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = std::process::Command::new("xdp-filter").args(["unload", &self.iface]).output();
        if !self.libxdp_dir_was_there {
            // Only when empty: another libxdp user on this host keeps its pins.
            let _ = std::fs::remove_dir(LIBXDP_DIR);
        }
    }
}

/// Loads xdp-filter (Debian's xdp-tools) on `iface` in the calling thread's namespace, in
/// native mode, denying every address of [`BLOCKED`] as a source (written straight into its
/// map: one `xdp-filter ip` per address would take minutes); its program, to run.
pub(crate) fn xdp_filter_up(iface: &str) -> XdpFilter {
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
    let libxdp_dir_was_there = Path::new(LIBXDP_DIR).exists();
    sh(&["xdp-filter", "load", iface, "--mode", "native"]);
    // From here on it is unloaded however this ends.
    let mut loaded = XdpFilter { iface: iface.to_owned(), prog: None, libxdp_dir_was_there };
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
pub(crate) fn netfilter_up(filter: &str, nft_rules: &Path) {
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
pub(crate) fn netfilter_down(filter: &str) {
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
pub(crate) const NFT_RULES: &str = "table inet cgbench {
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
pub(crate) struct Traffic {
    pub(crate) name: &'static str,
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) spoof: Option<ipnet::Ipv4Net>,
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
                let k = if self.short { self.kept.get_or_insert_with(callguard) } else { &mut callguard() };
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

/// The flood benchmark's traffics: a sipvicious OPTIONS flood from one source, from thousands
/// ([`MANY_SOURCES`]) and from a new source every packet, a phone's REGISTER from four sources,
/// and OPTIONS from the blocked /19.
pub(crate) fn traffics() -> Vec<Traffic> {
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", Topology::PBX_V4, false);
    let register =
        sipmsg::phones().into_iter().find(|(who, _)| who.contains("REGISTER")).expect("a REGISTER").1;
    let frame = |src: &str, payload: &[u8]| Frame::udp(src, 5060).payload(payload).build();
    let net = |s: &str| Some(s.parse::<ipnet::Ipv4Net>().expect("a prefix"));
    vec![
        Traffic {
            name: "sipvicious OPTIONS, one source",
            frames: vec![frame("203.0.113.7", &svmap)],
            spoof: None,
        },
        Traffic {
            name: "sipvicious OPTIONS, 4,096 sources",
            frames: vec![frame("11.1.0.1", &svmap)],
            spoof: net(MANY_SOURCES),
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
    ]
}

/// callguard as the flood benchmark runs it: the default configuration and signatures, a deny
/// rule for [`BLOCKED`] and the stored ban of [`STORED_BAN`].
pub(crate) fn callguard() -> TestKernel {
    let mut k = TestKernel::with_config(&Config::default());
    k.set_signatures(&default_signatures());
    k.set_rules(&[
        rule(1, BLOCKED, NetAction::Deny, Scope::Sip),
        NetRule {
            expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            origin: Origin::Auto,
            ..rule(2, &format!("{STORED_BAN}/32"), NetAction::Deny, Scope::Sip)
        },
    ]);
    k
}

/// The flood benchmark: CPU per packet of each filter, on the same traffic, in one run (see
/// `callguard_tests::flood`). `short`: a small run per cell, for CI, which only checks that
/// every filter was measured.
pub(crate) fn run(short: bool) {
    let t = Topology::new();
    t.pbx.ip(&["link", "set", "dev", &t.pbx_if, "address", flood::PBX_MAC]);
    let repeat: u32 = match std::env::var("CALLGUARD_BENCH_PACKETS") {
        Ok(n) => n.parse().expect("CALLGUARD_BENCH_PACKETS: a number of packets"),
        Err(_) if short => 20_000,
        Err(_) => 2_000_000,
    };
    let rounds: u32 = match std::env::var("CALLGUARD_BENCH_ROUNDS") {
        Ok(n) => {
            n.parse().ok().filter(|&n| n > 0).expect("CALLGUARD_BENCH_ROUNDS: a number of rounds, 1 or more")
        }
        Err(_) if short => 1,
        Err(_) => ROUNDS,
    };
    println!(
        "callguard flood benchmark: live frames (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES) into the \
         stack of an interface in a namespace; CPU ns per packet on the receiving side, {repeat} packets a cell, \
         the fastest of {rounds} rounds (the whole table measured {rounds} times in turn)"
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
        "drop/cheap. nf: the XDP drop column over the cheapest netfilter column, the lowest ratio any XDP filter \
         can reach against netfilter in this harness"
    );
    println!(
        "new source every packet: a spoofer program rewrites each frame's source, then tail-calls the filter's \
         XDP program (its cost is in every column)"
    );
    println!();
    let mut traffic = traffics();
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", Topology::PBX_V4, false);
    traffic.insert(
        1,
        Traffic {
            name: "sipvicious OPTIONS, one source, its ban stored",
            frames: vec![Frame::udp(STORED_BAN, 5060).payload(&svmap).build()],
            spoof: None,
        },
    );
    let subset = Subset::from_env();
    traffic.retain(|tr| subset.traffic(tr.name));
    assert!(!traffic.is_empty(), "CALLGUARD_BENCH_TRAFFIC: no traffic's name holds it");
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
                let mut fastest = vec![vec![f64::NAN; FILTERS.len()]; traffic.len()];
                for _ in 0..rounds {
                    for (tr, row) in traffic.iter().zip(&mut fastest) {
                        for (f, cell) in FILTERS.iter().zip(row.iter_mut()) {
                            if subset.filter(f) {
                                // `min` keeps the number where the cell is still NaN.
                                *cell = cell.min(bench.cell(f, tr).as_nanos() as f64);
                            }
                        }
                    }
                }
                traffic.iter().map(|tr| tr.name).zip(fastest).collect::<Vec<(&str, Vec<f64>)>>()
            })
            .join()
            .expect("the flood benchmark's thread")
    });
    print!("{:<46}", "traffic");
    for f in FILTERS {
        print!(" {f:>12}");
    }
    println!(" {:>14} {:>14} {:>14}", "cg/cheapest nf", "cg/kamailio", "drop/cheap. nf");
    for (name, cells) in &rows {
        print!("{name:<46}");
        for c in cells {
            if c.is_nan() { print!(" {:>12}", "-") } else { print!(" {c:>12.0}") }
        }
        // The cheapest of the netfilter columns (nftables, iptables bm, iptables kmp), and what
        // no XDP filter can go below against it in this harness: the XDP drop column's ratio.
        let cheapest = cells[1..4].iter().copied().filter(|c| !c.is_nan()).fold(f64::INFINITY, f64::min);
        let ratio = |r: f64, prec: usize| {
            if r.is_finite() { format!("{r:>13.prec$}x") } else { format!("{:>14}", "-") }
        };
        println!(
            " {} {} {}",
            ratio(cells[6] / cheapest, 2),
            ratio(cells[6] / cells[5], 3),
            ratio(cells[7] / cheapest, 2)
        );
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
    let measured = rows.iter().flat_map(|(_, cells)| cells).filter(|c| !c.is_nan()).count();
    if subset.filters.is_none() && subset.traffic.is_none() {
        println!("every filter measured on every traffic: {measured} cells");
    } else {
        println!("a subset (CALLGUARD_BENCH_FILTERS, CALLGUARD_BENCH_TRAFFIC): {measured} cells measured");
    }
}
