//! Blocklist feeds: lists of networks published by others (FireHOL, Spamhaus DROP, APIBAN, a
//! CrowdSec local API) that the daemon fetches on an interval and keeps as rules of origin
//! `feed`. This module is the model: the `[[feeds]]` settings, reading each format, fetching a
//! document, and a feed's status. Refreshing them is `crate::refresh`'s.
//!
//! A document is refused whole, and the feed keeps its last good copy, when it cannot be read
//! (status, timeout, size), when over 1% of its entries are not addresses, when it names no
//! network at all, or when it names more than the feed's `max_entries`.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::net::{NetAction, Scope, parse_net};

/// How a feed's document is written.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One address or prefix a line; `#` and `;` start comments, also after an entry
    /// (Spamhaus DROP: `192.0.2.0/24 ; SBL123`). The three line formats are read alike (see
    /// [`list_entry`]); the name says what the operator expects.
    Plain,
    /// FireHOL's `.netset` and `.ipset` files: the plain format with a header of `#` comments.
    Netset,
    /// The output of `ipset save`: its `add SET ENTRY [options]` lines (`create` lines are skipped).
    Ipset,
    /// APIBAN's JSON answer: `{"ipaddress": ["192.0.2.1", …], "ID": "…"}`.
    Apiban,
    /// A CrowdSec local API's decisions: `GET /v1/decisions` (an array) or
    /// `GET /v1/decisions/stream?startup=true` (its `new` array); decisions of type `ban` and
    /// scope `Ip` or `Range` are taken, the others skipped.
    Crowdsec,
}

impl Format {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Netset => "netset",
            Self::Ipset => "ipset",
            Self::Apiban => "apiban",
            Self::Crowdsec => "crowdsec",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[feeds]]` entry of the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// The feed's name: rules carry it, `net list` and the metrics show it (letters, digits,
    /// `-` and `_`, at most 40).
    pub name: String,
    /// Where the document is fetched: an `http://` or `https://` URL (give this or `file`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// A local file read instead (a list another tool writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// How the document is written.
    pub format: Format,
    /// Seconds between refreshes (at least 10). A refresh that failed is tried again after a
    /// tenth of this, at least 10 s.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Seconds a fetch may take, connection to last byte.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// `deny` (the usual) or `allow`.
    #[serde(default = "default_action")]
    pub action: NetAction,
    /// For deny: `sip` (guarded ports only) or `all`.
    #[serde(default)]
    pub scope: Scope,
    /// A document naming more networks than this is refused.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Headers sent with the request (`X-Api-Key` for a CrowdSec bouncer). Secrets: the file must
    /// then be `chmod 600`, and `config check` does not show them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn default_interval() -> u64 {
    3600
}
fn default_timeout() -> u64 {
    60
}
fn default_action() -> NetAction {
    NetAction::Deny
}
fn default_max_entries() -> usize {
    1_000_000
}

/// The most bytes a document may have.
pub const MAX_BYTES: u64 = 256 << 20;

impl Feed {
    /// Where it comes from, as the status, the logs and errors show it: the file, or the URL
    /// without what may be a secret (user and password, the query; the path of an APIBAN URL,
    /// which holds its key).
    pub fn source(&self) -> String {
        if let Some(f) = &self.file {
            return f.display().to_string();
        }
        let Ok(uri) = self.url.parse::<hyper::Uri>() else { return "(a URL)".into() };
        let host = uri.authority().map_or("", |a| a.as_str());
        let host = host.rsplit('@').next().unwrap_or(host);
        let path = if self.format == Format::Apiban { "/…" } else { uri.path() };
        let query = if uri.query().is_some() { "?…" } else { "" };
        format!("{}://{host}{path}{query}", uri.scheme_str().unwrap_or("http"))
    }

