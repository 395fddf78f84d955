//! Policy knobs the XDP program reads on every packet.

/// [`crate::maps::PORTS`] bit: UDP to this port is guarded.
pub const PORT_UDP: u8 = 1;
/// [`crate::maps::PORTS`] bit: TCP to this port is guarded.
pub const PORT_TCP: u8 = 2;

/// [`KernelConfig::flags`]: drop non-first IPv4 fragments and IPv6 fragments without a transport
/// header (default: pass and count).
pub const FLAG_DROP_FRAGMENTS: u32 = 1 << 0;
/// [`KernelConfig::flags`]: drop packets with a malformed transport header when they target a
/// guarded port (default: pass and count). Packets whose port cannot be read are always passed.
pub const FLAG_DROP_MALFORMED: u32 = 1 << 1;

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
    pub flags: u32,
    /// Reserved for later knobs; zero.
    pub _reserved: u32,
}

const _: () = assert!(size_of::<KernelConfig>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u32 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for KernelConfig {}
