//! Policy knobs the XDP program reads on every packet.

/// [`crate::maps::PORTS`] bit: UDP to this port is guarded.
pub const PORT_UDP: u8 = 1;
/// [`crate::maps::PORTS`] bit: TCP to this port is guarded.
pub const PORT_TCP: u8 = 2;

/// [`KernelConfig::flags`]: drop non-first IPv4 fragments and IPv6 fragments without a transport
/// header (default: pass and count).
pub const FLAG_DROP_FRAGMENTS: u16 = 1 << 0;
/// [`KernelConfig::flags`]: drop packets with a malformed transport header when they target a
/// guarded port (default: pass and count). Packets whose port cannot be read are always passed.
pub const FLAG_DROP_MALFORMED: u16 = 1 << 1;

/// [`KernelConfig::flags`]: drop UDP to a guarded port that is not SIP (a request, a response or a
/// keepalive). Set by default.
pub const FLAG_DROP_NOT_SIP: u16 = 1 << 2;
/// [`KernelConfig::flags`]: a request that matches an enforcing scanner signature also bans its
/// source (for [`crate::limits::Limits::ban_ns`]), as a rate or enumeration ban does. Set by
/// default.
pub const FLAG_BAN_SIGNATURE: u16 = 1 << 3;
/// [`KernelConfig::flags`]: hand initial INVITEs (no To tag) from sources outside the
/// authorized networks up to the daemon ([`crate::handup`]). Set by the daemon while rules exist
/// that need it (border rules, blacklisted numbers, disallowed codes, allowed country codes,
/// authorization codes).
pub const FLAG_HANDUP_INVITE: u16 = 1 << 4;
/// [`KernelConfig::flags`]: hand REGISTERs from sources outside the authorized networks up to
/// the daemon. Set while an enabled border rule has a user name or domain pattern.
pub const FLAG_HANDUP_REGISTER: u16 = 1 << 5;
/// [`KernelConfig::flags`]: failure policy of the slow path. Set: a request that needs the
/// daemon while it is gone (stale heartbeat) is dropped (fail-closed). Clear (the default): it
/// passes to the stack unchecked (fail-open). Only for the daemon being gone: what a sender
/// controls (fragments, length, a flood that fills the queue) never meets this policy.
pub const FLAG_FAIL_CLOSED: u16 = 1 << 6;
/// [`KernelConfig::flags`]: drop a fragmented datagram to a guarded UDP port from a source
/// outside the authorized networks unless its first fragment is a SIP response: the later
/// fragments, which the program cannot read, could hide a signature or a number. Set by default.
pub const FLAG_DROP_FRAGMENTED_SIP: u16 = 1 << 7;
/// [`KernelConfig::flags`]: drop an IPv6 packet whose transport header lies beyond the extension
/// headers the program walks (so its port is unknown: it may be SIP) from a source outside the
/// authorized networks. Set by default.
pub const FLAG_DROP_LONG_CHAINS: u16 = 1 << 8;
/// [`KernelConfig::flags`]: a request that needs the daemon while its hand-up queue is full
/// passes unchecked. Clear (the default): it is dropped (`queue_full`): a flood that fills the
/// queue, from however many spoofed sources, then delays calls (phones retransmit an INVITE)
/// instead of letting every call through unchecked.
pub const FLAG_QUEUE_FULL_OPEN: u16 = 1 << 9;
/// The index of the single record in [`crate::maps::CONFIG`].
pub const CONFIG_KEY: u32 = 0;

/// Value of [`crate::maps::CONFIG`], a one-slot array (the cheapest lookup there is: the verifier
/// inlines it). The record is one aligned 8-byte word, so the daemon's update is a single store
/// and a packet reads the old or the new record, never a mix; the size assertion below keeps it
/// so. All zero means the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// `FLAG_*` bits.
    pub flags: u16,
    /// The bank of [`crate::maps::SIG_DFA`] and [`crate::maps::SIG_HEAD`] in use (0 or 1).
    pub sig_bank: u8,
    /// Explicit padding (zero).
    pub _pad: u8,
    /// Bit `1 << method id` ([`crate::sip::method`]) set: drop that method from sources outside
    /// the authorized networks. Bit 0 is methods callguard does not know.
    pub method_drop: u32,
}

const _: () = assert!(size_of::<KernelConfig>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for KernelConfig {}
