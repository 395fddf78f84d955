//! Per-source policing: rate limits (GCRA buckets), extension-scan detection, and bans.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_loop};
use callguard_common::{
    Reason,
    events::event,
    limits::{
        self, BUCKET_ALL, BUCKET_INVITE, BUCKET_REGISTER, Limits, STREAK_GAP_NS, SourceSlot, SourceState,
        TOUCH_EVERY,
    },
    sip::{self, SCAN_LEN, Span},
};

use crate::{
    clock::tick_ns,
    events::{Bucket, budget, emit, source_key, within_budget},
    handoff::{looked, taken_looked},
    maps::{CG_LIMITS, CG_SCRATCH, CG_SOURCE_CACHE, CG_SOURCE_NEW, CG_SOURCES, zero_words},
    parse::Src,
};

/// Bans a source whose request matched an enforcing signature, unless it is banned already (so a
/// scanner's later requests raise no further events).
///
/// A source with state has the ban written into it. A source without (a scanner's first
/// request, every packet of a spoofed flood) gets it only in its source cache slot: its state is
/// written, banned, when it sends again (see [`before_reading`]), not for a source that may never
/// send again. An insert into the full LRU map, which evicts another source, costs about as
/// much as the inspection before it (see the README's flood figures). Until that second packet the ban is held only by the slot, which another source's
/// ban may take: the first source's next request is then read again, and banned again if it
/// is a scanner's.
#[inline(always)]
pub(crate) fn ban_for_signature(src: Src, stateless: bool, sig_slot: u16, info: &sip::Info) {
    let Some(lim) = CG_LIMITS.get(0) else { return };
    if lim.sig_ban_ns == 0 {
        return;
    }
    let src = &source_key(src);
    // As of this CPU's tick (see `tick_ns`), the clock the ban checks read.
    let now = tick_ns();
    // `stateless`: the source had no state a moment ago, when `before_reading` looked. (Another
    // CPU may have written one since: the slot's first hit then writes the ban into it.)
    if !stateless && let Some(st) = CG_SOURCES.get_ptr_mut(src) {
        // SAFETY: as in `police`: an LRU value, valid for this program run.
        let st = unsafe { &mut *st };
        if st.banned_until > now {
            return;
        }
        set_ban(st, now, lim.sig_ban_ns);
    }
    cache_ban(src, now + lim.sig_ban_ns);
    // Written within the event budget: every packet of a spoofed flood can come from a new
    // source, and the kernel's own ban works without the daemon's rule.
    if let Some(b) = budget() {
        within_budget(b, Bucket::Bans, lim, now, || {
            emit(src, event::BAN_SIGNATURE, Reason::Banned, info.method, 0, sig_slot, info.user_agent)
        });
    }
}

