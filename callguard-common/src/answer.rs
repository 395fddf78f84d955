//! What the PBX answered: the status code and the CSeq method of a SIP response leaving a guarded
//! port, read by the egress program (`callguard_egress`, a TC classifier beside the XDP one).
//!
//! The PBX's answers say what no request can prove by itself. A `2xx` to a REGISTER means the
//! PBX accepted a registration from the address it answers: a source that completed a digest
//! challenge (every real PBX asks for one), so it receives what is sent to it, and it is one of
//! the operator's devices. The program notes such addresses in [`crate::maps::REGISTERED`], and
//! their requests go to the daemon through a queue of their own
//! ([`crate::maps::HANDUP_REGISTERED`]), which a flood from spoofed sources cannot fill.
//!
//! The reader shares the request parser's buffer and word helpers ([`crate::sip`]) and its
//! shape: a bounded walk, one header line per step, which the kernel drives with `may_goto` or
//! `bpf_loop` ([`crate::loops`]).

use crate::sip::{
    HEADER_LINES, SCAN_LEN, Scratch, Span, at, cseq_method, header, header_line, header_name, header_value,
    is_token, join, lower8, method, next_newline, pack, word,
};

/// How long a registration keeps its source among the registered, in nanoseconds: a day, longer
/// than any registration interval phones use (an hour at most, commonly), so a phone that
/// re-registers on schedule never drops out, and one that stopped is forgotten the next day.
pub const REGISTERED_NS: u64 = 24 * 3600 * 1_000_000_000;

/// The socket mark (`SO_MARK`) of the packets callguard itself sends (the slow path's `403`s):
/// the egress program leaves them out of the PBX's answers.
pub const CALLGUARD_MARK: u32 = 0x6367_0001;

/// Counters the egress program keeps in [`crate::maps::ANSWERS`], by index.
pub mod counter {
    /// SIP responses seen leaving a guarded port.
    pub const RESPONSES: u32 = 0;
    /// `2xx` answers to a REGISTER: the address answered is noted as registered.
    pub const REGISTRATIONS: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
    /// Names in metrics and the API, by index.
    pub const NAMES: [&str; COUNT as usize] = ["responses", "registrations"];
}

/// A response being read: [`AnswerWalk::begin`] reads the status line, then [`AnswerWalk::step`]
/// reads one header line per call (at most [`HEADER_LINES`] lines, until it returns `false`),
/// then [`AnswerWalk::stale_step`] one position of the challenge per call (until `true`). Both
/// keep their count in the walk (map memory in the kernel), so that a kernel loop around them
/// carries no count the verifier tracks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerWalk {
    /// The status code; 0 when the payload is not a SIP response.
    pub status: u16,
    /// The method of the first CSeq header ([`method::UNKNOWN`] before one is read).
    cseq_method: u8,
    /// CSeq headers seen (a response with two says nothing certain about its request).
    cseqs: u8,
    /// Whether the challenge (`WWW-Authenticate`, `Proxy-Authenticate`) says `stale=true`: set
    /// by [`AnswerWalk::stale_step`].
    pub stale: u8,
    /// Explicit padding (zero).
    _pad: u8,
    /// Header lines read.
    lines: u16,
    /// The first challenge line's start.
    challenge_start: u16,
    /// The first challenge line's end (0: none).
    challenge_end: u16,
    /// The first To header's value: the user the answer is about ([`crate::auth::UserWalk`]).
    pub to: Span,
    /// Bytes of the buffer holding the payload.
    len: usize,
    /// Start of the next header line; past `len` when done.
    start: usize,
    /// The next position of the `stale=true` search, counted from the challenge line's start.
    stale_at: usize,
}

impl AnswerWalk {
    /// Reads the status line (`SIP/2.0 SP 3DIGIT SP …`, RFC 3261 §7.2) of the first `len`
    /// bytes of `s`.
    pub fn begin(s: &Scratch, len: usize) -> Self {
        let mut w = Self::default();
        w.begin_zeroed(s, len);
        w
    }