    /// Checks one entry's settings; the message names the feed.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 40
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("feeds: `{name}` is not a feed name (letters, digits, - and _, at most 40)"));
        }
        match (&self.file, self.url.as_str()) {
            (Some(_), "") => {}
            (None, url) if url.starts_with("http://") || url.starts_with("https://") => {
                if url.parse::<hyper::Uri>().map_or(true, |u| u.host().is_none()) {
                    return Err(format!("feeds.{name}.url: `{url}` is not a URL"));
                }
            }
            (None, "") => return Err(format!("feeds.{name}: give url or file")),
            (None, url) => return Err(format!("feeds.{name}.url: `{url}` is neither http:// nor https://")),
            (Some(_), _) => return Err(format!("feeds.{name}: give url or file, not both")),
        }
        if self.interval_secs < 10 {
            return Err(format!("feeds.{name}.interval_secs: at least 10"));
        }
        if self.timeout_secs == 0 || self.timeout_secs > self.interval_secs {
            return Err(format!(
                "feeds.{name}.timeout_secs: from 1 to interval_secs ({})",
                self.interval_secs
            ));
        }
        if self.max_entries == 0 {
            return Err(format!("feeds.{name}.max_entries: at least 1"));
        }
        if self.action == NetAction::Allow && self.scope == Scope::All {
            return Err(format!("feeds.{name}.scope: belongs to deny feeds"));
        }
        if let Some(h) = self.headers.keys().find(|h| h.parse::<hyper::header::HeaderName>().is_err()) {
            return Err(format!("feeds.{name}.headers: `{h}` is not a header name"));
        }
        Ok(())
    }

    /// How long to wait after a failed refresh.
    pub fn retry(&self) -> Duration {
        Duration::from_secs((self.interval_secs / 10).max(10))
    }

    /// Fetches the document: reads the file, or GETs the URL (status 2xx, within `timeout_secs`
    /// and [`MAX_BYTES`]). Blocking: call it off the runtime.
    pub fn fetch(&self) -> Result<Vec<u8>, String> {
        if let Some(path) = &self.file {
            use std::io::Read as _;
            let f = std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let mut out = Vec::new();
            f.take(MAX_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if out.len() as u64 > MAX_BYTES {
                return Err(format!("{} is over {} MiB", path.display(), MAX_BYTES >> 20));
            }
            return Ok(out);
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(self.timeout_secs)))
            .http_status_as_error(true)
            // ureq forwards headers other than Authorization and Cookie across redirects: a
            // feed's API key must not follow one to another host.
            .max_redirects(if self.headers.is_empty() { 5 } else { 0 })
            .user_agent(concat!("callguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut req = agent.get(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let shown = self.source();
        let mut resp = req.call().map_err(|e| format!("GET {shown}: {e}"))?;
        resp.body_mut()
            .with_config()
            .limit(MAX_BYTES)
            .read_to_vec()
            .map_err(|e| format!("reading the answer of {shown}: {e}"))
    }

    /// Reads a fetched document into its networks (sorted, each once), or says why it is
    /// refused.
    pub fn parse(&self, doc: &[u8]) -> Result<Parsed, String> {
        let mut p = match self.format {
            Format::Plain | Format::Netset | Format::Ipset => lines(doc, self.max_entries),
            Format::Apiban => apiban(doc)?,
            Format::Crowdsec => crowdsec(doc)?,
        };
        p.nets.sort_unstable();
        p.nets.dedup();
        let seen = p.nets.len() + p.bad;
        if p.bad * 100 > seen {
            return Err(format!(
                "{} of {seen} entries are not addresses or prefixes (first: {}): not a {} document",
                p.bad,
                p.first_bad.as_deref().unwrap_or("?"),
                self.format
            ));
        }
        // A CrowdSec local API with no decision in force answers an empty list, and means it;
        // from any other source an empty document is far likelier a fault than a clean Internet.
        if p.nets.is_empty() && self.format != Format::Crowdsec {
            return Err("the document names no network: refused rather than lifting the whole feed".into());
        }
        if p.nets.len() > self.max_entries {
            return Err(format!("{} networks, over max_entries ({})", p.nets.len(), self.max_entries));
        }
        Ok(p)
    }
}

/// A document read.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Its networks, sorted, each once.
    pub nets: Vec<IpNet>,
    /// Entries that were not an address or prefix (or were a whole address family, `/0`).
    pub bad: usize,
    /// The first of them, for the status.
    pub first_bad: Option<String>,
}

impl Parsed {
    fn bad(&mut self, entry: &str) {
        self.bad += 1;
        if self.first_bad.is_none() {
            // Shown in logs and terminals: no control character of the document's survives.
            self.first_bad = Some(entry.trim().chars().take(60).flat_map(char::escape_debug).collect());
        }
    }

