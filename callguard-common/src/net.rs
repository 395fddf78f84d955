//! Network rules as the kernel stores them.
//!
//! One [`NetEntry`] per distinct prefix (or single address) holds both the allow and the deny rule
//! for that prefix, if any: an LPM trie can keep only one value per prefix, and "at equal prefix
//! length allow beats deny" must still hold after the allow rule expires and the deny rule does
//! not. Expiry is enforced by the program itself, so an expired deny stops dropping even while the
//! daemon is down; when the longest match has nothing live left, the program looks again with a
//! shorter prefix (see [`NetEntry::prefix_len`]).

/// Deny scope: drop only packets to guarded (SIP) ports.
pub const SCOPE_SIP: u8 = 0;
/// Deny scope: drop every packet from the network.
pub const SCOPE_ALL: u8 = 1;

/// Call profile of an allow rule ([`NetEntry::allow_profile`]): no call checks; the source is
/// trusted as before profiles existed (the default).
pub const PROFILE_TRUSTED: u8 = 0;
/// Call profile: a trunk. Its initial INVITEs go to the daemon, which applies the rules about
/// callers (blacklisted numbers): inbound calls.
pub const PROFILE_TRUNK: u8 = 1;
/// Call profile: phones. Their initial INVITEs go to the daemon, which applies the rules about
/// dialed numbers, authorization codes, roles and fraud thresholds: outbound calls.
pub const PROFILE_PHONES: u8 = 2;

/// How many times the program retries the LPM lookup with a shorter prefix when the longest match
/// holds only expired rules. Bounded for the verifier; past it the address counts as unmatched.
/// The daemon sweeps expired entries, so more than one retry is needed only while it is down.
pub const EXPIRED_RETRIES: u32 = 4;

/// The rules for one prefix: value type of the exact-match maps and LPM tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEntry {
    /// When the allow rule stops applying, in `CLOCK_BOOTTIME` nanoseconds; 0 = never.
    pub allow_expires_ns: u64,
    /// When the deny rule stops applying, in `CLOCK_BOOTTIME` nanoseconds; 0 = never.
    pub deny_expires_ns: u64,
    /// Id of the allow rule for this prefix; 0 = none.
    pub allow_rule: u32,
    /// Id of the deny rule for this prefix; 0 = none.
    pub deny_rule: u32,
    /// Length of this entry's prefix (32/128 in the exact maps). The LPM trie returns only the
    /// value, and the program needs the length to look for a shorter prefix past an expired one.
    pub prefix_len: u8,
    /// [`SCOPE_SIP`] or [`SCOPE_ALL`], for the deny rule.
    pub deny_scope: u8,
    /// The allow rule's slot in [`crate::maps::RULE_STATS`]; 0 = not counted per rule.
    pub allow_slot: u16,
    /// The deny rule's slot in [`crate::maps::RULE_STATS`]; 0 = not counted per rule.
    pub deny_slot: u16,
    /// The allow rule's call profile ([`PROFILE_TRUSTED`], [`PROFILE_TRUNK`],
    /// [`PROFILE_PHONES`]).
    pub allow_profile: u8,
    /// Explicit padding (zero).
    pub _pad: u8,
}

const _: () = assert!(size_of::<NetEntry>() == 32);

#[cfg(feature = "user")]
// SAFETY: repr(C) with explicit padding, only integers, every bit pattern valid.
unsafe impl aya::Pod for NetEntry {}

/// What a [`NetEntry`] says about a source address at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMatch {
    /// A live allow rule (it wins over a deny rule at the same prefix).
    Allow {
        /// The allow rule's id.
        rule: u32,
        /// Its counter slot.
        slot: u16,
        /// Its call profile.
        profile: u8,
    },
    /// A live deny rule and no live allow rule.
    Deny {
        /// The deny rule's id.
        rule: u32,
        /// Its counter slot.
        slot: u16,
        /// [`SCOPE_SIP`] or [`SCOPE_ALL`].
        scope: u8,
    },
    /// Both rules absent or expired: look for a shorter prefix.
    Expired,
}

impl NetEntry {
    /// The verdict of this entry at `now_ns` (`CLOCK_BOOTTIME`): allow beats deny at the same
    /// prefix; an expired rule is as if it were absent.
    #[inline(always)]
    pub const fn decide(&self, now_ns: u64) -> NetMatch {
        if self.allow_rule != 0 && (self.allow_expires_ns == 0 || now_ns < self.allow_expires_ns) {
            return NetMatch::Allow {
                rule: self.allow_rule,
                slot: self.allow_slot,
                profile: self.allow_profile,
            };
        }
        if self.deny_rule != 0 && (self.deny_expires_ns == 0 || now_ns < self.deny_expires_ns) {
            return NetMatch::Deny { rule: self.deny_rule, slot: self.deny_slot, scope: self.deny_scope };
        }
        NetMatch::Expired
    }

    /// Whether any rule here expires: only then does the program need to read the clock.
    #[inline(always)]
    pub const fn expires(&self) -> bool {
        self.allow_expires_ns | self.deny_expires_ns != 0
    }

    /// Whether the entry holds no rule at all (the daemon then deletes it).
    pub const fn is_empty(&self) -> bool {
        self.allow_rule == 0 && self.deny_rule == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(allow_exp: u64, deny_exp: u64) -> NetEntry {
        NetEntry {
            allow_rule: 1,
            allow_expires_ns: allow_exp,
            deny_rule: 2,
            deny_expires_ns: deny_exp,
            deny_scope: SCOPE_ALL,
            prefix_len: 24,
            ..NetEntry::default()
        }
    }

    #[test]
    fn allow_beats_deny_at_equal_prefix() {
        assert_eq!(both(0, 0).decide(100), NetMatch::Allow { rule: 1, slot: 0, profile: PROFILE_TRUSTED });
    }

    #[test]
    fn expired_allow_uncovers_the_deny() {
        assert_eq!(both(50, 0).decide(100), NetMatch::Deny { rule: 2, slot: 0, scope: SCOPE_ALL });
        assert_eq!(both(50, 0).decide(49), NetMatch::Allow { rule: 1, slot: 0, profile: PROFILE_TRUSTED });
    }

    #[test]
    fn all_expired_means_look_shorter() {
        assert_eq!(both(50, 60).decide(60), NetMatch::Expired);
        assert_eq!(NetEntry::default().decide(0), NetMatch::Expired);
    }
}
