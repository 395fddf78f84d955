//! Failed authentications, counted from the PBX's own answers: what fail2ban reads from the
//! PBX's log, read here from the wire, so it works with any PBX and needs no log.
//!
//! The XDP program notes each REGISTER or INVITE it lets through from a source outside the
//! authorized networks that carries credentials (an `Authorization` or `Proxy-Authorization`
//! header), or that it could not read to the end of its headers (credentials may lie there):
//! [`AuthState::on_request`]. The egress program reads the PBX's final answers to REGISTER and
//! INVITE ([`crate::answer`]) and calls [`AuthState::on_answer`] for the source they go to. A
//! `401` or `407` to a credentialed request is a failed authentication, unless the challenge
//! says `stale=true` (the password was right, the nonce had expired: phones see that on every
//! re-registration with some PBXs); a `403` to a REGISTER always is, and to an INVITE when it
//! answers credentials. A challenge to a request without credentials, the first step of every
//! digest authentication, never counts. When a source's failures within
//! [`crate::limits::Limits::auth_window_ns`] reach [`crate::limits::Limits::auth_failures`], it
//! is banned like a rate ban.
//!
//! Answers are matched to requests by count, per source and method: each answer of a kind that
//! ends an authentication attempt (`2xx`, `401`, `407`, `403`) takes one pending credentialed
//! request. A guesser cannot make a wrong guess's `401` find nothing pending by sending
//! requests without credentials beside it: their challenges take a pending request and count
//! as the failure instead. The same code runs in both programs and in the model the tests
//! compare the kernel with.

use crate::sip::method;

/// Per-source state: the value of [`crate::maps::AUTH`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Start of the current window (`CLOCK_BOOTTIME` ns).
    pub window_start: u64,
    /// Failed authentications within the window.
    pub failures: u32,
    /// Credentialed requests the PBX has not answered yet, by [`slot`]: REGISTER, INVITE.
    pub pending: [u16; 2],
}

const _: () = assert!(size_of::<AuthState>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding (8 + 4 + 2 * 2); every bit pattern valid.
unsafe impl aya::Pod for AuthState {}

/// The index of a method in [`AuthState::pending`]: REGISTER and INVITE carry authentication.
#[inline(always)]
pub const fn slot(m: u8) -> Option<usize> {
    match m {
        method::REGISTER => Some(0),
        method::INVITE => Some(1),
        _ => None,
    }
}

impl AuthState {
    /// Starts a new window, forgetting the old one, when `window_ns` has passed since it began.
    #[inline(always)]
    fn roll(&mut self, now: u64, window_ns: u64) {
        if now.wrapping_sub(self.window_start) >= window_ns {
            *self = Self { window_start: now, ..Self::default() };
        }
    }

    /// A REGISTER or INVITE with credentials (or headers the kernel could not read to their end)
    /// went to the PBX.
    #[inline(always)]
    pub fn on_request(&mut self, m: u8, now: u64, window_ns: u64) {
        let Some(i) = slot(m) else { return };
        self.roll(now, window_ns);
        self.pending[i] = self.pending[i].saturating_add(1);
    }

    /// The PBX answered a request of method `m` with `status` (a final answer); `stale`: its
    /// challenge says `stale=true`. `true` when the answer is a failed authentication, counted.
    #[inline(always)]
    pub fn on_answer(&mut self, m: u8, status: u16, stale: bool, now: u64, window_ns: u64) -> bool {
        let Some(i) = slot(m) else { return false };
        let challenge = status == 401 || status == 407;
        let forbidden = status == 403;
        if !(challenge || forbidden || (200..300).contains(&status)) {
            return false;
        }
        self.roll(now, window_ns);
        let had = self.pending[i] > 0;
        if had {
            self.pending[i] -= 1;
        }
        let failed = (challenge && had && !stale) || (forbidden && (had || m == method::REGISTER));
        if failed {
            self.failures = self.failures.saturating_add(1);
        }
        failed
    }

    /// Whether the failures reached `limit` (0: counting is off); a ban starts the count anew.
    #[inline(always)]
    pub fn reached(&mut self, limit: u32) -> bool {
        if limit == 0 || self.failures < limit {
            return false;
        }
        self.failures = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::method::{INVITE, OPTIONS, REGISTER};

    const W: u64 = 600_000_000_000;

    #[test]
    fn a_challenge_then_the_right_password_counts_nothing() {
        let mut st = AuthState::default();
        // REGISTER without credentials → 401; with them → 200; again a minute later.
        for t in [1, 60_000_000_000] {
            assert!(!st.on_answer(REGISTER, 401, false, t, W));
            st.on_request(REGISTER, t, W);
            assert!(!st.on_answer(REGISTER, 200, false, t, W));
        }
        // Re-registering with a nonce that expired: the PBX says so, nothing counts.
        st.on_request(REGISTER, 2, W);
        assert!(!st.on_answer(REGISTER, 401, true, 2, W));
        assert_eq!(st.failures, 0);
    }

    #[test]
    fn wrong_passwords_count_until_the_limit() {
        let mut st = AuthState::default();
        for k in 1..=5u32 {
            st.on_request(REGISTER, u64::from(k), W);
            assert!(st.on_answer(REGISTER, 401, false, u64::from(k), W));
            assert_eq!(st.reached(5), k == 5, "{k}");
        }
        assert_eq!(st.failures, 0, "a ban starts the count anew");
        // A 403 to a REGISTER counts even without credentials; to an INVITE only with them.
        assert!(st.on_answer(REGISTER, 403, false, 9, W));
        assert!(!st.on_answer(INVITE, 403, false, 9, W));
        st.on_request(INVITE, 9, W);
        assert!(st.on_answer(INVITE, 407, false, 9, W));
        assert!(!st.on_answer(OPTIONS, 401, false, 9, W), "OPTIONS carries no authentication here");
        // The window: failures older than it are forgotten.
        st.on_request(REGISTER, 9 + W, W);
        assert!(st.on_answer(REGISTER, 401, false, 9 + W, W));
        assert_eq!(st.failures, 1);
    }

    #[test]
    fn requests_without_credentials_do_not_hide_a_wrong_guess() {
        // A guess and a credential-less REGISTER sent together: whichever challenge comes
        // first counts, one failure per guess.
        let mut st = AuthState::default();
        st.on_request(REGISTER, 1, W);
        let first = st.on_answer(REGISTER, 401, false, 1, W);
        let second = st.on_answer(REGISTER, 401, false, 1, W);
        assert_eq!((first, second), (true, false));
        assert_eq!(st.failures, 1);
        // Answers that end no attempt (a 404, a provisional answer) take nothing pending.
        let mut st = AuthState::default();
        st.on_request(REGISTER, 1, W);
        assert!(!st.on_answer(REGISTER, 404, false, 1, W));
        assert!(!st.on_answer(REGISTER, 100, false, 1, W));
        assert!(st.on_answer(REGISTER, 401, false, 1, W));
    }
}
