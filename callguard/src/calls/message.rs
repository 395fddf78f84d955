//! A full parse of one SIP message (RFC 3261 §7, §20, §25), for the requests the kernel hands
//! up: the start line, every header (long and compact names, folded lines), the name-addr
//! headers (From, To, P-Asserted-Identity) with their URIs and parameters, Call-ID, CSeq and
//! Via.
//!
//! Written by hand, on purpose: the Rust SIP parsers on crates.io are unmaintained or parse
//! into owned trees with allocations per parameter. This one borrows from the datagram, keeps
//! each header's byte range (so a reply can copy Via lines verbatim), and is lenient where
//! RFC 4475 shows real implementations are (any case in names, runs of whitespace, LF-only
//! lines), because a filter must read a message the way the PBX behind it will.

use std::{borrow::Cow, ops::Range};

/// Longest message read (a UDP datagram never exceeds it).
pub const MESSAGE_MAX: usize = 65_535;
/// Most header lines read.
pub const HEADERS_MAX: usize = 256;

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// The first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        /// The method token, as written (methods are case-sensitive).
        method: &'a str,
        /// The Request-URI.
        uri: &'a str,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response {
        /// The status code.
        code: u16,
    },
}

/// One header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name in lower case, compact forms expanded (`f` → `from`).
    pub name: Cow<'a, str>,
    /// The value, trimmed, folded lines joined by one space.
    pub value: Cow<'a, str>,
    /// The bytes of the whole field in the message (its lines, line ends included).
    pub span: Range<usize>,
}

/// A parsed message, borrowing from the datagram.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The datagram.
    pub raw: &'a [u8],
    /// The first line.
    pub start: StartLine<'a>,
    /// The bytes of the first line (line end included).
    pub start_span: Range<usize>,
    /// The header fields, in order.
    pub headers: Vec<Header<'a>>,
    /// Where the body starts (after the empty line).
    pub body: usize,
}

/// The compact forms (RFC 3261 §7.3.3 and the IANA registry of header fields).
const COMPACT: &[(&str, &str)] = &[
    ("a", "accept-contact"),
    ("b", "referred-by"),
    ("c", "content-type"),
    ("d", "request-disposition"),
    ("e", "content-encoding"),
    ("f", "from"),
    ("i", "call-id"),
    ("j", "reject-contact"),
    ("k", "supported"),
    ("l", "content-length"),
    ("m", "contact"),
    ("n", "identity-info"),
    ("o", "event"),
    ("r", "refer-to"),
    ("s", "subject"),
    ("t", "to"),
    ("u", "allow-events"),
    ("v", "via"),
    ("x", "session-expires"),
    ("y", "identity"),
];

const fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// The lines of `raw[..end]`: (start, end without the line break, next line's start).
fn lines(raw: &[u8]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= raw.len() {
            return None;
        }
        let start = pos;
        let (end, next) = match raw[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let nl = start + i;
                (if nl > start && raw[nl - 1] == b'\r' { nl - 1 } else { nl }, nl + 1)
            }
            None => (raw.len(), raw.len()),
        };
        pos = next;
        Some((start, end, next))
    })
}

fn text<'a>(raw: &'a [u8], r: Range<usize>, what: &str) -> Result<&'a str, ParseError> {
    std::str::from_utf8(&raw[r]).or_else(|_| err(format!("{what} is not UTF-8")))
}