/// What the source's state decides before its datagram is read, so that a flood from a source
/// the kernel already knows costs a load per packet, not an inspection: a banned source →
/// `Banned`, whatever it sends; a datagram that begins like a request (`request`, see
/// [`sip::looks_like_request`]) from a source in an exceeding streak (one [`police`] started,
/// after a read: requests it would never have reached, refused methods or a scanner's, do not
/// start one) whose bucket for all requests is used up → `Rate`, the streak carried on, as
/// [`police`] would decide it after the read (but that no bucket is taken from). When that
/// streak is due for a ban, `None`: the request is read, so that [`police`] bans the source with
/// the method and User-Agent in the ban's event. `None`: read it. Whatever this lets by is read
/// and policed in full.
///
/// The source cache (`CG_SOURCE_CACHE`) answers first: a ban, or a request in a jiffy in which
/// the state already said `Rate` (the limits run at the tick's grain, and the streak's last
/// reading is that tick's: see `SourceSlot::over_jiffy` for when the state would have said
/// otherwise), or, for a request in a jiffy in which the state had nothing to decide
/// (`SourceSlot::clear_jiffy`), that the state's check waits for the read ([`looked::SKIPPED`]):
/// [`police`] makes it with the lookup of its rate limits, the conclusion for what the read
/// found is no request and passed ([`early_after_read`]). A source that sends many requests in a jiffy without
/// being over the rate for all of them, such as one over its INVITE rate only, is then looked
/// up once a request, not twice. Whatever would have been dropped here is dropped there,
/// though a request may be dropped for what the read finds first (a scanner's signature,
/// which then bans the scanner).
/// Anything else looks the state up here; `looked` says what was learnt (see [`looked`];
/// passed on to the judge).
/// Inlined: as a function of its own, its return paid this VM's SRSO mitigation on every
/// packet it decides (about 10 ns of a banned source's dropped packet in the flood benchmark).
/// Its key once grew the main program's stack past what the verifier allows; since SIP
/// inspection moved to programs of their own, the main program has the room.
#[inline(always)]
pub(crate) fn before_reading(src: &Src, request: bool, looked: &mut u8) -> Option<Reason> {
    let key = source_key(*src);
    let cached = limits::cache_key(&key);
    let slot = CG_SOURCE_CACHE.get_ptr_mut(slot_of(cached));
    if let Some(slot) = slot {
        // SAFETY: a value of the array, valid for this program run; other CPUs may write it
        // at once (see `cache_ban`), and `hits` is only a count.
        let slot = unsafe { &mut *slot };
        if slot.key == cached {
            if slot.banned_until > tick_ns() {
                slot.hits = slot.hits.wrapping_add(1);
                if slot.hits % TOUCH_EVERY == 1 {
                    // The first packet the ban drops, and every TOUCH_EVERY-th after it: the
                    // ban goes into the source's state, so that it no longer hangs on the slot
                    // (a signature ban was written only here), and the lookup marks the state
                    // recently used (a banned source that keeps sending must not be the one a
                    // flood of new sources evicts).
                    keep_ban(&key, slot.banned_until);
                }
                return Some(Reason::Banned);
            }
            // SAFETY: the helper has no arguments; the verifier replaces the call with a load.
            let jiffies = unsafe { bpf_jiffies64() };
            if request && slot.over_jiffy == limits::jiffy32(jiffies) {
                return Some(Reason::Rate);
            }
            if request && slot.clear_jiffy == limits::jiffy16(jiffies) {
                *looked = looked::SKIPPED;
                return None;
            }
        }
    }
    let Some(st) = CG_SOURCES.get_ptr_mut(key) else {
        *looked = looked::NO_STATE;
        return None;
    };
    // SAFETY: a value of the LRU hash, valid for this program run (RCU); racing CPUs may lose
    // an update, as in `police`.
    early(unsafe { &mut *st }, request, slot, cached)
}

/// For a datagram whose check on its source's state [`before_reading`] left for after the read
/// ([`looked::SKIPPED`]) and that the read found is no request, so that [`police`] does not
/// make it: that check, on the state looked up now, with the outcome it would have had
/// before the read (`Banned`, or `Rate` for what began like a request; `None` when the source
/// has no state, say evicted since).
#[inline(always)]
pub(crate) fn early_after_read(src: Src) -> Option<Reason> {
    let key = source_key(src);
    let st = CG_SOURCES.get_ptr_mut(key)?;
    let cached = limits::cache_key(&key);
    let slot = CG_SOURCE_CACHE.get_ptr_mut(slot_of(cached));
    // SAFETY: as in `before_reading`.
    early(unsafe { &mut *st }, true, slot, cached)
}

/// The check of [`before_reading`] on the source's state `st`, its cache slot `slot` (the
/// array's value for the source key `cached`, when there is one) noted with what it found for
/// the rest of the jiffy: a ban the slot does not hold is written back to it (as the kernel's
/// bans always are, see [`recache`]); a request over the rate for all requests, the over-rate
/// note; a request with nothing to decide, the clear note.
#[inline(always)]
fn early(
    st: &mut SourceState,
    request: bool,
    slot: Option<*mut SourceSlot>,
    cached: [u64; 2],
) -> Option<Reason> {
    // The clock only for a source that was banned once or sends a request, and as of this CPU's
    // tick: on a VM a read of the clock is a good part of the cost of this check.
    if st.banned_until == 0 && !request {
        return None;
    }
    let now = tick_ns();
    if st.banned_until > now {
        recache(slot, cached, st.banned_until);
        return Some(Reason::Banned);
    }
    if !request {
        return None;
    }
    // Only in a streak: a request outside one is read, without the limits' lookup.
    if !in_streak(st, now) {
        note(slot, cached, now, Note::Clear);
        return None;
    }
    let lim = CG_LIMITS.get(0)?;
    if !all_used_up(st, lim, now) {
        note(slot, cached, now, Note::Clear);
        return None;
    }
    if exceeding(st, lim, now) {
        return None;
    }
    note(slot, cached, now, Note::Over);
    Some(Reason::Rate)
}

