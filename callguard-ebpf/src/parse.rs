//! Header parsing: Ethernet (+ up to two VLAN tags), IPv4 (IHL honoured), IPv6 (bounded extension
//! header walk), UDP and TCP.
//!
//! Every read goes through [`ptr_at`], which checks the bounds the verifier requires. A parse
//! failure is never a drop by itself: it returns the [`Reason`] that names the defect, and the
//! caller decides with the configured policy.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use callguard_common::Reason;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

/// EtherTypes: IPv4, IPv6, 802.1Q and 802.1ad VLAN tags.
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;

/// IP protocol numbers.
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// How many IPv6 extension headers the program walks before giving up (`header_chain_too_long`:
/// the source is known, the port is not; see `decide`). Real traffic carries one or two; RFC 8200
/// §4.1 orders at most six kinds, each once but destination options twice.
const IPV6_EXT_MAX: usize = 6;

/// A pointer to a `T` at `offset` bytes into the packet, if the packet is long enough.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a big-endian u16 at `offset`.
#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: ptr_at checked that both bytes are inside the packet.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Reads `N` bytes at `offset`. Multi-byte reads only: for a one-byte read LLVM turns the bounds
/// check into `ptr >= end`, a form the verifier does not accept for variable offsets.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: ptr_at checked that all N bytes are inside the packet.
    Some(unsafe { *p })
}

/// The source address, in network byte order as the packet carries it.
#[derive(Clone, Copy)]
pub(crate) enum Src {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What the network layer told us.
pub(crate) struct L3 {
    pub src: Src,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// A fragment that does not carry the transport header (IPv4 offset != 0, IPv6 fragment
    /// offset != 0).
    pub later_fragment: bool,
    /// The first fragment of a fragmented datagram: transport lengths cover more than this packet.
    pub first_fragment: bool,
    /// IPv6 only: the extension headers go on past [`IPV6_EXT_MAX`], so the transport header
    /// (and `proto`, `l4_off`) are unknown. The source address is still good.
    pub chain_too_long: bool,
}

/// Parses Ethernet, VLAN and the IP header. `Err` carries the reason when there is no usable
/// source address.
#[inline(always)]
pub(crate) fn parse_l3(ctx: &XdpContext) -> Result<L3, Reason> {
    let mut off = EthHdr::LEN;
    let mut ether_type = be16_at(ctx, 12).ok_or(Reason::TruncatedL2)?;
    // Two tags at most (802.1ad outer + 802.1Q inner); written out instead of looped so the
    // verifier sees constant offsets.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        ether_type = be16_at(ctx, off + 2).ok_or(Reason::TruncatedL2)?;
        off += VlanHdr::LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            ether_type = be16_at(ctx, off + 2).ok_or(Reason::TruncatedL2)?;
            off += VlanHdr::LEN;
            if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
                return Err(Reason::HeaderChainTooLong);
            }
        }
    }
    match ether_type {
        ETH_P_IP => parse_ipv4(ctx, off),
        ETH_P_IPV6 => parse_ipv6(ctx, off),
        _ => Err(Reason::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<L3, Reason> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, off).ok_or(Reason::TruncatedL3)?;
    // SAFETY: ptr_at checked the whole fixed header is inside the packet.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Reason::BadL3Header);
    }
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(Reason::BadL3Header);
    }
    // Options must be inside the packet too: the transport header starts after them.
    if ctx.data() + off + ihl > ctx.data_end() {
        return Err(Reason::TruncatedL3);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let offset = frags & 0x1fff;
    let more = frags & 0x2000 != 0;
    Ok(L3 {
        src: Src::V4(ip.src_addr),
        proto: ip.proto,
        l4_off: off + ihl,
        later_fragment: offset != 0,
        first_fragment: offset == 0 && more,
        chain_too_long: false,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Result<L3, Reason> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, off).ok_or(Reason::TruncatedL3)?;
    // SAFETY: ptr_at checked the whole fixed header is inside the packet.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(Reason::BadL3Header);
    }
    let src = Src::V6(ip.src_addr);
    let mut next = ip.next_hdr;
    let mut pos = off + Ipv6Hdr::LEN;
    let mut later_fragment = false;
    let mut first_fragment = false;
    let found = |proto, l4_off, later_fragment, first_fragment, chain_too_long| L3 {
        src,
        proto,
        l4_off,
        later_fragment,
        first_fragment,
        chain_too_long,
    };
    // Bounded walk: the verifier needs a constant trip count. One more round than headers
    // allowed, to read the transport protocol after the last one.
    for _ in 0..=IPV6_EXT_MAX {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, length in 8-byte units beyond the first 8.
                let [nh, len, _, _] = bytes_at::<4>(ctx, pos).ok_or(Reason::TruncatedL3)?;
                next = nh;
                pos += (usize::from(len) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                // Next header, reserved, offset (13 bits) + flags (M is the lowest bit).
                let [nh, _, hi, lo] = bytes_at::<4>(ctx, pos).ok_or(Reason::TruncatedL3)?;
                let fo = u16::from_be_bytes([hi, lo]);
                next = nh;
                pos += 8;
                if fo >> 3 != 0 {
                    later_fragment = true;
                } else {
                    first_fragment = fo & 1 != 0;
                }
            }
            _ => return Ok(found(next, pos, later_fragment, first_fragment, false)),
        }
        if later_fragment {
            return Ok(found(next, pos, later_fragment, first_fragment, false));
        }
    }
    // Linux delivers such packets, so this is not a parse failure: the caller still knows the
    // source and decides (RFC 8200 sets no limit; the stack walks any length).
    Ok(found(next, pos, later_fragment, first_fragment, true))
}