/// Parses one message.
pub fn parse(raw: &[u8]) -> Result<Message<'_>, ParseError> {
    if raw.len() > MESSAGE_MAX {
        return err("longer than a UDP datagram");
    }
    // RFC 3261 §7.5: empty lines before the start line are ignored.
    let mut it = lines(raw).skip_while(|&(s, e, _)| s == e);
    let Some((s, e, next)) = it.next() else { return err("empty message") };
    let start = parse_start(text(raw, s..e, "the start line")?)?;
    let start_span = s..next;
    let mut headers: Vec<Header<'_>> = Vec::new();
    let mut body = raw.len();
    for (s, e, next) in it {
        if s == e {
            body = next;
            break;
        }
        if matches!(raw[s], b' ' | b'\t') {
            // A continuation line: part of the previous field's value (RFC 3261 §7.3.1).
            let Some(h) = headers.last_mut() else { return err("the first header line is a continuation") };
            let more = text(raw, s..e, "a header")?.trim_matches([' ', '\t']);
            if !more.is_empty() {
                let v = h.value.to_mut();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
            h.span.end = next;
            continue;
        }
        if headers.len() == HEADERS_MAX {
            return err(format!("more than {HEADERS_MAX} header fields"));
        }
        let line = text(raw, s..e, "a header")?;
        let Some(colon) = line.find(':') else {
            return err(format!("header line without a colon: {line:.40}"));
        };
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token) {
            return err(format!("bad header name `{name:.40}`"));
        }
        let lower = name.to_ascii_lowercase();
        let name = match COMPACT.iter().find(|(c, _)| *c == lower) {
            Some((_, long)) => Cow::Borrowed(*long),
            None if lower == name => Cow::Borrowed(name),
            None => Cow::Owned(lower),
        };
        let value = Cow::Borrowed(line[colon + 1..].trim_matches([' ', '\t']));
        headers.push(Header { name, value, span: s..next });
    }
    Ok(Message { raw, start, start_span, headers, body })
}

fn parse_start(line: &str) -> Result<StartLine<'_>, ParseError> {
    let mut parts = line.split([' ', '\t']).filter(|p| !p.is_empty());
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return err(format!("not a SIP start line: {line:.60}"));
    };
    if a.len() == 7 && a.eq_ignore_ascii_case("SIP/2.0") {
        let code: u16 = b.parse().or_else(|_| err(format!("bad status code `{b:.10}`")))?;
        if !(100..=699).contains(&code) {
            return err(format!("status code {code} out of range"));
        }
        return Ok(StartLine::Response { code });
    }
    let Some(version) = parts.next() else {
        return err(format!("request line without a version: {line:.60}"));
    };
    if parts.next().is_some() {
        return err(format!("request line with more than three elements: {line:.60}"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return err(format!("unsupported version `{version:.20}`"));
    }
    if !a.bytes().all(is_token) {
        return err(format!("bad method `{a:.20}`"));
    }
    if !b.contains(':') {
        return err(format!("bad Request-URI `{b:.60}`"));
    }
    Ok(StartLine::Request { method: a, uri: b })
}

impl<'a> Message<'a> {
    /// The method, for a request.
    pub const fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, for a request.
    pub const fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Every field named `name` (lower case, long form), in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Header<'a>> + 's {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The first field named `name`.
    pub fn header(&self, name: &str) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// The first value of `name`, when present.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.header(name).map(|h| h.value.as_ref())
    }

    /// The value of a header RFC 3261 §20 allows once (From, To, Call-ID, CSeq). Two are refused,
    /// not read: readers differ on which one counts, and the kernel drops such requests too.
    fn single(&self, name: &'static str, label: &str) -> Result<&str, ParseError> {
        let mut all = self.all(name);
        let first = all.next().ok_or_else(|| ParseError(format!("no {label} header")))?;
        if all.next().is_some() {
            return err(format!("more than one {label} header"));
        }
        Ok(first.value.as_ref())
    }

    /// Refuses a message that carries From, To, Call-ID or CSeq more than once (see `single`).
    pub fn check_single_headers(&self) -> Result<(), ParseError> {
        for (name, label) in [("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")] {
            if self.all(name).nth(1).is_some() {
                return err(format!("more than one {label} header"));
            }
        }
        Ok(())
    }

    /// The From header, parsed.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.single("from", "From")?)
    }

    /// The To header, parsed.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.single("to", "To")?)
    }

    /// The P-Asserted-Identity values (RFC 3325), parsed; unreadable ones are skipped.
    pub fn asserted_identities(&self) -> Vec<NameAddr<'_>> {
        self.all("p-asserted-identity")
            .flat_map(|h| split_list(&h.value))
            .filter_map(|v| NameAddr::parse(v).ok())
            .collect()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        match self.single("call-id", "Call-ID")? {
            "" => err("no Call-ID header"),
            v => Ok(v),
        }
    }

    /// The CSeq: number and method.
    pub fn cseq(&self) -> Result<(u32, &str), ParseError> {
        let v = self.single("cseq", "CSeq")?;
        let mut p = v.split([' ', '\t']).filter(|s| !s.is_empty());
        match (p.next().map(str::parse::<u32>), p.next(), p.next()) {
            (Some(Ok(n)), Some(m), None) => Ok((n, m)),
            _ => err(format!("bad CSeq `{v:.40}`")),
        }
    }

    /// The topmost Via value (the first element of the first Via field).
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let h = self.header("via").ok_or_else(|| ParseError("no Via header".into()))?;
        let first = split_list(&h.value).next().ok_or_else(|| ParseError("empty Via header".into()))?;
        Via::parse(first)
    }

    /// The User-Agent, when present.
    pub fn user_agent(&self) -> Option<&str> {
        self.value("user-agent")
    }
}

