//! Verdicts, their named reasons, and the counters the XDP program keeps for each.
//!
//! Every packet ends with exactly one (action, reason) pair, counted in [`crate::maps::STATS`] at
//! [`stats_index`]. The reason says *why*, the action says *what*: most reasons always come with
//! the same action, but policy-driven ones (fragments, malformed packets) can be passed or
//! dropped depending on configuration, and the counters keep the two apart.

/// What the XDP program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Handed to the kernel stack (`XDP_PASS`).
    Pass = 0,
    /// Discarded at the NIC (`XDP_DROP`).
    Drop = 1,
    /// Copied to the daemon's hand-up queue and taken from the stack (`XDP_DROP`): the daemon
    /// re-injects it, answers it or discards it ([`crate::handup`]).
    HandUp = 2,
}

impl Action {
    /// Number of actions: the first dimension of the stats array.
    pub const COUNT: u32 = 3;
    /// Every action, in code order.
    pub const ALL: [Self; 3] = [Self::Pass, Self::Drop, Self::HandUp];

    /// The XDP return code for this action.
    #[inline(always)]
    pub const fn xdp_action(self) -> u32 {
        match self {
            Self::Pass => 2,                // XDP_PASS
            Self::Drop | Self::HandUp => 1, // XDP_DROP
        }
    }

    /// Lower-case name used in counters, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::HandUp => "handup",
        }
    }

    /// The action for an XDP return code, if it is one callguard uses (`XDP_DROP` reads as
    /// [`Action::Drop`]: a hand-up is told apart by its counter, not its code).
    pub const fn from_xdp(code: u32) -> Option<Self> {
        match code {
            2 => Some(Self::Pass),
            1 => Some(Self::Drop),
            _ => None,
        }
    }
}

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $name:literal; )*) => {
        /// Why a packet got its verdict. Codes are stable: they index pinned counters that
        /// outlive a daemon upgrade, so a code is never reused for another meaning.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $( $(#[doc = $doc])* $variant = $code, )*
        }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The stable snake_case name used in counters, logs, metrics and the API.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// One-line description for people (the first doc line of the variant).
            pub const fn describe(self) -> &'static str {
                match self { $(Self::$variant => first_doc(&[$($doc),*]),)* }
            }

            /// The reason with this code.
            pub const fn from_code(code: u32) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)* _ => None }
            }

            /// The reason with this name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

const fn first_doc(docs: &[&'static str]) -> &'static str {
    if docs.is_empty() { "" } else { docs[0] }
}

reasons! {
    /// Packet to a guarded port that no rule stopped.
    Clean = 0, "clean";
    /// Packet to a port callguard does not guard (or not UDP/TCP), from a network not denied with scope all.
    Unguarded = 1, "unguarded";
    /// Source is inside an authorized (allow) network.
    Allowed = 2, "allowed";
    /// Source is inside a denied network (scope sip: guarded ports only; scope all: every packet).
    Denied = 3, "denied";
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp = 4, "not_ip";
    /// A non-first IPv4 fragment or an IPv6 fragment without its transport header.
    Fragment = 5, "fragment";
    /// Frame ends inside the Ethernet header or a VLAN tag.
    TruncatedL2 = 6, "truncated_l2";
    /// Frame ends inside the IPv4 or IPv6 header or an IPv6 extension header.
    TruncatedL3 = 7, "truncated_l3";
    /// IPv4 header length (IHL) below 20 bytes, or a version field that contradicts the EtherType.
    BadL3Header = 8, "bad_l3_header";
    /// More IPv6 extension headers than the program walks, or a VLAN stack deeper than two tags.
    /// IPv6: dropped from sources outside the authorized networks (`policy.ipv6_long_chains`).
    HeaderChainTooLong = 9, "header_chain_too_long";
    /// Frame ends inside the UDP or TCP header.
    TruncatedL4 = 10, "truncated_l4";
    /// UDP length below 8 or beyond the packet, or TCP data offset below 20 bytes.
    BadL4Header = 11, "bad_l4_header";
    /// UDP to a guarded port that is neither a SIP request, a SIP response nor a keepalive.
    NotSip = 12, "not_sip";
    /// A scanner signature matched the User-Agent or the From/To display name or user (pass: dry-run).
    Signature = 13, "signature";
    /// A request method that the method policy refuses from unauthorized sources.
    Method = 14, "method";
    /// A CRLF or STUN keepalive to a guarded port.
    Keepalive = 15, "keepalive";
    /// A SIP request over one of its source's rate limits (all requests, REGISTER, INVITE).
    Rate = 16, "rate";
    /// A source the kernel banned (kept exceeding its rate limits, enumerated users, or matched a signature).
    Banned = 17, "banned";
    /// A request handed to the daemon for number-level checks (border rules, numbers, codes), or an ACK to one of its 403s.
    HandedUp = 18, "handed_up";
    /// A request that needed the daemon while its heartbeat was stale; the failure policy decided.
    DaemonGone = 19, "daemon_gone";
    /// A request that needed the daemon while its hand-up queue was full: dropped (or passed, with calls.queue_full = "open").
    QueueFull = 20, "queue_full";
    /// A request that needed the daemon but was fragmented or too long to hand up whole: dropped, its numbers unchecked.
    Oversize = 21, "oversize";
    /// A fragmented datagram to a guarded UDP port, not a SIP response, from a source outside the authorized networks.
    Fragmented = 22, "fragmented";
    /// A SIP request with more than one To, From or Call-ID header: readers disagree on which counts.
    DuplicateHeader = 23, "duplicate_header";
    /// A SIP request with a header line this parser cannot read but a PBX may (a From, To, Call-ID, Via, Contact or User-Agent name with its colon past eight spaces or tabs).
    AmbiguousHeader = 24, "ambiguous_header";
    /// A REGISTER for a user guarded after failed authentications from many sources (auth.user_failures), from a source outside the authorized networks that the PBX has not registered.
    GuardedUser = 25, "guarded_user";
}

impl Reason {
    /// Slots reserved per action in the stats array: room for reasons added later without
    /// resizing a pinned map.
    pub const SLOTS: u32 = 64;
}

/// Index of the (action, reason) counter in [`crate::maps::STATS`].
#[inline(always)]
pub const fn stats_index(action: Action, reason: Reason) -> u32 {
    action as u32 * Reason::SLOTS + reason as u32
}

/// Counters the program keeps in [`crate::maps::STATS`], by [`stats_index`].
pub const STATS_LEN: u32 = Action::COUNT * Reason::SLOTS;

/// Size of [`crate::maps::STATS`]: the program's [`STATS_LEN`] counters, then as many holding
/// what upgrades carried over from the maps before (slot `STATS_LEN + stats_index`), which only
/// the daemon writes: an upgrade copies the old totals there before its first swap and again
/// after its last, so no count is lost between the copy and the swap, and none to a program
/// counting while the daemon writes.
pub const STATS_SLOTS: u32 = 2 * STATS_LEN;

/// Packets and bytes, kept per CPU (no atomics on the fast path) and summed by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted: the frame length as XDP saw it (Ethernet header included).
    pub bytes: u64,
}

const _: () = assert!(size_of::<Counter>() == 16);

impl Counter {
    /// Adds another counter (used to sum the per-CPU values).
    #[must_use]
    pub const fn add(self, other: Self) -> Self {
        Self { packets: self.packets + other.packets, bytes: self.bytes + other.bytes }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}