    /// [`AnswerWalk::begin`] in place, in a walk whose every byte is zero (which is
    /// `AnswerWalk::default()`): the kernel zeroes its map value with word stores, as it does
    /// a request's parse (see `sip::Parse::begin_zeroed`).
    pub fn begin_zeroed(&mut self, s: &Scratch, len: usize) {
        let len = if len > SCAN_LEN { SCAN_LEN } else { len };
        self.len = len;
        self.start = SCAN_LEN + 1;
        const VERSION: &[u8; 8] = b"SIP/2.0 ";
        if len < 12 || !(0..8).all(|k| at(s, k) == VERSION[k]) {
            return;
        }
        let (a, b, c) = (at(s, 8), at(s, 9), at(s, 10));
        if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) || at(s, 11) != b' ' {
            return;
        }
        let Some(eol) = next_newline(s, 12, len) else { return };
        self.status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
        self.start = eol + 1;
    }

    /// Reads one header line; `false` when there are no more, or [`HEADER_LINES`] were read.
    pub fn step(&mut self, s: &Scratch) -> bool {
        if self.lines >= HEADER_LINES as u16 {
            return false;
        }
        self.lines += 1;
        let Some((start, end)) = header_line(s, &mut self.start, self.len) else { return false };
        let name = lower8(join(word(s, start), word(s, start + 8), (start & 7) * 8));
        if (name == pack(b"www-auth") || name == pack(b"proxy-au")) && self.challenge_end == 0 {
            self.challenge_start = start as u16;
            self.challenge_end = end as u16;
        }
        // Names as the request parser reads them (case-insensitive, compact forms, spaces or
        // tabs before the colon).
        let (bit, value) = header_name(s, start);
        if bit == header::CSEQ {
            if self.cseqs == 0 {
                self.cseq_method = cseq_method(s, value, end);
            }
            self.cseqs = self.cseqs.saturating_add(1);
        }
        if bit == header::TO && !self.to.is_some() {
            self.to = header_value(s, value, end, self.len);
        }
        self.start = end + 1;
        true
    }

    /// The method of the request answered, from its one CSeq header ([`method::UNKNOWN`] when
    /// there is none, two, or one this reader cannot read).
    pub const fn method(&self) -> u8 {
        if self.cseqs == 1 { self.cseq_method } else { method::UNKNOWN }
    }

    /// The next position of the search for `stale=true` in the challenge line (after the
    /// steps): `true` when the search is over. The parameter is matched case-insensitively, its
    /// value quoted or not (RFC 2617 §3.2.1 writes it unquoted; some PBXs quote it). Always
    /// inlined: in the kernel a call and its return cost more than the position's test.
    #[inline(always)]
    pub fn stale_step(&mut self, s: &Scratch) -> bool {
        let k = self.stale_at;
        let (from, end) = (usize::from(self.challenge_start), usize::from(self.challenge_end));
        let p = from + k;
        if p + 10 > end || k >= SCAN_LEN {
            return true;
        }
        self.stale_at = k + 1;
        let w = lower8(join(word(s, p), word(s, p + 8), (p & 7) * 8));
        if w & 0xffff_ffff_ffff != pack(b"stale=") {
            return false;
        }
        let q = if at(s, p + 6) == b'"' { p + 7 } else { p + 6 };
        let v = lower8(join(word(s, q), word(s, q + 8), (q & 7) * 8));
        if v & 0xffff_ffff == pack(b"true") && !is_token(at(s, q + 4)) {
            self.stale = 1;
            return true;
        }
        false
    }

    /// Whether this is a `2xx` to a REGISTER: a registration the PBX accepted.
    pub const fn registered(&self) -> bool {
        self.status >= 200 && self.status < 300 && self.method() == method::REGISTER
    }
}

/// Reads a whole response (userspace: the kernel drives the steps with `may_goto` or
/// `bpf_loop`).
pub fn read(s: &Scratch, len: usize) -> AnswerWalk {
    let mut w = AnswerWalk::begin(s, len);
    while w.step(s) {}
    while !w.stale_step(s) {}
    w
}

#[cfg(test)]
mod tests {
    use std::{format, string::String};

    use super::*;
    use crate::sip::method::{INVITE, REGISTER, UNKNOWN};

    fn read_str(msg: &str) -> AnswerWalk {
        let (s, n) = Scratch::new(msg.as_bytes());
        read(&s, n)
    }

