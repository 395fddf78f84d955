//! The daemon's configuration file (TOML).
//!
//! Every key is optional: with no file at all the built-in defaults below apply (they are
//! also printed by `callguard config default`). Unknown keys and bad values are rejected with
//! the line and column where they stand, and nothing is applied.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, de};

use crate::net::{NetAction, Scope, parse_net};

/// The default configuration file path.
pub const DEFAULT_PATH: &str = "/etc/callguard/callguard.toml";

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces to guard. Empty: the daemon serves its API and keeps the maps, but attaches
    /// nowhere (`-i` on the command line adds interfaces).
    pub interfaces: Vec<String>,
    /// How to attach: `auto` (native, falling back to generic), `native` or `generic`.
    pub xdp_mode: XdpModeSetting,
    /// Where program links and maps are pinned (on bpffs; mounted when absent).
    pub pin_dir: PathBuf,
    /// The control socket (root only, mode 0600).
    pub socket: PathBuf,
    /// The rule database (SQLite).
    pub database: PathBuf,
    /// How often expired rules are removed from the store and the maps, in seconds.
    pub sweep_interval_secs: u64,
    /// Guarded ports.
    pub ports: Ports,
    /// Policies for defective packets.
    pub policy: PacketPolicy,
    /// SIP inspection of UDP to guarded ports from sources outside the authorized networks.
    pub sip: SipPolicy,
    /// Per-source rate limits and automatic bans.
    pub rate: RateLimits,
    /// Extension-scan (enumeration) detection.
    pub enumeration: Enumeration,
    /// Failed authentications, read from the PBX's answers (password guessing).
    pub auth: Auth,
    /// Drop events.
    pub events: Events,
    /// Alerts: bans and fraud refusals sent to a webhook and a command as they happen.
    pub alerts: Alerts,
    /// The management REST API (the seed documents) over HTTP, with accounts and tokens.
    pub api: ApiConfig,
    /// Prometheus metrics over HTTP.
    pub metrics: MetricsConfig,
    /// Number-level call checks: the requests the kernel hands up, decided by the daemon.
    pub calls: Calls,
    /// Network rules kept in the file; they are marked `config` in `net list`, replaced on
    /// reload, and cannot be deleted through the CLI.
    pub networks: Vec<NetworkEntry>,
    /// Blocklist feeds, refreshed on their interval; their networks are rules of origin `feed`.
    pub feeds: Vec<crate::feeds::Feed>,
    /// The country database of the country rules.
    pub geoip: crate::geo::GeoIpConfig,
    /// How many sources and users the kernel's tables hold.
    pub tables: TableSizes,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpModeSetting::Auto,
            pin_dir: PathBuf::from("/sys/fs/bpf/callguard"),
            socket: PathBuf::from("/run/callguard/callguard.sock"),
            database: PathBuf::from("/var/lib/callguard/callguard.db"),
            sweep_interval_secs: 5,
            ports: Ports::default(),
            policy: PacketPolicy::default(),
            sip: SipPolicy::default(),
            rate: RateLimits::default(),
            enumeration: Enumeration::default(),
            auth: Auth::default(),
            events: Events::default(),
            alerts: Alerts::default(),
            api: ApiConfig::default(),
            metrics: MetricsConfig::default(),
            calls: Calls::default(),
            networks: Vec::new(),
            feeds: Vec::new(),
            geoip: crate::geo::GeoIpConfig::default(),
            tables: TableSizes::default(),
        }
    }
}

/// The capacity of the kernel's tables of sources and users (`[tables]`). Each is a
/// least-recently-used table the kernel allocates in full when it is created, about 100 bytes
/// an entry; when one is full, the entry seen longest ago makes room. A change takes effect at
/// the daemon's next start, which rebuilds the tables beside the old ones, carries their entries
/// over and swaps the program in one step: the host is never unfiltered.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TableSizes {
    /// Sources whose rates, bans and enumeration windows are tracked (`CG_SOURCES`). A
    /// spoofed flood fills it; a source pushed out loses its rate state, not its rules.
    pub sources: u32,
    /// Sources the PBX accepted a registration from (`CG_REGISTERED`).
    pub registered: u32,
    /// Sources whose failed authentications are counted (`CG_AUTH`).
    pub auth_sources: u32,
    /// Users whose failed authentications are counted (`CG_AUTH_USERS`).
    pub auth_users: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        use callguard_common::maps::{AUTH_MAX, AUTH_USERS_MAX, REGISTERED_MAX, SOURCES_MAX};
        Self {
            sources: SOURCES_MAX,
            registered: REGISTERED_MAX,
            auth_sources: AUTH_MAX,
            auth_users: AUTH_USERS_MAX,
        }
    }
}

impl TableSizes {
    /// The smallest and largest size a table may be given.
    pub const RANGE: std::ops::RangeInclusive<u32> = 1024..=(1 << 24);

    /// Each table's map name and size, as the kernel program's loader takes them.
    pub fn by_map(&self) -> [(&'static str, u32); 4] {
        use callguard_common::maps::{AUTH, AUTH_USERS, REGISTERED, SOURCES};
        [
            (SOURCES, self.sources),
            (REGISTERED, self.registered),
            (AUTH, self.auth_sources),
            (AUTH_USERS, self.auth_users),
        ]
    }

    /// Checks every size against [`TableSizes::RANGE`]; the message names the setting.
    fn validate(&self) -> Result<(), String> {
        for (name, size) in [
            ("sources", self.sources),
            ("registered", self.registered),
            ("auth_sources", self.auth_sources),
            ("auth_users", self.auth_users),
        ] {
            if !Self::RANGE.contains(&size) {
                return Err(format!(
                    "tables.{name}: between {} and {}, not {size}",
                    Self::RANGE.start(),
                    Self::RANGE.end()
                ));
            }
        }
        Ok(())
    }
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Native (driver) mode, falling back to generic when the driver has no XDP support.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Generic,
}

/// Guarded ports, per transport protocol.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    /// UDP ports or ranges (`5060`, `"5060-5080"`). Default: 5060, 5061.
    pub udp: Vec<PortRange>,
    /// TCP ports or ranges. Default: 5060, 5061.
    pub tcp: Vec<PortRange>,
}

impl Default for Ports {
    fn default() -> Self {
        let sip = vec![PortRange { first: 5060, last: 5061 }];
        Self { udp: sip.clone(), tcp: sip }
    }
}

/// An inclusive port range; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{p}` is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("range `{s}` ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string().parse().map_err(de::Error::custom),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last { s.serialize_u16(self.first) } else { s.collect_str(self) }
    }
}

