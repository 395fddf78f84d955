//! Failed authentications (`callguard_common::auth`): the XDP program notes the credentialed
//! requests it lets through, the egress program the PBX's answers to them, both in `CG_AUTH`;
//! a source whose failures reach the limit is banned like a rate ban.

use callguard_common::{Reason, auth::AuthState, events::event, sip::Span};

use crate::{
    events::{emit, source_key},
    maps::{CG_AUTH, CG_LIMITS},
    net::boot_ns,
    parse::Src,
    police::source_state,
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
/// says the nonce expired). A failed authentication is counted; when the failures reach the
/// limit, the source is banned and the daemon told.
#[inline(always)]
pub(crate) fn note_answer(key: &[u8; 16], method: u8, status: u16, stale: bool) {
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
    if !st.on_answer(method, status, stale, now, lim.auth_window_ns) || !st.reached(lim.auth_failures) {
        return;
    }
    let Some(src) = source_state(key) else { return };
    // SAFETY: as above, a value of CG_SOURCES.
    let src = unsafe { &mut *src };
    if src.banned_until <= now {
        src.banned_until = now + lim.auth_ban_ns;
        emit(key, event::BAN_AUTH, Reason::Banned, method, 0, 0, Span::default());
    }
}
