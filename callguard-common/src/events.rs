//! The records of `CG_EVENTS`, the ring buffer through which the program tells the daemon about
//! sampled drops and the bans it imposed.

/// Event kinds ([`Event::kind`]).
pub mod event {
    /// A sampled drop.
    pub const DROP: u8 = 1;
    /// The kernel banned a source that kept exceeding its rate limits.
    pub const BAN_RATE: u8 = 2;
    /// The kernel banned a source for enumerating users.
    pub const BAN_ENUM: u8 = 3;
    /// The kernel banned a source for a request that matched an enforcing signature
    /// ([`Event::sig_slot`](super::Event::sig_slot) names it).
    pub const BAN_SIGNATURE: u8 = 4;
    /// The kernel banned a source whose failed authentications reached the limit (the
    /// egress program, from the PBX's answers; see [`crate::auth`]).
    pub const BAN_AUTH: u8 = 5;
    /// Not the kernel's: the daemon banned the source of a call past a fraud threshold
    /// (`calls.fraud.ban_secs`). Defined here with the kernel's kinds so that the two never share
    /// a number.
    pub const BAN_FRAUD: u8 = 6;
    /// The egress program guarded a user whose failed authentications, from any sources,
    /// reached `auth.user_failures` ([`crate::auth::UserAuth`]): [`Event::ua`](super::Event::ua)
    /// holds the start of the user part as the To wrote it (empty when the To could not be
    /// read), [`Event::addr`](super::Event::addr) the source of the last failure.
    pub const GUARD_USER: u8 = 7;

    /// The cause a ban of `kind` is reported with (events, alerts, metrics); `None` for a kind
    /// that is no ban.
    pub const fn ban_cause(kind: u8) -> Option<&'static str> {
        match kind {
            BAN_RATE => Some("rate"),
            BAN_ENUM => Some("enumeration"),
            BAN_SIGNATURE => Some("signature"),
            BAN_AUTH => Some("authentication"),
            BAN_FRAUD => Some("fraud"),
            _ => None,
        }
    }
}

/// One CPU's event sampling and budget state: the value of [`crate::maps::EVENT_BUDGET`].
///
/// Under a flood the events, not the drops, are what costs: each is a ring-buffer record, a
/// wake-up and work in the daemon. The budget bounds that work by time, whatever the packet
/// rate ([`crate::limits::Limits::event_interval_ns`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// Drops seen on this CPU while drop sampling is on (`event_sample` not 0).
    pub drops: u64,
    /// The drop samples' bucket: its theoretical arrival time (`CLOCK_BOOTTIME` ns).
    pub tat: u64,
    /// The signature bans' bucket, of the same size: apart, so that a flood of cheap drops (junk,
    /// denied sources) cannot use up the budget that a scanner's ban is reported from.
    pub ban_tat: u64,
    /// Budgeted events written.
    pub written: u64,
    /// Budgeted events not written: over the budget, or the ring buffer full.
    pub suppressed: u64,
    /// Drops left before the next sample (0: `event_sample` left; never more than it): a
    /// countdown, where `drops % event_sample` would be a 64-bit division on every dropped
    /// packet.
    pub to_sample: u64,
}

const _: () = assert!(size_of::<EventBudget>() == 48);

#[cfg(feature = "user")]
// SAFETY: repr(C), u64 fields only, no padding; every bit pattern valid.
unsafe impl aya::Pod for EventBudget {}

/// Bytes of the User-Agent kept in an event.
pub const EVENT_UA: usize = 32;

/// A record in [`crate::maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `CLOCK_BOOTTIME` ns.
    pub ts_ns: u64,
    /// The source address (IPv4 mapped as `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// [`event`] kind.
    pub kind: u8,
    /// The drop's reason code ([`crate::Reason`]).
    pub reason: u8,
    /// Method id of the request (0: unknown or not a request).
    pub method: u8,
    /// Bytes of `ua` used.
    pub ua_len: u8,
    /// Rule counter slot that decided (0: none).
    pub rule_slot: u16,
    /// Signature counter slot that matched (0: none).
    pub sig_slot: u16,
    /// The first bytes of the User-Agent.
    pub ua: [u8; EVENT_UA],
}

const _: () = assert!(size_of::<Event>() == 8 + 16 + 8 + EVENT_UA);

impl Event {
    /// The source address.
    pub fn addr(&self) -> core::net::IpAddr {
        let v6 = core::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => core::net::IpAddr::V4(v4),
            None => core::net::IpAddr::V6(v6),
        }
    }
}