/// What to do with packets the program cannot fully judge.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PacketPolicy {
    /// Later IPv4 fragments and IPv6 fragments without a transport header: `pass` (default) or
    /// `drop`. Fragmented SIP is stopped at its first fragment (`sip.fragmented`), so passing the
    /// rest lets only datagrams through whose first fragment was judged.
    pub fragments: PassDrop,
    /// Defective UDP/TCP headers aimed at a guarded port: `pass` (default) or `drop`.
    pub malformed: PassDrop,
    /// IPv6 packets with more extension headers than callguard walks (six), whose port it
    /// therefore cannot see, from sources outside the authorized networks: `drop` (default) or
    /// `pass`. Linux delivers them, so passing would let SIP past every check.
    pub ipv6_long_chains: PassDrop,
}

impl Default for PacketPolicy {
    fn default() -> Self {
        Self { fragments: PassDrop::Pass, malformed: PassDrop::Pass, ipv6_long_chains: PassDrop::Drop }
    }
}

/// The management REST API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port of the HTTP API; `""` turns it off (the Unix socket always serves the
    /// same API, trusted as system administrator). Default `127.0.0.1:8887`.
    pub listen: String,
    /// PEM certificate chain: with `tls_key`, the API speaks HTTPS (rustls).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Lifetime of an access token, seconds. Default 1800.
    pub access_token_secs: u64,
    /// Lifetime of a refresh token, seconds. Default 2592000 (30 days).
    pub refresh_token_secs: u64,
    /// Failed sign-ins from one source, or for one user, that block further attempts from it
    /// (or for them) until the window has passed: 429. Default 5. A user's limit counts and
    /// blocks only sources that user has signed in from before: failing as `admin` from
    /// elsewhere does not lock the real administrator out.
    pub signin_failures: u32,
    /// The window of `signin_failures`, seconds. Default 300.
    pub signin_window_secs: u64,
    /// Connections to `listen` at once, at most (more wait to be accepted). Default 256.
    pub max_connections: usize,
    /// Connections at once from one address (an IPv6 /64 counts as one); more are closed at
    /// once. Default 16.
    pub max_connections_per_source: usize,
    /// Seconds a request's head may take to arrive (idle keep-alive connections are closed after
    /// it too), and again for the request to be read and answered (else 408). Default 30.
    pub request_timeout_secs: u64,
    /// Command run for a forgot-password request, with the reset token in its environment
    /// (`CALLGUARD_RESET_TOKEN`, `_USER`, `_DOMAIN`, `_CALLBACK`, `_EXPIRES`); it delivers the
    /// token (mail, chat…). Unset: the request is answered 204, a warning logged, and the token
    /// goes nowhere (never into the log: whoever reads it could take the account over).
    pub reset_hook: Option<PathBuf>,
    /// Lifetime of a password-reset token, seconds. Default 3600.
    pub reset_token_secs: u64,
    /// Origins (`https://panel.example.com`, scheme, host and port) a `callback` may point to:
    /// a forgot-password request's (it reaches the hook only then) and a social sign-in's (the
    /// tokens go there); any other is refused, 400. Empty (the default): only requests without
    /// a callback are accepted, and social sign-in is off. Without this list, anyone could have
    /// a genuine reset link mailed to a user that leads to their own site, or have a user's
    /// tokens delivered to it. (Formerly `reset_callback_origins`, still read.)
    #[serde(alias = "reset_callback_origins")]
    pub callback_origins: Vec<String>,
    /// The URL browsers reach this API at (`https://pbx.example.com:8887`, no path): an
    /// identity provider sends them back to `<public_url>/api/auth/social_sign_in/callback`,
    /// the redirect URI to register with it. Unset: social sign-in is off.
    pub public_url: Option<String>,
    /// Password of the system administrator `admin` created on first start. Unset (and no
    /// `CALLGUARD_ADMIN_PASSWORD` in the environment): a random one is printed once.
    pub admin_password: Option<String>,
    /// `GET /api/info`: what the API reports about this system.
    pub info: SystemInfo,
}

impl ApiConfig {
    /// The limits of the TCP listener.
    pub const fn limits(&self) -> ListenerLimits {
        ListenerLimits {
            connections: self.max_connections,
            per_source: self.max_connections_per_source,
            request: std::time::Duration::from_secs(self.request_timeout_secs),
        }
    }
}

/// Prometheus metrics (`GET /metrics`), in the Prometheus text format, or OpenMetrics when the
/// scraper asks for it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port; `""` turns metrics off. Default `127.0.0.1:9787`.
    pub listen: String,
    /// Bearer token a scraper must send (`Authorization: Bearer …`). Required when `listen` is
    /// not a loopback address: the counters tell an attacker which of their tricks work.
    pub token: Option<String>,
    /// Rules given a series of their own in `callguard_rule_*` (the busiest, kept while they
    /// exist); the packets of all others are counted under `rule="other"`. Default 20.
    pub top_rules: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9787".into(), token: None, top_rules: 20 }
    }
}

/// The limits of the API's TCP listener, from `[api]`.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Connections at once.
    pub connections: usize,
    /// Connections at once from one source.
    pub per_source: usize,
    /// Time for a request's head to arrive, and again for it to be read and answered.
    pub request: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8887".into(),
            tls_cert: None,
            tls_key: None,
            access_token_secs: 1800,
            refresh_token_secs: 30 * 86_400,
            signin_failures: 5,
            signin_window_secs: 300,
            max_connections: 256,
            max_connections_per_source: 16,
            request_timeout_secs: 30,
            reset_hook: None,
            reset_token_secs: 3600,
            callback_origins: Vec::new(),
            public_url: None,
            admin_password: None,
            info: SystemInfo::default(),
        }
    }
}

/// The system fields of `GET /api/info`, named as PortSIP names them; empty strings are
/// reported empty.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SystemInfo {
    /// The web domain of the management interface.
    pub web_domain: String,
    /// The private IPv4 address of the system.
    pub private_ipv4: String,
    /// The public IPv4 address.
    pub public_ipv4: String,
    /// Whether IPv6 is enabled. Default `true`, as the seed shows it.
    pub enable_ipv6: bool,
    /// The private IPv6 address.
    pub private_ipv6: String,
    /// The public IPv6 address.
    pub public_ipv6: String,
    /// The primary DNS server (`primary_dns` in files written before it had PortSIP's name).
    #[serde(alias = "primary_dns")]
    pub primary_dns_server: String,
    /// The secondary DNS server (also read as `secondary_dns`).
    #[serde(alias = "secondary_dns")]
    pub secondary_dns_server: String,
}

