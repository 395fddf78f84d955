//! A paced load of SIP INVITEs from one namespace to a UDP socket in another, with the latency of
//! each from the moment it was sent to the moment the receiving socket read it.
//!
//! Sender and receiver are threads of this process, so both read the same `CLOCK_MONOTONIC`
//! (network namespaces share it): every INVITE carries its send time in its Call-ID, and the
//! receiver subtracts it from its own reading. What is measured is everything in between: the
//! sender's stack, the veth pair, XDP, and for a handed-up request the ring buffer, the daemon's
//! decision and the re-injection through the PBX host's stack.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// Daemon configuration for a trunk's load (one source placing many calls to many numbers):
/// rate limits, extension-scan detection and fraud thresholds off, so nothing but the number
/// rules acts on it.
pub const TRUNK_CONFIG: &str = "[rate]\nrequests = { rate = 0, burst = 0 }\ninvite = { rate = 0, burst = 0 }\n\
                                [enumeration]\nusers = 0\n[calls.fraud]\nenabled = false\n";

/// How long the receiver keeps reading after the last INVITE was sent.
const GRACE: Duration = Duration::from_millis(500);

/// What one load run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// INVITEs sent.
    pub sent: u64,
    /// The rate the sender achieved (INVITEs a second).
    pub achieved: f64,
    /// The latency of every INVITE received, in nanoseconds, sorted.
    pub latencies: Vec<u64>,
}

impl Measured {
    /// INVITEs that reached the receiving socket.
    pub fn received(&self) -> u64 {
        self.latencies.len() as u64
    }

    /// The `p`-th percentile (0–100) of the latencies in microseconds (nearest rank).
    pub fn percentile_us(&self, p: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.saturating_sub(1).min(last)] as f64 / 1000.0
    }
}

/// One INVITE with an SDP offer (about 700 bytes, like a phone's), sent at `sent_ns`.
/// The dialed number varies with `seq`; the Call-ID carries `sent_ns` for the receiver.
fn invite(run: &str, seq: u64, sent_ns: u128, from: SocketAddr, to: SocketAddr) -> String {
    // Hosts as SIP writes them: an IPv6 address in brackets, also in the SDP's plain form.
    let host = |a: SocketAddr| if a.is_ipv6() { format!("[{}]", a.ip()) } else { a.ip().to_string() };
    let (fh, th) = (host(from), host(to));
    let (ip, media) = (if from.is_ipv6() { "IP6" } else { "IP4" }, from.ip());
    let fp = from.port();
    let sdp = format!(
        "v=0\r\no=- {seq} 0 IN {ip} {media}\r\ns=-\r\nc=IN {ip} {media}\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    );
    format!(
        "INVITE sip:004930{seq:07}@{th} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {fh}:{fp};branch=z9hG4bK-{run}-{seq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:101@tenant.example>;tag={seq}\r\n\
         To: <sip:004930{seq:07}@{th}>\r\n\
         Call-ID: {sent_ns}.{seq}.{run}@bench\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:101@{fh}:{fp}>\r\n\
         User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The send time carried in an INVITE's Call-ID.
fn sent_at(payload: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = &text[text.find("\r\nCall-ID: ")? + 11..];
    rest[..rest.find('.')?].parse().ok()
}

fn set_buffer(sock: &UdpSocket, option: libc::c_int) {
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt with an int option on a socket we own. SO_*BUFFORCE (root) lifts the
    // rmem_max/wmem_max caps, so bursts are not lost in the sockets themselves.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// An INVITE size, for the report: what [`run`] sends from `from` to `to`.
pub fn invite_size(from: SocketAddr, to: SocketAddr) -> usize {
    invite("r0", 0, 1_000_000_000_000, from, to).len()
}

/// Sends `rate` INVITEs a second for `duration` from `from` (an address of `peer`) to `to`
/// (an address of `pbx`, where a socket of this function's own receives them), and measures
/// the latency of each.
pub fn run(
    peer: &Netns,
    from: SocketAddr,
    pbx: &Netns,
    to: SocketAddr,
    rate: u32,
    duration: Duration,
) -> Measured {
    let rx = pbx.udp(to);
    let tx = peer.udp(from);
    set_buffer(&rx, libc::SO_RCVBUFFORCE);
    set_buffer(&tx, libc::SO_SNDBUFFORCE);
    rx.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let base = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut latencies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let Ok(n) = rx.recv(&mut buf) else { continue };
                let now = base.elapsed().as_nanos();
                if let Some(t) = sent_at(&buf[..n]) {
                    latencies.push(u64::try_from(now.saturating_sub(t)).unwrap_or(u64::MAX));
                }
            }
            latencies
        })
    };
    let run = crate::unique("r").replace('-', "");
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut seq = 0;
    while seq < total {
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
        while seq < due {
            let msg = invite(&run, seq, base.elapsed().as_nanos(), from, to);
            // A send that fails for lack of buffer space did not happen: tried again, not
            // counted. Any other failure ends the run.
            match tx.send_to(msg.as_bytes(), to) {
                Ok(_) => seq += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => panic!("sending to {to}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let achieved = seq as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(GRACE);
    done.store(true, Ordering::Relaxed);
    let mut latencies = receiver.join().expect("receiver thread");
    latencies.sort_unstable();
    Measured { sent: seq, achieved, latencies }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_travels_in_the_call_id_and_percentiles_use_nearest_rank() {
        let (from, to) = ("198.18.0.2:5070".parse().unwrap(), "198.18.0.1:5060".parse().unwrap());
        let m = invite("r1", 7, 123_456_789, from, to);
        assert_eq!(sent_at(m.as_bytes()), Some(123_456_789));
        assert!(m.starts_with("INVITE sip:0049300000007@198.18.0.1 SIP/2.0\r\n"), "{m}");
        let body = &m[m.find("\r\n\r\n").unwrap() + 4..];
        assert!(m.contains(&format!("Content-Length: {}\r\n", body.len())));
        let r = Measured { sent: 4, achieved: 4.0, latencies: vec![1000, 2000, 3000, 4000] };
        assert_eq!((r.percentile_us(50.0), r.percentile_us(99.0), r.percentile_us(100.0)), (2.0, 4.0, 4.0));
        assert!(Measured { sent: 1, achieved: 1.0, latencies: vec![] }.percentile_us(50.0).is_nan());
    }
}