/// Writes the source `cached`'s live ban `until`, found in its state, back to its cache slot
/// `slot` when the slot names the source without it: a note that took the slot as another CPU
/// wrote the ban there, and its next packets would otherwise each pay a lookup (or, under a
/// clear note, a read). Only a slot that names the source: one the daemon cleared to lift the
/// ban (it clears the slot before it removes the state) must stay clear, or the ban would
/// come back; a slot another source holds keeps it, as before the note.
#[inline(always)]
fn recache(slot: Option<*mut SourceSlot>, cached: [u64; 2], until: u64) {
    let Some(slot) = slot else { return };
    // SAFETY: a value of the array, valid for this program run; see `note` for what other
    // CPUs writing it at once may cause.
    let slot = unsafe { &mut *slot };
    if slot.key == cached && slot.banned_until < until {
        *slot = SourceSlot::ban(cached, until);
    }
}

/// [`recache`] for the source key `src`, from `police`.
#[inline(always)]
fn recache_key(src: &[u8; 16], until: u64) {
    let cached = limits::cache_key(src);
    recache(CG_SOURCE_CACHE.get_ptr_mut(slot_of(cached)), cached, until);
}

/// Notes in the source key `src`'s cache slot that its requests are over the rate for all
/// requests for the rest of this jiffy (see [`note`]).
#[inline(always)]
fn note_over(src: &[u8; 16], now: u64) {
    let cached = limits::cache_key(src);
    note(CG_SOURCE_CACHE.get_ptr_mut(slot_of(cached)), cached, now, Note::Over);
}

/// What [`note`] writes into a source's cache slot for the rest of this jiffy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Note {
    /// Its requests are over the rate for all requests (`SourceSlot::over_jiffy`).
    Over,
    /// Its state has nothing to decide before a request's read (`SourceSlot::clear_jiffy`).
    Clear,
}

/// Notes `note` for the source `cached` in its source cache slot `slot` (the array's value
/// for it, when there is one), the other note of this jiffy cleared.
#[inline(always)]
fn note(slot: Option<*mut SourceSlot>, cached: [u64; 2], now: u64, note: Note) {
    let Some(slot) = slot else { return };
    // SAFETY: a value of the array, valid for this program run; other CPUs may write it at
    // once (see below), and the helper has no arguments (the verifier replaces it with a load).
    let (slot, jiffies) = unsafe { (&mut *slot, bpf_jiffies64()) };
    let (over_jiffy, clear_jiffy) = match note {
        Note::Over => (limits::jiffy32(jiffies), 0),
        Note::Clear => (0, limits::jiffy16(jiffies)),
    };
    if slot.key == cached {
        slot.over_jiffy = over_jiffy;
        slot.clear_jiffy = clear_jiffy;
    } else if slot.banned_until <= now {
        // A slot whose ban is over (or that never held one) is taken; a live ban keeps its
        // slot against a note (not against another ban). A CPU reading the slot as it is
        // written may see the earlier source with this jiffy (one request of it dropped as
        // over its rate, or read without its early check), or this source with the earlier
        // ban time, if it had not passed on that CPU's clock (one packet of it dropped as
        // banned).
        *slot = SourceSlot { key: cached, banned_until: 0, over_jiffy, hits: 0, clear_jiffy };
    }
}

