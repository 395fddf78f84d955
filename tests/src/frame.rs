//! Builds Ethernet frames for `BPF_PROG_TEST_RUN`: VLAN tags, IPv4 with options and fragments,
//! IPv6 with extension headers, UDP and TCP. Lengths and the IPv4 header checksum are filled in,
//! so the frames are also valid on a wire.

use std::net::IpAddr;

/// IPv6 extension header types the builder can insert.
pub mod ext {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ outer) tag protocol identifier.
pub const TPID_8021AD: u16 = 0x88a8;

/// Transport protocol numbers.
pub const UDP: u8 = 17;
/// TCP.
pub const TCP: u8 = 6;
/// ICMP.
pub const ICMP: u8 = 1;

/// A frame description; [`Frame::build`] turns it into bytes.
#[derive(Clone, Debug)]
pub struct Frame {
    /// VLAN tags, outermost first (TPIDs).
    pub vlans: Vec<u16>,
    /// Source address (the family of the frame).
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Transport protocol.
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IPv4 options (padded to 4 bytes).
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension headers, in order: (type, body length in 8-byte units beyond the first).
    pub ipv6_ext: Vec<u8>,
    /// Fragment: (offset in 8-byte units, more fragments). IPv4 header fields, or an IPv6
    /// fragment header appended to the extension chain.
    pub frag: Option<(u16, bool)>,
    /// Transport payload.
    pub payload: Vec<u8>,
    /// Overrides the UDP length field (to build malformed datagrams).
    pub udp_len: Option<u16>,
    /// Overrides the TCP data offset in 32-bit words (to build malformed segments).
    pub tcp_doff: Option<u8>,
}

impl Frame {
    /// A UDP datagram from `src` to `dport` with a small payload.
    pub fn udp(src: &str, dport: u16) -> Self {
        let src: IpAddr = src.parse().expect("source address");
        let dst: IpAddr =
            if src.is_ipv4() { "198.18.0.1".parse().unwrap() } else { "2001:db8::1".parse().unwrap() };
        Self {
            vlans: Vec::new(),
            src,
            dst,
            proto: UDP,
            sport: 40000,
            dport,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            frag: None,
            payload: b"OPTIONS sip:100@198.18.0.1 SIP/2.0\r\n\r\n".to_vec(),
            udp_len: None,
            tcp_doff: None,
        }
    }

    /// A TCP segment (SYN-sized header, no payload) from `src` to `dport`.
    pub fn tcp(src: &str, dport: u16) -> Self {
        Self { proto: TCP, payload: Vec::new(), ..Self::udp(src, dport) }
    }

    /// Adds VLAN tags (outermost first).
    #[must_use]
    pub fn vlans(mut self, tpids: &[u16]) -> Self {
        self.vlans = tpids.to_vec();
        self
    }

    /// Sets the transport protocol (no header is written for protocols other than UDP/TCP).
    #[must_use]
    pub fn proto(mut self, proto: u8) -> Self {
        self.proto = proto;
        self
    }

    /// Marks the frame a fragment.
    #[must_use]
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Self {
        self.frag = Some((offset_units, more));
        self
    }

