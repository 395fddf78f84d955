//! Bounded SIP inspection, shared by the XDP program and the daemon.
//!
//! [`parse`] reads the first [`SCAN_LEN`] bytes of a UDP payload (copied into a fixed buffer)
//! and finds: the request line (method, Request-URI user) or the status line, and the headers
//! User-Agent, From, To, Contact, Call-ID and Via, in long and compact forms (`f`, `t`, `m`, `i`,
//! `v`), names case-insensitive, spaces or tabs allowed before the colon (RFC 3261 §7.3.1).
//! From and To are kept whole: scanner signatures on their display names and users are
//! compiled into an automaton that walks the value (see `sig`), so the parser need not split them.
//!
//! The same code runs in the kernel and in userspace (the userspace model of the differential
//! tests and `callguard explain`), so the two cannot disagree on what a packet says. That shapes
//! it: every index is masked into the buffer (no bounds checks, no panics), every loop has a
//! constant bound or ends by its own test within one (`loops`), and newlines are found eight bytes at a time (SWAR) instead of byte by byte,
//! which keeps the verifier's work and the per-packet cost small. A header folded over several
//! lines is seen up to its first line break, or, when it starts on a continuation line, that
//! line. Bytes past [`SCAN_LEN`] are not inspected.

/// Bytes of payload inspected (a power of two).
pub const SCAN_LEN: usize = 1024;
/// Size of [`Scratch::buf`]: twice [`SCAN_LEN`], so that an index masked with `BUF_LEN - 1` is
/// in the buffer even when it points past the payload window; the upper half always reads as
/// zero (only [`Scratch::clear_tail`] writes there, zeros).
pub const BUF_LEN: usize = 2 * SCAN_LEN;
pub(crate) const MASK: usize = BUF_LEN - 1;
/// Bytes past the payload the parser may read (header names on the last line). They must read as
/// zero, as in a buffer from [`Scratch::new`]: the kernel, whose buffer holds an earlier packet's
/// bytes there, zeroes them after each copy ([`Scratch::clear_tail`]). Once per packet, that is
/// cheaper than a bound check on every word of every header name.
pub const TAIL: usize = 24;
/// Longest field (a header value, the Request-URI user) kept for matching.
pub const FIELD_MAX: usize = 128;

/// What the payload is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Not SIP: neither a request line, a status line nor a keepalive.
    #[default]
    NotSip = 0,
    /// A request (see [`Info::method`]).
    Request = 1,
    /// A response (status line).
    Response = 2,
    /// A keepalive: CRLF (RFC 5626 §3.5.1) or a STUN message (magic cookie).
    Keepalive = 3,
}

/// Method ids. [`METHOD_UNKNOWN`] is a syntactically valid method token callguard does not know.
pub mod method {
    /// Not an RFC method (or not a request).
    pub const UNKNOWN: u8 = 0;
    /// RFC 3261.
    pub const INVITE: u8 = 1;
    /// RFC 3261.
    pub const ACK: u8 = 2;
    /// RFC 3261.
    pub const BYE: u8 = 3;
    /// RFC 3261.
    pub const CANCEL: u8 = 4;
    /// RFC 3261.
    pub const REGISTER: u8 = 5;
    /// RFC 3261.
    pub const OPTIONS: u8 = 6;
    /// RFC 3262.
    pub const PRACK: u8 = 7;
    /// RFC 6665.
    pub const SUBSCRIBE: u8 = 8;
    /// RFC 6665.
    pub const NOTIFY: u8 = 9;
    /// RFC 3903.
    pub const PUBLISH: u8 = 10;
    /// RFC 6086.
    pub const INFO: u8 = 11;
    /// RFC 3515.
    pub const REFER: u8 = 12;
    /// RFC 3428.
    pub const MESSAGE: u8 = 13;
    /// RFC 3311.
    pub const UPDATE: u8 = 14;
    /// Number of ids (bits in a method mask).
    pub const COUNT: u8 = 15;
    /// Names by id (index 0: unknown methods).
    pub const NAMES: [&str; COUNT as usize] = [
        "unknown",
        "invite",
        "ack",
        "bye",
        "cancel",
        "register",
        "options",
        "prack",
        "subscribe",
        "notify",
        "publish",
        "info",
        "refer",
        "message",
        "update",
    ];
}

/// A range of the scan buffer; `len == 0` means absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset in the buffer.
    pub off: u16,
    /// Length.
    pub len: u16,
}

impl Span {
    /// Whether the field was found (and is not empty).
    pub const fn is_some(&self) -> bool {
        self.len != 0
    }
}

/// Header presence bits in [`Info::headers`].
pub mod header {
    /// Via / v.
    pub const VIA: u16 = 1 << 0;
    /// From / f.
    pub const FROM: u16 = 1 << 1;
    /// To / t.
    pub const TO: u16 = 1 << 2;
    /// Call-ID / i.
    pub const CALL_ID: u16 = 1 << 3;
    /// Contact / m.
    pub const CONTACT: u16 = 1 << 4;
    /// User-Agent.
    pub const USER_AGENT: u16 = 1 << 5;
    /// Not a header: From, To, Call-ID, CSeq or User-Agent appeared more than once. RFC 3261 §20
    /// allows each once; readers differ on which of two counts (the first, the last, a refusal),
    /// so a request that carries two is never judged by one of them (two User-Agents: a scanner's
    /// first, a phone's second, read the last, passed the signatures while the PBX read the
    /// first).
    pub const DUPLICATE: u16 = 1 << 6;
    /// Not a header: one of the names above followed by more spaces or tabs than the parser
    /// skips (eight) before its colon, or by none. A PBX may read it as that header while this
    /// parser cannot (a hidden first To, a User-Agent out of the signatures' sight), so such a
    /// request is never judged. Also set for a request whose CSeq names another method than its
    /// request line (as the answer reader tells methods apart: REGISTER, INVITE, any other),
    /// ends past [`super::CSEQ_END_MAX`], or was not reached
    /// ([`UNREAD`] without [`CSEQ`]): the PBX copies the CSeq into its answer, which the egress
    /// program reads as the answer to a request of that method, so such a request could pass a
    /// wrong password's `401` off as the answer to an OPTIONS, or an OPTIONS' `200` off as a
    /// registration.
    pub const AMBIGUOUS: u16 = 1 << 7;
    /// Authorization or Proxy-Authorization (a name beginning `authoriz` or `proxy-au`, any
    /// case): the request carries credentials, so the PBX's `401`/`407` to it is a failed
    /// authentication (see `auth`).
    pub const CREDENTIALS: u16 = 1 << 8;
    /// Not a header: the parse stopped before the blank line that ends the headers (past
    /// [`super::SCAN_LEN`] bytes or [`super::HEADER_LINES`] lines), so credentials may lie past
    /// what it read. Set by [`super::Parse::info`].
    pub const UNREAD: u16 = 1 << 9;
    /// CSeq (no compact form).
    pub const CSEQ: u16 = 1 << 10;
    /// The headers that may appear once only, of those the parser tells apart.
    pub const SINGLE: u16 = FROM | TO | CALL_ID | CSEQ | USER_AGENT;
}

/// What [`parse`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// What the payload is.
    pub kind: Kind,
    /// For requests: the [`method`] id.
    pub method: u8,
    /// `header::*` bits of the headers seen.
    pub headers: u16,
    /// Request-URI user.
    pub ruri_user: Span,
    /// User-Agent value.
    pub user_agent: Span,
    /// From value (display name, URI, parameters).
    pub from: Span,
    /// To value.
    pub to: Span,
}

/// The buffer a payload is parsed in, plus one word of scratch memory. In the kernel it is a
/// per-CPU map value.
#[repr(C)]
#[derive(Debug)]
pub struct Scratch {
    /// The first [`SCAN_LEN`] bytes of the payload, then zeros up to [`BUF_LEN`].
    pub buf: [u8; BUF_LEN],
    /// An atomic only to make `Scratch` `Sync` (a static map value must be); accessed with
    /// volatile reads and writes by [`Scratch::launder`].
    cell: core::sync::atomic::AtomicUsize,
}

impl Scratch {
    /// A scratch buffer holding the start of `payload` (userspace; the kernel fills its map value
    /// with a helper), and the number of bytes it holds.
    pub fn new(payload: &[u8]) -> (Self, usize) {
        let mut buf = [0u8; BUF_LEN];
        let n = if payload.len() > SCAN_LEN { SCAN_LEN } else { payload.len() };
        let mut k = 0;
        while k < n {
            buf[k] = payload[k];
            k += 1;
        }
        (Self { buf, cell: core::sync::atomic::AtomicUsize::new(0) }, n)
    }

