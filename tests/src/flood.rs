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
//! Every packet of a run is the same frame. A flood from many sources is one run per source;
//! what a run costs beyond its packets is paid alike by every filter, and the "none" column
//! shows it. (One run per packet costs about 8 µs on this kind of machine, which buries what
//! is measured: a flood whose every packet has a new source needs the sources rewritten inside
//! the run — not done yet.)

use std::time::Duration;

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

/// The frames' destination MAC: the receiving interface is given it, so that the stack takes
/// them as its own (see [`crate::frame::Frame::build`]).
pub const PBX_MAC: &str = "02:00:00:00:00:01";

/// Frames per live-frames batch (the kernel's default is NAPI's 64).
const BATCH: u32 = 64;

/// Runs `prog` on `frame` `repeat` times in live-frames mode on the interface `ifindex` (of the
/// calling thread's network namespace); the CPU time per packet.
pub fn live(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Duration {
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

/// [`live`] `per_frame` times on each frame in turn: a flood from many sources (one run per
/// source); the mean CPU time per packet.
pub fn live_each(prog: &mut Xdp, frames: &[Vec<u8>], ifindex: u32, per_frame: u32) -> Duration {
    let total: Duration = frames.iter().map(|f| live(prog, f, ifindex, per_frame)).sum();
    total / frames.len().max(1) as u32
}

/// The index of the interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("an interface name");
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}: {}", std::io::Error::last_os_error());
    i
}

/// `count` distinct IPv4 addresses from a xorshift sequence (the same every run), each with
/// the first two bytes of `within` when given (a /16), else anywhere in 1.0.0.0–223.255.255.255
/// outside 198.18.0.0/15.
pub fn sources(count: usize, within: Option<[u8; 2]>) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let a = match within {
            Some([p, q]) => [p, q, b[2], b[3]],
            None => [1 + b[0] % 223, b[1], b[2], b[3]],
        };
        if (a[0], a[1] & 0xfe) == (198, 18) || a[3] == 0 || a[3] == 255 || !seen.insert(a) {
            continue;
        }
        out.push(format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]));
    }
    out
}