/// Splits a comma-separated header value, leaving commas inside quotes and `<…>` alone.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    split_outside(v, ',')
}

/// Where a scan of a header value stands: in a quoted string (just after a `\` in one), in
/// `<…>`.
#[derive(Default)]
struct Nesting {
    quoted: bool,
    angle: bool,
    escaped: bool,
}

impl Nesting {
    /// Takes the next character; whether it stands outside quotes and `<…>`, where a
    /// separator separates.
    fn outside(&mut self, c: char) -> bool {
        match c {
            _ if self.escaped => self.escaped = false,
            '\\' if self.quoted => self.escaped = true,
            '"' if !self.angle => self.quoted = !self.quoted,
            '<' if !self.quoted => self.angle = true,
            '>' if !self.quoted => self.angle = false,
            _ => return !self.quoted && !self.angle,
        }
        false
    }
}

/// Splits `v` at each `sep` outside quoted strings (where `\` escapes the next character) and
/// `<…>`; the parts trimmed of spaces and tabs, empty ones left out.
fn split_outside(v: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = v;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut n = Nesting::default();
            let cut =
                rest.char_indices().find(|&(_, c)| n.outside(c) && c == sep).map_or(rest.len(), |(i, _)| i);
            let item = rest[..cut].trim_matches([' ', '\t']);
            rest = if cut < rest.len() { &rest[cut + 1..] } else { "" };
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// A From or To value without its `tag` parameters (an empty `;tag=` among them), for a response
/// to add its own: `"A" <sip:a@h>;x=1;tag=` becomes `"A" <sip:a@h>;x=1`.
pub fn without_tag(value: &str) -> String {
    let mut parts = split_outside(value, ';');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for p in parts {
        let name = p.split('=').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("tag") {
            out.push(';');
            out.push_str(p);
        }
    }
    out
}

/// Whether every quoted string in `s` (outside `<…>`) and every `<…>` is closed.
fn balanced(s: &str) -> bool {
    let mut n = Nesting::default();
    s.chars().for_each(|c| {
        n.outside(c);
    });
    !n.quoted && !n.angle
}

/// `;name=value` parameters: name lower case, value as written (`None` for a bare name). A `;`
/// inside a quoted value is part of it: `;x=";tag=1"` holds no tag (Kamailio reads it so, and
/// routes such a request as a new call).
fn params(s: &str) -> Vec<(String, Option<&str>)> {
    split_outside(s, ';')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => {
                (k.trim_matches([' ', '\t']).to_ascii_lowercase(), Some(v.trim_matches([' ', '\t'])))
            }
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, P-Asserted-Identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name, unquoted (`None` when absent).
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri<'a>,
    /// The header parameters (after the URI), such as `tag`.
    pub params: Vec<(String, Option<&'a str>)>,
}

impl<'a> NameAddr<'a> {
    /// Parses `"Display" <uri>;params`, `Display <uri>;params` or `uri;params`.
    pub fn parse(v: &'a str) -> Result<Self, ParseError> {
        let v = v.trim_matches([' ', '\t']);
        // Two addresses in one From or To: readers differ on which counts (Kamailio refuses
        // the request, others take the first), so the request is not judged by either.
        if split_outside(v, ',').nth(1).is_some() || v.ends_with(',') || v.starts_with(',') {
            return err(format!("more than one address in `{v:.60}`"));
        }
        let (display, rest) = if let Some(q) = v.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| ParseError(format!("unterminated display name in `{v:.60}`")))?;
            (Some(unescape(&q[..end])), q[end + 1..].trim_start_matches([' ', '\t']))
        } else if let Some(lt) = v.find('<') {
            let d = v[..lt].trim_matches([' ', '\t']);
            // An unquoted display name is words of token characters (RFC 3261 §25.1); anything
            // else (`;tag=` among it) is read differently by different parsers.
            let token = |c: char| c.is_alphanumeric() || !c.is_ascii() || " \t-.!%*_+`'~".contains(c);
            if !d.chars().all(token) {
                return err(format!("a display name neither quoted nor plain words in `{v:.60}`"));
            }
            ((!d.is_empty()).then(|| d.to_owned()), &v[lt..])
        } else {
            (None, v)
        };
        let parsed = if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(|| ParseError(format!("no `>` in `{v:.60}`")))?;
            if inner[..gt].contains(['"', '<']) {
                return err(format!("a quote or `<` in the URI of `{v:.60}`"));
            }
            let uri = Uri::parse(&inner[..gt])?;
            let after = inner[gt + 1..].trim_start_matches([' ', '\t']);
            if !after.is_empty() && !after.starts_with(';') {
                return err(format!("`{after:.20}` after the address in `{v:.60}`"));
            }
            Self { display, uri, params: Self::header_params(after, v)? }
        } else if display.is_some() {
            return err(format!("a display name without `<uri>` in `{v:.60}`"));
        } else {
            // addr-spec: every `;` parameter belongs to the header (RFC 3261 §20.10).
            let (uri, p) = rest.split_once(';').unwrap_or((rest, ""));
            // Without `<…>`, a URI holds none of these (RFC 3261 §20): readers that quote or
            // bracket around them would each find another end.
            if uri.contains(['"', '<', '>', ' ', '\t', ',']) {
                return err(format!("an address neither in `<…>` nor plain in `{v:.60}`"));
            }
            Self { display, uri: Uri::parse(uri)?, params: Self::header_params(p, v)? }
        };
        Ok(parsed)
    }

    /// The header parameters after the URI, refused where readers would differ: an unclosed
    /// quote, or two `tag` parameters (Kamailio keeps the last, so `;tag=t1;tag=` is a new call
    /// to it).
    fn header_params(p: &'a str, whole: &str) -> Result<Vec<(String, Option<&'a str>)>, ParseError> {
        if !balanced(p) {
            return err(format!("an unclosed quote or `<` in `{whole:.60}`"));
        }
        let params = params(p);
        if params.iter().filter(|(k, _)| k == "tag").count() > 1 {
            return err(format!("two tags in `{whole:.60}`"));
        }
        Ok(params)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        // An empty `;tag=` is no tag: PBXs start a new call on it, so it must be checked as one.
        self.params.iter().find_map(|(k, v)| {
            if k == "tag" { v.filter(|v| !matches!(v.trim_matches([' ', '\t']), "" | "\"\"")) } else { None }
        })
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// A SIP, SIPS or tel URI, as far as call checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    /// `sip`, `sips` or `tel` (lower case), or another scheme as written.
    pub scheme: String,
    /// The user part, percent-decoded (`None` without one); for tel, the number.
    pub user: Option<String>,
    /// The host (lower case; empty for tel).
    pub host: String,
    /// The whole URI as written.
    pub raw: &'a str,
}

