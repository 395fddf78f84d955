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

/// A phone's OPTIONS keepalive from `src` to `pbx` (a Yealink's), the `n`th (its branch and
/// Call-ID): what a clean source sends.
pub fn keepalive(src: &str, pbx: &str, n: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5062;branch=z9hG4bK{n}\r\n\
         From: <sip:201@{src}>;tag=1\r\nTo: <sip:100@{pbx}>\r\nCall-ID: k{n}@{src}\r\nCSeq: 1 OPTIONS\r\n\
         User-Agent: Yealink SIP-T46S\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
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

/// The PBX's challenge to a phone's REGISTER, as Asterisk's PJSIP channel writes it (the
/// answer a password guesser gets to every attempt): what the egress program reads most.
pub fn pbx_challenge() -> Vec<u8> {
    b"SIP/2.0 401 Unauthorized\r\n\
      Via: SIP/2.0/UDP 198.18.0.11:5090;rport=5090;received=198.18.0.11;branch=z9hG4bKPj9c1e7d2a-4b8f-4c2e-9a3d-1f6e5b4c3a2d\r\n\
      Call-ID: 1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b\r\n\
      From: <sip:101@pbx.example.com>;tag=6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d\r\n\
      To: <sip:101@pbx.example.com>;tag=z9hG4bKPj9c1e7d2a-4b8f-4c2e-9a3d-1f6e5b4c3a2d\r\n\
      CSeq: 42 REGISTER\r\n\
      WWW-Authenticate: Digest realm=\"asterisk\",nonce=\"1733400000/8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a\",opaque=\"5a4b3c2d1e0f9a8b\",algorithm=md5,qop=\"auth\"\r\n\
      Server: Asterisk PBX 20.5.0\r\n\
      Content-Length:  0\r\n\r\n"
        .to_vec()
}

/// What a torture message is, and so what callguard must do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torture {
    /// Legitimate, with a method callguard knows: passes.
    Legit,
    /// Legitimate, with a method callguard does not know: passes unless the method policy
    /// refuses unknown methods (the default).
    UnknownMethod,
    /// Hides a scanner's name behind the difficulty: dropped by the default signatures.
    Scanner,
}