/// This source's state in `CG_SOURCES`, inserted (evicting the least recently seen) on its first
/// request.
#[inline(always)]
pub(crate) fn source_state(src: &[u8; 16]) -> Option<*mut SourceState> {
    if let Some(st) = CG_SOURCES.get_ptr_mut(src) {
        return Some(st);
    }
    let mut fresh = core::mem::MaybeUninit::<SourceState>::uninit();
    // SAFETY: a value on this program's stack, zeroed (the default state) before it is read.
    let fresh = unsafe {
        zero_words(fresh.as_mut_ptr());
        fresh.assume_init_ref()
    };
    let _ = CG_SOURCES.insert(src, fresh, 0);
    CG_SOURCES.get_ptr_mut(src)
}

/// Rate limits, bans and enumeration detection for a request from a source in neither list.
/// `None`: within limits. For a request whose check before the read the source cache's note
/// left for after it ([`looked::SKIPPED`]), this is that check too: the ban, and the bucket for
/// all requests, which a request in a streak of requests over it finds used up.
#[inline(always)]
pub(crate) fn police(src: Src, info: &sip::Info, sig_bans: bool) -> Option<Reason> {
    let lim = CG_LIMITS.get(0)?;
    // The buckets OR-ed, not compared as an array: that comparison is a call to a byte-by-byte
    // `memcmp` in BPF, on every request.
    if lim.interval_ns.iter().fold(0, |all, &i| all | i) == 0 && lim.enum_users == 0 {
        // Nothing to count: only a signature or authentication ban to honour, on a source that
        // already has state (and whatever ban the check the note skipped would have found).
        if !sig_bans && lim.auth_failures == 0 && taken_looked() != looked::SKIPPED {
            return None;
        }
        let src = &source_key(src);
        // SAFETY: a value of the LRU hash, read once during this program run (RCU).
        let banned_until = unsafe { CG_SOURCES.get(src)?.banned_until };
        if banned_until > tick_ns() {
            recache_key(src, banned_until);
            return Some(Reason::Banned);
        }
        return None;
    }
    let src = &source_key(src);
    // As of this CPU's tick (see `tick_ns`): rates are measured at the tick's grain, as
    // iptables' hashlimit measures them in jiffies. Other CPUs may have written later readings
    // into this state, so every difference below saturates: a reading behind them reads as no
    // time passed (a streak goes on, a window stays open), never as a huge one (a ban at once).
    let now = tick_ns();
    let st = source_state(src)?;
    // SAFETY: a value of the LRU hash, valid for this program run (RCU); racing CPUs may lose
    // an update, which only lets a request more through.
    let st = unsafe { &mut *st };
    if st.banned_until > now {
        recache_key(src, st.banned_until);
        return Some(Reason::Banned);
    }
    // The check the note left for after the read, as it would have been made before it: a
    // request in a streak whose bucket for all requests is used up is over the rate, and takes
    // no token from its method's bucket (when the streak is due for a ban, the takes below ban
    // the source, as after a check that let it be read).
    if in_streak(st, now)
        && all_used_up(st, lim, now)
        && taken_looked() == looked::SKIPPED
        && !exceeding(st, lim, now)
    {
        note_over(src, now);
        return Some(Reason::Rate);
    }
    // Every request takes from the bucket for all requests, REGISTER and INVITE also from their own.
    let own = match info.method {
        sip::method::REGISTER => Some(BUCKET_REGISTER),
        sip::method::INVITE => Some(BUCKET_INVITE),
        _ => None,
    };
    let mut over = !take(st, lim, BUCKET_ALL, now);
    if let Some(b) = own {
        over |= !take(st, lim, b, now);
    }
    if over && exceeding(st, lim, now) {
        ban(st, src, now, lim.ban_ns, event::BAN_RATE, info);
        return Some(Reason::Banned);
    }
    // What `before_reading` would find for the source's next request, noted now: in a streak,
    // with the bucket for all requests used up, it drops them unread (and a clear note, which
    // let this one by unlooked, must not stand over them).
    if in_streak(st, now) && all_used_up(st, lim, now) && !due_for_ban(st, lim, now) {
        note_over(src, now);
    }
    if over {
        return Some(Reason::Rate);
    }
    if lim.enum_users != 0 && info.to.is_some() {
        if now.saturating_sub(st.enum_start) > lim.enum_window_ns {
            st.enum_start = now;
            // SAFETY: the sketch's words, in the state this program holds (see `zero_words`).
            unsafe { zero_words(&raw mut st.sketch) };
        }
        let mut th = ToHash { span: info.to, bit: 0 };
        // SAFETY: the callback matches bpf_loop's contract and only uses `th` during the call.
        unsafe {
            bpf_loop(1, to_hash_step as *mut core::ffi::c_void, (&raw mut th).cast(), 0);
        }
        let bit = th.bit & (limits::SKETCH_BITS - 1);
        st.sketch[bit / 64] |= 1 << (bit % 64);
        let seen: u32 = st.sketch.iter().map(|w| w.count_ones()).sum();
        if seen > lim.enum_users {
            ban(st, src, now, lim.ban_ns, event::BAN_ENUM, info);
            return Some(Reason::Banned);
        }
    }
    None
}