    /// Zeroes at least the [`TAIL`] bytes from `n` (at most [`SCAN_LEN`]) on, keeping the bytes
    /// before `n`: four aligned words instead of a loop over bytes.
    #[inline(always)]
    pub fn clear_tail(&mut self, n: usize) {
        let base = n & !7;
        // The bytes of the first word below `n` are payload; `(n - base) * 8` is below 64.
        let keep = (1u64 << ((n - base) * 8)) - 1;
        for k in 0..4 {
            let o = opaque(base + 8 * k) & (MASK & !7);
            // SAFETY: `o` is a multiple of 8 no greater than BUF_LEN - 8, so the word is inside
            // `buf`; unaligned access makes no alignment assumption.
            unsafe {
                let p = self.buf.as_mut_ptr().add(o).cast::<u64>();
                p.write_unaligned(if k == 0 { p.read_unaligned() & keep } else { 0 });
            }
        }
    }

    /// `x`, passed through memory. In the kernel that memory is a map value, whose contents the
    /// verifier does not track: the value read back is "any number", so the paths that left a
    /// loop at different iterations go on as one state instead of one state each. Without this,
    /// every data-dependent loop exit multiplies the paths the verifier walks, past its
    /// one-million-instruction limit. Callers mask or bound-check the result, as they must anyway.
    #[inline(always)]
    pub fn launder(&self, x: usize) -> usize {
        // SAFETY: `cell` is a valid, aligned usize owned by self; volatile so that neither the
        // store nor the load is optimised away.
        unsafe {
            core::ptr::write_volatile(self.cell.as_ptr(), x);
            core::ptr::read_volatile(self.cell.as_ptr())
        }
    }
}

/// `i` with everything the compiler knows about its range forgotten. LLVM otherwise proves a
/// mask redundant and drops it, and the verifier, which knows less, then rejects the access.
#[inline(always)]
pub fn opaque(i: usize) -> usize {
    // SAFETY: reading a live local through a valid reference.
    unsafe { core::ptr::read_volatile(&raw const i) }
}

#[inline(always)]
pub(crate) fn at(s: &Scratch, i: usize) -> u8 {
    s.buf[opaque(i) & MASK]
}

#[inline(always)]
const fn lower(c: u8) -> u8 {
    if c.is_ascii_uppercase() { c | 0x20 } else { c }
}

/// Eight bytes at `i & !7` as a little-endian word.
#[inline(always)]
pub(crate) fn word(s: &Scratch, i: usize) -> u64 {
    let o = opaque(i) & (MASK & !7);
    // SAFETY: `o` is a multiple of 8 no greater than BUF_LEN - 8, so all eight bytes are in the
    // buffer; read_unaligned makes no alignment assumption.
    unsafe { s.buf.as_ptr().add(o).cast::<u64>().read_unaligned() }
}

/// The eight bytes `sh / 8` bytes into the aligned words `lo`, `hi` (as [`word`] reads them at
/// `i & !7` and `(i & !7) + 8`, `sh` being `(i & 7) * 8`): an unaligned word from two aligned
/// ones, since the BPF backend splits an unaligned 8-byte load into eight byte loads.
#[inline(always)]
pub(crate) const fn join(lo: u64, hi: u64, sh: usize) -> u64 {
    // `<< 1 << (63 - sh)` is `<< (64 - sh)` without the undefined shift by 64 when `sh` is 0.
    (lo >> sh) | (hi << 1 << (63 - sh))
}

/// `w` with its ASCII upper-case letters lower-cased, eight bytes at once; other bytes unchanged.
#[inline(always)]
pub(crate) const fn lower8(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HI;
    // Bit 7 set where the low seven bits are >= 'A', and where they are > 'Z' (no carries: each
    // byte sum stays below 0x100).
    let ge_a = low7 + LO * (0x80 - b'A' as u64);
    let gt_z = low7 + LO * (0x80 - b'Z' as u64 - 1);
    let upper = ge_a & !gt_z & !w & HI;
    w | (upper >> 2)
}

/// Eight bytes at `base & !7` as a little-endian word, for a scan whose `base` the verifier
/// already sees as any number (it comes from [`Scratch::launder`] or map memory) or knows
/// exactly (a constant start): the mask bounds it, and LLVM cannot prove that mask redundant, so it needs no [`opaque`] round trip
/// through the stack, which a scan would pay on every word.
#[inline(always)]
fn scan_word(s: &Scratch, base: usize) -> u64 {
    let o = base & (MASK & !7);
    // SAFETY: as in `word`: `o` is a multiple of 8 no greater than BUF_LEN - 8.
    unsafe { s.buf.as_ptr().add(o).cast::<u64>().read_unaligned() }
}

/// The index of the lowest byte flagged in `m` (bit 7 of each flagged byte set, others clear;
/// `m != 0`): a multiplication where `trailing_zeros` would be one and a table load in BPF,
/// which has no count-trailing-zeros instruction. The lowest flag isolated is `1 << (8k + 7)`;
/// shifted down to `1 << 8k`, it moves byte `7 - k` of the constant (which holds `k`) to the top.
#[inline(always)]
pub(crate) const fn first_flagged_byte(m: u64) -> usize {
    ((((m & m.wrapping_neg()) >> 7).wrapping_mul(0x0001_0203_0405_0607)) >> 56) as usize
}

/// Bit 7 of each byte of the result is set where `w` has a byte equal to `b`, and only there.
/// Exact for every byte, not only the lowest match (as `(x - LO) & !x & HI` is): the scans shift
/// matches before their start out of the mask, and the borrow of such a match used to flag the
/// byte after it when that byte was `b ^ 1` (a vertical tab after a line feed made a line of its
/// own, and the rest of that line a header the PBX never sees).
#[inline(always)]
const fn bytes_eq(w: u64, b: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (LO * b as u64);
    // Bit 7 of a byte of `nonzero` is set where that byte of `x` is not zero: its low seven bits
    // plus 0x7f carry into bit 7 (never out of the byte), or bit 7 is set already.
    let nonzero = ((x & !HI) + !HI) | x;
    !nonzero & HI
}

/// Index of the first `\n` at or after `from`, before `end` (bounded by `SCAN_LEN`).
#[inline(always)]
pub(crate) fn next_newline(s: &Scratch, from: usize, end: usize) -> Option<usize> {
    // Every caller's `end` is a parse length, at most SCAN_LEN: the scan ends by `base >= end`
    // within SCAN_LEN / 8 words, however its rounds are bounded (`loops::rounds`).
    debug_assert!(end <= SCAN_LEN);
    let mut base = from & !7;
    // Ignore newlines before `from` in the first word.
    let mut skip = from - base;
    for () in crate::loops::rounds(SCAN_LEN / 8) {
        if base >= end {
            return None;
        }
        let m = bytes_eq(scan_word(s, base), b'\n') >> (skip * 8) << (skip * 8);
        if m != 0 {
            let pos = s.launder(base + first_flagged_byte(m));
            return if pos < end { Some(pos) } else { None };
        }
        base += 8;
        skip = 0;
    }
    None
}

/// Parses the first `len` bytes of `buf` (the rest is ignored).
pub fn parse(s: &Scratch, len: usize) -> Info {
    let mut p = Parse::begin(s, len);
    while p.step(s) {}
    p.info()
}

/// No To tag: an initial request.
pub const TAG_NONE: u8 = 0;
/// A To tag that callguard did not make: a request within a dialog of the PBX's.
pub const TAG_OTHER: u8 = 1;
/// A To tag that begins with [`CALLGUARD_TAG_PREFIX`]: an ACK to one of callguard's `403`s (the
/// daemon checks that it really made it), which proves that its sender receives what is sent to
/// its address.
pub const TAG_CALLGUARD: u8 = 2;
/// How the To tags of callguard's own responses begin (the daemon appends a keyed hash).
pub const CALLGUARD_TAG_PREFIX: &[u8; 3] = b"cg-";

/// The `tag` header parameter of the To (or From) value `v`: [`TAG_NONE`], [`TAG_OTHER`] or
/// [`TAG_CALLGUARD`] (the value begins with [`CALLGUARD_TAG_PREFIX`]). A tag is a `;` outside
/// quotes and outside `<…>`, then `tag`, then `=` (case-insensitive, whitespace allowed around both,
/// RFC 3261 §25.1), then at least one character of value. A `;tag=` inside the display name or
/// the URI is not one, and neither is an empty `;tag=`: PBXs read that as no tag, a new call. At most
/// [`FIELD_MAX`] bytes are read: a tag past them reads as absent, which hands the request up,
/// where the daemon's full parser finds it.
pub fn to_tag(s: &Scratch, v: Span) -> u8 {
    let mut w = TagWalk::START;
    for k in 0..FIELD_MAX {
        if k >= usize::from(v.len) {
            break;
        }
        if let Some(answer) = to_tag_step(s, v, k, &mut w) {
            return answer;
        }
    }
    to_tag_end(v, &w)
}