impl Default for SystemInfo {
    fn default() -> Self {
        Self {
            web_domain: String::new(),
            private_ipv4: String::new(),
            public_ipv4: String::new(),
            enable_ipv6: true,
            private_ipv6: String::new(),
            public_ipv6: String::new(),
            primary_dns_server: String::new(),
            secondary_dns_server: String::new(),
        }
    }
}

/// SIP inspection policy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SipPolicy {
    /// UDP to a guarded port that is neither a SIP request, a response nor a keepalive:
    /// `drop` (default) or `pass`.
    pub not_sip: PassDrop,
    /// Request methods dropped from sources outside the authorized networks. Names:
    /// `unknown` (any method callguard does not know), `invite`, `ack`, `bye`, `cancel`,
    /// `register`, `options`, `prack`, `subscribe`, `notify`, `publish`, `info`, `refer`,
    /// `message`, `update`. Default: `["unknown"]`. Hardened: add `options` when every
    /// trunk that sends OPTIONS keepalives is in an allow rule.
    pub drop_methods: Vec<MethodName>,
    /// A request that matches an enforcing signature also bans its source for
    /// `sip.signature_ban_secs` (stored as an `auto` deny rule). Default `true`: the default
    /// signatures name attack tools, and a banned scanner's next tools (svwar, svcrack) are
    /// dropped by the cheapest lookup, whatever they send (a ban after one request is held by
    /// the source's cache slot alone until the source sends again: another ban in the slot
    /// ends it, see the README's "How it decides"). Authorized sources are never banned.
    pub signature_ban: bool,
    /// How long a signature ban lasts. One UDP packet with a forged source address is enough
    /// for it, so it is short: a forger who keeps a victim out must keep sending, and the
    /// signature itself drops every scanner packet whether its source is banned or not.
    /// Default 300.
    pub signature_ban_secs: u64,
    /// A fragmented datagram to a guarded UDP port from a source outside the authorized
    /// networks, unless its first fragment is a SIP response: `drop` (default, reason
    /// `fragmented`) or `pass`. The program reads the first fragment only, so the rest of a
    /// fragmented request (a User-Agent, a second To) would go unchecked; RFC 3261 §18.1.1 sends
    /// large requests over TCP. With `pass`, an INVITE that needs number checks is still dropped
    /// (`oversize`): the daemon cannot see it whole.
    pub fragmented: PassDrop,
}

impl Default for SipPolicy {
    fn default() -> Self {
        Self {
            not_sip: PassDrop::Drop,
            drop_methods: vec![MethodName(callguard_common::sip::method::UNKNOWN)],
            signature_ban: true,
            signature_ban_secs: 300,
            fragmented: PassDrop::Drop,
        }
    }
}

/// A token bucket: a sustained rate per second and a burst.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Requests per second, sustained; 0 turns the limit off.
    pub rate: u32,
    /// Requests allowed at once above the rate (at least 1).
    pub burst: u32,
}

/// Per-source rate limits on SIP requests from sources outside the authorized networks (a
/// source is an IPv4 address or an IPv6 /64), and the bans that follow.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Every request. Default 50/s, burst 100.
    pub requests: Bucket,
    /// REGISTER. Default 10/s, burst 30.
    pub register: Bucket,
    /// INVITE. Default 10/s, burst 30.
    pub invite: Bucket,
    /// A source that keeps exceeding a limit (no pause over one second) this long is banned;
    /// 0: never banned for rate. Default 10.
    pub ban_after_secs: u64,
    /// How long a ban lasts. Default 3600.
    pub ban_secs: u64,
    /// When this many sources of one /24 (IPv4) or /48 (IPv6) are banned, the prefix is
    /// banned; 0 (the default): off. Only sources proven to receive what is sent to their
    /// address count (they acknowledged one of callguard's `403`s, which carries a To tag no
    /// one else can guess), never a source banned on its packets alone: a UDP source can be
    /// forged, and a whole /24 of remote phones or a mobile operator's /48 must not be banned
    /// for a day on forged packets. Turn it on only where the phones that matter are in allow
    /// rules.
    pub escalate_after: u32,
    /// How long a prefix ban lasts. Default 86400.
    pub escalate_ban_secs: u64,
    /// Automatic bans kept at most; the oldest make room for new ones (manual rules are never
    /// touched). A flood from spoofed sources is a new ban per packet: this bounds what it takes
    /// of the store and the kernel's maps. Default 10000.
    pub max_auto_bans: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests: Bucket { rate: 50, burst: 100 },
            register: Bucket { rate: 10, burst: 30 },
            invite: Bucket { rate: 10, burst: 30 },
            ban_after_secs: 10,
            ban_secs: 3600,
            escalate_after: 0,
            escalate_ban_secs: 86_400,
            max_auto_bans: 10_000,
        }
    }
}

/// Enumeration (extension scan) detection.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Enumeration {
    /// A source whose requests carry more than this many distinct To values within
    /// `window_secs` is banned (for `rate.ban_secs`); 0: off. At most 128. Default 20.
    pub users: u32,
    /// The window, in seconds. Default 60.
    pub window_secs: u64,
}

impl Default for Enumeration {
    fn default() -> Self {
        Self { users: 20, window_secs: 60 }
    }
}

/// Failed authentications (`[auth]`), counted by the kernel from the PBX's own answers on the
/// guarded interfaces: a `401`/`407` to a REGISTER or INVITE that carried credentials (not one
/// that says `stale=true`), a `403` to a REGISTER. The defaults are fail2ban's for Asterisk
/// (`maxretry` 5, `findtime` and `bantime` 10 minutes).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// A source outside the authorized networks is banned when its failed authentications
    /// within `window_secs` reach this many (at most this many wrong passwords reach the PBX in
    /// a window); 0: off. Default 5.
    pub failures: u32,
    /// The window, in seconds. Default 600.
    pub window_secs: u64,
    /// How long the ban lasts, in seconds. Default 600.
    pub ban_secs: u64,
    /// A user (the To's user part) whose failed authentications within `window_secs`, from any
    /// sources, reach this many is guarded for `user_guard_secs`: REGISTERs for it from sources
    /// outside the authorized networks that the PBX has not registered are dropped
    /// (`guarded_user`), and the operator is told (an event, the alerts). This stops a guess
    /// spread over many sources, each below `failures`. 0: off. Default 10. Needs `failures`.
    pub user_failures: u32,
    /// How long a user stays guarded, in seconds. Default 3600.
    pub user_guard_secs: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self { failures: 5, window_secs: 600, ban_secs: 600, user_failures: 10, user_guard_secs: 3600 }
    }
}

