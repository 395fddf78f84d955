//! Helpers for callguard's integration tests: a frame builder for `BPF_PROG_TEST_RUN`, a loaded
//! program in a private pin directory that cleans up after itself, and network namespaces joined
//! by veth pairs that are deleted when the test ends, passed or failed.

pub mod flood;
pub mod frame;
pub mod http;
pub mod load;
pub mod model;
pub mod mutate;
pub mod netns;
pub mod sipmsg;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun as _, TestRunOptions};
use callguard::{
    config::Config,
    kernel::datapath::Datapath as _,
    kernel::{Kernel, objects::Loops},
    net::{self, NetAction, NetRule, Origin, Scope},
    sig::{NewSignature, SigField, SigMatch, SigMode, Signature},
};
use callguard_common::{Action, Counter, Reason};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique name for this process and call: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The process named by `rest`, the `<pid>-<n>` that [`unique`] puts after a prefix, when that
/// process is gone. A pid that was reused counts as alive (left alone).
fn gone_owner(rest: &str) -> Option<u32> {
    let (pid, n) = rest.split_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    n.parse::<u32>().ok()?;
    (!Path::new("/proc").join(pid.to_string()).exists()).then_some(pid)
}

/// Removes what tests of processes that are gone left behind: `Drop` cleans up on success and
/// on panic, but not when a test or bench is killed by a signal. Pin directories of test kernels
/// and test daemons (`callguard-test-*`, `callguard-it-*`) are detached and removed; network
/// namespaces of the harness (`cg-<role>-*`) have their processes killed and are deleted. Only
/// names this harness makes are touched.
pub fn sweep_stale() {
    // Namespaces first: a test daemon in one still holds its pins.
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `cg-<role>-<pid>-<n>`
            let Some((_role, rest)) = name.strip_prefix("cg-").and_then(|r| r.split_once('-')) else {
                continue;
            };
            let Some(pid) = gone_owner(rest) else { continue };
            eprintln!("deleting network namespace {name} (left by process {pid}, which is gone)");
            if let Ok(out) = std::process::Command::new("ip").args(["netns", "pids", &name]).output() {
                for p in
                    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill has no memory preconditions; `p` runs in a namespace this
                    // harness made for a test whose process is gone.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            let _ = std::process::Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("callguard-test-").or_else(|| name.strip_prefix("callguard-it-"));
            if let Some(pid) = rest.and_then(gone_owner) {
                eprintln!("removing {} (left by process {pid}, which is gone)", e.path().display());
                let _ = callguard::kernel::detach_all(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// [`sweep_stale`], once per process: before the first test kernel or namespace.
pub(crate) fn sweep_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sweep_stale);
}

/// The XDP program loaded with its maps pinned in a private directory under `/sys/fs/bpf`,
/// configured with the built-in defaults. Dropping it removes the pins.
#[derive(Debug)]
pub struct TestKernel {
    /// The loaded program and maps.
    pub kernel: Kernel,
    dir: PathBuf,
}

impl TestKernel {
    /// Loads the program with [`TestKernel::quiet`]: the defaults without per-source state.
    pub fn new() -> Self {
        Self::with_config(&Self::quiet())
    }

    /// The default configuration (UDP/TCP 5060-5061 guarded), but with rate limits,
    /// enumeration detection and signature bans off, so tests that send many requests from one
    /// source see only what they test.
    pub fn quiet() -> Config {
        let mut cfg = Config::default();
        cfg.rate.requests.rate = 0;
        cfg.rate.register.rate = 0;
        cfg.rate.invite.rate = 0;
        cfg.enumeration.users = 0;
        cfg.sip.signature_ban = false;
        cfg
    }

    /// Loads the program with the ports and policy of `cfg`.
    pub fn with_config(cfg: &Config) -> Self {
        Self::in_dir(PathBuf::from("/sys/fs/bpf").join(unique("callguard-test")), cfg)
    }

    /// Loads the program with the ports and policy of `cfg`, its maps pinned in `dir` (which
    /// may hold maps pinned already); `dir` is removed on drop.
    pub fn in_dir(dir: PathBuf, cfg: &Config) -> Self {
        Self::build_in_dir(dir, cfg, Loops::of_this_kernel())
    }

    /// [`TestKernel::with_config`] with the given build of the object (see
    /// `callguard_common::loops`), whichever this kernel would be given.
    pub fn with_loops(cfg: &Config, loops: Loops) -> Self {
        Self::build_in_dir(PathBuf::from("/sys/fs/bpf").join(unique("callguard-test")), cfg, loops)
    }

    fn build_in_dir(dir: PathBuf, cfg: &Config, loops: Loops) -> Self {
        assert!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() } == 0,
            "kernel tests load XDP programs and must run as root"
        );
        sweep_stale_once();
        let mut kernel = match Kernel::load_build(&dir, &cfg.tables, loops) {
            Ok(k) => k,
            Err(e) => {
                // Maps were pinned before the verifier ran; leave nothing behind.
                let _ = callguard::kernel::detach_all(&dir);
                panic!("loading the XDP program: {e:#}");
            }
        };
        kernel.set_ports(&cfg.port_bits()).unwrap();
        kernel.set_config(cfg.kernel_config()).unwrap();
        kernel.set_limits(cfg.kernel_limits()).unwrap();
        Self { kernel, dir }
    }

    /// The pin directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the kernel's network maps hold exactly `rules`, compiled as the daemon does.
    pub fn set_rules(&mut self, rules: &[NetRule]) {
        let compiled = net::compile(rules, &callguard::clock::Clock::now());
        self.kernel.apply_nets(&compiled).unwrap();
    }

    /// Makes the kernel's signature automata hold exactly `sigs`, compiled as the daemon does;
    /// returns the compiled bank (the userspace model of the same automata).
    pub fn set_signatures(&mut self, sigs: &[Signature]) -> callguard::sig::Compiled {
        let compiled = callguard::sig::compile(sigs).expect("compiling signatures");
        self.kernel.set_signatures(&compiled).unwrap();
        compiled
    }

    /// The counter of one signature slot.
    pub fn sig_counter(&self, slot: u16) -> Counter {
        self.kernel.sig_stats(&mut std::iter::once(slot)).unwrap()[&slot]
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN`; returns the action.
    pub fn run(&mut self, frame: &[u8]) -> Action {
        let opts = TestRunOptions { data_in: Some(frame), ..Default::default() };
        let res = self.kernel.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
        Action::from_xdp(res.return_value)
            .unwrap_or_else(|| panic!("unexpected XDP code {}", res.return_value))
    }

    /// Runs the egress program (the TC classifier reading the PBX's answers) once on `frame`, as
    /// the host sends it; returns its TC code (0, `TC_ACT_OK`: it never holds anything back).
    pub fn run_egress(&mut self, frame: &[u8]) -> u32 {
        self.run_egress_marked(frame, 0)
    }

    /// As [`TestKernel::run_egress`], for a packet whose socket set `mark` (`SO_MARK`).
    pub fn run_egress_marked(&mut self, frame: &[u8], mark: u32) -> u32 {
        // The start of a `struct __sk_buff`: len and pkt_type (zero: not settable), then mark.
        let mut ctx = [0u8; 12];
        ctx[8..].copy_from_slice(&mark.to_ne_bytes());
        let opts = TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), ..Default::default() };
        self.kernel.egress().test_run(opts).expect("BPF_PROG_TEST_RUN of the egress program").return_value
    }

    /// What `CG_AUTH` holds for the source key `key` (failed authentications, pending requests).
    pub fn auth_state(&self, key: &[u8; 16]) -> Option<callguard_common::auth::AuthState> {
        let path = self.kernel.pin_dir().join(callguard_common::maps::AUTH);
        let data = aya::maps::MapData::from_pin(&path).expect("the pinned CG_AUTH");
        let map: aya::maps::HashMap<_, [u8; 16], callguard_common::auth::AuthState> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("CG_AUTH is a hash");
        map.get(key, 0).ok()
    }

    /// `CG_SOURCES`, the sources' states, opened from its pin.
    fn sources(
        &self,
    ) -> aya::maps::HashMap<aya::maps::MapData, [u8; 16], callguard_common::limits::SourceState> {
        let path = self.kernel.pin_dir().join(callguard_common::maps::SOURCES);
        let data = aya::maps::MapData::from_pin(&path).expect("the pinned CG_SOURCES");
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("CG_SOURCES is a hash")
    }

    /// Deletes the source key `key`'s state from `CG_SOURCES` behind the daemon's back, as the
    /// LRU map evicts a source's state when new sources need room; `false` if it had none.
    pub fn evict_source(&self, key: &[u8; 16]) -> bool {
        self.sources().remove(key).is_ok()
    }

    /// Writes the source key `key`'s state in `CG_SOURCES`, as an upgrade writes the states it
    /// carries over (a ban there, and not in the source's cache slot).
    pub fn set_source_state(&self, key: &[u8; 16], state: callguard_common::limits::SourceState) {
        self.sources().insert(key, state, 0).expect("writing CG_SOURCES");
    }

    /// The index of the source cache slot (`CG_SOURCE_CACHE`) the source key `key` maps to,
    /// under this kernel's hash key.
    pub fn cache_slot_of(&self, key: &[u8; 16]) -> u32 {
        use callguard_common::limits::{cache_key, cache_slot};
        cache_slot(cache_key(key), self.kernel.source_cache_seed().expect("reading CG_SOURCE_CACHE"))
    }

    /// Clears the source cache slot of the source key `key`, as the daemon does first when it
    /// lifts the source's ban (then it removes the state).
    pub fn clear_source_cache_slot(&self, key: &[u8; 16]) {
        let path = self.kernel.pin_dir().join(callguard_common::maps::SOURCE_CACHE);
        let data = aya::maps::MapData::from_pin(&path).expect("the pinned CG_SOURCE_CACHE");
        let mut map: aya::maps::Array<_, callguard_common::limits::SourceSlot> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("CG_SOURCE_CACHE is an array");
        map.set(self.cache_slot_of(key), callguard_common::limits::SourceSlot::default(), 0)
            .expect("writing CG_SOURCE_CACHE");
    }

    /// The slot of the source cache (`CG_SOURCE_CACHE`) that the source key `key` maps to.
    pub fn source_cache_slot(&self, key: &[u8; 16]) -> callguard_common::limits::SourceSlot {
        let path = self.kernel.pin_dir().join(callguard_common::maps::SOURCE_CACHE);
        let data = aya::maps::MapData::from_pin(&path).expect("the pinned CG_SOURCE_CACHE");
        let map: aya::maps::Array<_, callguard_common::limits::SourceSlot> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("CG_SOURCE_CACHE is an array");
        map.get(&self.cache_slot_of(key), 0).expect("reading CG_SOURCE_CACHE")
    }

    /// What `CG_AUTH_USERS` holds: failed authentications by user key.
    pub fn auth_users(&self) -> Vec<(u64, callguard_common::auth::UserAuth)> {
        let path = self.kernel.pin_dir().join(callguard_common::maps::AUTH_USERS);
        let data = aya::maps::MapData::from_pin(&path).expect("the pinned CG_AUTH_USERS");
        let map: aya::maps::HashMap<_, u64, callguard_common::auth::UserAuth> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("CG_AUTH_USERS is a hash");
        map.iter().map(|r| r.expect("reading CG_AUTH_USERS")).collect()
    }

    /// The counter of one (action, reason).
    pub fn counter(&self, action: Action, reason: Reason) -> Counter {
        self.kernel
            .stats()
            .unwrap()
            .into_iter()
            .find(|(a, r, _)| *a == action && *r == reason)
            .map_or(Counter::default(), |(_, _, c)| c)
    }

    /// Every non-zero (action, reason) counter.
    pub fn counters(&self) -> Vec<(Action, Reason, Counter)> {
        self.kernel.stats().unwrap()
    }

    /// Asserts that the only non-zero (action, reason) counters are exactly `expected`
    /// (packets).
    #[track_caller]
    pub fn assert_counters(&self, expected: &[(Action, Reason, u64)]) {
        let mut got: Vec<(Action, Reason, u64)> =
            self.counters().into_iter().map(|(a, r, c)| (a, r, c.packets)).collect();
        let mut want = expected.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    /// The counter of one rule id.
    pub fn rule_counter(&self, id: u32) -> Counter {
        self.kernel.rule_stats().unwrap().get(&id).copied().unwrap_or_default()
    }
}

impl Default for TestKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestKernel {
    fn drop(&mut self) {
        if let Err(e) = callguard::kernel::detach_all(&self.dir) {
            eprintln!("cleanup of {}: {e:#}", self.dir.display());
        }
    }
}

/// A rule for tests: `id`, network, action, scope; no expiry.
pub fn rule(id: u32, cidr: &str, action: NetAction, scope: Scope) -> NetRule {
    NetRule {
        id,
        cidr: net::parse_net(cidr).expect("cidr"),
        action,
        scope,
        profile: net::Profile::Trusted,
        expires_at: None,
        comment: String::new(),
        origin: Origin::Manual,
        list: None,
        created_at: chrono::Utc::now(),
    }
}

/// A signature for tests: id and counter slot `id`.
pub fn signature(id: u32, field: SigField, matches: SigMatch, text: &str, mode: SigMode) -> Signature {
    Signature {
        id,
        sig: NewSignature { field, matches, text: text.into(), mode, comment: String::new() },
        slot: id as u16,
        origin: "operator".into(),
        created_at: chrono::Utc::now(),
    }
}

/// The shipped default signatures, with ids and slots 1, 2, ... in order.
pub fn default_signatures() -> Vec<Signature> {
    callguard::sig::numbered_defaults()
}
