//! SIP messages for tests: requests built the way sipvicious builds them, requests from common
//! phones and softphones, responses and keepalives.

/// Which sipvicious tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvTool {
    /// svmap: OPTIONS (or another method) with display name `sipvicious`.
    Svmap,
    /// svwar: extension scan; display name and user are the extension.
    Svwar,
    /// svcrack: REGISTER password guessing for one extension.
    Svcrack,
}

/// A request as sipvicious 0.3.x builds it (`svhelper.makeRequest`): the long form with
/// `User-Agent: friendly-scanner`, or with `compact` (`-c`) the compact form without User-Agent.
pub fn sipvicious(tool: SvTool, method: &str, ext: &str, target: &str, compact: bool) -> Vec<u8> {
    let (name, user) = match tool {
        SvTool::Svmap => ("sipvicious", "100"),
        SvTool::Svwar | SvTool::Svcrack => (ext, ext),
    };
    let addr = format!("\"{name}\"<sip:{user}@{target}>");
    let via = "SIP/2.0/UDP 198.18.0.66:5060;branch=z9hG4bK-2773357934;rport";
    let ruri = match tool {
        SvTool::Svmap => format!("sip:{user}@{target}"),
        _ => format!("sip:{ext}@{target}"),
    };
    let mut m = format!("{method} {ruri} SIP/2.0\r\n");
    if compact {
        m += &format!(
            "v: {via}\r\nt: {addr}\r\nf: {addr};tag=3465613065303035\r\ni: 1380491247\r\nm: sip:123@1.1.1.1\r\n"
        );
    } else {
        m += &format!(
            "Via: {via}\r\nMax-Forwards: 70\r\nTo: {addr}\r\nFrom: {addr};tag=3465613065303035\r\n\
             User-Agent: friendly-scanner\r\nCall-ID: 1380491247\r\nContact: sip:123@1.1.1.1\r\n"
        );
    }
    m += &format!("CSeq: 1 {method}\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n");
    m.into_bytes()
}

/// Legitimate requests from common endpoints: (who, message).
pub fn phones() -> Vec<(&'static str, Vec<u8>)> {
    let sdp = "v=0\r\no=- 20518 0 IN IP4 198.18.0.20\r\ns=SDP data\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\n\
               m=audio 11796 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
               a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";
    let invite = |ua: &str, from: &str| {
        format!(
            "INVITE sip:+14155550100@pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.20:5062;branch=z9hG4bK1133615392;rport\r\n\
             From: {from};tag=1803316542\r\n\
             To: <sip:+14155550100@pbx.example.com>\r\n\
             Call-ID: 0_2784622389@198.18.0.20\r\n\
             CSeq: 2 INVITE\r\n\
             Contact: <sip:201@198.18.0.20:5062>\r\n\
             Content-Type: application/sdp\r\n\
             Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n\
             Supported: replaces\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    };
    let register = |ua: &str| {
        format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.21:5060;branch=z9hG4bK3f2e1c0a;rport\r\n\
             From: \"Front Desk\" <sip:201@pbx.example.com>;tag=84c1a1c1\r\n\
             To: \"Front Desk\" <sip:201@pbx.example.com>\r\n\
             Call-ID: 5b2a2b2e-0c3a8e1f@198.18.0.21\r\n\
             CSeq: 41 REGISTER\r\n\
             Contact: <sip:201@198.18.0.21:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0015657D9A0C>\"\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {ua}\r\n\
             Expires: 3600\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    vec![
        ("Yealink INVITE", invite("Yealink SIP-T46S 66.86.0.15", "\"Front Desk\" <sip:201@pbx.example.com>")),
        ("Polycom INVITE", invite("PolycomVVX-VVX_411-UA/6.4.3.5018", "\"Sales\" <sip:202@pbx.example.com>")),
        ("Zoiper INVITE", invite("Zoiper rv2.10.20.2", "<sip:203@pbx.example.com>")),
        ("Linphone INVITE", invite("Linphone/5.2.5 (belle-sip/5.2.4)", "sip:204@pbx.example.com")),
        ("Asterisk trunk INVITE", invite("Asterisk PBX 20.5.0", "\"+14155550199\" <sip:+14155550199@198.18.0.30>")),
        ("Grandstream REGISTER", register("Grandstream GXP2170 1.0.11.23")),
        ("MicroSIP REGISTER", register("MicroSIP/3.21.3")),
        ("Cisco REGISTER", register("Cisco-CP8841/14.2.1")),
        ("FreePBX REGISTER", register("FPBX-16.0.40(18.20.2)")),
        (
            "compact-form BYE from a phone",
            b"BYE sip:201@198.18.0.21:5060 SIP/2.0\r\nv: SIP/2.0/UDP 198.18.0.1;branch=z9hG4bKx\r\n\
              f: <sip:+14155550100@pbx.example.com>;tag=as1\r\nt: <sip:201@pbx.example.com>;tag=84\r\n\
              i: 0_2784622389@198.18.0.20\r\nCSeq: 102 BYE\r\nl: 0\r\n\r\n"
                .to_vec(),
        ),
        (
            "trunk OPTIONS keepalive",
            b"OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.30:5060;branch=z9hG4bK776\r\n\
              From: <sip:ping@carrier.example>;tag=9\r\nTo: <sip:pbx.example.com>\r\nCall-ID: ka-1\r\n\
              CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: Kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
    ]
}

/// Responses a PBX receives from phones and trunks.
pub fn responses() -> Vec<Vec<u8>> {
    [
        "SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:1@h>;tag=1\r\n\
         To: <sip:2@h>\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\nFrom: \"Sales\" <sip:1@h>;tag=1\r\n\
         To: <sip:2@h>;tag=77\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nUser-Agent: Yealink SIP-T46S\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 198.18.0.1;branch=z9hG4bK2\r\nFrom: <sip:1@h>;tag=2\r\n\
         To: <sip:1@h>;tag=3\r\nCall-ID: r2\r\nCSeq: 1 REGISTER\r\n\
         WWW-Authenticate: Digest realm=\"h\", nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