/// What the kernel does with a request that needs the daemon while the daemon is gone (its
/// heartbeat older than one second) or its queue is full.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Pass it to the PBX unchecked (calls keep working; toll-fraud checks are off meanwhile).
    #[default]
    Open,
    /// Drop it (no unchecked call reaches the PBX; no call gets through either).
    Closed,
}

/// Number-level call checks (`[calls]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Calls {
    /// `open` (default) or `closed`: what happens to a call that needs the daemon while it is
    /// gone (see [`FailPolicy`]).
    pub fail: FailPolicy,
    /// `closed` (default) or `open`: what happens to a call that needs the daemon while its
    /// hand-up queue is full. Anyone can fill the queue (a flood of INVITEs from spoofed
    /// sources), so by default such calls are dropped, not let through unchecked; phones
    /// retransmit an INVITE that got no answer.
    pub queue_full: FailPolicy,
    /// The international call prefix dialed on this PBX besides `+` and `00` (for example
    /// `011` in North America). Default `00`.
    pub international_prefix: String,
    /// How a caller dials an authorization code before a barred number: `{code}` and
    /// `{number}` in this form. Default `*{code}*{number}`.
    pub authcode_form: String,
    /// This host's site name, for border rules with a `site` (`*` or empty match every site).
    pub site: String,
    /// Identical requests (same source, Call-ID, CSeq and branch) within this many seconds are
    /// retransmissions and get the first verdict again without a second evaluation. Default
    /// 32 (Timer B of RFC 3261).
    pub retransmit_secs: u64,
    /// Fewest digits a new authorization code may have. Default 4: with the lockout below, a
    /// four-digit code takes an attacker years from one address. The seed's examples (`01`)
    /// need 2.
    pub authcode_min_digits: usize,
    /// Wrong authorization codes from one source (an IPv4 address, an IPv6 /64), or for one
    /// caller, within `authcode_window_secs`, after which that source's (or caller's) calls with a
    /// code are refused, right code or not, until the window has passed. A caller's limit spares
    /// the sources that caller has dialed a right code from, so a stranger cannot lock the real
    /// caller out. Default 5.
    pub authcode_failures: u32,
    /// The window of `authcode_failures`, seconds. Default 900.
    pub authcode_window_secs: u64,
    /// Fraud thresholds on the calls the number rules allow (`[calls.fraud]`).
    pub fraud: Fraud,
}

/// Fraud thresholds (`[calls.fraud]`, after OpenSIPS' `fraud_detection`): limits on the calls
/// the number rules allow, per caller (`[calls.fraud.caller]`, the From user at the From host)
/// and per source (`[calls.fraud.source]`, an IPv4 address or an IPv6 /64: many callers behind
/// one address). A call past a limit is answered `403` (`deny/fraud`) and is an event. Only
/// calls the slow path sees are counted: sources in allow rules are not handed up.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Fraud {
    /// `false` turns the thresholds off (then they need no hand-up). Default `true`.
    pub enabled: bool,
    /// Limits for one caller. Defaults: 20 calls a minute, 30 international or premium calls
    /// an hour, 10 attempts within 10 s, 10 numbers in sequence; a limit left out of the table
    /// keeps its default.
    #[serde(deserialize_with = "caller_limits")]
    pub caller: FraudLimits,
    /// Limits for one source. Defaults: 120 calls a minute, 300 international or premium calls
    /// an hour, 60 attempts within 10 s, 10 numbers in sequence; a limit left out keeps its
    /// default.
    #[serde(deserialize_with = "source_limits")]
    pub source: FraudLimits,
    /// National numbers that cost like international ones (premium-rate prefixes, say `0900`),
    /// counted with the international calls. Default none.
    pub premium: Vec<String>,
    /// Ban the source of a call past a limit for this many seconds, like a rate ban; 0 (the
    /// default): refuse the call only (a ban cuts off every caller behind the address).
    pub ban_secs: u64,
}

impl Default for Fraud {
    fn default() -> Self {
        Self {
            enabled: true,
            caller: FraudLimits {
                calls_per_minute: 20,
                international_per_hour: 30,
                parallel: 10,
                sequential: 10,
            },
            source: FraudLimits {
                calls_per_minute: 120,
                international_per_hour: 300,
                parallel: 60,
                sequential: 10,
            },
            premium: Vec::new(),
            ban_secs: 0,
        }
    }
}

impl Fraud {
    /// Whether the thresholds are on and any limit is set.
    pub fn any(&self) -> bool {
        self.enabled && (self.caller.any() || self.source.any())
    }

    /// Checks the premium prefixes and the ban's length (the file's and the API's thresholds
    /// alike); the message names the setting as the file writes it.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.premium.iter().find(|p| {
            let d = p.strip_prefix('+').unwrap_or(p);
            d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit())
        }) {
            return Err(format!(
                "calls.fraud.premium: `{p}` is not a number prefix (digits, an optional leading +)"
            ));
        }
        if self.ban_secs > BAN_MAX {
            return Err(format!(
                "calls.fraud.ban_secs: at most {BAN_MAX} (ten years), not {}",
                self.ban_secs
            ));
        }
        Ok(())
    }
}

/// The longest ban or window a setting may ask for, in seconds: ten years. Longer is a manual
/// rule's job, and expiry times must stay representable.
const BAN_MAX: u64 = 315_360_000;

/// A `[calls.fraud.caller]` or `[calls.fraud.source]` table as written: the limits it names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenLimits {
    calls_per_minute: Option<u32>,
    international_per_hour: Option<u32>,
    parallel: Option<u32>,
    sequential: Option<u32>,
}

impl WrittenLimits {
    /// `base` with the limits written here.
    fn over(self, base: FraudLimits) -> FraudLimits {
        FraudLimits {
            calls_per_minute: self.calls_per_minute.unwrap_or(base.calls_per_minute),
            international_per_hour: self.international_per_hour.unwrap_or(base.international_per_hour),
            parallel: self.parallel.unwrap_or(base.parallel),
            sequential: self.sequential.unwrap_or(base.sequential),
        }
    }
}

fn caller_limits<'de, D: Deserializer<'de>>(d: D) -> Result<FraudLimits, D::Error> {
    Ok(WrittenLimits::deserialize(d)?.over(Fraud::default().caller))
}

fn source_limits<'de, D: Deserializer<'de>>(d: D) -> Result<FraudLimits, D::Error> {
    Ok(WrittenLimits::deserialize(d)?.over(Fraud::default().source))
}