/// The transport layer: destination port if readable, and the defect if any.
pub(crate) struct L4 {
    /// Destination port, when the header is long enough to hold it.
    pub dst_port: Option<u16>,
    /// `TruncatedL4` or `BadL4Header` when the header is defective.
    pub defect: Option<Reason>,
    /// UDP: the payload length the UDP header gives (what the stack delivers: bytes past it are
    /// trimmed away, so inspection must not read them). 0 otherwise.
    pub udp_payload: usize,
}

/// Parses the UDP or TCP header at `l3.l4_off`. Other protocols have no port.
#[inline(always)]
pub(crate) fn parse_l4(ctx: &XdpContext, l3: &L3) -> L4 {
    let off = l3.l4_off;
    let none = L4 { dst_port: None, defect: None, udp_payload: 0 };
    if l3.chain_too_long || l3.later_fragment || (l3.proto != IPPROTO_UDP && l3.proto != IPPROTO_TCP) {
        return none;
    }
    let Some(dst_port) = be16_at(ctx, off + 2) else {
        return L4 { dst_port: None, defect: Some(Reason::TruncatedL4), udp_payload: 0 };
    };
    let l4_bytes = ctx.data_end() - (ctx.data() + off);
    let udp_len = if l3.proto == IPPROTO_UDP { be16_at(ctx, off + 4) } else { None };
    let defect = if l3.proto == IPPROTO_UDP {
        match udp_len {
            None => Some(Reason::TruncatedL4),
            Some(len) if len < 8 => Some(Reason::BadL4Header),
            // A first fragment carries only part of the datagram the length describes.
            Some(len) if !l3.first_fragment && usize::from(len) > l4_bytes => Some(Reason::BadL4Header),
            Some(_) if l4_bytes < 8 => Some(Reason::TruncatedL4),
            Some(_) => None,
        }
    } else {
        // Data offset is the high nibble of byte 12 (read with byte 13: see `bytes_at`).
        match bytes_at::<2>(ctx, off + 12) {
            None => Some(Reason::TruncatedL4),
            Some([b, _]) if usize::from(b >> 4) * 4 < 20 => Some(Reason::BadL4Header),
            Some([b, _]) if usize::from(b >> 4) * 4 > l4_bytes => Some(Reason::TruncatedL4),
            Some(_) => None,
        }
    };
    let udp_payload = match udp_len {
        Some(len) if len >= 8 => usize::from(len) - 8,
        _ => 0,
    };
    L4 { dst_port: Some(dst_port), defect, udp_payload }
}