    fn response(status: &str, cseq: &str) -> String {
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 198.18.0.2:5090;branch=z9hG4bK1\r\n\
             From: <sip:101@pbx>;tag=a\r\nTo: <sip:101@pbx>;tag=b\r\nCall-ID: r1\r\n{cseq}\r\n\
             Contact: <sip:101@198.18.0.2:5090>;expires=3600\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn a_2xx_to_register_is_a_registration() {
        let w = read_str(&response("200 OK", "CSeq: 2 REGISTER"));
        assert_eq!((w.status, w.method()), (200, REGISTER));
        assert!(w.registered());
        for cseq in ["cseq:2 {m}", "CSEQ :\t2\t{m}", "CSeq:  4294967295  {m}  "] {
            let w = read_str(&response("202 Accepted", &cseq.replace("{m}", "REGISTER")));
            assert!(w.registered(), "{cseq}");
            let w = read_str(&response("202 Accepted", &cseq.replace("{m}", "register")));
            assert_eq!(w.method(), UNKNOWN, "method names are case-sensitive: {cseq}");
        }
    }

    #[test]
    fn other_answers_are_not_registrations() {
        for (status, cseq) in [
            ("401 Unauthorized", "CSeq: 1 REGISTER"),
            ("100 Trying", "CSeq: 1 REGISTER"),
            ("200 OK", "CSeq: 1 INVITE"),
            ("200 OK", "CSeq: 1 REGISTERX"),
            ("200 OK", "CSeq: 1REGISTER"),
            ("200 OK", "CSeq-X: 1 REGISTER"),
            ("200 OK", "X-CSeq: 1 REGISTER"),
            ("200 OK", "CSeq: 1 REGISTER\r\nCSeq: 1 INVITE"),
            ("200 OK", "CSeq: 1 INVITE\r\nCSeq: 1 REGISTER"),
            ("2000 OK", "CSeq: 1 REGISTER"),
            ("20x OK", "CSeq: 1 REGISTER"),
        ] {
            let w = read_str(&response(status, cseq));
            assert!(!w.registered(), "{status} / {cseq}: {w:?}");
        }
        assert_eq!(read_str(&response("200 OK", "CSeq: 7 INVITE")).method(), INVITE);
        let request = "REGISTER sip:pbx SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n";
        assert_eq!(read_str(request).status, 0, "a request is no answer");
        // Headers after the blank line are the body.
        let w = read_str("SIP/2.0 200 OK\r\nVia: x\r\n\r\nCSeq: 1 REGISTER\r\n");
        assert!(!w.registered());
    }

    #[test]
    fn the_user_answered_is_read_from_the_first_to() {
        let value = |w: &AnswerWalk, msg: &str| {
            String::from(&msg[usize::from(w.to.off)..usize::from(w.to.off + w.to.len)])
        };
        let msg = response("401 Unauthorized", "CSeq: 2 REGISTER");
        assert_eq!(value(&read_str(&msg), &msg), "<sip:101@pbx>;tag=b");
        let msg = response("401 Unauthorized", "t:  <sip:102@pbx>\r\nCSeq: 2 REGISTER");
        assert_eq!(value(&read_str(&msg), &msg), "<sip:101@pbx>;tag=b", "the first of two");
        let msg = "SIP/2.0 403 Forbidden\r\nt :\t\"x\" <sip:7@p>\r\nCSeq: 1 REGISTER\r\n\r\n";
        assert_eq!(value(&read_str(msg), msg), "\"x\" <sip:7@p>");
        // Folded onto the next line, as the request parser reads it.
        let msg = "SIP/2.0 401 Unauthorized\r\nTo:\r\n <sip:101@p>;tag=x\r\nCSeq: 1 REGISTER\r\n\r\n";
        assert_eq!(value(&read_str(msg), msg), "<sip:101@p>;tag=x");
    }

    #[test]
    fn a_stale_challenge_is_told_apart() {
        let challenge =
            |h: &str| read_str(&response("401 Unauthorized", &format!("CSeq: 2 REGISTER\r\n{h}")));
        for h in [
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"abc\", stale=true",
            "WWW-Authenticate: Digest realm=\"pbx\", stale=TRUE, nonce=\"abc\"",
            "Proxy-Authenticate: Digest stale=\"true\", realm=\"pbx\", nonce=\"abc\"",
            "www-authenticate: Digest realm=\"stale=x\", nonce=\"s\", stale=true",
        ] {
            assert_eq!(challenge(h).stale, 1, "{h}");
        }
        for h in [
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"abc\"",
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"abc\", stale=false",
            "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"abc\", stale=truex",
            "X-Note: stale=true",
        ] {
            assert_eq!(challenge(h).stale, 0, "{h}");
        }
        assert_eq!(challenge("").status, 401);
    }

    #[test]
    fn what_lies_past_len_never_matters() {
        let msg = response("200 OK", "CSeq: 2 REGISTER");
        for cut in 0..msg.len() {
            let (zeros, _) = Scratch::new(&msg.as_bytes()[..cut]);
            let want = read(&zeros, cut);
            let (mut s, _) = Scratch::new(msg.as_bytes());
            let tail = (cut + crate::sip::TAIL).min(SCAN_LEN);
            s.buf[cut..tail].fill(0);
            assert_eq!(read(&s, cut), want, "cut at {cut}");
        }
    }
}
