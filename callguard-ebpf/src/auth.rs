//! Failed authentications (`callguard_common::auth`): the XDP program notes the credentialed
//! requests it lets through, the egress program the PBX's answers to them, both in `CG_AUTH`;
//! a source whose failures reach the limit is banned like a rate ban. Each failure is charged
//! to the user the answer's To names too (`CG_AUTH_USERS`); the XDP program drops REGISTERs for
//! a guarded user from sources the PBX has not registered.

use aya_ebpf::{helpers::bpf_loop, maps::PerCpuArray};
use callguard_common::{
    Reason,
    answer::REGISTERED_NS,
    auth::{AuthState, UserAuth, UserWalk},
    events::event,
    sip::{self, FIELD_MAX, SCAN_LEN, Scratch, Span},
};

use crate::{
    clock::boot_ns,
    events::{emit, emit_from, source_key},
    maps::{CG_AUTH, CG_AUTH_USERS, CG_EG_SCRATCH, CG_LIMITS, CG_REGISTERED, CG_SCRATCH},
    parse::Src,
    police::{cache_ban, cached_ban, source_state},
};

/// This source's state in `CG_AUTH`, inserted (evicting the least recently seen) when absent.
#[inline(always)]
fn auth_state(key: &[u8; 16]) -> Option<*mut AuthState> {
    if let Some(st) = CG_AUTH.get_ptr_mut(key) {
        return Some(st);
    }
    let _ = CG_AUTH.insert(key, AuthState::default(), 0);
    CG_AUTH.get_ptr_mut(key)
}

/// A REGISTER or INVITE that carries credentials (or headers the parser could not read to the
/// end) goes to the PBX from `src`.
#[inline(always)]
pub(crate) fn note_credentials(src: Src, method: u8) {
    let Some(lim) = CG_LIMITS.get(0) else { return };
    if lim.auth_failures == 0 {
        return;
    }
    let Some(st) = auth_state(&source_key(src)) else { return };
    // SAFETY: an LRU value, valid for this program run (RCU); racing CPUs may lose an update,
    // which miscounts one request.
    unsafe { (*st).on_request(method, boot_ns(), lim.auth_window_ns) };
}

/// The PBX answers `status` to a `method` request of the source `key` (`stale`: its challenge
/// says the nonce expired); `to` is the answer's To value in the egress program's buffer. A
/// failed authentication is counted for the source, and for the user when it answers a REGISTER; when the source's
/// failures reach the limit, it is banned and the daemon told; when the user's do, it is
/// guarded and the daemon told.
#[inline(always)]
pub(crate) fn note_answer(key: &[u8; 16], method: u8, status: u16, stale: bool, to: Span) {
    let Some(lim) = CG_LIMITS.get(0) else { return };
    if lim.auth_failures == 0 {
        return;
    }
    // Only a 403 to a REGISTER counts for a source with nothing pending: other answers to a
    // source the XDP program never noted need no state.
    let st = if status == 403 { auth_state(key) } else { CG_AUTH.get_ptr_mut(key) };
    let Some(st) = st else { return };
    // SAFETY: as in `note_credentials`.
    let st = unsafe { &mut *st };
    let now = boot_ns();
    if !st.on_answer(method, status, stale, now, lim.auth_window_ns) {
        return;
    }
    // Per user, REGISTERs only: an INVITE's To is the callee, not who authenticates.
    if lim.auth_user_failures != 0 && method == sip::method::REGISTER {
        note_user_failure(
            key,
            method,
            to,
            now,
            lim.auth_window_ns,
            lim.auth_user_failures,
            lim.auth_user_guard_ns,
        );
    }
    if !st.reached(lim.auth_failures) {
        return;
    }
    let Some(src) = source_state(key) else { return };
    // SAFETY: as above, a value of CG_SOURCES.
    let src = unsafe { &mut *src };
    // A signature ban held by the source's cache slot alone (`police::ban_for_signature`)
    // stands: written into the state, not shortened, and not banned twice.
    let held = cached_ban(key);
    if src.banned_until < held {
        src.banned_until = held;
    }
    if src.banned_until <= now {
        src.banned_until = now + lim.auth_ban_ns;
        cache_ban(key, src.banned_until);
        emit(key, event::BAN_AUTH, Reason::Banned, method, 0, 0, Span::default());
    }
}