    /// Sets the payload.
    #[must_use]
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// The IP packet of the frame (no Ethernet header or VLAN tags), as a raw socket sends it.
    pub fn ip_packet(&self) -> Vec<u8> {
        self.build().split_off(14 + 4 * self.vlans.len())
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4();
        let mut f = Vec::with_capacity(128 + l4.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        let ether_type: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        for (i, tpid) in self.vlans.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            // TCI: VLAN id 100 + i.
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&ether_type.to_be_bytes());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let ihl = 20 + opts.len();
                let total = ihl + l4.len();
                let (off, more) = self.frag.unwrap_or((0, false));
                let frags = off | if more { 0x2000 } else { 0 };
                let mut h = vec![0x40 | (ihl / 4) as u8, 0];
                h.extend_from_slice(&(total as u16).to_be_bytes());
                h.extend_from_slice(&[0x12, 0x34]);
                h.extend_from_slice(&frags.to_be_bytes());
                h.extend_from_slice(&[64, self.proto, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&opts);
                let sum = checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut chain: Vec<(u8, Vec<u8>)> =
                    self.ipv6_ext.iter().map(|&t| (t, vec![0u8; 6])).collect();
                if let Some((off, more)) = self.frag {
                    let fo = (off << 3) | u16::from(more);
                    let mut body = vec![0u8; 6];
                    body[0..2].copy_from_slice(&fo.to_be_bytes());
                    body[2..6].copy_from_slice(&0xabcd_u32.to_be_bytes());
                    chain.push((ext::FRAGMENT, body));
                }
                let mut exts = Vec::new();
                for (i, (_, body)) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).map_or(self.proto, |(t, _)| *t);
                    exts.push(next);
                    // Body of 6 bytes: the header is 8 bytes, length field 0.
                    exts.push(0);
                    exts.extend_from_slice(body);
                }
                let first = chain.first().map_or(self.proto, |(t, _)| *t);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&exts);
            }
            _ => panic!("source and destination of different families"),
        }
        f.extend_from_slice(&l4);
        f
    }

    fn l4(&self) -> Vec<u8> {
        let later_fragment = self.frag.is_some_and(|(off, _)| off != 0);
        let mut l4 = Vec::new();
        if later_fragment {
            l4.extend_from_slice(&self.payload);
            return l4;
        }
        match self.proto {
            UDP => {
                let len = self.udp_len.unwrap_or((8 + self.payload.len()) as u16);
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                // A whole datagram gets its checksum, so that a host delivers it (IPv6 requires
                // one); a first fragment's would cover bytes this frame does not hold.
                if self.frag.is_none() && self.udp_len.is_none() {
                    let mut pseudo = Vec::new();
                    match (self.src, self.dst) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => {
                            pseudo.extend_from_slice(&s.octets());
                            pseudo.extend_from_slice(&d.octets());
                            pseudo.extend_from_slice(&[0, UDP]);
                            pseudo.extend_from_slice(&len.to_be_bytes());
                        }
                        (IpAddr::V6(s), IpAddr::V6(d)) => {
                            pseudo.extend_from_slice(&s.octets());
                            pseudo.extend_from_slice(&d.octets());
                            pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
                            pseudo.extend_from_slice(&[0, 0, 0, UDP]);
                        }
                        _ => {}
                    }
                    pseudo.extend_from_slice(&l4);
                    pseudo.extend_from_slice(&self.payload);
                    let sum = match checksum(&pseudo) {
                        0 => 0xffff,
                        s => s,
                    };
                    l4[6..8].copy_from_slice(&sum.to_be_bytes());
                }
            }
            TCP => {
                let doff = self.tcp_doff.unwrap_or(5);
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, doff << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
            }
            _ => {}
        }
        l4.extend_from_slice(&self.payload);
        l4
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Offsets where each header of `frame` starts (Ethernet, each VLAN tag, IP, each IPv6 extension
/// header, transport, payload): truncating there leaves a frame that ends at a header boundary.
pub fn boundaries(f: &Frame) -> Vec<usize> {
    let mut b = vec![0, 14];
    let mut pos = 14;
    for _ in &f.vlans {
        pos += 4;
        b.push(pos);
    }
    if f.src.is_ipv4() {
        pos += 20 + f.ipv4_options.len().next_multiple_of(4);
        b.push(pos);
    } else {
        pos += 40;
        b.push(pos);
        for _ in 0..(f.ipv6_ext.len() + usize::from(f.frag.is_some())) {
            pos += 8;
            b.push(pos);
        }
    }
    match f.proto {
        UDP => pos += 8,
        TCP => pos += 20,
        _ => {}
    }
    b.push(pos);
    b
}