/// Walk states of [`to_tag`]: outside any parameter, in quotes, in `<…>`, after `;` (and how
/// much of `tag` was read).
const OUT: usize = 0;
const QUOTED: usize = 1;
const ANGLE: usize = 2;
const SEMI: usize = 3;
const T: usize = 4;
const TA: usize = 5;
const TAG: usize = 6;
/// After `tag` and `=`: the value's first character decides.
const VALUE: usize = 7;
/// After a `\` in quotes: the next character is quoted whatever it is (RFC 3261 quoted-pair),
/// so `"a\";tag=1"` holds no tag.
const ESCAPED: usize = 8;
/// In a tag's value (a token).
const IN_TAG: usize = 9;

/// A To tag walk in progress: the state, and the kind of the tag found so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagWalk {
    st: usize,
    found: u8,
}

impl TagWalk {
    /// Where a walk starts.
    pub const START: Self = Self { st: OUT, found: TAG_NONE };
}

/// A byte a token may hold (RFC 3261 §25.1).
const fn token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// One byte (`k`) of the [`to_tag`] walk over `v`: `Some(answer)` when the byte settles it. The
/// walk goes on past a tag, since what follows can undo it: Kamailio keeps the *last* of two
/// tags and reads `;tag=` as none, so `;tag=t1;tag=` is a new call to it, and a second address
/// (a comma) is refused. The kernel calls this once per `bpf_loop` iteration, so the verifier
/// checks one byte's worth of code instead of [`FIELD_MAX`] unrolled.
#[inline(always)]
pub fn to_tag_step(s: &Scratch, v: Span, k: usize, w: &mut TagWalk) -> Option<u8> {
    let off = usize::from(v.off);
    let raw = at(s, off + k);
    let c = lower(raw);
    let ws = c == b' ' || c == b'\t';
    // Laundered: a state the verifier knew exactly would split its walk into one path per state.
    w.st = match (s.launder(w.st), c) {
        // A comma outside quotes and `<…>`: a second address, which no To may hold. Readers
        // differ (Kamailio refuses it, others take the first): the request is initial, so it is
        // handed up, and the daemon refuses it.
        (OUT | SEMI | T | TA | TAG | VALUE | IN_TAG, b',') => return Some(TAG_NONE),
        (QUOTED, b'\\') => ESCAPED,
        (ESCAPED, _) => QUOTED,
        (QUOTED, b'"') | (ANGLE, b'>') => OUT,
        (st @ (QUOTED | ANGLE), _) => st,
        (VALUE, _) if ws => VALUE,
        (VALUE, b';') => SEMI,
        // `;tag=""`: an empty tag to Kamailio, whatever comes after.
        (VALUE, b'"') if at(s, off + k + 1) == b'"' => return Some(TAG_NONE),
        (VALUE, _) => {
            let ours = raw == CALLGUARD_TAG_PREFIX[0]
                && at(s, off + k + 1) == CALLGUARD_TAG_PREFIX[1]
                && at(s, off + k + 2) == CALLGUARD_TAG_PREFIX[2]
                && k + 3 < usize::from(v.len);
            w.found = if ours { TAG_CALLGUARD } else { TAG_OTHER };
            if c == b'"' { QUOTED } else { IN_TAG }
        }
        (IN_TAG, b';') => SEMI,
        (IN_TAG, _) if ws || token_byte(c) => IN_TAG,
        // Anything else in a tag (a quote, `<`): readers differ on where it ends.
        (IN_TAG, _) => return Some(TAG_NONE),
        (_, b'"') => QUOTED,
        (_, b'<') => ANGLE,
        (_, b';') => SEMI,
        (SEMI, b't') => T,
        (T, b'a') => TA,
        // A second parameter named `tag…` after a tag: readers differ on which counts.
        (TA, b'g') if w.found != TAG_NONE => return Some(TAG_NONE),
        (TA, b'g') => TAG,
        (st @ (SEMI | TAG), _) if ws => st,
        (TAG, b'=') => VALUE,
        _ => OUT,
    };
    None
}

/// The answer of a walk that went through the whole value without settling: the tag found, or
/// none when the value was cut at [`FIELD_MAX`] bytes (a second tag could follow out of sight;
/// the request is handed up, where the daemon's full parser reads it).
#[inline(always)]
pub fn to_tag_end(v: Span, w: &TagWalk) -> u8 {
    if usize::from(v.len) >= FIELD_MAX { TAG_NONE } else { w.found }
}

/// [`Parse::start`] once the blank line that ends the headers was read: past any `len`, and
/// apart from `len + 1`, where a line the window cuts leaves it.
pub(crate) const HEADERS_END: usize = SCAN_LEN + 2;

/// The header line that starts at `*start`, as its start and end (the `\n`, or `len`); `None`
/// past `len`, or at the blank line that ends the headers (`*start` then becomes
/// [`HEADERS_END`]). The line walk of both readers, requests ([`Parse`]) and answers
/// (`answer::AnswerWalk`). Both keep `start` in map memory, a number the verifier knows
/// nothing of already: no [`Scratch::launder`] here, which would cost a store and a load at the
/// head of every line.
#[inline(always)]
pub(crate) fn header_line(s: &Scratch, start: &mut usize, len: usize) -> Option<(usize, usize)> {
    let from = *start;
    if from >= len {
        return None;
    }
    let c = at(s, from);
    if c == b'\r' || c == b'\n' {
        *start = HEADERS_END;
        return None;
    }
    Some((from, next_newline(s, from, len).unwrap_or(len)))
}

/// Header lines looked at, at most.
pub const HEADER_LINES: u32 = 64;

/// A parse in progress: [`Parse::begin`], then [`Parse::step`] until it returns `false` (at
/// most [`HEADER_LINES`] lines), then [`Parse::info`]. The kernel drives the steps with
/// `may_goto` or `bpf_loop` (see [`crate::loops`]), so the verifier checks one step instead of
/// every iteration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Parse {
    info: Info,
    len: usize,
    /// Start of the next header line; past `len` when done.
    start: usize,
    /// Header lines read: [`Parse::step`] stops at [`HEADER_LINES`] (counted here, in map
    /// memory, so that a kernel loop around it carries no count the verifier tracks).
    lines: usize,
}

impl Parse {
    /// Checks for a keepalive and reads the first line.
    pub fn begin(s: &Scratch, len: usize) -> Self {
        let mut p = Self::default();
        p.begin_zeroed(s, len);
        p
    }

    /// [`Parse::begin`] in place, in a parse whose every byte is zero (which is
    /// `Parse::default()`). The kernel zeroes its map value with word stores and begins there:
    /// a zeroed value the compiler makes is a `memset`, which BPF code calls as a function of
    /// its own, and on x86 the return of every call pays the CPU's SRSO mitigation.
    pub fn begin_zeroed(&mut self, s: &Scratch, len: usize) {
        let len = if len > SCAN_LEN { SCAN_LEN } else { len };
        self.len = len;
        self.start = SCAN_LEN + 1;
        if is_keepalive(s, len) {
            self.info.kind = Kind::Keepalive;
            return;
        }
        let Some(eol) = next_newline(s, 0, len) else { return };
        if first_line(s, eol, &mut self.info) {
            self.start = eol + 1;
        }
    }

    /// Reads one header line; `false` when there are no more, or [`HEADER_LINES`] were read.
    pub fn step(&mut self, s: &Scratch) -> bool {
        if self.lines >= HEADER_LINES as usize {
            return false;
        }
        self.lines += 1;
        let Some((start, end)) = header_line(s, &mut self.start, self.len) else { return false };
        let (bit, value) = header_name(s, start);
        let again = self.info.headers & bit & header::SINGLE != 0;
        self.info.headers |= bit | if again { header::DUPLICATE } else { 0 };
        if bit == header::CSEQ {
            // The PBX copies this CSeq into its answer, whose reader takes the method from it:
            // that reading must be the request line's, and the CSeq must end where the reader
            // still sees it in the answer.
            let unsure = cseq_method(s, value, end) != answered_as(self.info.method) || end > CSEQ_END_MAX;
            self.info.headers |= u16::from(unsure) * header::AMBIGUOUS;
        }
        // Only these three values are used (the first of each); the others are only noted as
        // present.
        if !again && bit & (header::USER_AGENT | header::FROM | header::TO) != 0 {
            let v = header_value(s, value, end, self.len);
            match bit {
                header::USER_AGENT => self.info.user_agent = v,
                header::FROM => self.info.from = v,
                header::TO => {
                    // A REGISTER's To names the user its failed authentications are charged to,
                    // read again in the PBX's answer: it must end where that reader sees it.
                    let far = usize::from(v.off) + usize::from(v.len) > CSEQ_END_MAX;
                    self.info.headers |=
                        u16::from(far && self.info.method == method::REGISTER) * header::AMBIGUOUS;
                    self.info.to = v;
                }
                _ => {}
            }
        }
        self.start = end + 1;
        true
    }