/// A failure charged to the user the To value `to` names; guards the user (and tells the
/// daemon, naming the user and the source `key` of this failure) when its failures reach
/// `limit`.
#[inline(always)]
fn note_user_failure(
    key: &[u8; 16],
    method: u8,
    to: Span,
    now: u64,
    window_ns: u64,
    limit: u32,
    guard_ns: u64,
) {
    let mut scan = UserScan { to, walk: UserWalk::START };
    // SAFETY: the callback matches bpf_loop's contract and only uses `scan` during the call.
    unsafe { bpf_loop(FIELD_MAX as u32, egress_user_step as *mut _, (&raw mut scan).cast(), 0) };
    let user = scan.walk.key(usize::from(to.len));
    if CG_AUTH_USERS.get_ptr_mut(user).is_none() {
        let _ = CG_AUTH_USERS.insert(user, UserAuth::default(), 0);
    }
    let Some(u) = CG_AUTH_USERS.get_ptr_mut(user) else { return };
    // SAFETY: an LRU value, valid for this program run (RCU); a racing CPU may lose an update.
    if unsafe { (*u).on_failure(now, window_ns, limit, guard_ns) } {
        let text = if user == callguard_common::auth::USER_UNREADABLE {
            Span::default()
        } else {
            Span { off: scan.walk.start, len: scan.walk.len }
        };
        emit_from(&CG_EG_SCRATCH, key, event::GUARD_USER, Reason::GuardedUser, method, 0, 0, text);
    }
}

/// Whether a REGISTER from `src` whose To value is `to` (in the XDP program's buffer) is for a
/// guarded user, from a source the PBX has not registered within `REGISTERED_NS`.
#[inline(always)]
pub(crate) fn guarded_user(src: Src, to: Span) -> bool {
    let Some(lim) = CG_LIMITS.get(0) else { return false };
    if lim.auth_user_failures == 0 {
        return false;
    }
    let mut scan = UserScan { to, walk: UserWalk::START };
    // SAFETY: as in `note_user_failure`.
    unsafe { bpf_loop(FIELD_MAX as u32, xdp_user_step as *mut _, (&raw mut scan).cast(), 0) };
    let user = scan.walk.key(usize::from(to.len));
    // SAFETY: a value of the LRU hash, read once during this program run (RCU).
    let Some(until) = (unsafe { CG_AUTH_USERS.get(user).map(|u| u.guarded_until) }) else { return false };
    let now = boot_ns();
    if now >= until {
        return false;
    }
    // SAFETY: a plain u64 value of this map, read once.
    match unsafe { CG_REGISTERED.get(source_key(src)) } {
        Some(at) => now >= *at + REGISTERED_NS,
        None => true,
    }
}

/// Input and output of the user walks: the To value and the walk over it.
struct UserScan {
    to: Span,
    walk: UserWalk,
}

/// One byte of the user walk over `scratch` (the body of both `bpf_loop` callbacks).
#[inline(always)]
fn user_step(scratch: &PerCpuArray<Scratch>, index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the UserScan passed to bpf_loop, alive during the loop.
    let scan = unsafe { &mut *ctx.cast::<UserScan>() };
    let k = index as usize;
    let Some(buf) = scratch.get_ptr(0) else { return 1 };
    if k >= usize::from(scan.to.len) {
        return 1;
    }
    // SAFETY: this CPU's scratch buffer, filled earlier in this program run.
    let buf = unsafe { &*buf };
    let pos = (usize::from(scan.to.off) + k) & (SCAN_LEN - 1);
    if scan.walk.step(buf.buf[pos], pos) { 1 } else { 0 }
}

/// [`user_step`] over the egress program's buffer (`bpf_loop` callback).
extern "C" fn egress_user_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    user_step(&CG_EG_SCRATCH, index, ctx)
}

/// [`user_step`] over the XDP program's buffer (`bpf_loop` callback).
extern "C" fn xdp_user_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    user_step(&CG_SCRATCH, index, ctx)
}