    /// One entry of a JSON format: an address or prefix.
    fn take(&mut self, entry: &str) {
        match parse_net(entry) {
            Ok(net) if net.prefix_len() > 0 => self.nets.push(net),
            _ => self.bad(entry),
        }
    }
}

/// One line of an address list (the `plain`, `netset` and `ipset` formats, and `net import`):
/// an address or prefix, or an `ipset save` line (`add SET ENTRY [options]` gives ENTRY; its other
/// commands are skipped); `#` and `;` start comments. `Ok(None)` for what holds no entry; ranges
/// (`a-b`) are refused (`ipset` hash:net sets never hold them).
pub fn list_entry(line: &str) -> Result<Option<IpNet>, String> {
    let text = line.split(['#', ';']).next().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("");
    let entry = match first {
        "create" | "COMMIT" | "flush" | "destroy" => return Ok(None),
        "add" | "-A" => {
            let _set = words.next().ok_or("ipset `add` without a set name")?;
            words.next().ok_or("ipset `add` without an entry")?
        }
        _ if words.next().is_some() => return Err(format!("`{text}`: expected one address or prefix")),
        _ => first,
    };
    if entry.contains('-') && !entry.contains(':') {
        return Err(format!("`{entry}` is a range; give prefixes"));
    }
    parse_net(entry).map(Some)
}

/// A line-format document: [`list_entry`] on each line, stopping past `limit` entries (a
/// hostile document must not make the daemon hold tens of millions of them).
fn lines(doc: &[u8], limit: usize) -> Parsed {
    let mut p = Parsed::default();
    for line in doc.split(|b| *b == b'\n') {
        if p.nets.len() + p.bad > limit.saturating_mul(2) {
            break;
        }
        match std::str::from_utf8(line).map(list_entry) {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(net))) if net.prefix_len() > 0 => p.nets.push(net),
            _ => p.bad(&String::from_utf8_lossy(line)),
        }
    }
    p
}

fn apiban(doc: &[u8]) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Answer {
        ipaddress: Vec<String>,
    }
    let a: Answer = serde_json::from_slice(doc).map_err(|e| format!("not an APIBAN answer: {e}"))?;
    let mut p = Parsed::default();
    for ip in &a.ipaddress {
        p.take(ip);
    }
    Ok(p)
}

fn crowdsec(doc: &[u8]) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Decision {
        #[serde(rename = "type")]
        kind: String,
        scope: String,
        value: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Answer {
        List(Option<Vec<Decision>>),
        Stream { new: Option<Vec<Decision>> },
    }
    let a: Answer = serde_json::from_slice(doc).map_err(|e| format!("not CrowdSec decisions: {e}"))?;
    let (Answer::List(list) | Answer::Stream { new: list }) = a;
    let mut p = Parsed::default();
    for d in list.unwrap_or_default() {
        let scope = d.scope.to_ascii_lowercase();
        if d.kind.eq_ignore_ascii_case("ban") && (scope == "ip" || scope == "range") {
            p.take(&d.value);
        }
    }
    Ok(p)
}

/// What a feed is doing, and how its last refreshes went: `callguard feeds`, `GET /v1/feeds`
/// and the metrics show it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FeedStatus {
    /// The feed's name.
    pub name: String,
    /// Its URL or file.
    pub source: String,
    /// Now: `waiting`, `fetching`, or `applying N of M` during a large refresh.
    pub state: String,
    /// Its networks in force (rules of this feed).
    pub rules: usize,
    /// Networks of its last good document that other rules already hold.
    pub held_by_others: usize,
    /// Entries of its last good document that were not addresses (at most 1% are tolerated).
    pub bad_entries: usize,
    /// When the last good document was applied.
    pub last_success: Option<DateTime<Utc>>,
    /// When the last refresh ended, good or not.
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last refresh was refused (the feed kept its last good copy), if it was.
    pub last_error: Option<String>,
    /// Refreshes applied since the daemon started.
    pub refreshes: u64,
    /// Refreshes refused since the daemon started.
    pub failures: u64,
}