impl<'a> Uri<'a> {
    /// Parses a URI.
    pub fn parse(raw: &'a str) -> Result<Self, ParseError> {
        let raw = raw.trim_matches([' ', '\t']);
        let (scheme, rest) =
            raw.split_once(':').ok_or_else(|| ParseError(format!("URI without a scheme: `{raw:.60}`")))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "tel" {
            let number = rest.split([';', '?']).next().unwrap_or_default();
            return Ok(Self { scheme, user: Some(percent_decode(number)), host: String::new(), raw });
        }
        if scheme != "sip" && scheme != "sips" {
            return Ok(Self { scheme, user: None, host: String::new(), raw });
        }
        // The user part ends at the first `@`: neither host, parameters nor headers may hold an
        // unescaped one (RFC 3261 §25.1), while the user may hold `;` and `?` (a telephone
        // subscriber's parameters: `sip:0090123;isub=1@pbx;user=phone`), which PBXs keep in the
        // number they route on. Reading the user only up to a `;` would find no number at all.
        let (user, after) = match rest.find('@') {
            Some(at) => {
                let user = rest[..at].split(':').next().unwrap_or_default();
                (Some(percent_decode(user)), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let hostport = &after[..after.find([';', '?']).unwrap_or(after.len())];
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default()
        } else {
            hostport.split(':').next().unwrap_or_default()
        };
        if host.is_empty() {
            return err(format!("URI without a host: `{raw:.60}`"));
        }
        Ok(Self { scheme, user, host: host.to_ascii_lowercase(), raw })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = ((b[i + 1] as char).to_digit(16), (b[i + 2] as char).to_digit(16))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One Via value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, … (upper case).
    pub transport: String,
    /// The sent-by host.
    pub host: &'a str,
    /// The sent-by port, when written.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<&'a str>,
    /// Whether `rport` is present (RFC 3581).
    pub rport: bool,
}

impl<'a> Via<'a> {
    /// Parses `SIP/2.0/UDP host:port;params`.
    pub fn parse(v: &'a str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("bad Via `{v:.60}`"));
        let (proto, rest) = v.split_once([' ', '\t']).ok_or_else(bad)?;
        let mut parts = proto.split('/').map(|p| p.trim_matches([' ', '\t']));
        let (Some(name), Some(_), Some(transport)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if !name.eq_ignore_ascii_case("SIP") {
            return Err(bad());
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (sent_by, p) = rest.split_once(';').unwrap_or((rest, ""));
        let sent_by = sent_by.trim_matches([' ', '\t']);
        let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        } else {
            match sent_by.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (sent_by, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.trim().parse().map_err(|_| bad())?),
            None => None,
        };
        if host.is_empty() {
            return Err(bad());
        }
        let params = params(p);
        let branch = params.iter().find(|(k, _)| k == "branch").and_then(|(_, v)| *v);
        let rport = params.iter().any(|(k, _)| k == "rport");
        Ok(Self { transport: transport.to_ascii_uppercase(), host, port, branch, rport })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+49%2030%20123@pbx.example.com;user=phone SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n\
        v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKold\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:+4930123@pbx.example.com>\r\n\
        f: \"Alice \\\"A\\\" Smith\" <sip:alice@example.com>;tag=1928301774\r\n\
        i: a84b4c76e66710@pc33\r\n\
        CSeq: 314159 INVITE\r\n\
        User-Agent: Grandstream\r\n  GXP2170\r\n\
        P-Asserted-Identity: <sip:+15551234@example.com>, <tel:+15551234>\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn a_request_with_compact_forms_folding_and_escapes() {
        let m = parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(Uri::parse(m.request_uri().unwrap()).unwrap().user.as_deref(), Some("+49 30 123"));
        let from = m.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("Alice \"A\" Smith"));
        assert_eq!(from.uri.user.as_deref(), Some("alice"));
        assert_eq!(from.tag(), Some("1928301774"));
        let to = m.to().unwrap();
        assert_eq!(to.tag(), None);
        assert_eq!(to.display.as_deref(), Some("Bob"));
        assert_eq!(m.call_id().unwrap(), "a84b4c76e66710@pc33");
        assert_eq!(m.cseq().unwrap(), (314_159, "INVITE"));
        assert_eq!(m.user_agent(), Some("Grandstream GXP2170"));
        let via = m.top_via().unwrap();
        assert_eq!(
            (via.host, via.port, via.branch, via.rport),
            ("192.0.2.10", Some(5062), Some("z9hG4bK776asdhds"), true)
        );
        assert_eq!(m.all("via").count(), 2);
        let pai: Vec<_> = m.asserted_identities().into_iter().map(|n| n.uri.user.unwrap()).collect();
        assert_eq!(pai, ["+15551234", "+15551234"]);
        // The span of the folded User-Agent covers both of its lines.
        let ua = m.header("user-agent").unwrap();
        assert_eq!(&INVITE[ua.span.clone()], "User-Agent: Grandstream\r\n  GXP2170\r\n");
        assert_eq!(m.body, INVITE.len());
    }

    #[test]
    fn tags_only_outside_the_uri_and_display_name() {
        assert_eq!(NameAddr::parse("<sip:b@x;tag=no>").unwrap().tag(), None);
        assert_eq!(NameAddr::parse("\"a;tag=no\" <sip:b@x>").unwrap().tag(), None);
        assert_eq!(NameAddr::parse("sip:b@x;tag=yes").unwrap().tag(), Some("yes"));
        assert_eq!(NameAddr::parse("<sip:b@x> ; TAG = yes").unwrap().tag(), Some("yes"));
        assert_eq!(NameAddr::parse("<sip:b@x>;tag=").unwrap().tag(), None, "an empty tag is none");
        assert_eq!(NameAddr::parse("<sip:b@x>;tag= ;x=1").unwrap().tag(), None);
        // Kamailio's readings (tests/kamailio): a `;` in a quoted value is text; an escaped
        // quote does not end a display name; two addresses are refused.
        assert_eq!(NameAddr::parse("<sip:0049301234@pbx>;x=\";tag=1\"").unwrap().tag(), None);
        assert_eq!(NameAddr::parse("\"a\\\";tag=1\" <sip:b@x>").unwrap().tag(), None);
        assert_eq!(NameAddr::parse("\"a\\\"b\" <sip:b@x>;tag=t1").unwrap().tag(), Some("t1"));
        assert!(NameAddr::parse("<sip:0049301234@pbx>, <sip:999@pbx>;tag=t1").is_err());
        assert!(NameAddr::parse("sip:0049301234@pbx, sip:999@pbx;tag=t1").is_err());
        assert_eq!(NameAddr::parse("\"a, b\" <sip:b@x>;tag=t1").unwrap().tag(), Some("t1"));
        // Kamailio keeps the last of two tags, and reads `""` as none: two are refused.
        assert!(NameAddr::parse("<sip:+882777@pbx>;tag=t1;tag=").is_err());
        assert!(NameAddr::parse("<sip:+882777@pbx>;tag=t1;TAG").is_err());
        assert_eq!(NameAddr::parse("<sip:+882777@pbx>;tag=\"\"").unwrap().tag(), None);
        assert!(NameAddr::parse("<sip:201@pbx;x=\"<a>\";tag=1").is_err(), "an unclosed quote");
        assert!(NameAddr::parse("<sip:201@pbx>;x=<a;tag=1").is_err(), "an unclosed <");
        assert!(NameAddr::parse("\"s\"<sip:101@h>,").is_err(), "a list, however short");
        assert!(NameAddr::parse("a SIP;TAG= <sip:1@h>;x").is_err(), "`;` in a plain display name");
        assert!(NameAddr::parse("tel: \"a@b;x\" a>;tag=1;h=\"").is_err(), "a quote in a plain address");
        assert!(NameAddr::parse("<sip:\"a;tag=1\"@h>").is_err(), "a quote in a URI");
        assert!(NameAddr::parse("a <sip:1@h>tag=").is_err(), "parameters begin with `;`");
        assert_eq!(
            NameAddr::parse("Jürgen Müller-Lüdenscheidt <sip:1@h>").unwrap().display.as_deref(),
            Some("Jürgen Müller-Lüdenscheidt")
        );
        assert!(NameAddr::parse("<sip:a\"b@h>, <sip:c@h>;tag=t1").is_err(), "a quote in <…> is text");
        assert_eq!(
            without_tag("\"A;tag=1\" <sip:a@h;tag=u>;x=1;tag= ;y"),
            "\"A;tag=1\" <sip:a@h;tag=u>;x=1;y"
        );
        assert_eq!(without_tag("sip:a@h;TAG=;x=\";tag=1\""), "sip:a@h;x=\";tag=1\"");
    }

    #[test]
    fn lenient_where_phones_are_strict_where_it_matters() {
        let m = parse(b"\r\nOPTIONS  sip:x@y   SIP/2.0\nVia: SIP/2.0/UDP h\nCall-ID: c\n\n").unwrap();
        assert_eq!(m.method(), Some("OPTIONS"));
        assert!(parse(b"").is_err());
        assert!(parse(b"HELLO\r\n\r\n").is_err());
        assert!(parse(b"INVITE sip:a@b SIP/3.0\r\n\r\n").is_err());
        assert!(parse(b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n").is_err());
        assert!(parse(b"INVITE sip:a@b SIP/2.0\r\n Folded\r\n\r\n").is_err());
        assert_eq!(parse(b"SIP/2.0 403 Forbidden\r\n\r\n").unwrap().start, StartLine::Response { code: 403 });
    }

    #[test]
    fn headers_allowed_once_are_refused_twice() {
        let base = "INVITE sip:1@h SIP/2.0\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n";
        assert!(parse(format!("{base}\r\n").as_bytes()).unwrap().check_single_headers().is_ok());
        for extra in ["t: <sip:2@h>;tag=x", "TO: <sip:1@h>", "f: <sip:b@h>", "i: d", "CSeq: 2 INVITE"] {
            let raw = format!("{base}{extra}\r\n\r\n");
            let m = parse(raw.as_bytes()).unwrap();
            let e = m.check_single_headers().unwrap_err();
            assert!(e.0.starts_with("more than one "), "{extra}: {e:?}");
        }
        let raw = format!("{base}t: <sip:2@h>;tag=x\r\n\r\n");
        let two_to = parse(raw.as_bytes()).unwrap();
        assert_eq!(two_to.to().unwrap_err().0, "more than one To header", "no reading of either");
    }

    #[test]
    fn uris() {
        let u = Uri::parse("sips:user:pw@[2001:db8::1]:5061;transport=tcp").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str()), (Some("user"), "2001:db8::1"));
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(t.user.as_deref(), Some("+1-201-555-0123"));
        assert!(Uri::parse("sip:@").is_err());
        assert_eq!(Uri::parse("sip:example.com").unwrap().user, None);
        // A telephone subscriber's parameters belong to the user: the number is still read.
        let p = Uri::parse("sip:0090123456;isub=1@pbx.example.com;user=phone").unwrap();
        assert_eq!((p.user.as_deref(), p.host.as_str()), (Some("0090123456;isub=1"), "pbx.example.com"));
        let q = Uri::parse("sip:0090123456?x@pbx.example.com").unwrap();
        assert_eq!((q.user.as_deref(), q.host.as_str()), (Some("0090123456?x"), "pbx.example.com"));
        let h = Uri::parse("sip:pbx.example.com;lr?subject=x").unwrap();
        assert_eq!((h.user, h.host.as_str()), (None, "pbx.example.com"));
    }
}