/// Messages that stress a SIP parser, one per difficulty that RFC 4475 ("SIP Torture Test
/// Messages") catalogues: written for callguard (not copied from the RFC), each named after what
/// it exercises. The last group hides `sipvicious` or `friendly-scanner` behind the same
/// difficulties. (name, message, what it is)
pub fn torture() -> Vec<(&'static str, Vec<u8>, Torture)> {
    use Torture::{Legit, Scanner, UnknownMethod};
    let via = "Via: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-t1";
    let tail = "Call-ID: t1@198.18.0.20\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let m = |head: &str, body: &str| format!("{head}\r\n{body}{tail}").into_bytes();
    let inv = "INVITE sip:201@pbx.example.com SIP/2.0";
    let std_from = "From: <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:201@pbx.example.com>\r\n";
    vec![
        // Whitespace and line structure.
        (
            "header values folded over several lines (LWS with CRLF + SP/HT)",
            m(
                inv,
                &format!(
                    "{via}\r\nFrom: \"Folded\r\n Name\"\r\n\t<sip:100@pbx.example.com>;tag=a\r\nTo:\r\n <sip:201@pbx.example.com>\r\nUser-Agent: Yealink\r\n   SIP-T46S\r\n"
                ),
            ),
            Legit,
        ),
        (
            "spaces and tabs before and after the colon",
            m(inv, &format!("{via}\r\nFrom  \t:   <sip:100@pbx.example.com>;tag=a\r\nTo\t:<sip:201@pbx.example.com>\r\nUser-Agent :\tZoiper\r\n")),
            Legit,
        ),
        (
            "bare LF line endings",
            format!("{inv}\n{via}\n{}User-Agent: Linphone\nCall-ID: t1\nCSeq: 1 INVITE\nContent-Length: 0\n\n", std_from.replace("\r\n", "\n")).into_bytes(),
            Legit,
        ),
        ("header names in mixed case", m(inv, &format!("{via}\r\nfROM: <sip:100@pbx.example.com>;tag=a\r\ntO: <sip:201@pbx.example.com>\r\nuSER-aGENT: MicroSIP\r\n")), Legit),
        ("empty header values", m(inv, &format!("{via}\r\n{std_from}User-Agent:\r\nSubject:\r\nOrganization: \r\n")), Legit),
        // Names and quoting.
        (
            "escaped quotes and backslashes in a display name",
            m(inv, &format!("{via}\r\nFrom: \"J. \\\"Jim\\\" O\\\\Neil\" <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:201@pbx.example.com>\r\n")),
            Legit,
        ),
        (
            "display name with UTF-8, and <> and @ inside quotes",
            m(inv, &format!("{via}\r\nFrom: \"Zoë <ops@desk> Müller\" <sip:100@pbx.example.com>;tag=a\r\nTo: \"Tōkyō\" <sip:201@pbx.example.com>\r\n")),
            Legit,
        ),
        (
            "unquoted multi-word display names and name-addr without a name",
            m(inv, &format!("{via}\r\nFrom: Front  Desk   <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:201@pbx.example.com>\r\n")),
            Legit,
        ),
        (
            "escaped characters and parameters in URIs",
            m(
                "INVITE sip:%32%30%31;phone-context=+1;user=phone@pbx.example.com;transport=udp?Subject=x SIP/2.0",
                &format!("{via}\r\nFrom: <sip:%31%30%30@pbx.example.com;lr>;tag=a\r\nTo: <sips:201@pbx.example.com:5061;maddr=198.18.0.1>\r\n"),
            ),
            Legit,
        ),
        (
            "tel URI and IPv6 references",
            m(
                "INVITE sip:201@[2001:db8::1]:5060 SIP/2.0",
                "Via: SIP/2.0/UDP [2001:db8::20]:5060;branch=z9hG4bK-t6\r\nFrom: <tel:+1-415-555-0100;phone-context=example.com>;tag=a\r\nTo: <sip:201@[2001:db8::1]>\r\n",
            ),
            Legit,
        ),
        // Forms and ordering.
        (
            "compact forms for every header that has one",
            b"INVITE sip:201@pbx.example.com SIP/2.0\r\nv: SIP/2.0/UDP 198.18.0.20;branch=z9hG4bK-t7\r\nf: <sip:100@pbx.example.com>;tag=a\r\nt: <sip:201@pbx.example.com>\r\ni: t7\r\nm: <sip:100@198.18.0.20>\r\nc: application/sdp\r\ne: identity\r\nk: 100rel\r\ns: hi\r\nl: 0\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
            Legit,
        ),
        (
            "several Via values on one line and Via repeated",
            m(inv, &format!("{via}, SIP/2.0/UDP 198.18.0.21;branch=z9hG4bK-t8 , SIP/2.0/TCP 198.18.0.22\r\nVia: SIP/2.0/UDP 198.18.0.23;branch=z9hG4bK-t9\r\n{std_from}")),
            Legit,
        ),
        (
            "unknown headers with odd but legal names",
            m(inv, &format!("{via}\r\n{std_from}X-Very.Odd~Name!%*+`'_: value\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n")),
            Legit,
        ),
        (
            "unknown method with a token full of legal characters",
            b"NEWMETHOD-1.0_x!%*+`'~ sip:201@pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20;branch=z9hG4bK-ta\r\nFrom: <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:201@pbx.example.com>\r\nCall-ID: ta\r\nCSeq: 8 NEWMETHOD-1.0_x!%*+`'~\r\nContent-Length: 0\r\n\r\n".to_vec(),
            UnknownMethod,
        ),
        (
            "long header values (Via, Call-ID, User-Agent past the inspected length)",
            // Its own Call-ID, not the common tail's: a request carries one (RFC 3261 §20.8). The
            // CSeq early, as phones write it: one ending past byte 768 is refused (the PBX's
            // answer could carry it past what the answer reader reads; see sip::CSEQ_END_MAX).
            format!(
                "{inv}\r\n{via};{}\r\n{std_from}CSeq: 1 INVITE\r\nUser-Agent: {}\r\nCall-ID: {}\r\n\
                 Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                "x=y;".repeat(60),
                "Softphone ".repeat(20),
                "c".repeat(300)
            )
            .into_bytes(),
            Legit,
        ),
        (
            "a body that looks like headers, and Content-Length that does not match it",
            format!("{inv}\r\n{via}\r\n{std_from}Call-ID: tb\r\nCSeq: 1 INVITE\r\nContent-Length: 9999\r\nContent-Type: text/plain\r\n\r\nUser-Agent: friendly-scanner\r\nFrom: \"sipvicious\" <sip:1@x>\r\n").into_bytes(),
            Legit,
        ),
        (
            "a response with an unusual reason phrase and status code",
            b"SIP/2.0 499 Reason: with colon, UTF-8 \xc3\xa9 and  spaces\r\nVia: SIP/2.0/UDP 198.18.0.1;branch=z9hG4bK-tc\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:2@h>;tag=2\r\nCall-ID: tc\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Legit,
        ),
        // The same difficulties hiding a scanner: must be dropped.
        (
            "scanner: User-Agent folded onto a continuation line",
            m(inv, &format!("{via}\r\n{std_from}User-Agent:\r\n friendly-scanner\r\n")),
            Scanner,
        ),
        (
            "scanner: User-Agent name in odd case with tabs before the colon",
            m(inv, &format!("{via}\r\n{std_from}USER-AGENT\t\t:  FrIeNdLy-ScAnNeR\r\n")),
            Scanner,
        ),
        (
            "scanner: display name with an escaped quote after the name",
            m(inv, &format!("{via}\r\nFrom: \"sipvicious \\\"x\\\"\" <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:201@pbx.example.com>\r\n")),
            Scanner,
        ),
        (
            "scanner: compact To with the user sipvicious and LF endings",
            b"OPTIONS sip:100@198.18.0.1 SIP/2.0\nv: SIP/2.0/UDP 198.18.0.66;branch=z9hG4bK-td\nt: <sip:sipvicious@198.18.0.1>\nf: <sip:100@198.18.0.66>;tag=1\ni: td\nCSeq: 1 OPTIONS\n\n".to_vec(),
            Scanner,
        ),
    ]
}
