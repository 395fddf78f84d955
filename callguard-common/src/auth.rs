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
//!
//! Per user too ([`UserWalk`], [`UserAuth`]): each failure the egress program counts is also
//! charged to the user the answer's To names, whatever source it went to. When one user's
//! failures within the window reach [`crate::limits::Limits::auth_user_failures`] (a guess
//! spread over many sources, each below the per-source limit), the user is guarded for
//! [`crate::limits::Limits::auth_user_guard_ns`]: the XDP program drops REGISTERs for it from
//! sources outside the authorized networks that the PBX has not registered
//! ([`crate::Reason::GuardedUser`]), so registered phones keep re-registering and office phones
//! are never inspected.

use crate::sip::{FIELD_MAX, Span, method};

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

/// The key of a To value whose user could not be read: past [`FIELD_MAX`] bytes (a long
/// display name), or no user at all. Failures under it are counted like a user's, and when it
/// is guarded, REGISTERs whose To cannot be read are dropped like a guarded user's: a guesser
/// cannot escape the per-user count by writing what the kernel cannot read.
pub const USER_UNREADABLE: u64 = 0;

/// FNV-1a (64-bit) initial value.
const FNV64_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a (64-bit) step.
#[inline(always)]
const fn fnv64(h: u64, byte: u8) -> u64 {
    (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
}

/// Walk states of [`UserWalk`].
mod walk {
    /// Before the URI: in a display name, or at the start of an addr-spec.
    pub(super) const OUT: u8 = 0;
    /// In a quoted display name.
    pub(super) const QUOTED: u8 = 1;
    /// After a `\\` in quotes.
    pub(super) const ESCAPED: u8 = 2;
    /// After `<`: in the scheme.
    pub(super) const SCHEME: u8 = 3;
    /// In the user part.
    pub(super) const USER: u8 = 4;
    /// After `%` in the user part.
    pub(super) const PCT1: u8 = 5;
    /// After `%` and one hex digit.
    pub(super) const PCT2: u8 = 6;
    /// The user part of a URI in `<…>` ended: the walk is over.
    pub(super) const DONE: u8 = 7;
    /// The user of what looked like an addr-spec ended; a `<` outside quotes later means it was
    /// a display name after all (`a:7 <sip:101@pbx>`), and the walk starts again there.
    pub(super) const ADDR: u8 = 8;
    /// In quotes after an addr-spec's user (a quoted parameter value).
    pub(super) const ADDR_QUOTED: u8 = 9;
    /// After a `\\` in those quotes.
    pub(super) const ADDR_ESCAPED: u8 = 10;
}

/// A hex digit's value, or 16.
#[inline(always)]
const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 16,
    }
}

/// The user a To value names (`"Name" <sip:user@host>;tag=…`, `sip:user@host`, `<tel:+49…>`),
/// read one byte per [`UserWalk::step`] (the kernel drives it with `bpf_loop`, so the verifier
/// checks one byte's worth of code): the URI starts after the first `<` outside quotes, or at
/// the value's start; the user after the scheme's colon, up to `@`, `;`, `>`, `?`, `,` or
/// whitespace. The key is a hash of the user lower-cased with percent escapes decoded, so that
/// `<sip:101@pbx>`, `"x" <SIP:%31%30%31@other>` and `sip:101@pbx` are one user.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserWalk {
    /// FNV-1a (64-bit) of the user read so far.
    hash: u64,
    /// Where the user part starts in the buffer (raw bytes, for events).
    pub start: u16,
    /// Bytes of the user part read (raw); 0 while none.
    pub len: u16,
    /// [`walk`] state.
    st: u8,
    /// The first hex digit of an escape.
    high: u8,
    /// 1 once a `<` outside quotes was read: the URI is a name-addr's.
    angle: u8,
    /// Explicit padding (zero).
    _pad: u8,
}

const _: () = assert!(size_of::<UserWalk>() == 16);

impl UserWalk {
    /// Where a walk starts.
    pub const START: Self =
        Self { hash: FNV64_INIT, start: 0, len: 0, st: walk::OUT, high: 0, angle: 0, _pad: 0 };