    /// What the parse found so far; [`header::UNREAD`] when it stopped before the end of the
    /// headers, and then [`header::AMBIGUOUS`] too when it did not reach a CSeq (computed
    /// without a branch: the kernel calls this on every request).
    pub const fn info(&self) -> Info {
        let mut info = self.info;
        let unread = (self.start != HEADERS_END) as u16;
        let no_cseq = ((info.headers / header::CSEQ) & 1) ^ 1;
        info.headers |= (unread * header::UNREAD) | ((unread & no_cseq) * header::AMBIGUOUS);
        info
    }
}

fn is_keepalive(s: &Scratch, len: usize) -> bool {
    // CRLF keepalives: "\r\n\r\n" (ping) or "\r\n" (pong).
    if (len == 2 || len == 4) && at(s, 0) == b'\r' && at(s, 1) == b'\n' {
        return len == 2 || (at(s, 2) == b'\r' && at(s, 3) == b'\n');
    }
    // STUN (RFC 5389): top two bits zero, magic cookie 0x2112A442 at offset 4.
    len >= 20 && at(s, 0) & 0xc0 == 0 && [at(s, 4), at(s, 5), at(s, 6), at(s, 7)] == [0x21, 0x12, 0xa4, 0x42]
}

/// The request or status line `buf[0..eol]`.
fn first_line(s: &Scratch, eol: usize, info: &mut Info) -> bool {
    let end = if eol > 0 && at(s, eol - 1) == b'\r' { eol - 1 } else { eol };
    // "SIP/2.0" compared as one word: the first seven bytes of the line, then the last seven.
    const VERSION: u64 = pack(b"SIP/2.0");
    const SEVEN: u64 = (1 << 56) - 1;
    let starts_with_version = word(s, 0) & SEVEN == VERSION;
    if starts_with_version {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; its headers are read too.
        info.kind = if at(s, 7) == b' ' && end >= 12 { Kind::Response } else { Kind::NotSip };
        return info.kind == Kind::Response;
    }
    // Request-Line = Method SP Request-URI SP SIP-Version
    if end < 8 + 7 {
        return false;
    }
    let v = end - 7;
    if join(word(s, v), word(s, v + 8), (v & 7) * 8) & SEVEN != VERSION || at(s, end - 8) != b' ' {
        return false;
    }
    // Method = token (RFC 3261 §25.1); names callguard knows are upper case and at most nine
    // bytes, any other token is a method it does not know.
    let mut mlen = 0;
    let mut packed: u64 = 0;
    for k in 0..METHOD_MAX {
        // A constant index in each round: read directly, without `at`'s round trip.
        let c = s.buf[k];
        if c == b' ' {
            mlen = k;
            break;
        }
        if !is_token(c) {
            return false;
        }
        if k < 8 {
            packed |= u64::from(c) << (8 * k);
        }
    }
    let mlen = s.launder(mlen);
    if mlen == 0 {
        return false;
    }
    info.kind = Kind::Request;
    info.method = method_id(mlen, packed);
    info.ruri_user = uri_user(s, mlen + 1, end - 8);
    true
}

/// Longest method token read (a longer one makes the line not SIP).
const METHOD_MAX: usize = 32;

/// The `token` characters (RFC 3261 §25.1), alphanumeric and `-.!%*_+`'~`, as a 256-bit set:
/// one lookup instead of a chain of comparisons (each a branch the verifier would follow).
const TOKEN: [u64; 4] = {
    let mut set = [0u64; 4];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
        {
            set[c / 64] |= 1 << (c % 64);
        }
        c += 1;
    }
    set
};

/// A `token` character.
pub(crate) const fn is_token(c: u8) -> bool {
    (TOKEN[(c >> 6) as usize] >> (c & 63)) & 1 != 0
}

pub(crate) const fn pack(name: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut k = 0;
    while k < name.len() && k < 8 {
        v |= (name[k] as u64) << (8 * k);
        k += 1;
    }
    v
}

/// The first bytes of what a source in an allow rule with a call profile may send without the
/// kernel reading further: a response, or a request that is no INVITE, each with the space
/// after its first word.
const UNREAD_PREFIXES: [&[u8]; 14] = [
    b"SIP/2.0 ",
    b"REGISTER ",
    b"OPTIONS ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"NOTIFY ",
    b"SUBSCRIBE ",
    b"PRACK ",
    b"INFO ",
    b"UPDATE ",
    b"REFER ",
    b"MESSAGE ",
    b"PUBLISH ",
];

/// A prefix as two masked words (bytes 0 to 7, 8 to 15): (word 0, mask 0, word 1, mask 1).
const fn prefix_words(p: &[u8]) -> (u64, u64, u64, u64) {
    const fn mask(n: usize) -> u64 {
        if n >= 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 }
    }
    let (n0, n1) = if p.len() > 8 { (8, p.len() - 8) } else { (p.len(), 0) };
    let hi = if p.len() > 8 { pack(p.split_at(8).1) } else { 0 };
    (pack(p), mask(n0), hi, mask(n1))
}

/// Whether the first 16 bytes of a datagram begin with one of [`UNREAD_PREFIXES`] (compared
/// exactly: method names are case-sensitive). Everything else from a profiled source is read by
/// the daemon.
#[inline(always)]
pub fn passes_unread(head: &[u8; 16]) -> bool {
    const WORDS: [(u64, u64, u64, u64); 14] = {
        let mut w = [(0, 0, 0, 0); 14];
        let mut k = 0;
        while k < 14 {
            w[k] = prefix_words(UNREAD_PREFIXES[k]);
            k += 1;
        }
        w
    };
    let w0 = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    let w1 =
        u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
    let mut hit = false;
    for (p0, m0, p1, m1) in WORDS {
        hit |= (w0 & m0 == p0) & (w1 & m1 == p1);
    }
    hit
}

/// Whether a datagram's first four bytes begin like a request line: an upper-case letter (the
/// methods' names are case-sensitive; every RFC method is upper case), and not a response's
/// `SIP/`. The kernel asks it before the read, to drop the requests of a source over its rate
/// for all requests unread; what it lets by (a response, a keepalive, `invite` in lower case,
/// leading blank lines) is read and policed in full, so it decides only how early, never
/// whether.
#[inline(always)]
pub fn looks_like_request(head: [u8; 4]) -> bool {
    head[0].is_ascii_uppercase() && head != *b"SIP/"
}

fn method_id(len: usize, packed: u64) -> u8 {
    use method::*;
    /// (length, first eight bytes packed, id) of a method name; the length tells SUBSCRIBE apart
    /// from any other name starting with SUBSCRIB.
    const fn entry(name: &[u8], id: u8) -> (usize, u64, u8) {
        (name.len(), pack(name), id)
    }
    const TABLE: [(usize, u64, u8); 14] = [
        entry(b"INVITE", INVITE),
        entry(b"ACK", ACK),
        entry(b"BYE", BYE),
        entry(b"CANCEL", CANCEL),
        entry(b"REGISTER", REGISTER),
        entry(b"OPTIONS", OPTIONS),
        entry(b"PRACK", PRACK),
        entry(b"SUBSCRIBE", SUBSCRIBE),
        entry(b"NOTIFY", NOTIFY),
        entry(b"PUBLISH", PUBLISH),
        entry(b"INFO", INFO),
        entry(b"REFER", REFER),
        entry(b"MESSAGE", MESSAGE),
        entry(b"UPDATE", UPDATE),
    ];
    let mut id = UNKNOWN;
    for (l, p, m) in TABLE {
        if l == len && p == packed {
            id = m;
        }
    }
    id
}

/// The user part of the SIP/SIPS/tel URI at `from` (an opening `<` is skipped), before `end`:
/// after the scheme, up to `@` (a SIP URI without `@` has no user); for tel: the number up to
/// `;`, `>` or the end.
fn uri_user(s: &Scratch, from: usize, end: usize) -> Span {
    let p = if at(s, from) == b'<' { from + 1 } else { from };
    if p + 4 > end {
        return Span::default();
    }
    let (a, b, c, d, e) =
        (lower(at(s, p)), lower(at(s, p + 1)), lower(at(s, p + 2)), at(s, p + 3), at(s, p + 4));
    let (user, sip) = match (a, b, c, d, e) {
        (b's', b'i', b'p', b':', _) => (p + 4, true),
        (b's', b'i', b'p', b's' | b'S', b':') => (p + 5, true),
        (b't', b'e', b'l', b':', _) => (p + 4, false),
        _ => return Span::default(),
    };
    if sip {
        let stop = find_any(s, user, end, *b"@;>?");
        if stop < end && at(s, stop) == b'@' { span(user, stop) } else { Span::default() }
    } else {
        span(user, find_any(s, user, end, *b";>? "))
    }
}