/// One set of fraud limits; 0 turns a limit off.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FraudLimits {
    /// Calls within a minute.
    pub calls_per_minute: u32,
    /// Calls to international numbers or `premium` prefixes within an hour.
    pub international_per_hour: u32,
    /// Call attempts begun within 10 seconds: the calls in setup at once.
    pub parallel: u32,
    /// Numbers dialed in a row, each one more than the last (a dialer walking a range).
    pub sequential: u32,
}

impl FraudLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.calls_per_minute != 0
            || self.international_per_hour != 0
            || self.parallel != 0
            || self.sequential != 0
    }
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            fail: FailPolicy::Open,
            queue_full: FailPolicy::Closed,
            international_prefix: "00".into(),
            authcode_form: "*{code}*{number}".into(),
            site: String::new(),
            retransmit_secs: 32,
            authcode_min_digits: 4,
            authcode_failures: 5,
            authcode_window_secs: 900,
            fraud: Fraud::default(),
        }
    }
}

impl Calls {
    /// The authorization-code form split around its placeholders: (before `{code}`, between,
    /// after `{number}`).
    pub fn authcode_parts(&self) -> Result<(&str, &str, &str), String> {
        let f = &self.authcode_form;
        let (Some(c), Some(n)) = (f.find("{code}"), f.find("{number}")) else {
            return Err(format!("calls.authcode_form: `{f}` must hold both {{code}} and {{number}}"));
        };
        if c > n {
            return Err(format!("calls.authcode_form: `{f}`: {{code}} must come before {{number}}"));
        }
        let (before, between, after) = (&f[..c], &f[c + 6..n], &f[n + 8..]);
        if between.is_empty() || between.bytes().any(|b| b.is_ascii_digit()) {
            return Err(format!(
                "calls.authcode_form: `{f}`: {{code}} and {{number}} must be separated by something other than digits"
            ));
        }
        Ok((before, between, after))
    }
}

/// Drop events: sampled drops for logs and `callguard events`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// One in this many drops becomes an event, within `per_sec`; 0: none. Default 16.
    pub sample: u32,
    /// The event budget: most drop samples, and apart from them most signature bans, each CPU
    /// writes a second, with a burst of as many (the rest are counted as suppressed; the
    /// kernel's own ban holds either way); 0: no budget. Under a flood the events, not the drops, are what costs: this bounds
    /// the daemon's work whatever the packet rate. Bans for rate, extension scans and failed
    /// authentications, and guarded users, are always written. Default 200.
    pub per_sec: u32,
    /// Most drop events written to the log per second (the rest are counted). Default 10.
    pub log_per_sec: u32,
}

impl Default for Events {
    fn default() -> Self {
        Self { sample: 16, per_sec: 200, log_per_sec: 10 }
    }
}

/// Alerts (`[alerts]`): each ban (rate, extension scan, signature, failed authentications,
/// fraud) and each call refused by a fraud threshold, as the event `callguard events` shows,
/// sent as it happens. Nothing is sent when neither `webhook` nor `command` is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// `http://host[:port]/path`: each alert is POSTed there as JSON (`Content-Type:
    /// application/json`); a 2xx answer is success. HTTPS is not spoken: use a relay on the host,
    /// or `command` (curl).
    pub webhook: String,
    /// A program and its arguments (no shell), run once per alert with the JSON on its standard
    /// input, for at most 10 s.
    pub command: Vec<String>,
    /// At most this many alerts a minute; the rest are counted in the log ("N alerts not sent").
    /// Default 60.
    pub per_minute: u32,
    /// Webhook attempts after a failed one, 1, 2, 4 … s apart. Default 3.
    pub retries: u32,
}

impl Default for Alerts {
    fn default() -> Self {
        Self { webhook: String::new(), command: Vec::new(), per_minute: 60, retries: 3 }
    }
}

/// A SIP method by its lower-case name (see [`SipPolicy::drop_methods`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodName(pub u8);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let names = callguard_common::sip::method::NAMES;
        names.iter().position(|n| n.eq_ignore_ascii_case(&s)).map(|i| Self(i as u8)).ok_or_else(|| {
            de::Error::custom(format!("`{s}` is not a method callguard knows; one of: {}", names.join(", ")))
        })
    }
}

impl Serialize for MethodName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            callguard_common::sip::method::NAMES.get(usize::from(self.0)).copied().unwrap_or("unknown"),
        )
    }
}

/// Pass or drop.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PassDrop {
    /// Pass and count.
    #[default]
    Pass,
    /// Drop and count.
    Drop,
}

/// A network rule written in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    /// Address or prefix (`198.18.0.0/15`, `2001:db8::1`).
    #[serde(deserialize_with = "de_net")]
    pub cidr: IpNet,
    /// `allow` (authorized) or `deny` (blocked).
    pub action: NetAction,
    /// For deny: `sip` (guarded ports only, default) or `all`.
    #[serde(default)]
    pub scope: Scope,
    /// For allow: `trusted` (no call checks, default), `trunk` (caller rules on its calls) or
    /// `phones` (dialed-number rules, authorization codes, roles and fraud thresholds).
    #[serde(default, skip_serializing_if = "is_trusted")]
    pub profile: crate::net::Profile,
    /// When the rule stops applying (RFC 3339).
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    /// Free text shown in `net list`.
    #[serde(default)]
    pub comment: String,
}

fn is_trusted(p: &crate::net::Profile) -> bool {
    *p == crate::net::Profile::Trusted
}

fn de_net<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    parse_net(&s).map_err(de::Error::custom)
}