/// The status of every configured feed, shared by the refreshers and their readers, and the
/// bell that asks a refresher to refresh now.
#[derive(Debug, Default)]
pub struct Board {
    status: std::sync::Mutex<BTreeMap<String, FeedStatus>>,
    bells: std::sync::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::Notify>>>,
    /// Per feed: requests to refresh now so far, and the last request a finished refresh had
    /// seen when it started (it answers that one and every one before).
    asks: std::sync::Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Board {
    fn status(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FeedStatus>> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every feed's status, by name.
    pub fn all(&self) -> Vec<FeedStatus> {
        self.status().values().cloned().collect()
    }

    /// One feed's status.
    pub fn get(&self, name: &str) -> Option<FeedStatus> {
        self.status().get(name).cloned()
    }

    /// Starts the status of feed `name` (a feed the configuration names).
    pub fn insert(&self, status: FeedStatus) {
        self.status().insert(status.name.clone(), status);
    }

    /// Changes the status of `name`; nothing when the feed is gone (a reload dropped it).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut FeedStatus)) {
        if let Some(st) = self.status().get_mut(name) {
            f(st);
        }
    }

    /// Keeps only the feeds named in `names`.
    pub fn retain(&self, names: &[&str]) {
        self.status().retain(|n, _| names.contains(&n.as_str()));
        self.bells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|n, _| names.contains(&n.as_str()));
    }

    /// Asks feed `name` to refresh now: rings its bell and returns the request's number, which
    /// [`Board::answered`] tells about.
    pub fn ask(&self, name: &str) -> u64 {
        let n = {
            let mut asks = self.asks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let e = asks.entry(name.to_owned()).or_default();
            e.0 += 1;
            e.0
        };
        self.bell(name).notify_one();
        n
    }

