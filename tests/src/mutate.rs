//! Random and mutated SIP traffic for the differential test: frames around payloads taken from
//! the test corpus (sipvicious in every form, phones, responses, torture messages, keepalives)
//! and mutated the ways that matter to a line parser and to signatures: flipped bits, SIP
//! punctuation and line breaks inserted, header names recased or compacted, lines duplicated,
//! values lengthened past the inspected length, messages spliced, truncated.

use std::net::IpAddr;

use rand::{Rng, SeedableRng, rngs::SmallRng, seq::IndexedRandom};

use crate::{
    frame::{Frame, TCP, TPID_8021AD, TPID_8021Q, UDP},
    sipmsg::{self, SvTool},
};

/// Fragments inserted by [`Mutator::mutate`]: what a SIP line parser and the signatures care about.
const PIECES: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"@",
    b";",
    b",",
    b"sip:",
    b"sips:",
    b"tel:",
    b"\r\n ",
    b"\r\n\r\n",
    b"User-Agent: friendly-scanner\r\n",
    b"User-Agent:",
    b"USER-AGENT :",
    b"f: \"sipvicious\" <sip:100@h>\r\n",
    b"t: <sip:sipvicious@h>\r\n",
    b"From:",
    b"To:",
    b"f:",
    b"t:",
    b"sipvicious",
    b"friendly-scanner",
    b"SIP/2.0",
    b"SIP/2.0 200 OK\r\n",
    b"OPTIONS ",
    b"REGISTER ",
    b"INVITE ",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
];

/// A deterministic source of frames (same seed, same sequence).
#[derive(Debug)]
pub struct Mutator {
    rng: SmallRng,
    corpus: Vec<Vec<u8>>,
    sources: Vec<IpAddr>,
}

impl Mutator {
    /// A generator drawing sources from `sources` (they decide which rules apply).
    pub fn new(seed: u64, sources: &[&str]) -> Self {
        let mut corpus: Vec<Vec<u8>> = sipmsg::phones().into_iter().map(|p| p.1).collect();
        corpus.extend(sipmsg::responses());
        corpus.extend(sipmsg::torture().into_iter().map(|t| t.1));
        for tool in [SvTool::Svmap, SvTool::Svwar, SvTool::Svcrack] {
            for method in ["OPTIONS", "REGISTER", "INVITE"] {
                for compact in [false, true] {
                    corpus.push(sipmsg::sipvicious(tool, method, "1001", "198.18.0.1", compact));
                }
            }
        }
        corpus.extend([b"\r\n\r\n".to_vec(), b"\r\n".to_vec()]);
        Self {
            rng: SmallRng::seed_from_u64(seed),
            corpus,
            sources: sources.iter().map(|s| s.parse().expect("source address")).collect(),
        }
    }

    /// The next frame: mostly UDP to 5060 from one of the sources, with a mutated payload.
    pub fn frame(&mut self) -> Frame {
        let src = *self.sources.choose(&mut self.rng).expect("sources");
        let dport = *[5060, 5060, 5060, 5060, 5060, 5061, 5999, 40000].choose(&mut self.rng).unwrap();
        let mut f = Frame::udp(&src.to_string(), dport);
        f.sport = self.rng.random();
        f.payload = self.payload();
        match self.rng.random_range(0..100) {
            0..8 => f.proto = TCP,
            8..10 => f.frag = Some((self.rng.random_range(1..100), self.rng.random())),
            10..12 => f.frag = Some((0, true)),
            _ => f.proto = UDP,
        }
        if f.proto == TCP {
            f.payload.clear();
        }
        match self.rng.random_range(0..10) {
            0 => f.vlans = vec![TPID_8021Q],
            1 => f.vlans = vec![TPID_8021AD, TPID_8021Q],
            _ => {}
        }
        // IPv6 extension chains, short and past the six headers the program walks.
        if src.is_ipv6() && self.rng.random_range(0..10) == 0 {
            f.ipv6_ext = vec![crate::frame::ext::DEST_OPTS; self.rng.random_range(1..=9)];
        }
        f
    }