/// The first index in `from..end` of a byte that `marks` flags (it returns, for a word of eight
/// bytes, bit 7 set in each byte flagged), or `end`; eight bytes at a time, at most FIELD_MAX
/// bytes on (then `end`).
#[inline(always)]
fn first_marked(s: &Scratch, from: usize, end: usize, marks: impl Fn(u64) -> u64) -> usize {
    let mut base = from & !7;
    let mut skip = from - base;
    for _ in 0..FIELD_MAX / 8 + 1 {
        if base >= end {
            return end;
        }
        let m = marks(scan_word(s, base)) >> (skip * 8) << (skip * 8);
        if m != 0 {
            let pos = s.launder(base + first_flagged_byte(m));
            return if pos < end { pos } else { end };
        }
        base += 8;
        skip = 0;
    }
    end
}

/// The first index in `from..end` holding one of `stops`, or `end` (see [`first_marked`]).
fn find_any<const N: usize>(s: &Scratch, from: usize, end: usize, stops: [u8; N]) -> usize {
    first_marked(s, from, end, |w| stops.iter().fold(0, |m, &b| m | bytes_eq(w, b)))
}

fn span(from: usize, end: usize) -> Span {
    if end <= from {
        return Span::default();
    }
    let len = end - from;
    let len = if len > FIELD_MAX { FIELD_MAX } else { len };
    Span { off: (from & MASK) as u16, len: len as u16 }
}

/// The value of the header line whose value starts at `value` and whose line ends at `end`, in
/// a message of `len` bytes. A value that starts on a continuation line (`To:` CRLF SP
/// `value`): folding is one space (RFC 3261 §7.3.1), so that line is the value. A value folded
/// later is kept up to its first break, which still holds its start. Both readers (requests,
/// answers) take values this way, so that they read the same To.
#[inline(always)]
pub(crate) fn header_value(s: &Scratch, value: usize, end: usize, len: usize) -> Span {
    let v = trim(s, value, end);
    let next = end + 1;
    if v.len == 0 && next < len && matches!(at(s, next), b' ' | b'\t') {
        return trim(s, next, next_newline(s, next, len).unwrap_or(len));
    }
    v
}

/// The value of a header line: from `value` to `end`, without surrounding spaces, tabs and CR.
/// Inlined, as [`header_name`] is.
#[inline(always)]
pub(crate) fn trim(s: &Scratch, value: usize, end: usize) -> Span {
    let mut b = value;
    for _ in 0..16 {
        if b < end && (at(s, b) == b' ' || at(s, b) == b'\t') {
            b += 1;
        } else {
            break;
        }
    }
    let b = s.launder(b);
    let mut e = end;
    for _ in 0..16 {
        if e > b && matches!(at(s, e - 1), b' ' | b'\t' | b'\r') {
            e -= 1;
        } else {
            break;
        }
    }
    span(b, s.launder(e))
}

/// Which header the line starting at `i` holds (a `header::*` bit, 0 for others) and where its
/// value starts (after the colon). Reads the aligned words holding the 16 bytes from `i` (the
/// third only for names longer than seven bytes), so past the line and, on the last line, up to
/// [`TAIL`] bytes past the payload. Past the line end the bytes hold a line break, which no name
/// or colon match crosses; past the payload they are zero (the caller's part of the contract,
/// see [`TAIL`]). Inlined: in the kernel a call costs its return, through the return thunk
/// of CPUs with return-stack mitigations, on every header line.
#[inline(always)]
pub(crate) fn header_name(s: &Scratch, i: usize) -> (u16, usize) {
    const fn seps(w: u64) -> u64 {
        bytes_eq(w, b':') | bytes_eq(w, b' ') | bytes_eq(w, b'\t')
    }
    /// The first `n` bytes of `w`.
    const fn first(w: u64, n: u32) -> u64 {
        w & (u64::MAX >> (64 - 8 * n))
    }
    let (sh, b) = ((i & 7) * 8, word(s, i + 8));
    let w0 = join(word(s, i), b, sh);
    // The name ends at the first colon, space or tab, within 11 bytes (10-byte names at most).
    // The lowest bit of an OR of `bytes_eq` masks is exact (see `bytes_eq`). Bytes 8 to 15 are
    // needed only when the first eight hold no separator.
    let m0 = seps(w0);
    let (n, w1) = if m0 != 0 {
        (first_flagged_byte(m0) as u32, 0)
    } else {
        let w1 = join(b, word(s, i + 16), sh);
        let m1 = seps(w1) & 0x0080_8080;
        if m1 == 0 {
            // Longer names: only the two that carry credentials matter, by their first eight
            // bytes (a colon, spaces or a different ending do not hide credentials from this).
            let l0 = lower8(w0);
            let creds = l0 == pack(b"authoriz") || l0 == pack(b"proxy-au");
            return (if creds { header::CREDENTIALS } else { 0 }, i);
        }
        (8 + first_flagged_byte(m1) as u32, w1)
    };
    let (l0, l1) = (lower8(w0), lower8(w1));
    let bit = match n {
        1 => match l0 as u8 {
            b'v' => header::VIA,
            b'f' => header::FROM,
            b't' => header::TO,
            b'i' => header::CALL_ID,
            b'm' => header::CONTACT,
            _ => 0,
        },
        2 if first(l0, 2) == pack(b"to") => header::TO,
        3 if first(l0, 3) == pack(b"via") => header::VIA,
        4 if first(l0, 4) == pack(b"from") => header::FROM,
        4 if first(l0, 4) == pack(b"cseq") => header::CSEQ,
        7 if first(l0, 7) == pack(b"call-id") => header::CALL_ID,
        7 if first(l0, 7) == pack(b"contact") => header::CONTACT,
        10 if l0 == pack(b"user-age") && first(l1, 2) == pack(b"nt") => header::USER_AGENT,
        _ => 0,
    };
    if bit == 0 {
        return (0, i);
    }
    match colon_after(s, i + n as usize) {
        Some(colon) => (bit, colon + 1),
        None => (header::AMBIGUOUS, i),
    }
}

/// The furthest a request's CSeq line (and a REGISTER's To value) may end. The PBX's answer carries the request's Via, From,
/// To, Call-ID and CSeq, adding a To tag and the Via's `received` and `rport` (under 100 bytes
/// from Kamailio and Asterisk), under a status line no longer than the request line: a CSeq
/// that ends by here in the request ends within the [`SCAN_LEN`] bytes the answer reader
/// reads in the answer.
pub const CSEQ_END_MAX: usize = SCAN_LEN - 256;

/// A request method as [`cseq_method`] tells methods apart: REGISTER, INVITE, or any other
/// ([`method::UNKNOWN`]). (A byte-for-byte comparison of the CSeq's method with the request
/// line's took the XDP program past the verifier's million instructions.)
const fn answered_as(m: u8) -> u8 {
    if m == method::REGISTER || m == method::INVITE { m } else { method::UNKNOWN }
}

/// The method of a CSeq value (`1*DIGIT LWS Method`, RFC 3261 §20.16) from `from` to `end`:
/// the two this reader needs, REGISTER and INVITE, else [`method::UNKNOWN`]. Method names are
/// upper case and case-sensitive, so the method starts at the value's first upper-case letter,
/// after a space or tab; the token must end there too (the sequence number before it is not
/// checked: the PBX answers only requests it could read). One word-at-a-time scan and two
/// comparisons: the verifier checks this for every header line, so it must stay small.
pub(crate) fn cseq_method(s: &Scratch, from: usize, end: usize) -> u8 {
    let p = first_upper(s, from, end);
    if p >= end || p == 0 || !matches!(at(s, p - 1), b' ' | b'\t') {
        return method::UNKNOWN;
    }
    let w = join(word(s, p), word(s, p + 8), (p & 7) * 8);
    if w == pack(b"REGISTER") && !is_token(at(s, p + 8)) {
        method::REGISTER
    } else if w & 0xffff_ffff_ffff == pack(b"INVITE") && !is_token(at(s, p + 6)) {
        method::INVITE
    } else {
        method::UNKNOWN
    }
}

/// The first index in `from..end` holding an ASCII upper-case letter, or `end` (see
/// [`first_marked`]).
fn first_upper(s: &Scratch, from: usize, end: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    first_marked(s, from, end, |w| {
        let low7 = w & !HI;
        // Bit 7 set where a byte is in 'A'..='Z' (as in `lower8`).
        (low7 + LO * (0x80 - u64::from(b'A'))) & !(low7 + LO * (0x80 - u64::from(b'Z') - 1)) & !w & HI
    })
}

