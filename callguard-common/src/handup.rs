//! The slow path ("packets passed up"): requests the XDP program hands to the daemon because
//! deciding them needs what the kernel cannot evaluate (numbers, regular expressions,
//! authorization codes).
//!
//! The program copies the whole frame into [`crate::maps::HANDUP`] and drops it; the daemon
//! decides and re-injects, answers `403 Forbidden` or discards. It hands up only while the
//! daemon's heartbeat ([`crate::maps::HEARTBEAT`]) is fresh and the ring has room; otherwise the
//! failure policy ([`crate::config::FLAG_FAIL_CLOSED`]) decides at once.

/// Bytes of a frame a hand-up record holds. A request that needs the slow path and is longer
/// (or arrives fragmented) cannot be handed up whole: the failure policy decides it, counted as
/// [`crate::Reason::Oversize`].
pub const FRAME_MAX: usize = 2048;

/// The heartbeat is stale (the daemon is taken for gone) when it is older than this. The daemon
/// beats every [`HEARTBEAT_EVERY_MS`], so a live daemon is never taken for gone, and a dead one
/// is noticed within this time: well within the two seconds the design allows.
pub const HEARTBEAT_TIMEOUT_NS: u64 = 1_000_000_000;
/// How often the daemon writes the heartbeat, in milliseconds.
pub const HEARTBEAT_EVERY_MS: u64 = 200;

/// One handed-up frame, as the program writes it into [`crate::maps::HANDUP`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HandUp {
    /// `CLOCK_BOOTTIME` when the program handed the frame up, in nanoseconds.
    pub ts_ns: u64,
    /// The interface the frame arrived on.
    pub ifindex: u32,
    /// Bytes of `frame` that hold the frame (the whole frame: longer ones are never handed up).
    pub len: u16,
    /// Explicit padding (zero).
    pub _pad: u16,
    /// The frame, from its Ethernet header on.
    pub frame: [u8; FRAME_MAX],
}

const _: () = assert!(size_of::<HandUp>() == 16 + FRAME_MAX);

impl HandUp {
    /// The bytes of the frame.
    pub fn bytes(&self) -> &[u8] {
        &self.frame[..usize::from(self.len).min(FRAME_MAX)]
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and bytes only, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for HandUp {}
