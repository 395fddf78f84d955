//! The flood benchmark's kernel side: the CPU each filter spends per packet of a flood, measured
//! with `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`).
//!
//! In that mode the kernel makes frames from a page pool, runs an XDP program on them as a
//! driver would, and hands the frames it passes to the stack of the given interface: Linux's
//! own receive path, netfilter, the UDP socket. The run's time is the CPU spent on all of it, on
//! one CPU, with nothing of the sender in it (on a veth pair the sender's cost dominates, and
//! every XDP program there first pays for turning an skb back into a frame). A filter that is
//! not XDP (nftables) runs behind a pass-everything XDP program.
//!
//! Every packet of a run is the same frame. A flood whose every packet has a new source runs
//! through the spoofer first (`callguard_spoof` in callguard's object), which rewrites the
//! source and tail-calls the filter's program; one run per source instead would cost about
//! 8 µs a run on this kind of machine, burying what is measured.

use std::time::Duration;

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

/// The frames' destination MAC: the receiving interface is given it, so that the stack takes
/// them as its own (see [`crate::frame::Frame::build`]).
pub const PBX_MAC: &str = "02:00:00:00:00:01";

/// Frames per live-frames batch (the kernel's default is NAPI's 64).
const BATCH: u32 = 64;

/// Runs `prog` on `frame` `repeat` times in live-frames mode on the interface `ifindex` (of the
/// calling thread's network namespace); the CPU time per packet.
pub fn live(prog: &Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Duration {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. The kernel requires data_end to be the frame's length.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..Default::default()
    };
    prog.test_run(opts).expect("BPF_PROG_TEST_RUN in live-frames mode").duration
}

/// The index of the interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("an interface name");
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}: {}", std::io::Error::last_os_error());
    i
}

/// UDP datagrams delivered to sockets in the calling thread's network namespace so far
/// (`InDatagrams` of `/proc/thread-self/net/snmp`).
pub fn udp_datagrams_read() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("/proc/thread-self/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap_or_default(), udp.next().unwrap_or_default());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .expect("InDatagrams in /proc/net/snmp")
}

/// Waits until a UDP socket of the calling thread's network namespace listens on `port`.
pub fn await_listener(port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let needle = format!(":{port:04X} ");
    while std::time::Instant::now() < deadline {
        let udp = std::fs::read_to_string("/proc/thread-self/net/udp").unwrap_or_default();
        if udp
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1).is_some_and(|a| format!("{a} ").contains(&needle)))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on UDP port {port} after {timeout:?}");
}

/// Frames per call of [`offer`]: one veth receive ring's worth (`VETH_RING_SIZE`), so that a
/// paced generator's bursts are no longer than the ring (a burst still outruns a slower
/// receiver: the ring may drop part of it).
const OFFER_CHUNK: u32 = 256;

/// The flood benchmark's generator: runs `prog` (the transmitter, see
/// `callguard::kernel::Kernel::transmitter`) in live-frames mode on the interface `ifindex`
/// of the calling thread's namespace, the frames of `frames` in turn, at `rate` packets a second
/// (as fast as it can with `None`), until `stop` is set; the packets offered and the time taken.
/// On the sending end of a veth pair every frame goes to the other end's receive ring, as frames
/// from a wire go to a NIC's.
pub fn offer(
    prog: &Xdp,
    frames: &[Vec<u8>],
    ifindex: u32,
    rate: Option<u32>,
    stop: &std::sync::atomic::AtomicBool,
) -> (u64, Duration) {
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = rate.map_or(u64::MAX, |r| (start.elapsed().as_secs_f64() * f64::from(r)) as u64);
        if due < sent + u64::from(OFFER_CHUNK) {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        live(prog, &frames[next % frames.len()], ifindex, OFFER_CHUNK);
        next += 1;
        sent += u64::from(OFFER_CHUNK);
    }
    (sent, start.elapsed())
}

/// Pins the task `tid` (0: the calling thread) to the CPU `cpu`.
pub fn pin(tid: i32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only read
    // and write it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "pinning task {tid} to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// Gives the task `tid` the real-time policy `SCHED_FIFO` at `priority` (1–99).
pub fn realtime(tid: i32, priority: i32) {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: the call only reads `param`, a valid sched_param.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    assert_eq!(rc, 0, "SCHED_FIFO {priority} for task {tid}: {}", std::io::Error::last_os_error());
}

/// The kernel thread that runs the receive NAPI of the interface `iface` once its NAPI is
/// threaded (`/sys/class/net/<iface>/threaded`), if there is one (its name, cut to the 15
/// characters of a task's name, begins `napi/<iface>`).
pub fn napi_thread(iface: &str) -> Option<i32> {
    let prefix = format!("napi/{iface}");
    let prefix = &prefix[..prefix.len().min(15)];
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .max()
}

/// The CPU time the task `tid` has run so far (the first field of `/proc/<tid>/schedstat`).
pub fn task_cpu(tid: i32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).unwrap_or_default();
    Duration::from_nanos(s.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// Packets the interface `name` of the calling thread's namespace has received so far (from
/// `/proc/thread-self/net/dev`).
pub fn rx_packets(name: &str) -> u64 {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").expect("/proc/thread-self/net/dev");
    dev.lines()
        .find_map(|l| {
            let (n, counters) = l.split_once(':')?;
            (n.trim() == name).then(|| counters.split_whitespace().nth(1)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no interface {name} in /proc/thread-self/net/dev"))
}
