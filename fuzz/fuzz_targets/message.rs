//! Fuzzes the slow path's SIP parser and everything the daemon reads from a parsed request:
//! `cargo fuzz run message` (README, "Fuzzing"). Nothing may panic; a `403 Forbidden` built
//! for any parsed request must itself parse, with a To tag.
#![no_main]

use callguard::calls::{message, policy::Facts, slowpath::forbidden};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = message::parse(data) else { return };
    let _ = Facts::read(&m, std::net::Ipv4Addr::new(198, 18, 0, 9).into());
    let _ = (m.top_via(), m.cseq(), m.call_id(), m.asserted_identities());
    if m.method().is_some() && m.to().is_ok() {
        let reply = forbidden(&m, "fuzz");
        let parsed = message::parse(&reply).expect("the 403 parses");
        assert!(parsed.to().is_ok_and(|t| t.tag().is_some()), "the 403 carries a To tag");
    }
});