/// A configuration error, with the file and the position of the fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid (syntax, unknown key, bad value).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::os::unix::fs::PermissionsExt as _;
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let cfg =
            Self::parse(&text).map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        if cfg.api.admin_password.is_some() && mode & 0o077 != 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "api.admin_password is set in a file others can read (mode {:o}): `chmod 600` it, or \
                     give the password in CALLGUARD_ADMIN_PASSWORD instead",
                    mode & 0o777
                ),
            });
        }
        if let Some(f) = cfg.feeds.iter().find(|f| !f.headers.is_empty())
            && mode & 0o077 != 0
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "feeds.{}.headers are set in a file others can read (mode {:o}): `chmod 600` it",
                    f.name,
                    mode & 0o777
                ),
            });
        }
        if cfg.metrics.token.is_some() && mode & 0o077 != 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "metrics.token is set in a file others can read (mode {:o}): `chmod 600` it",
                    mode & 0o777
                ),
            });
        }
        Ok(cfg)
    }

    /// This configuration as `callguard config check` prints it: the administrator's password
    /// and the metrics token, when set, shown as set but not shown.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        if c.api.admin_password.is_some() {
            c.api.admin_password = Some("(set, not shown)".into());
        }
        if c.metrics.token.is_some() {
            c.metrics.token = Some("(set, not shown)".into());
        }
        for f in &mut c.feeds {
            for v in f.headers.values_mut() {
                *v = "(set, not shown)".into();
            }
        }
        c
    }

    /// Parses and validates configuration text. The error names the line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}: {msg}")
                }
                None => msg,
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.sweep_interval_secs == 0 {
            return Err("sweep_interval_secs: must be at least 1".into());
        }
        self.validate_api()?;
        self.validate_metrics()?;
        self.tables.validate()?;
        self.calls.authcode_parts()?;
        if let Some(n) = self
            .networks
            .iter()
            .find(|n| n.action == NetAction::Deny && n.profile != crate::net::Profile::Trusted)
        {
            return Err(format!(
                "networks: {} is a deny rule with profile {}: a call profile belongs to allow rules",
                n.cidr,
                n.profile.as_str()
            ));
        }
        let w = &self.alerts.webhook;
        let http =
            |w: &str| w.starts_with("http://") && w.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
        if !w.is_empty() && !http(w) {
            return Err(format!(
                "alerts.webhook: `{w}` is not an http:// URL (HTTPS is not spoken: use a relay, or alerts.command with curl)"
            ));
        }
        if self.alerts.retries > 10 {
            return Err(format!("alerts.retries: at most 10, not {}", self.alerts.retries));
        }
        let c = &self.calls;
        if !(1..=crate::accounts::AUTH_CODE_MAX).contains(&c.authcode_min_digits) {
            return Err(format!("calls.authcode_min_digits: from 1 to {}", crate::accounts::AUTH_CODE_MAX));
        }
        c.fraud.validate()?;
        if c.authcode_failures == 0 || c.authcode_failures as usize > crate::throttle::FAILURES_MAX {
            return Err(format!("calls.authcode_failures: from 1 to {}", crate::throttle::FAILURES_MAX));
        }
        if c.authcode_window_secs == 0 {
            return Err("calls.authcode_window_secs: at least 1".into());
        }
        if !self.calls.international_prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "calls.international_prefix: `{}` must be digits",
                self.calls.international_prefix
            ));
        }
        if self.geoip.check_secs == 0 {
            return Err("geoip.check_secs: at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.feeds {
            f.validate()?;
            if !names.insert(f.name.as_str()) {
                return Err(format!("feeds: `{}` is named twice", f.name));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for n in &self.networks {
            if !seen.insert((n.cidr, n.action)) {
                return Err(format!("networks: {} {} is listed twice", n.action, n.cidr));
            }
        }
        self.validate_limits()
    }

    /// The guarded-port bitmap as the kernel's `CG_PORTS` holds it.
    pub fn port_bits(&self) -> Vec<u8> {
        use callguard_common::config::{PORT_TCP, PORT_UDP};
        let mut bits = vec![0u8; 1 << 16];
        for (ranges, bit) in [(&self.ports.udp, PORT_UDP), (&self.ports.tcp, PORT_TCP)] {
            for r in ranges {
                for p in r.first..=r.last {
                    bits[usize::from(p)] |= bit;
                }
            }
        }
        bits
    }

    /// The kernel's policy record (the signature bank is the kernel loader's business).
    pub fn kernel_config(&self) -> callguard_common::KernelConfig {
        use callguard_common::config::{
            FLAG_BAN_SIGNATURE, FLAG_DROP_FRAGMENTED_SIP, FLAG_DROP_FRAGMENTS, FLAG_DROP_LONG_CHAINS,
            FLAG_DROP_MALFORMED, FLAG_DROP_NOT_SIP,
        };
        let mut flags = 0;
        if self.sip.fragmented == PassDrop::Drop {
            flags |= FLAG_DROP_FRAGMENTED_SIP;
        }
        if self.policy.ipv6_long_chains == PassDrop::Drop {
            flags |= FLAG_DROP_LONG_CHAINS;
        }
        if self.sip.not_sip == PassDrop::Drop {
            flags |= FLAG_DROP_NOT_SIP;
        }
        if self.sip.signature_ban {
            flags |= FLAG_BAN_SIGNATURE;
        }
        if self.policy.fragments == PassDrop::Drop {
            flags |= FLAG_DROP_FRAGMENTS;
        }
        if self.policy.malformed == PassDrop::Drop {
            flags |= FLAG_DROP_MALFORMED;
        }
        if self.calls.fail == FailPolicy::Closed {
            flags |= callguard_common::config::FLAG_FAIL_CLOSED;
        }
        if self.calls.queue_full == FailPolicy::Open {
            flags |= callguard_common::config::FLAG_QUEUE_FULL_OPEN;
        }
        let method_drop = self.sip.drop_methods.iter().fold(0u32, |m, n| m | 1 << n.0);
        callguard_common::KernelConfig { flags, method_drop, ..Default::default() }
    }

    /// The kernel's limits record.
    pub fn kernel_limits(&self) -> callguard_common::limits::Limits {
        use callguard_common::limits::{BUCKET_ALL, BUCKET_INVITE, BUCKET_REGISTER, Limits};
        const SEC: u64 = 1_000_000_000;
        let mut l = Limits::default();
        let r = &self.rate;
        for (i, b) in [(BUCKET_ALL, r.requests), (BUCKET_REGISTER, r.register), (BUCKET_INVITE, r.invite)] {
            if b.rate != 0 {
                l.interval_ns[i] = SEC / u64::from(b.rate);
                l.tau_ns[i] = l.interval_ns[i] * u64::from(b.burst.max(1) - 1);
            }
        }
        l.ban_after_ns = r.ban_after_secs.saturating_mul(SEC);
        l.ban_ns = r.ban_secs.saturating_mul(SEC);
        l.sig_ban_ns =
            if self.sip.signature_ban { self.sip.signature_ban_secs.saturating_mul(SEC) } else { 0 };
        l.enum_window_ns = self.enumeration.window_secs.saturating_mul(SEC);
        l.enum_users = self.enumeration.users;
        l.event_sample = self.events.sample;
        if self.events.per_sec != 0 {
            l.event_interval_ns = SEC / u64::from(self.events.per_sec);
            l.event_tau_ns = l.event_interval_ns * u64::from(self.events.per_sec - 1);
        }
        if self.auth.failures != 0 {
            l.auth_failures = self.auth.failures;
            l.auth_window_ns = self.auth.window_secs.saturating_mul(SEC);
            l.auth_ban_ns = self.auth.ban_secs.saturating_mul(SEC);
            l.auth_user_failures = self.auth.user_failures;
            l.auth_user_guard_ns = self.auth.user_guard_secs.saturating_mul(SEC);
        }
        l
    }

    /// Checks `[metrics]`: an address, a token off loopback, a bounded number of rule series.
    fn validate_metrics(&self) -> Result<(), String> {
        let m = &self.metrics;
        if m.listen.is_empty() {
            return Ok(());
        }
        let addr: std::net::SocketAddr = m
            .listen
            .parse()
            .map_err(|_| format!("metrics.listen: `{}` is not ADDRESS:PORT (or \"\" for off)", m.listen))?;
        if m.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("metrics.token: at least 16 characters".into());
        }
        if !addr.ip().is_loopback() && m.token.is_none() {
            return Err(format!(
                "metrics.listen: {addr} is reachable from other hosts; set metrics.token (scrapers send \
                 it as a bearer token) or listen on a loopback address"
            ));
        }
        if m.top_rules > 1000 {
            return Err(format!("metrics.top_rules: at most 1000, not {}", m.top_rules));
        }
        Ok(())
    }

    /// Checks `[api]`: the address, the TLS pair, the sign-in throttle, the reset origins.
    fn validate_api(&self) -> Result<(), String> {
        let a = &self.api;
        if !a.listen.is_empty() && a.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("api.listen: `{}` is not ADDRESS:PORT (or \"\" for off)", a.listen));
        }
        if a.tls_cert.is_some() != a.tls_key.is_some() {
            return Err("api.tls_cert and api.tls_key: give both or neither".into());
        }
        for (name, v) in [
            ("access_token_secs", a.access_token_secs),
            ("refresh_token_secs", a.refresh_token_secs),
            ("signin_window_secs", a.signin_window_secs),
            ("reset_token_secs", a.reset_token_secs),
        ] {
            if v == 0 || v > 365 * 86_400 {
                return Err(format!("api.{name}: 1 to 31536000 seconds, not {v}"));
            }
        }
        if a.signin_failures == 0 || a.signin_failures as usize > crate::throttle::FAILURES_MAX {
            return Err(format!("api.signin_failures: from 1 to {}", crate::throttle::FAILURES_MAX));
        }
        if a.max_connections == 0 || a.max_connections > 4096 {
            return Err("api.max_connections: from 1 to 4096 (each takes a file descriptor)".into());
        }
        if a.max_connections_per_source == 0 {
            return Err("api.max_connections_per_source: at least 1".into());
        }
        if a.request_timeout_secs == 0 || a.request_timeout_secs > 3600 {
            return Err("api.request_timeout_secs: from 1 to 3600".into());
        }
        let is_origin = |o: &str| {
            crate::accounts::origin_of(o).is_some_and(|x| x.eq_ignore_ascii_case(o.trim_end_matches('/')))
        };
        for o in &a.callback_origins {
            if !is_origin(o) {
                return Err(format!(
                    "api.callback_origins: `{o}` is not an origin (scheme://host[:port], nothing after)"
                ));
            }
        }
        if let Some(u) = &a.public_url
            && !is_origin(u)
        {
            return Err(format!(
                "api.public_url: `{u}` is not scheme://host[:port] (the URL browsers reach the API at, no path)"
            ));
        }
        if let Some(p) = &a.admin_password {
            crate::accounts::check_password(p).map_err(|m| format!("api.admin_password: {m}"))?;
        }
        Ok(())
    }

    /// Checks the ranges of the rate, enumeration and event settings.
    fn validate_limits(&self) -> Result<(), String> {
        if self.enumeration.users > 128 {
            return Err(format!("enumeration.users: at most 128, not {}", self.enumeration.users));
        }
        for (name, b) in
            [("requests", self.rate.requests), ("register", self.rate.register), ("invite", self.rate.invite)]
        {
            if b.rate > 1_000_000 {
                return Err(format!("rate.{name}.rate: at most 1000000 per second, not {}", b.rate));
            }
            if b.rate != 0 && b.burst == 0 {
                return Err(format!("rate.{name}.burst: at least 1"));
            }
        }
        if self.rate.max_auto_bans == 0 || self.rate.max_auto_bans > 1_000_000 {
            return Err("rate.max_auto_bans: from 1 to 1000000".into());
        }
        if self.rate.ban_after_secs != 0 && self.rate.ban_secs == 0 {
            return Err("rate.ban_secs: at least 1 when rate.ban_after_secs is set".into());
        }
        if self.auth.failures != 0 && (self.auth.window_secs == 0 || self.auth.ban_secs == 0) {
            return Err("auth.window_secs and auth.ban_secs: at least 1 when auth.failures is set".into());
        }
        if self.auth.failures > 1000 {
            return Err(format!("auth.failures: at most 1000, not {}", self.auth.failures));
        }
        if self.auth.user_failures != 0 && self.auth.failures == 0 {
            return Err("auth.user_failures: needs auth.failures (failures are counted per source \
                        first); set auth.user_failures = 0 too, or auth.failures above 0"
                .into());
        }
        if self.auth.user_failures > 100_000 {
            return Err(format!("auth.user_failures: at most 100000, not {}", self.auth.user_failures));
        }
        if self.auth.user_failures != 0 && self.auth.user_guard_secs == 0 {
            return Err("auth.user_guard_secs: at least 1 when auth.user_failures is set".into());
        }
        if self.sip.signature_ban && self.sip.signature_ban_secs == 0 {
            return Err("sip.signature_ban_secs: at least 1 when sip.signature_ban is true".into());
        }
        for (name, secs) in [
            ("sip.signature_ban_secs", self.sip.signature_ban_secs),
            ("rate.ban_secs", self.rate.ban_secs),
            ("rate.escalate_ban_secs", self.rate.escalate_ban_secs),
            ("enumeration.window_secs", self.enumeration.window_secs),
            ("rate.ban_after_secs", self.rate.ban_after_secs),
            ("auth.window_secs", self.auth.window_secs),
            ("auth.ban_secs", self.auth.ban_secs),
            ("auth.user_guard_secs", self.auth.user_guard_secs),
        ] {
            if secs > BAN_MAX {
                return Err(format!("{name}: at most {BAN_MAX} (ten years), not {secs}"));
            }
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg, Config::default());
        let bits = cfg.port_bits();
        assert_eq!(bits[5060], 3);
        assert_eq!(bits[5061], 3);
        assert_eq!(bits[5062], 0);
        assert_eq!(bits.iter().filter(|b| **b != 0).count(), 2);
    }

    #[test]
    fn throttle_and_reset_settings_are_checked() {
        let e = Config::parse("[api]\nsignin_failures = 65\n").unwrap_err().to_string();
        assert!(e.contains("api.signin_failures: from 1 to 64"), "{e}");
        assert!(Config::parse("[api]\nsignin_failures = 64\n").is_ok());
        for bad in ["https://panel.example/reset", "panel.example", "https://a@b.example", "ftp://x"] {
            let e =
                Config::parse(&format!("[api]\ncallback_origins = [\"{bad}\"]\n")).unwrap_err().to_string();
            assert!(e.contains("is not an origin"), "{bad}: {e}");
        }
        let ok = Config::parse(
            "[api]\nreset_callback_origins = [\"https://Panel.example:8443\", \"http://10.0.0.5/\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(ok.unwrap().api.callback_origins.len(), 2, "the old name is still read");
        let e = Config::parse("[api]\npublic_url = \"https://pbx.example/api\"\n").unwrap_err().to_string();
        assert!(e.contains("api.public_url"), "{e}");
        assert!(Config::parse("[api]\npublic_url = \"https://pbx.example:8887\"\n").is_ok());
    }

    #[test]
    fn metrics_beyond_loopback_need_a_token() {
        assert_eq!(Config::default().metrics.listen, "127.0.0.1:9787");
        assert!(Config::parse("[metrics]\nlisten = \"[::1]:9787\"\n").is_ok());
        assert!(Config::parse("[metrics]\nlisten = \"\"\n").is_ok());
        let e = Config::parse("[metrics]\nlisten = \"0.0.0.0:9787\"\n").unwrap_err().to_string();
        assert!(
            e.contains("metrics.listen: 0.0.0.0:9787 is reachable") && e.contains("metrics.token"),
            "{e}"
        );
        let e = Config::parse("[metrics]\nlisten = \"0.0.0.0:9787\"\ntoken = \"short\"\n").unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let ok =
            Config::parse("[metrics]\nlisten = \"0.0.0.0:9787\"\ntoken = \"0123456789abcdef\"\n").unwrap();
        assert_eq!(ok.redacted().metrics.token.as_deref(), Some("(set, not shown)"));
        let e = Config::parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err().to_string();
        assert!(e.contains("is not ADDRESS:PORT"), "{e}");
    }

    #[test]
    fn ports_accept_numbers_and_ranges() {
        let cfg = Config::parse("[ports]\nudp = [5060, \"5070-5072\"]\ntcp = []\n").unwrap();
        let bits = cfg.port_bits();
        assert_eq!([bits[5060], bits[5061], bits[5070], bits[5072], bits[5073]], [1, 0, 1, 1, 0]);
    }

    #[test]
    fn unknown_key_is_named_with_its_position() {
        let err = Config::parse("interfaces = [\"eth0\"]\n\n[policy]\nfragment = \"drop\"\n").unwrap_err();
        assert!(err.starts_with("line 4, column 1"), "{err}");
        assert!(err.contains("unknown field `fragment`"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_position() {
        let err = Config::parse("[ports]\nudp = [\"5070-5060\"]\n").unwrap_err();
        assert!(err.starts_with("line 2, column "), "{err}");
        assert!(err.contains("ends before it starts"), "{err}");

        let err = Config::parse("[[networks]]\ncidr = \"198.18.0.1/24\"\naction = \"deny\"\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
        assert!(err.contains("did you mean 198.18.0.0/24"), "{err}");

        let err = Config::parse("xdp_mode = \"turbo\"\n").unwrap_err();
        assert!(err.contains("line 1, column 12") && err.contains("turbo"), "{err}");

        let err = Config::parse("[policy]\nmalformed = \"explode\"").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
    }

    #[test]
    fn networks_parse_with_scope_and_expiry() {
        let cfg = Config::parse(
            "[[networks]]\ncidr = \"2001:db8::/32\"\naction = \"deny\"\nscope = \"all\"\nexpires = \"2030-01-01T00:00:00Z\"\n\
             [[networks]]\ncidr = \"198.18.0.7\"\naction = \"allow\"\n",
        )
        .unwrap();
        assert_eq!(cfg.networks[0].scope, Scope::All);
        assert!(cfg.networks[0].expires.is_some());
        assert_eq!(cfg.networks[1].cidr.to_string(), "198.18.0.7/32");
        assert_eq!(cfg.networks[1].scope, Scope::Sip);
    }

    #[test]
    fn table_sizes_are_bounded_and_named_when_wrong() {
        let cfg = Config::parse("[tables]\nsources = 4096\n").unwrap();
        assert_eq!(cfg.tables.sources, 4096);
        assert_eq!(cfg.tables.registered, TableSizes::default().registered);
        let err = Config::parse("[tables]\nauth_users = 10\n").unwrap_err().to_string();
        assert!(err.contains("tables.auth_users: between 1024 and 16777216, not 10"), "{err}");
        let err = Config::parse("[tables]\nsources = 4294967295\n").unwrap_err().to_string();
        assert!(err.contains("tables.sources"), "{err}");
        let err = Config::parse("[tables]\nsource = 4096\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `source`"), "{err}");
    }

    #[test]
    fn shipped_example_and_printed_defaults_parse() {
        let example = Config::parse(include_str!("../../dist/callguard.toml")).unwrap();
        assert_eq!(example.interfaces, ["eth0"]);
        assert_eq!(example.networks.len(), 2);
        assert_eq!(example.tables, TableSizes::default(), "the example shows the defaults");
        // The feed examples are commented out; uncommented, each is a valid feed.
        let text = include_str!("../../dist/callguard.toml");
        let feeds: String = text[text.find("# [[feeds]]").expect("the feed examples")..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let feeds = Config::parse(&feeds).unwrap().feeds;
        assert_eq!(
            feeds.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["spamhaus-drop", "crowdsec", "local"]
        );
        let printed = toml::to_string_pretty(&Config::default()).unwrap();
        assert_eq!(Config::parse(&printed).unwrap(), Config::default());
    }

    #[test]
    fn duplicate_network_is_rejected() {
        let err = Config::parse(
            "[[networks]]\ncidr = \"198.18.0.0/24\"\naction = \"deny\"\n[[networks]]\ncidr = \"198.18.0.0/24\"\naction = \"deny\"\n",
        )
        .unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
    }
}
