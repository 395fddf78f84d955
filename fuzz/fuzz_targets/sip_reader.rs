//! Fuzzes the SIP reader the XDP program runs (`callguard-common`'s `sip`), here in userspace:
//! nothing may panic, every span it reports lies within the bytes it was given, and where its
//! To tag reading and the daemon's full parser's differ, the difference is never the dangerous
//! one: the kernel calling a request in-dialog (passed on unchecked) whose To the daemon reads
//! as untagged (a new call, to be checked).
#![no_main]

use callguard::calls::message::NameAddr;
use callguard_common::sip::{self, FIELD_MAX, Kind, SCAN_LEN, Scratch, Span, TAG_NONE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (scratch, n) = Scratch::new(data);
    let info = sip::parse(&scratch, n);
    let within = |s: Span| s.len == 0 || usize::from(s.off) + usize::from(s.len) <= n.min(SCAN_LEN);
    for (name, span) in [
        ("Request-URI user", info.ruri_user),
        ("User-Agent", info.user_agent),
        ("From", info.from),
        ("To", info.to),
    ] {
        assert!(within(span), "{name} span {span:?} outside the {n} bytes read");
        assert!(usize::from(span.len) <= FIELD_MAX, "{name} longer than FIELD_MAX");
    }
    if info.kind != Kind::Request || info.to.len == 0 || usize::from(info.to.len) >= FIELD_MAX {
        return;
    }
    let bytes = &scratch.buf[usize::from(info.to.off)..usize::from(info.to.off) + usize::from(info.to.len)];
    let Ok(value) = std::str::from_utf8(bytes) else { return };
    let kernel = sip::to_tag(&scratch, info.to);
    if kernel == TAG_NONE {
        return;
    }
    // The kernel saw a tag. The daemon, given the same value, must see one too, or refuse it.
    if let Ok(to) = NameAddr::parse(value) {
        assert!(to.tag().is_some(), "the kernel reads a To tag in `{value}`, the daemon reads none");
    }
});