    /// Reads byte `c`, found at buffer offset `pos`; `true` when the walk is over.
    #[inline(always)]
    pub fn step(&mut self, c: u8, pos: usize) -> bool {
        use walk::*;
        // `:` too: `user:password@host` (RFC 3261 §19.1.1) is the user `user` to every PBX.
        let user_end = matches!(c, b'@' | b':' | b';' | b'>' | b'?' | b',' | b' ' | b'\t' | b'\r' | b'\n');
        let angle = self.angle != 0;
        let ended = if angle { DONE } else { ADDR };
        self.st = match (self.st, c) {
            (OUT | USER | ADDR, b'<') if !angle => {
                // The URI in `<…>`: what was read before it was a display name.
                *self = Self { angle: 1, ..Self::START };
                SCHEME
            }
            (OUT, b'"') => QUOTED,
            (OUT | SCHEME, b':') => {
                self.start = pos as u16 + 1;
                USER
            }
            (OUT | SCHEME, b'>' | b',') => DONE,
            (OUT | SCHEME, _) => self.st,
            (QUOTED, b'\\') => ESCAPED,
            (QUOTED, b'"') => OUT,
            (ESCAPED | QUOTED, _) => QUOTED,
            (USER, _) if user_end => ended,
            (USER, b'%') => PCT1,
            (USER, _) => {
                self.hash = fnv64(self.hash, c.to_ascii_lowercase());
                USER
            }
            (PCT1, _) if hex(c) < 16 => {
                self.high = hex(c);
                PCT2
            }
            (PCT2, _) if hex(c) < 16 => {
                self.hash = fnv64(self.hash, (self.high * 16 + hex(c)).to_ascii_lowercase());
                USER
            }
            // A broken escape ends the user: what came before is its key.
            (PCT1 | PCT2, _) => ended,
            (ADDR, b'"') => ADDR_QUOTED,
            (ADDR_QUOTED, b'\\') => ADDR_ESCAPED,
            (ADDR_QUOTED, b'"') => ADDR,
            (ADDR_ESCAPED, _) => ADDR_QUOTED,
            (st, _) => st,
        };
        if matches!(self.st, USER | PCT1 | PCT2) {
            self.len = (pos as u16 + 1).wrapping_sub(self.start);
        }
        self.st == DONE
    }

    /// The user's key after the walk over a value of `value_len` bytes: [`USER_UNREADABLE`] when
    /// no user was read, or when it may go on past the [`FIELD_MAX`] bytes read.
    #[inline(always)]
    pub const fn key(&self, value_len: usize) -> u64 {
        let cut = value_len >= FIELD_MAX && self.st != walk::DONE;
        if self.len == 0 || cut || self.hash == USER_UNREADABLE { USER_UNREADABLE } else { self.hash }
    }
}

/// The user key of the To value `v` of a buffer read with `byte(offset)` (userspace; the kernel
/// runs the steps with `bpf_loop`), and the user part's span.
pub fn user_key_with(mut byte: impl FnMut(usize) -> u8, v: Span) -> (u64, Span) {
    let mut w = UserWalk::START;
    let off = usize::from(v.off);
    for k in 0..usize::from(v.len).min(FIELD_MAX) {
        if w.step(byte(off + k), off + k) {
            break;
        }
    }
    (w.key(usize::from(v.len)), Span { off: w.start, len: w.len })
}

/// The user key of a whole To value (userspace).
pub fn user_key(value: &[u8]) -> u64 {
    let len = value.len().min(FIELD_MAX);
    user_key_with(|k| value[k], Span { off: 0, len: len as u16 }).0
}

/// A user's failed authentications: the value of [`crate::maps::AUTH_USERS`], keyed by
/// [`UserWalk::key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserAuth {
    /// Start of the current window (`CLOCK_BOOTTIME` ns).
    pub window_start: u64,
    /// REGISTERs for the user from unregistered outside sources are dropped until then.
    pub guarded_until: u64,
    /// Failures within the window.
    pub failures: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
}

const _: () = assert!(size_of::<UserAuth>() == 24);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding; every bit pattern valid.
unsafe impl aya::Pod for UserAuth {}