/// The colon that ends a header name ending at `end`: spaces or tabs (up to eight) may stand
/// between them.
pub(crate) fn colon_after(s: &Scratch, end: usize) -> Option<usize> {
    let mut colon = end;
    for _ in 0..8 {
        let c = at(s, colon);
        if c == b' ' || c == b'\t' {
            colon += 1;
        } else {
            break;
        }
    }
    let colon = s.launder(colon);
    if at(s, colon) == b':' { Some(colon) } else { None }
}

#[cfg(test)]
mod tests {
    use std::{format, string::String, vec, vec::Vec};

    use super::*;

    #[test]
    fn requests_are_told_from_responses_and_keepalives_by_four_bytes() {
        let head = |s: &[u8]| -> [u8; 4] { s[..4].try_into().unwrap() };
        for (id, name) in method::NAMES.iter().enumerate().skip(1) {
            let m = name.to_ascii_uppercase();
            let line = format!("{m} sip:100@198.18.0.1 SIP/2.0\r\n");
            assert!(looks_like_request(head(line.as_bytes())), "{m}");
            let info = check(&format!("{line}\r\n")).1;
            assert_eq!((info.kind, usize::from(info.method)), (Kind::Request, id), "{m}");
        }
        for not in [&b"SIP/2.0 200 OK\r\n"[..], b"\r\n\r\n", b"invite sip:1@h SIP/2.0", b"\x00\x01garbage"] {
            assert!(!looks_like_request(head(not)), "{}", String::from_utf8_lossy(not));
        }
    }

    fn text(s: &Scratch, sp: Span) -> &str {
        core::str::from_utf8(&s.buf[usize::from(sp.off)..usize::from(sp.off) + usize::from(sp.len)]).unwrap()
    }

    fn check(msg: &str) -> (Scratch, Info) {
        let (s, n) = Scratch::new(msg.as_bytes());
        let info = parse(&s, n);
        (s, info)
    }