    /// A payload: a corpus message, mutated zero to six times, or random bytes.
    pub fn payload(&mut self) -> Vec<u8> {
        if self.rng.random_range(0..50) == 0 {
            let n = self.rng.random_range(0..1400);
            return (0..n).map(|_| self.rng.random()).collect();
        }
        let mut p = self.corpus.choose(&mut self.rng).expect("corpus").clone();
        for _ in 0..self.rng.random_range(0..=6) {
            self.mutate(&mut p);
        }
        p.truncate(1400);
        p
    }

    fn mutate(&mut self, p: &mut Vec<u8>) {
        let at =
            |rng: &mut SmallRng, p: &Vec<u8>| if p.is_empty() { 0 } else { rng.random_range(0..p.len()) };
        match self.rng.random_range(0..11) {
            0 if !p.is_empty() => {
                let i = at(&mut self.rng, p);
                p[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 | 2 => {
                let i = at(&mut self.rng, p);
                let piece = *PIECES.choose(&mut self.rng).unwrap();
                p.splice(i..i, piece.iter().copied());
            }
            3 if !p.is_empty() => {
                let i = at(&mut self.rng, p);
                let n = self.rng.random_range(1..=16).min(p.len() - i);
                p.drain(i..i + n);
            }
            4 => p.truncate(at(&mut self.rng, p)),
            5 => {
                // Duplicate a line (a header repeated, or a line break doubled).
                let lines: Vec<usize> =
                    p.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1).collect();
                if lines.len() >= 2 {
                    let k = self.rng.random_range(0..lines.len() - 1);
                    let line = p[lines[k]..lines[k + 1]].to_vec();
                    p.splice(lines[k]..lines[k], line);
                }
            }
            6 => {
                // Recase a stretch (header names are case-insensitive, signatures too).
                let i = at(&mut self.rng, p);
                let n = self.rng.random_range(1..=24);
                let upper = self.rng.random();
                for c in p.iter_mut().skip(i).take(n) {
                    *c = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
                }
            }
            7 => {
                // Lengthen a value past the inspected length of a field, or of the buffer.
                let i = at(&mut self.rng, p);
                let n = *[100, 127, 128, 129, 300, 1100].choose(&mut self.rng).unwrap();
                let c = *b"ax- ".choose(&mut self.rng).unwrap();
                p.splice(i..i, std::iter::repeat_n(c, n));
            }
            8 => {
                // Splice: the head of this message and the tail of another.
                let other = self.corpus.choose(&mut self.rng).unwrap().clone();
                let (i, j) = (
                    at(&mut self.rng, p),
                    if other.is_empty() { 0 } else { self.rng.random_range(0..other.len()) },
                );
                p.truncate(i);
                p.extend_from_slice(&other[j..]);
            }
            9 => {
                // LF-only line endings.
                let mut q = Vec::with_capacity(p.len());
                for (k, c) in p.iter().enumerate() {
                    if !(*c == b'\r' && p.get(k + 1) == Some(&b'\n')) {
                        q.push(*c);
                    }
                }
                *p = q;
            }
            _ => {
                // Compact or long header names.
                let swaps: [(&[u8], &[u8]); 5] = [
                    (b"\nFrom:", b"\nf:"),
                    (b"\nTo:", b"\nt:"),
                    (b"\nf:", b"\nFrom:"),
                    (b"\nt:", b"\nTO :"),
                    (b"\nUser-Agent:", b"\nuser-agent\t:"),
                ];
                let (a, b) = *swaps.choose(&mut self.rng).unwrap();
                if let Some(i) = p.windows(a.len()).position(|w| w == a) {
                    p.splice(i..i + a.len(), b.iter().copied());
                }
            }
        }
    }
}