impl UserAuth {
    /// Counts one failure at `now`; `true` when it makes the user guarded (it was not already):
    /// the failures within `window_ns` reached `limit`. The count starts anew then.
    #[inline(always)]
    pub fn on_failure(&mut self, now: u64, window_ns: u64, limit: u32, guard_ns: u64) -> bool {
        if now.wrapping_sub(self.window_start) >= window_ns {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if limit == 0 || self.failures < limit {
            return false;
        }
        self.failures = 0;
        let was = self.guarded(now);
        self.guarded_until = now + guard_ns;
        !was
    }

    /// Whether REGISTERs for the user are refused at `now`.
    #[inline(always)]
    pub const fn guarded(&self, now: u64) -> bool {
        now < self.guarded_until
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

    #[test]
    fn one_user_however_the_to_writes_it() {
        let k = user_key(b"<sip:101@pbx>");
        assert_ne!(k, USER_UNREADABLE);
        for v in [
            "sip:101@pbx",
            "<sip:101@10.0.0.1:5060>;tag=x",
            "\"Reception\" <sips:101@pbx;transport=tls>",
            "\"a<b:c@d\" <sip:101@pbx>",
            "\"q\\\"<sip:999@x>\" <sip:101@pbx>",
            "Alice <SIP:%31%30%31@pbx>",
            "<sip:101?x=1@pbx>",
            "<tel:101;phone-context=pbx>",
            "<sip:101:secret@pbx>",
            "sip:101:secret@pbx",
            "a:7 <sip:101@pbx>",
            "sip:7@x <sip:101@pbx>",
            "a:7<sip:101@pbx>",
        ] {
            assert_eq!(user_key(v.as_bytes()), k, "{v}");
        }
        for v in [
            "<sip:102@pbx>",
            "<sip:1010@pbx>",
            "\"101\" <sip:10@pbx>",
            "<sip:101%41@pbx>",
            "sip:7@pbx;x=\"<sip:101@pbx>\"",
        ] {
            assert_ne!(user_key(v.as_bytes()), k, "{v}");
        }
        assert_eq!(user_key(b"<sip:ALICE@pbx>"), user_key(b"<sip:alice@pbx>"));
    }

    #[test]
    fn a_to_without_a_readable_user_has_one_key() {
        let long = std::format!("\"{}\" <sip:101@pbx>", "x".repeat(FIELD_MAX));
        for v in ["", "\"101\"", "<>", "<sip:@pbx>", "101", long.as_str()] {
            assert_eq!(user_key(v.as_bytes()), USER_UNREADABLE, "{v}");
        }
        // A user that ends exactly at the window's edge may go on past it.
        let edge = std::format!("<sip:{}", "1".repeat(FIELD_MAX - 5));
        assert_eq!(user_key(edge.as_bytes()), USER_UNREADABLE);
        let fits = std::format!("<sip:{}@p>", "1".repeat(FIELD_MAX - 8));
        assert_ne!(user_key(fits.as_bytes()), USER_UNREADABLE);
        // What looks like an addr-spec may turn out a display name past the window's edge.
        let padded = std::format!("a:7 {}<sip:101@pbx>", "x".repeat(FIELD_MAX));
        assert_eq!(user_key(padded.as_bytes()), USER_UNREADABLE);
    }

    #[test]
    fn a_user_is_guarded_when_its_failures_reach_the_limit() {
        let mut u = UserAuth::default();
        let guard = 3_600_000_000_000;
        for k in 1..10u64 {
            assert!(!u.on_failure(k, W, 10, guard), "{k}");
        }
        assert!(!u.guarded(10));
        assert!(u.on_failure(10, W, 10, guard));
        assert!(u.guarded(11) && !u.guarded(10 + guard));
        // Ten more within the guard: still guarded, no second notice.
        for k in 0..10u64 {
            assert!(!u.on_failure(20 + k, W, 10, guard));
        }
        // Failures spread wider than the window never add up.
        let mut v = UserAuth::default();
        for k in 0..30u64 {
            assert!(!v.on_failure(1 + k * (W / 5), W, 10, guard));
        }
    }
}