/// Carries on the source's exceeding streak with a request over a limit at `now` (a pause
/// longer than [`STREAK_GAP_NS`] starts a new one); `true` when the streak has lasted
/// `ban_after_ns`: the source is due for a ban.
#[inline(always)]
fn exceeding(st: &mut SourceState, lim: &Limits, now: u64) -> bool {
    if !in_streak(st, now) {
        st.over_since = now;
    }
    st.last_over = now;
    due_for_ban(st, lim, now)
}

/// Whether the source is in an exceeding streak at `now`: one began, and its last request over
/// a limit came at most [`STREAK_GAP_NS`] before.
#[inline(always)]
fn in_streak(st: &SourceState, now: u64) -> bool {
    st.over_since != 0 && now.saturating_sub(st.last_over) <= STREAK_GAP_NS
}

/// Whether the source's streak has lasted `ban_after_ns` at `now` (never, with that 0).
#[inline(always)]
fn due_for_ban(st: &SourceState, lim: &Limits, now: u64) -> bool {
    lim.ban_after_ns != 0 && now.saturating_sub(st.over_since) >= lim.ban_after_ns
}

/// Whether the source's bucket for all requests is on and used up at `now`: its next request
/// would be over it.
#[inline(always)]
fn all_used_up(st: &SourceState, lim: &Limits, now: u64) -> bool {
    let (interval, tau) = (lim.interval_ns[BUCKET_ALL], lim.tau_ns[BUCKET_ALL]);
    interval != 0 && limits::gcra(st.tat[BUCKET_ALL], now, interval, tau).is_none()
}

/// Takes a token from bucket `b` (GCRA); `false` when the request exceeds it. A bucket that is
/// off always conforms.
#[inline(always)]
pub(crate) fn take(st: &mut SourceState, lim: &Limits, b: usize, now: u64) -> bool {
    if lim.interval_ns[b] == 0 {
        return true;
    }
    match limits::gcra(st.tat[b], now, lim.interval_ns[b], lim.tau_ns[b]) {
        Some(tat) => {
            st.tat[b] = tat;
            true
        }
        None => false,
    }
}

/// Bans a source in the kernel and asks the daemon (an event, always written) to store the ban
/// as a rule.
#[inline(always)]
pub(crate) fn ban(st: &mut SourceState, src: &[u8; 16], now: u64, ban_ns: u64, kind: u8, info: &sip::Info) {
    set_ban(st, now, ban_ns);
    cache_ban(src, now + ban_ns);
    emit(src, kind, Reason::Banned, info.method, 0, 0, info.user_agent);
}