    /// The last request to refresh feed `name` made so far: a refresh notes it as it starts.
    pub fn asked(&self, name: &str) -> u64 {
        self.asks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).map_or(0, |e| e.0)
    }

    /// A refresh of `name` that started after request `upto` has ended.
    pub fn answer(&self, name: &str, upto: u64) {
        let mut asks = self.asks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = asks.entry(name.to_owned()).or_default();
        e.1 = e.1.max(upto);
    }

    /// Whether request `n` has been answered: a refresh that started after it has ended.
    pub fn answered(&self, name: &str, n: u64) -> bool {
        self.asks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .is_some_and(|e| e.1 >= n)
    }

    /// The bell of feed `name`: its refresher waits on it besides its interval, and a request to
    /// refresh now rings it (a ring while it refreshes is kept for after).
    pub fn bell(&self, name: &str) -> std::sync::Arc<tokio::sync::Notify> {
        self.bells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(format: Format) -> Feed {
        Feed {
            name: "t".into(),
            url: "http://127.0.0.1/x".into(),
            file: None,
            format,
            interval_secs: 3600,
            timeout_secs: 60,
            action: NetAction::Deny,
            scope: Scope::Sip,
            max_entries: 1000,
            headers: BTreeMap::new(),
        }
    }

    fn nets(f: Format, doc: &str) -> Vec<String> {
        feed(f).parse(doc.as_bytes()).expect("parses").nets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn spamhaus_drop_and_firehol_netset_read_as_their_networks() {
        let drop = "; Spamhaus DROP List 2026/12/01\n; https://www.spamhaus.org/drop/drop.txt\n\
                    1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n";
        assert_eq!(nets(Format::Plain, drop), ["1.10.16.0/20", "2.56.192.0/22"]);
        let netset =
            "#\n# firehol_level1\n#\n0.0.0.0/8\n1.10.16.0/20\n198.18.0.0/15\n198.18.0.0/15\n203.0.113.7\n";
        assert_eq!(
            nets(Format::Netset, netset),
            ["0.0.0.0/8", "1.10.16.0/20", "198.18.0.0/15", "203.0.113.7/32"]
        );
        assert_eq!(
            nets(Format::Plain, "2001:db8::/32\r\n2001:db8:1::1\r\n"),
            ["2001:db8::/32", "2001:db8:1::1/128"]
        );
    }

    #[test]
    fn ipset_save_reads_its_add_lines() {
        let doc = "create blocklist hash:net family inet hashsize 1024 maxelem 65536 timeout 0\n\
                   add blocklist 198.51.100.0/24 timeout 0\nadd blocklist 203.0.113.9 comment \"x\"\n";
        assert_eq!(nets(Format::Ipset, doc), ["198.51.100.0/24", "203.0.113.9/32"]);
    }

    #[test]
    fn apiban_and_crowdsec_answers_read_as_their_bans() {
        let apiban = r#"{"ipaddress":["198.51.100.1","198.51.100.2"],"ID":"1234567"}"#;
        assert_eq!(nets(Format::Apiban, apiban), ["198.51.100.1/32", "198.51.100.2/32"]);
        let list = r#"[{"duration":"3h","id":1,"origin":"crowdsec","scenario":"crowdsecurity/sip-bf","scope":"Ip","type":"ban","value":"192.0.2.7"},
                      {"id":2,"scope":"Range","type":"ban","value":"198.51.100.0/24"},
                      {"id":3,"scope":"Ip","type":"captcha","value":"192.0.2.8"},
                      {"id":4,"scope":"Country","type":"ban","value":"CN"}]"#;
        assert_eq!(nets(Format::Crowdsec, list), ["192.0.2.7/32", "198.51.100.0/24"]);
        let stream = r#"{"new":[{"scope":"ip","type":"ban","value":"2001:db8::7"}],"deleted":null}"#;
        assert_eq!(nets(Format::Crowdsec, stream), ["2001:db8::7/128"]);
    }

    #[test]
    fn garbage_an_empty_document_and_too_many_entries_are_refused() {
        let html = "<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n";
        let e = feed(Format::Plain).parse(html.as_bytes()).unwrap_err();
        assert!(e.contains("5 of 5 entries") && e.contains("<html>"), "{e}");
        let e = feed(Format::Netset).parse(b"# nothing today\n").unwrap_err();
        assert!(e.contains("names no network"), "{e}");
        // CrowdSec with no decision in force: the feed's rules go.
        assert!(feed(Format::Crowdsec).parse(b"null").expect("empty").nets.is_empty());
        assert!(
            feed(Format::Crowdsec).parse(br#"{"new":null,"deleted":null}"#).expect("empty").nets.is_empty()
        );
        let e = feed(Format::Apiban).parse(b"{\"error\":\"unauthorized\"}").unwrap_err();
        assert!(e.contains("not an APIBAN answer"), "{e}");
        let big: String = (0..1001u32).map(|i| format!("10.{}.{}.0/24\n", i / 256, i % 256)).collect();
        let e = feed(Format::Plain).parse(big.as_bytes()).unwrap_err();
        assert!(e.contains("1001 networks, over max_entries (1000)"), "{e}");
        // A whole address family is never a feed's entry.
        let e = feed(Format::Plain).parse(b"0.0.0.0/0\n").unwrap_err();
        assert!(e.contains("1 of 1"), "{e}");
    }

    #[test]
    fn one_bad_line_in_a_hundred_is_tolerated_and_counted() {
        let mut doc: String = (0..99u32).map(|i| format!("10.0.{i}.0/24\n")).collect();
        doc.push_str("10.0.0.1/24\n");
        let p = feed(Format::Plain).parse(doc.as_bytes()).expect("parses");
        assert_eq!((p.nets.len(), p.bad, p.first_bad.as_deref()), (99, 1, Some("10.0.0.1/24")));
        doc.push_str("not-an-address\n");
        assert!(feed(Format::Plain).parse(doc.as_bytes()).is_err());
    }

    #[test]
    fn what_a_feed_shows_of_its_url_holds_no_secret() {
        let mut f = feed(Format::Apiban);
        f.url = "https://apiban.org/api/0123456789abcdef/banned/100".into();
        assert_eq!(f.source(), "https://apiban.org/…");
        let mut f = feed(Format::Plain);
        f.url = "https://user:secret@lists.example/drop.txt?key=secret".into();
        assert_eq!(f.source(), "https://lists.example/drop.txt?…");
        let html = "<h1>\x1b[31mred</h1>\n";
        let e = f.parse(html.as_bytes()).unwrap_err();
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        let mut f = feed(Format::Plain);
        assert_eq!(f.validate(), Ok(()));
        f.url = "ftp://x/y".into();
        assert!(f.validate().unwrap_err().contains("neither http:// nor https://"));
        f.url = String::new();
        assert!(f.validate().unwrap_err().contains("give url or file"));
        f.file = Some("/var/lib/x".into());
        assert_eq!(f.validate(), Ok(()));
        f.name = "a b".into();
        assert!(f.validate().unwrap_err().contains("not a feed name"));
    }
}