    const SVMAP: &str = "OPTIONS sip:100@198.18.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-3343;rport\r\n\
        Max-Forwards: 70\r\n\
        To: \"sipvicious\"<sip:100@198.18.0.1>\r\n\
        From: \"sipvicious\"<sip:100@198.18.0.1>;tag=6332363337\r\n\
        User-Agent: friendly-scanner\r\n\
        Call-ID: 1195342391\r\n\
        Contact: sip:100@198.18.0.10:5060\r\n\
        CSeq: 1 OPTIONS\r\n\
        Accept: application/sdp\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn to_tags_are_header_parameters_only() {
        let has = |v: &str| {
            let (s, n) = Scratch::new(v.as_bytes());
            to_tag(&s, span(0, n)) != TAG_NONE
        };
        assert!(has("<sip:bob@example.com>;tag=1928301774"));
        assert!(has("sip:bob@example.com;tag=abc"));
        assert!(has("\"Bob\" <sip:bob@example.com> ; TAG = x"));
        assert!(has("<sip:bob@example.com>;foo=1;tag=2"));
        assert!(!has("<sip:bob@example.com>"));
        assert!(!has("<sip:bob@example.com;tag=inside-the-uri>"));
        assert!(!has("\"x;tag=1\" <sip:bob@example.com>"));
        assert!(!has("<sip:bob@example.com>;tagx=1"));
        assert!(!has("<sip:bob@example.com>;xtag=1"));
        let tag = |v: &str| {
            let (s, n) = Scratch::new(v.as_bytes());
            to_tag(&s, span(0, n))
        };
        assert_eq!(tag("<sip:1@h>;tag=cg-0123abcd"), TAG_CALLGUARD);
        assert_eq!(tag("<sip:1@h>;tag= CG-0"), TAG_OTHER, "only callguard's own spelling");
        assert_eq!(tag("<sip:1@h>;tag=cg"), TAG_OTHER, "the prefix must fit in the value");
        assert_eq!(tag("<sip:1@h>;tag=cg-"), TAG_OTHER);
        assert_eq!(tag("<sip:1@h>;tag=cgx-1"), TAG_OTHER);
        assert_eq!(tag("<sip:1@h;tag=cg-1>"), TAG_NONE);
        // Kamailio's readings (tests/kamailio): a quoted-pair is part of the quoted string, so
        // an escaped quote does not end it; a tag after a display name with one is a tag.
        assert_eq!(tag("\"a\\\";tag=1\" <sip:0049301234@pbx>"), TAG_NONE);
        assert_eq!(tag("\"a\\\"b\" <sip:0049301234@pbx>;tag=t1"), TAG_OTHER);
        assert_eq!(tag("\"a\\\\\";tag=1"), TAG_OTHER, "an escaped backslash does not escape the quote");
        assert_eq!(tag("<sip:0049301234@pbx>, <sip:999@pbx>;tag=t1"), TAG_NONE, "two addresses");
        assert_eq!(tag("<sip:0049301234@pbx>;tag=, <sip:999@pbx>;tag=t1"), TAG_NONE);
        assert_eq!(tag("\"a, b\" <sip:1@h>;tag=t1"), TAG_OTHER, "a comma in quotes is text");
        // Kamailio keeps the last of two tags, and reads `""` and a bare `;tag` as none.
        for v in [
            "<sip:+882777@pbx>;tag=t1;tag=",
            "<sip:+882777@pbx>;tag=t1;tag",
            "<sip:+882777@pbx>;tag=t1; TAG = t2",
            "<sip:+882777@pbx>;tag=\"\"",
            "<sip:+882777@pbx>;tag=\"t1\";tag=",
            "<sip:+882777@pbx>;tag=t1, <sip:1@h>",
            "<sip:+882777@pbx>;tag=t\"1;tag=\"",
            "<sip:+882777@pbx>;tag=t<1;tag=>",
        ] {
            assert_eq!(tag(v), TAG_NONE, "{v}");
        }
        assert_eq!(tag("<sip:1@h>;tag=;tag=t2"), TAG_OTHER, "an empty tag, then one");
        assert_eq!(tag("<sip:1@h>;tag=\"t1\""), TAG_OTHER, "a quoted tag");
        assert_eq!(tag("<sip:1@h>;tag=t1 ;x=1"), TAG_OTHER);
        let long = format!("<sip:1@h>;tag=t1;x={}", "y".repeat(FIELD_MAX));
        assert_eq!(tag(&long), TAG_NONE, "cut at FIELD_MAX: a second tag could hide past it");
        // An empty tag is no tag (issue 16, H3): the request is initial and gets checked.
        assert!(!has("<sip:bob@example.com>;tag="));
        assert!(!has("<sip:bob@example.com>;tag= "));
        assert!(!has("<sip:bob@example.com>;tag=;x=1"));
        assert!(has("<sip:bob@example.com>;tag=;tag=1"), "a later, non-empty tag counts");
        assert!(has("<sip:bob@example.com>;tag= 1"));
    }

    #[test]
    fn credentials_and_headers_left_unread_are_noted() {
        let register = |extra: &str| {
            format!(
                "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:101@pbx>;tag=1\r\n\
                 To: <sip:101@pbx>\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        let bits = |msg: &str| check(msg).1.headers & (header::CREDENTIALS | header::UNREAD);
        assert_eq!(bits(&register("")), 0);
        for h in [
            "Authorization: Digest username=\"101\"",
            "authorization : Digest x",
            "Proxy-Authorization: Digest username=\"101\"",
            "PROXY-AUTHORIZATION:Digest x",
        ] {
            assert_eq!(bits(&register(&format!("{h}\r\n"))), header::CREDENTIALS, "{h}");
        }
        for h in ["Authentication-Info: x", "X-Authorization: x", "Proxy-Require: x"] {
            assert_eq!(bits(&register(&format!("{h}\r\n"))), 0, "{h}");
        }
        // Credentials past what the parser reads: it cannot tell, and says so.
        let padded = register(&"X-Pad: 0123456789\r\n".repeat(70));
        assert_eq!(bits(&padded), header::UNREAD, "more lines than it reads");
        let long = register(&format!("X-Pad: {}\r\n", "p".repeat(SCAN_LEN)));
        assert_eq!(bits(&long), header::UNREAD, "more bytes than it reads");
        let whole = register("");
        assert_eq!(bits(whole.trim_end()), header::UNREAD, "no blank line");
        assert_eq!(bits(SVMAP), 0);
    }

    /// The CSeq tricks against the answer reader (issue 17): the PBX copies the CSeq into its
    /// answer, which the egress program reads as the answer to that method.
    #[test]
    fn a_cseq_that_names_another_method_is_ambiguous() {
        let request = |line: &str, cseq: &str, pad: &str| {
            format!(
                "{line} sip:101@pbx SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:101@pbx>;tag=1\r\n\
                 To: <sip:101@pbx>\r\nCall-ID: c\r\n{pad}{cseq}Content-Length: 0\r\n\r\n"
            )
        };
        let ambiguous = |msg: &str| check(msg).1.headers & header::AMBIGUOUS != 0;
        for (line, cseq) in [
            ("REGISTER", "CSeq: 2 REGISTER\r\n"),
            ("INVITE", "cseq:7\tINVITE\r\n"),
            ("INVITE", "CSeq  : 7 INVITE \r\n"),
            ("OPTIONS", "CSeq: 1 OPTIONS\r\n"),
            ("ACK", "CSeq: 1 ACK\r\n"),
            ("BYE", "CSeq: 3 BYE\r\n"),
            // A method callguard does not know, as any other: the reader would not count it.
            ("FOO", "CSeq: 1 FOO\r\n"),
            // No CSeq in a request read to its end: the answer has none either.
            ("OPTIONS", ""),
        ] {
            assert!(!ambiguous(&request(line, cseq, "")), "{line} {cseq:?}");
        }
        for (line, cseq) in [
            // An OPTIONS whose 200 would read as a registration, or take a pending REGISTER.
            ("OPTIONS", "CSeq: 1 REGISTER\r\n"),
            ("OPTIONS", "CSeq: 1 INVITE\r\n"),
            // A guess whose 401 would read as the answer to an OPTIONS.
            ("REGISTER", "CSeq: 2 OPTIONS\r\n"),
            ("REGISTER", "CSeq: 2 INVITE\r\n"),
            ("INVITE", "CSeq: 2 REGISTER\r\n"),
            ("REGISTER", "CSeq: 2 register\r\n"),
            ("REGISTER", "CSeq: 2 REGISTERS\r\n"),
            ("REGISTER", "CSeq: 2REGISTER\r\n"),
            ("REGISTER", "CSeq: 2\r\n REGISTER\r\n"),
            ("FOO", "CSeq: 1 REGISTER\r\n"),
            ("REGISTER", "CSeq: 2 REG\r\n"),
        ] {
            assert!(ambiguous(&request(line, cseq, "")), "{line} {cseq:?}");
        }
        // Two CSeqs: readers differ on which counts.
        let two = request("REGISTER", "CSeq: 2 REGISTER\r\nCSeq: 2 OPTIONS\r\n", "");
        assert!(check(&two).1.headers & header::DUPLICATE != 0);
        // A CSeq past what the parser reads is out of its sight: never judged.
        let pad = "X-Pad: 0123456789\r\n".repeat(70);
        assert!(ambiguous(&request("REGISTER", "CSeq: 2 OPTIONS\r\n", &pad)));
        assert!(ambiguous(&request("REGISTER", "CSeq: 2 REGISTER\r\n", &pad)));
        // Read before the padding, it is judged.
        let early = format!("REGISTER sip:pbx SIP/2.0\r\nCSeq: 2 REGISTER\r\n{pad}\r\n");
        assert_eq!(check(&early).1.headers & (header::AMBIGUOUS | header::UNREAD), header::UNREAD);
        // Read, but so far on that the PBX's answer (with a To tag and the Via's received
        // added) could carry it past what the answer reader reads.
        let long = format!("X-Pad: {}\r\n", "p".repeat(CSEQ_END_MAX));
        assert!(ambiguous(&request("REGISTER", "CSeq: 2 REGISTER\r\n", &long)));
        let short = format!("X-Pad: {}\r\n", "p".repeat(CSEQ_END_MAX - 200));
        assert!(!ambiguous(&request("REGISTER", "CSeq: 2 REGISTER\r\n", &short)));
        // The same for a REGISTER's To (whose user the answer's failures are charged to); an
        // INVITE's To may lie further on.
        let late_to = |line: &str| {
            format!(
                "{line} sip:pbx SIP/2.0\r\nCSeq: 2 {line}\r\nX-Pad: {}\r\nTo: <sip:101@pbx>\r\n\r\n",
                "p".repeat(CSEQ_END_MAX)
            )
        };
        assert!(ambiguous(&late_to("REGISTER")));
        assert!(!ambiguous(&late_to("INVITE")));
    }

    #[test]
    fn sipvicious_options() {
        let (b, i) = check(SVMAP);
        assert_eq!((i.kind, i.method), (Kind::Request, method::OPTIONS));
        assert_eq!(text(&b, i.user_agent), "friendly-scanner");
        assert_eq!(text(&b, i.from), "\"sipvicious\"<sip:100@198.18.0.1>;tag=6332363337");
        assert_eq!(text(&b, i.to), "\"sipvicious\"<sip:100@198.18.0.1>");
        assert_eq!(text(&b, i.ruri_user), "100");
        let all = header::VIA
            | header::FROM
            | header::TO
            | header::CALL_ID
            | header::CONTACT
            | header::USER_AGENT
            | header::CSEQ;
        assert_eq!(i.headers, all);
    }

    #[test]
    fn compact_form_and_odd_spacing() {
        let msg = "REGISTER sips:ex.example SIP/2.0\r\nv : SIP/2.0/UDP h\r\nt:\t<sip:2001@ex.example>\r\n\
                   F:   sipvicious   <sip:2001@ex.example>;tag=1\r\ni:x\r\nM: <sip:a@b>\r\nl: 0\r\n\r\n";
        let (b, i) = check(msg);
        assert_eq!((i.kind, i.method), (Kind::Request, method::REGISTER));
        assert_eq!(i.user_agent, Span::default());
        assert_eq!(text(&b, i.from), "sipvicious   <sip:2001@ex.example>;tag=1");
        assert_eq!(text(&b, i.to), "<sip:2001@ex.example>");
        assert!(!i.ruri_user.is_some(), "a registrar URI has no user");
        assert_eq!(
            i.headers & (header::VIA | header::CONTACT | header::CALL_ID),
            header::VIA | header::CONTACT | header::CALL_ID
        );
    }

    #[test]
    fn methods_responses_keepalives_and_junk() {
        for (m, id) in [
            ("INVITE", method::INVITE),
            ("SUBSCRIBE", method::SUBSCRIBE),
            ("ACK", method::ACK),
            ("FOO", method::UNKNOWN),
            // Methods are case-sensitive tokens: these are methods callguard does not know.
            ("invite", method::UNKNOWN),
            ("NEWMETHOD-1.0_x!%*+`'~", method::UNKNOWN),
            ("SUBSCRIBES", method::UNKNOWN),
        ] {
            let (_, i) = check(&std::format!("{m} sip:1@h SIP/2.0\r\n\r\n"));
            assert_eq!((i.kind, i.method), (Kind::Request, id), "{m}");
        }
        assert_eq!(check("SIP/2.0 200 OK\r\nVia: x\r\n\r\n").1.kind, Kind::Response);
        assert_eq!(check("\r\n\r\n").1.kind, Kind::Keepalive);
        assert_eq!(check("\r\n").1.kind, Kind::Keepalive);
        let mut stun = [0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        let (s, n) = Scratch::new(&stun);
        assert_eq!(parse(&s, n).kind, Kind::Keepalive);
        for junk in [
            "GET / HTTP/1.1\r\n\r\n",
            "INV<TE sip:1@h SIP/2.0\r\n",
            "A-METHOD-NAME-LONGER-THAN-32-BYTES sip:1@h SIP/2.0\r\n",
            "INVITE sip:1@h SIP/3.0\r\n",
            "hello",
            "",
            "\x00\x01\x02",
        ] {
            assert_eq!(check(junk).1.kind, Kind::NotSip, "{junk:?}");
        }
    }

    #[test]
    fn tel_uri_and_lf_only_lines() {
        let (b, i) = check(
            "INVITE tel:+14155550100;phone-context=x SIP/2.0\nFrom: Alice <tel:+1999>;tag=a\nUser-Agent: Zoiper rv2.10\n\n",
        );
        assert_eq!(text(&b, i.ruri_user), "+14155550100");
        assert_eq!(text(&b, i.from), "Alice <tel:+1999>;tag=a");
        assert_eq!(text(&b, i.user_agent), "Zoiper rv2.10");
    }

    #[test]
    fn a_value_starting_on_a_continuation_line_is_that_line() {
        let (s, i) = check(
            "OPTIONS sip:1@h SIP/2.0\r\nUser-Agent:\r\n \tfriendly-scanner \r\nFrom:   \r\n\t\"x\" <sip:1@h>\r\n\
             To: <sip:2@h>\r\n  ;tag=9\r\n\r\n",
        );
        assert_eq!(text(&s, i.user_agent), "friendly-scanner");
        assert_eq!(text(&s, i.from), "\"x\" <sip:1@h>");
        // Folded later: the value up to its first break.
        assert_eq!(text(&s, i.to), "<sip:2@h>");
    }

    #[test]
    fn what_lies_past_len_never_matters() {
        // The kernel's buffer holds an earlier packet's bytes past the payload (after TAIL zero
        // bytes): every prefix parses the same whatever follows (the rest of the message,
        // colons, spaces, line breaks).
        let compact = "OPTIONS sip:1@h SIP/2.0\r\nv: SIP/2.0/UDP h\r\nt: <sip:1@h>\nf:x\nT\nt \n";
        for msg in [SVMAP, compact] {
            for cut in 0..msg.len() {
                let (zeros, _) = Scratch::new(&msg.as_bytes()[..cut]);
                let want = parse(&zeros, cut);
                for s in
                    [i_span(&want.user_agent), i_span(&want.from), i_span(&want.to), i_span(&want.ruri_user)]
                {
                    assert!(s <= cut.max(1), "cut {cut}: span ends at {s}");
                }
                for filler in [None, Some(b':'), Some(b' '), Some(b'\n')] {
                    let (mut s, _) = Scratch::new(msg.as_bytes());
                    // What the kernel's buffer holds: zeros for TAIL bytes, then anything up to
                    // SCAN_LEN (an earlier packet), then zeros.
                    let tail = (cut + TAIL).min(SCAN_LEN);
                    s.buf[cut..tail].fill(0);
                    if let Some(c) = filler {
                        s.buf[tail..SCAN_LEN].fill(c);
                    }
                    assert_eq!(parse(&s, cut), want, "cut {cut} of {msg:?}, then {filler:?}");
                }
            }
        }
    }

    /// The header-name reader as it was, one byte at a time: the reference the word-at-a-time
    /// reader is checked against.
    fn header_name_bytewise(s: &Scratch, i: usize) -> (u16, usize) {
        // The name ends at a colon, space or tab within 11 bytes (a 10-byte name at most). All
        // eleven bytes are read, without an early exit, so the verifier sees one shape of `name`.
        let mut name = [0u8; 10];
        let mut n = 0;
        for (k, slot) in name.iter_mut().enumerate() {
            let c = at(s, i + k);
            if n == 0 && (c == b':' || c == b' ' || c == b'\t') {
                n = k;
            }
            *slot = lower(c);
        }
        if n == 0 && matches!(at(s, i + 10), b':' | b' ' | b'\t') {
            n = 10;
        }
        let n = s.launder(n);
        let creds = n == 0 && (name[..8] == *b"authoriz" || name[..8] == *b"proxy-au");
        // Bytes from the separator on are not part of the name.
        for (k, slot) in name.iter_mut().enumerate() {
            if k >= n {
                *slot = 0;
            }
        }
        if n == 0 {
            return (if creds { header::CREDENTIALS } else { 0 }, i);
        }
        let bit = match (n, name) {
            (1, [b'v', ..]) | (3, [b'v', b'i', b'a', ..]) => header::VIA,
            (1, [b'f', ..]) | (4, [b'f', b'r', b'o', b'm', ..]) => header::FROM,
            (4, [b'c', b's', b'e', b'q', ..]) => header::CSEQ,
            (1, [b't', ..]) | (2, [b't', b'o', ..]) => header::TO,
            (1, [b'i', ..]) | (7, [b'c', b'a', b'l', b'l', b'-', b'i', b'd', ..]) => header::CALL_ID,
            (1, [b'm', ..]) | (7, [b'c', b'o', b'n', b't', b'a', b'c', b't', ..]) => header::CONTACT,
            (10, [b'u', b's', b'e', b'r', b'-', b'a', b'g', b'e', b'n', b't']) => header::USER_AGENT,
            _ => 0,
        };
        if bit == 0 {
            return (0, i);
        }
        match colon_after(s, i + n) {
            Some(colon) => (bit, colon + 1),
            None => (header::AMBIGUOUS, i),
        }
    }

    #[test]
    fn the_first_flagged_byte_is_found_by_multiplying() {
        // Every pattern of flags over a word's eight bytes; then the newline scan, which uses it,
        // from every offset of a short request.
        for flags in 1u32..256 {
            let m = (0..8).filter(|k| flags & (1 << k) != 0).fold(0u64, |m, k| m | 0x80 << (8 * k));
            assert_eq!(first_flagged_byte(m), flags.trailing_zeros() as usize, "flags {flags:#010b}");
        }
        // Vertical tabs (`\n` ^ 1) after line feeds, at every alignment: not line ends.
        let text = b"INVITE sip:a@b SIP/2.0\r\n\x0bVia: x\r\n\x0b\x0b\n\x0bt\n\r\n";
        for from in 0..text.len() {
            let (s, n) = Scratch::new(text);
            let want = text[from..].iter().position(|&c| c == b'\n').map(|k| from + k);
            assert_eq!(next_newline(&s, from, n), want, "from {from}");
        }
    }

    #[test]
    fn header_names_read_by_words_as_by_bytes() {
        const NAMES: [&str; 16] = [
            "Via",
            "v",
            "From",
            "f",
            "To",
            "t",
            "Call-ID",
            "i",
            "Contact",
            "m",
            "User-Agent",
            "CSeq",
            "Content-Length",
            "User-Agents",
            "Authorization",
            "Proxy-Authorization",
        ];
        const FILL: &[u8] = b" \t:\r\n-aZ\0";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            // xorshift: deterministic, so a failure can be replayed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut found = 0;
        for round in 0..200_000 {
            let r = next();
            let mut line: Vec<u8> = NAMES[(r % 16) as usize].bytes().collect();
            for c in &mut line {
                if next() % 2 == 0 {
                    c.make_ascii_uppercase();
                }
            }
            // Sometimes cut or grow the name, then separators, spaces and noise.
            if r >> 8 & 7 == 0 {
                line.truncate((r >> 12) as usize % (line.len() + 1));
            }
            for _ in 0..(r >> 16) % 6 {
                line.push(FILL[(next() % FILL.len() as u64) as usize]);
            }
            line.extend_from_slice(b": value\r\n");
            // At varying offsets, including the end of the payload window.
            let at = match round % 3 {
                0 => (r >> 24) as usize % 16,
                1 => SCAN_LEN - line.len().min(SCAN_LEN) + (r >> 24) as usize % 4,
                _ => (r >> 24) as usize % (SCAN_LEN - 64),
            }
            .min(SCAN_LEN - 1);
            let mut payload = vec![b'x'; at];
            payload.extend_from_slice(&line);
            payload.truncate(SCAN_LEN);
            let (s, n) = Scratch::new(&payload);
            let (mut s2, _) = Scratch::new(&payload);
            s2.clear_tail(n);
            let got = header_name(&s, at);
            // The old reader wrapped at SCAN_LEN, the new one reads the zeros past it: compared
            // where that makes no difference. Where no header is named, the value start is
            // not used.
            if at + 24 <= SCAN_LEN {
                let want = header_name_bytewise(&s, at);
                let line = String::from_utf8_lossy(&line);
                assert_eq!(got.0, want.0, "line {line:?} at {at}");
                if got.0 != 0 {
                    assert_eq!(got.1, want.1, "line {line:?} at {at}");
                }
            }
            assert_eq!(got, header_name(&s2, at));
            found += usize::from(got.0 != 0);
        }
        // The generator must produce both outcomes in quantity to test anything.
        assert!(found > 30_000 && found < 170_000, "{found} of 200000 lines named a header");
    }

    #[test]
    fn clear_tail_zeroes_what_follows_and_keeps_what_precedes() {
        for n in 0..=SCAN_LEN {
            let (mut s, _) = Scratch::new(&[0xffu8; SCAN_LEN]);
            s.clear_tail(n);
            assert!(s.buf[..n].iter().all(|&b| b == 0xff), "n = {n}: payload changed");
            assert!(s.buf[n..n + TAIL].iter().all(|&b| b == 0), "n = {n}: tail not zero");
            assert!(s.buf[SCAN_LEN..].iter().all(|&b| b == 0), "n = {n}: upper half written");
        }
    }

    fn i_span(s: &Span) -> usize {
        usize::from(s.off) + usize::from(s.len)
    }

    #[test]
    fn only_plain_requests_other_than_invite_pass_unread() {
        let head = |m: &str| {
            let mut h = [0u8; 16];
            let b = m.as_bytes();
            h[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
            h
        };
        for m in [
            "SIP/2.0 200 OK\r\nV",
            "REGISTER sip:pbx ",
            "ACK sip:1@pbx SIP",
            "SUBSCRIBE sip:1@p",
            "BYE sip:x",
        ] {
            assert!(passes_unread(&head(m)), "{m}");
        }
        for m in [
            "INVITE sip:1@pbx",
            "invite sip:1@pbx",
            "\r\nINVITE sip:1@p",
            "REGISTER\tsip:x",
            "ACKX sip:1",
            "SUBSCRIBEX sip:",
            "xyz",
        ] {
            assert!(!passes_unread(&head(m)), "{m}");
        }
    }
}