/// Writes the kernel's ban of the source key `key` until `until`, which its source cache slot
/// holds, into its state in `CG_SOURCES`: inserted if it has none (a signature ban, or a state
/// the LRU map evicted), its ban raised if it ends sooner. Not inserted once the slot no
/// longer holds that ban: the daemon lifting it clears the slot before it removes the state,
/// and an insert after that would bring the lifted ban back.
#[inline(never)]
fn keep_ban(key: &[u8; 16], until: u64) {
    if let Some(st) = CG_SOURCES.get_ptr_mut(key) {
        // SAFETY: a value of the LRU hash, valid for this program run (RCU).
        let st = unsafe { &mut *st };
        if st.banned_until < until {
            st.banned_until = until;
        }
        return;
    }
    let cached = limits::cache_key(key);
    let Some(slot) = CG_SOURCE_CACHE.get_ptr(slot_of(cached)) else { return };
    // SAFETY: a value of the array, valid for this program run; read afresh, as another CPU or
    // the daemon may have written it since the caller read it.
    let held = unsafe { core::ptr::read_volatile(slot) };
    if held.key != cached || held.banned_until != until {
        return;
    }
    let Some(fresh) = CG_SOURCE_NEW.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's copy of a per-CPU value (all zero but this field), used only here
    // during this program run.
    unsafe { (*fresh).banned_until = until };
    // A state another CPU wrote meanwhile stays.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the state would be copied onto the stack, which has no room for it"
    )]
    // SAFETY: as above; read only by the insert.
    let _ = CG_SOURCES.insert(key, unsafe { &*fresh }, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
}

/// The source cache slot of a source key, under the key of the cache's hash (its entry
/// `SOURCE_CACHE_SEED`, which the daemon writes when it creates the map).
#[inline(always)]
fn slot_of(key: [u64; 2]) -> u32 {
    let seed = CG_SOURCE_CACHE.get(limits::SOURCE_CACHE_SEED).map_or([0; 2], |s| s.key);
    limits::cache_slot(key, seed)
}

/// Until when the source cache holds a ban of the source `src` (0: its slot names another
/// source, or no ban): a signature ban of a source that has not sent again is held there alone.
#[inline(always)]
pub(crate) fn cached_ban(src: &[u8; 16]) -> u64 {
    let key = limits::cache_key(src);
    match CG_SOURCE_CACHE.get(slot_of(key)) {
        Some(slot) if slot.key == key => slot.banned_until,
        _ => 0,
    }
}

/// Writes the kernel's ban of the source `src` until `until` to its slot of the source cache,
/// replacing whichever source the slot held.
#[inline(always)]
pub(crate) fn cache_ban(src: &[u8; 16], until: u64) {
    let key = limits::cache_key(src);
    if let Some(slot) = CG_SOURCE_CACHE.get_ptr_mut(slot_of(key)) {
        // SAFETY: a value of the array, valid for this program run. Another CPU may read it
        // half written, for a packet or two: this source with the slot's earlier ban time, or
        // the slot's earlier source (never a third: see `SourceSlot::key`) with this one's ban
        // time, which may drop one of its packets after its own ban ended.
        unsafe { *slot = SourceSlot::ban(key, until) };
    }
}

/// Bans a source in the kernel until `now + ban_ns`, its rate and scan records starting over.
#[inline(always)]
fn set_ban(st: &mut SourceState, now: u64, ban_ns: u64) {
    st.banned_until = now + ban_ns;
    st.over_since = 0;
    // SAFETY: the sketch's words, in the state this program holds (see `zero_words`).
    unsafe { zero_words(&raw mut st.sketch) };
}

/// The To value hash (`bpf_loop` callback, one iteration): its own verifier pass, like
/// [`sig_step`].
pub(crate) extern "C" fn to_hash_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the ToHash that police passed to bpf_loop, alive during the loop.
    let th = unsafe { &mut *ctx.cast::<ToHash>() };
    let Some(buf) = CG_SCRATCH.get_ptr(0) else { return 1 };
    // SAFETY: this CPU's scratch buffer, filled by parse_sip in this program run.
    let buf = unsafe { &*buf };
    let off = usize::from(th.span.off);
    th.bit = limits::to_bit_with(|k| buf.buf[(off + k) & (SCAN_LEN - 1)], usize::from(th.span.len));
    1
}

/// Input and output of [`to_hash_step`].
pub(crate) struct ToHash {
    pub(crate) span: Span,
    pub(crate) bit: usize,
}
