//! The command line: `callguard run` is the daemon; every other command talks to it over the
//! control socket, except `detach`, which works on the pins directly (also with no daemon).

mod accounts;
mod args;
mod calls;
mod client;
mod import;
mod output;
mod top;

use std::{
    io::BufReader,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use self::{
    args::{NetAdd, Resource, RuleOpts, named},
    client::Client,
    output::{event_line, expiry_note, print_json, sig_table, table},
};
use crate::{
    api::{self},
    config::{self, Config, FraudLimits},
    daemon,
    net::{NetAction, NetRule},
    sig::{SigField, SigMatch, SigMode},
};

/// callguard: drops SIP scanner floods, brute force and blocked networks at the NIC (XDP).
#[derive(Debug, Parser)]
#[command(name = "callguard", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file. `run` reads everything from it; the other commands read the
    /// control socket and pin directory from it.
    #[arg(short, long, global = true, env = "CALLGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control socket of the daemon (overrides the configuration file).
    #[arg(long, global = true, env = "CALLGUARD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load and attach the XDP program, serve the control API.
    ///
    /// Without a configuration file the built-in defaults apply (see `callguard config default`).
    /// The program, its link and maps are pinned, so filtering continues after the daemon
    /// stops; a restarted daemon adopts them. One daemon at a time per pin directory: a second
    /// one exits at once, naming the process that holds it.
    Run {
        /// Interface to guard (repeatable); added to the configuration file's list.
        #[arg(short, long = "interface", value_name = "IFACE")]
        interfaces: Vec<String>,
    },
    /// Remove the XDP program from every interface and delete its pinned maps (rules stay in
    /// the database and return with the next `callguard run`).
    Detach {
        /// Pin directory (default: from the configuration file, else /sys/fs/bpf/callguard).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Re-read the configuration file and apply the difference (same as SIGHUP).
    Reload,
    /// Show what the daemon guards and how many rules it holds.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the blocklist feeds of `[[feeds]]`: source, state, rules in force, last refresh.
    ///
    /// A feed whose last refresh was refused (source down, slow, too large, or not the format
    /// it should be) keeps its last good copy and shows why here.
    Feeds {
        /// What to do; without it, list them.
        #[command(subcommand)]
        action: Option<FeedsCommand>,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show packet and byte counters by verdict reason and by rule.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Manage authorized (allow) and blocked (deny) networks.
    #[command(subcommand)]
    Net(NetCommand),
    /// Show which number-level rule would decide a SIP request, and why, without sending
    /// anything: reads the message from FILE (or stdin) and asks the daemon, which decides with
    /// the rules in force.
    #[command(after_help = "Example:\n  callguard explain invite.txt --source 198.51.100.7\n\n\
        The message is read as it would arrive (CRLF or LF line ends). The answer says whether the kernel\n\
        would hand the request up (an initial INVITE or a REGISTER from outside the authorized networks,\n\
        while rules need it), what the checks read from it, and the decision with the rule that made it.")]
    Explain {
        /// The SIP message; `-` or absent: standard input.
        file: Option<PathBuf>,
        /// The address the request would come from.
        #[arg(long, short)]
        source: IpAddr,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A live view of what callguard stops: packets a second by reason, the sources and
    /// signatures being dropped, recent bans and call decisions, the kernel tables' occupancy.
    /// Keys: s sorts the reasons (rate, total, name), p pauses the view, q quits.
    Top {
        /// How often to read the daemon (`1s`, `500ms`).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        every: Duration,
    },
    /// Show sampled drops and bans (the last 200), or follow them live.
    Events {
        /// Keep printing new events as they come (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Manage scanner signatures (User-Agent, From/To display name or user).
    #[command(subcommand)]
    Sig(SigCommand),
    /// Blacklisted caller numbers (the PortSIP seed's `blacklisted_numbers`).
    Numbers(Resource<calls::NumbersCommand>),
    /// Dialed prefixes outside callers may not reach (the PortSIP seed's `disallowed_codes`).
    Prefixes(Resource<calls::PrefixesCommand>),
    /// Country calling codes international calls may reach (`allowed_country_codes`).
    Countries(Resource<calls::CountriesCommand>),
    /// Border rules: source, domain, user and User-Agent patterns that allow, deny or drop.
    Border(Resource<calls::BorderCommand>),
    /// Outgoing-call-barring authorization codes of a user.
    Codes(Resource<calls::CodesCommand>),
    /// The fraud thresholds (calls a minute, international calls an hour, calls in setup, numbers
    /// in sequence; per caller and per source): show them, change them while the daemon runs.
    #[command(subcommand)]
    Fraud(calls::FraudCommand),
    /// Tenants (one SIP domain each).
    Tenants(Resource<accounts::TenantsCommand>),
    /// Groups of users inside a tenant.
    Groups(Resource<accounts::GroupsCommand>),
    /// Users of the management API.
    Users(Resource<accounts::UsersCommand>),
    /// Roles: the built-in ones and custom ones.
    Roles(Resource<accounts::RolesCommand>),
    /// Sign-in sessions and their tokens.
    Tokens(Resource<accounts::TokensCommand>),
    /// API keys for the Voximplant-style authorized-IP calls.
    Keys(Resource<accounts::KeysCommand>),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Call the management API over the control socket, as system administrator: every
    /// resource of the seed documents and the accounts (see the README's API reference, or
    /// `callguard api GET /api/openapi.json`).
    ///
    /// Examples:
    ///   callguard api GET /api/v1/users
    ///   callguard api POST /api/v1/users/1/password '{"password": "a new one, 8+ chars"}'
    ///   callguard api POST /api/blacklisted_numbers '{"number": "+4930123456"}'
    ///   callguard api LOOKUP /rest/v1/master/borderrules '"9a7a73b7-016c-cd10-9ca9-50e54938780c"'
    ///   callguard api PUT /api/v1/tenants/acme/sso - < acme-sso.json   (a secret: not on the command line)
    #[command(verbatim_doc_comment)]
    Api {
        /// The HTTP method (GET, POST, PUT, PATCH, DELETE, LOOKUP).
        method: String,
        /// The path with its query string.
        path: String,
        /// A JSON body; `-` reads it from stdin.
        body: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// Example: callguard completions bash > /etc/bash_completion.d/callguard
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for callguard and each of its commands into a directory.
    ///
    /// Example: callguard man /usr/local/share/man/man1
    Man {
        /// Where the `.1` files go (created when absent).
        dir: PathBuf,
    },
}

/// `callguard feeds …`
#[derive(Debug, Subcommand)]
pub enum FeedsCommand {
    /// Refresh a feed now, and say how it went (applied, or refused with the reason while the
    /// last good copy stays).
    ///
    /// Example: callguard feeds refresh spamhaus-drop
    Refresh {
        /// The feed's name, as in `[[feeds]]`.
        name: String,
    },
}

/// `callguard sig …`
#[derive(Debug, Subcommand)]
pub enum SigCommand {
    /// List signatures with the requests each has matched.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Add a signature. Requests from sources outside the authorized networks whose field
    /// matches it (ASCII case ignored) are dropped at the NIC, or only counted with --dry-run.
    ///
    /// Examples: `callguard sig add user-agent friendly-scanner`,
    /// `callguard sig add from-to sipvicious`, `callguard sig add user-agent scan --match contains --dry-run`.
    Add {
        /// `user-agent`: the User-Agent value; `from-to`: the display name or URI user of
        /// From or To.
        #[arg(value_parser = named(&SigField::ALL, SigField::name))]
        field: SigField,
        /// The text (1 to 64 printable ASCII characters).
        text: String,
        /// `prefix`: the field starts with the text (cheapest); `contains`: anywhere in it.
        #[arg(long = "match", value_parser = named(&SigMatch::ALL, SigMatch::name), default_value = "prefix")]
        matches: SigMatch,
        /// Count matches without dropping (try a signature before enforcing it).
        #[arg(long)]
        dry_run: bool,
        /// Free text shown in `sig list`.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Delete signatures by id (the shipped defaults too).
    Del {
        /// Signature ids, as `sig list` shows them.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Switch a signature between enforce and dry-run.
    Mode {
        /// Signature id.
        id: u32,
        /// The new mode.
        #[arg(value_parser = named(&SigMode::ALL, SigMode::name))]
        mode: SigMode,
    },
}

/// `callguard net …`
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Authorize a network: it skips SIP checks and is never rate-limited or banned.
    Allow(NetAdd),
    /// Block a network: its packets to guarded ports (or all, with --scope all) are dropped.
    Deny(NetAdd),
    /// Delete rules: one network, every rule containing an address, all, or a country rule.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["cidr", "contains", "all", "country"])))]
    Del {
        /// The network whose rule(s) to delete.
        cidr: Option<String>,
        /// The country rule of this country, with its networks.
        #[arg(long, value_name = "CC")]
        country: Option<String>,
        /// Delete every rule whose network contains this address.
        #[arg(long, value_name = "IP")]
        contains: Option<String>,
        /// Delete every rule (not those from the configuration file).
        #[arg(long)]
        all: bool,
        /// Only allow rules (true) or only deny rules (false).
        #[arg(long)]
        allowed: Option<bool>,
    },
    /// Show the verdict for an address and the network that decides it.
    Check {
        /// The address.
        ip: IpAddr,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List rules.
    List {
        /// Only allow rules (true) or only deny rules (false).
        #[arg(long)]
        allowed: Option<bool>,
        /// Only rules whose network contains this address.
        #[arg(long, value_name = "IP")]
        contains: Option<IpAddr>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Load a list of addresses and prefixes: one a line with `#` comments, FireHOL netsets, or
    /// `ipset save` output. All lines are checked first; a bad line is reported with its number
    /// and nothing is applied.
    Import {
        /// The file (`-` for standard input).
        file: PathBuf,
        /// Add the entries as allow or deny rules.
        #[arg(long, default_value = "deny", value_parser = ["allow", "deny"])]
        action: String,
        #[command(flatten)]
        opts: RuleOpts,
    },
}

/// `callguard config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the built-in defaults as a configuration file.
    Default,
    /// Check a configuration file and print it with defaults filled in.
    Check,
}

impl Cli {
    fn file_config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(p) => Ok(Config::load(p)?),
            None if Path::new(config::DEFAULT_PATH).exists() => {
                Ok(Config::load(Path::new(config::DEFAULT_PATH))?)
            }
            None => Ok(Config::default()),
        }
    }

    fn client(&self) -> anyhow::Result<Client> {
        let socket = match &self.socket {
            Some(s) => s.clone(),
            None => self.file_config()?.socket,
        };
        Ok(Client::new(&socket))
    }

    /// Runs the command.
    pub async fn execute(self) -> anyhow::Result<()> {
        match &self.command {
            Command::Run { interfaces } => {
                let config_path = self.config.clone().or_else(|| {
                    Path::new(config::DEFAULT_PATH).exists().then(|| config::DEFAULT_PATH.into())
                });
                daemon::run(daemon::Options { config_path, interfaces: interfaces.clone() }).await
            }
            Command::Detach { pin_dir } => {
                let dir = match pin_dir {
                    Some(d) => d.clone(),
                    None => self.file_config()?.pin_dir,
                };
                let daemon = crate::kernel::PinDirLock::holder_of(&dir);
                let detached = daemon::detach(&dir)?;
                if detached.is_empty() {
                    println!("nothing attached from {}", dir.display());
                } else {
                    let done = if daemon.is_some() { "emptied" } else { "removed" };
                    println!("detached from {}; {done} {}", detached.join(", "), dir.display());
                }
                if let Some(holder) = daemon {
                    println!(
                        "callguard: a daemon ({holder}) holds {}, which stays, empty: the filter is off until \
                         that daemon restarts and attaches again; stop it (systemctl stop callguard) to keep \
                         the filter off",
                        dir.display()
                    );
                }
                Ok(())
            }
            Command::Reload => {
                let r: api::control::Reloaded = self.client()?.post("/v1/reload", &()).await?;
                println!(
                    "reloaded: {} kernel entries written, {} removed; attached [{}], detached [{}]",
                    r.written,
                    r.removed,
                    r.attached.join(", "),
                    r.detached.join(", ")
                );
                Ok(())
            }
            Command::Feeds { action: Some(FeedsCommand::Refresh { name }), json } => {
                let path = format!(
                    "/v1/feeds/{}/refresh",
                    form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
                );
                let f: crate::feeds::FeedStatus = self.client()?.post(&path, &serde_json::json!({})).await?;
                if *json {
                    return print_json(&f);
                }
                match &f.last_error {
                    Some(e) => anyhow::bail!(
                        "{name}: refresh refused, keeping the last good copy ({} rules): {e}",
                        f.rules
                    ),
                    None => println!(
                        "{name}: {} rules ({} held by other rules, {} entries not addresses)",
                        f.rules, f.held_by_others, f.bad_entries
                    ),
                }
                Ok(())
            }
            Command::Feeds { action: None, json } => {
                let feeds: Vec<crate::feeds::FeedStatus> = self.client()?.get("/v1/feeds").await?;
                if *json {
                    return print_json(&feeds);
                }
                if feeds.is_empty() {
                    println!("no feeds configured ([[feeds]] in the configuration file)");
                    return Ok(());
                }
                let ago = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map_or("never".into(), |t| {
                        let secs = (chrono::Utc::now() - t).num_seconds().max(0).unsigned_abs();
                        format!("{} ago", humantime::format_duration(Duration::from_secs(secs)))
                    })
                };
                let mut t =
                    table(&["feed", "state", "rules", "last success", "refreshes", "failures", "source"]);
                for f in &feeds {
                    t.add_row(vec![
                        f.name.clone(),
                        f.state.clone(),
                        f.rules.to_string(),
                        ago(f.last_success),
                        f.refreshes.to_string(),
                        f.failures.to_string(),
                        f.source.clone(),
                    ]);
                }
                println!("{t}");
                for f in &feeds {
                    if let Some(e) = &f.last_error {
                        println!(
                            "{}: last refresh refused ({}), keeping the last good copy: {e}",
                            f.name,
                            ago(f.last_attempt)
                        );
                    }
                    if f.held_by_others > 0 || f.bad_entries > 0 {
                        println!(
                            "{}: {} networks held by other rules, {} entries not addresses",
                            f.name, f.held_by_others, f.bad_entries
                        );
                    }
                }
                Ok(())
            }
            Command::Status { json } => {
                let s: api::control::Status = self.client()?.get("/v1/status").await?;
                if *json {
                    return print_json(&s);
                }
                println!(
                    "callguard {} up {}",
                    s.version,
                    humantime::format_duration(Duration::from_secs(s.uptime_secs))
                );
                let ifaces: Vec<String> =
                    s.interfaces.iter().map(|i| format!("{} ({:?})", i.name, i.mode)).collect();
                println!(
                    "guarding:   {}",
                    if ifaces.is_empty() { "no interface".into() } else { ifaces.join(", ") }
                );
                println!("ports:      udp {}  tcp {}", s.udp_ports.join(","), s.tcp_ports.join(","));
                println!(
                    "rules:      {} allow, {} deny ({} kernel entries)",
                    s.allow_rules, s.deny_rules, s.kernel_entries
                );
                println!(
                    "bans:       {} automatic of at most {} ({} oldest evicted to make room since the start)",
                    s.auto_bans, s.max_auto_bans, s.auto_bans_evicted
                );
                println!("pins:       {}", s.pin_dir);
                println!("database:   {}", s.database);
                println!("config:     {}", s.config.as_deref().unwrap_or("(built-in defaults)"));
                Ok(())
            }
            Command::Stats { json } => {
                let s: api::control::Stats = self.client()?.get("/v1/stats").await?;
                if *json {
                    return print_json(&s);
                }
                let mut t = table(&["action", "reason", "packets", "bytes", "meaning"]);
                for r in &s.reasons {
                    t.add_row(vec![
                        r.action.clone(),
                        r.reason.clone(),
                        r.packets.to_string(),
                        r.bytes.to_string(),
                        r.description.clone(),
                    ]);
                }
                println!("{t}");
                if !s.rules.is_empty() {
                    let mut t = table(&["rule", "action", "network", "packets", "bytes"]);
                    for r in &s.rules {
                        t.add_row(vec![
                            r.id.to_string(),
                            r.action.map_or("(deleted)".into(), |a| a.to_string()),
                            r.cidr.map_or(String::new(), |c| c.to_string()),
                            r.packets.to_string(),
                            r.bytes.to_string(),
                        ]);
                    }
                    println!("{t}");
                }
                if !s.sigs.is_empty() {
                    println!("{}", sig_table(&s.sigs));
                }
                let c = &s.calls;
                println!(
                    "slow path: hands up INVITEs: {}, REGISTERs: {} ({} border rules, {} blacklisted numbers, \
                     {} disallowed codes, {} allowed countries, {} callers with codes, {} callers \
                     without international calls)",
                    if c.hand_up_invites { "yes" } else { "no" },
                    if c.hand_up_registers { "yes" } else { "no" },
                    c.border_rules,
                    c.blacklisted_numbers,
                    c.disallowed_codes,
                    c.allowed_countries,
                    c.callers_with_codes,
                    c.national_callers
                );
                let limits = |l: &FraudLimits| {
                    format!(
                        "{} calls a minute, {} international an hour, {} in setup at once, {} in sequence",
                        l.calls_per_minute, l.international_per_hour, l.parallel, l.sequential
                    )
                };
                println!(
                    "fraud thresholds (0: off): per caller {}; per source {}",
                    limits(&c.fraud.caller),
                    limits(&c.fraud.source)
                );
                if !s.slow_path.decisions.is_empty() {
                    let mut t = table(&["verdict/step", "requests"]);
                    for (k, n) in &s.slow_path.decisions {
                        t.add_row(vec![k.clone(), n.to_string()]);
                    }
                    println!("{t}");
                    let p = &s.slow_path;
                    println!(
                        "retransmissions answered again: {}, send errors: {}, not for this host: {}, \
                         403s left unsent (longer than the request): {}, calls refused by the \
                         authorization-code lockout: {}, fraud refusals (calls.fraud): {}",
                        p.retransmissions,
                        p.send_errors,
                        p.not_local,
                        p.unanswered,
                        p.authcode_lockouts,
                        p.fraud_refusals
                    );
                }
                let (a, p) = (&s.answers, &s.slow_path);
                println!(
                    "the PBX's answers: {} responses, {} accepted registrations; {} sources registered \
                     now (requests through their own queue: {}); ACKs proving a source: {} (false: {})",
                    a.responses,
                    a.registrations,
                    a.registered_sources,
                    p.registered,
                    p.proofs,
                    p.false_proofs
                );
                let e = &s.events;
                println!(
                    "events: {} drops seen by the sampler, {} drop samples and signature bans written, {} \
                     suppressed by the event budget or a full ring ([events] per_sec)",
                    e.drops, e.written, e.suppressed
                );
                Ok(())
            }
            Command::Net(cmd) => self.net(cmd).await,
            Command::Sig(cmd) => self.sig(cmd).await,
            Command::Numbers(r) => calls::numbers(&self.client()?, r).await,
            Command::Prefixes(r) => calls::prefixes(&self.client()?, r).await,
            Command::Countries(r) => calls::countries(&self.client()?, r).await,
            Command::Border(r) => calls::border(&self.client()?, r).await,
            Command::Codes(r) => calls::codes(&self.client()?, r).await,
            Command::Fraud(cmd) => calls::fraud(&self.client()?, cmd).await,
            Command::Tenants(r) => accounts::tenants(&self.client()?, r).await,
            Command::Groups(r) => accounts::groups(&self.client()?, r).await,
            Command::Users(r) => accounts::users(&self.client()?, r).await,
            Command::Roles(r) => accounts::roles(&self.client()?, r).await,
            Command::Tokens(r) => accounts::tokens(&self.client()?, r).await,
            Command::Keys(r) => accounts::keys(&self.client()?, r).await,
            Command::Api { method, path, body } => {
                let body = match body.as_deref() {
                    Some("-") => Some(std::io::read_to_string(std::io::stdin()).context("reading stdin")?),
                    b => b.map(str::to_owned),
                };
                let (status, text) = self.client()?.raw(&method.to_ascii_uppercase(), path, body).await?;
                // Pretty-print JSON answers; print anything else (CSV exports) as it came.
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                    Err(_) if !text.is_empty() => print!("{text}"),
                    Err(_) => {}
                }
                if !(200..300).contains(&status) {
                    bail!("the API answered {status}");
                }
                Ok(())
            }
            Command::Explain { file, source, json } => {
                let message = match file.as_deref() {
                    None => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
                    Some(p) if p.as_os_str() == "-" => {
                        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
                    }
                    Some(p) => {
                        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
                    }
                };
                let req = api::control::ExplainRequest { message, source: *source };
                let e: api::control::Explained = self.client()?.post("/v1/explain", &req).await?;
                if *json {
                    return print_json(&e);
                }
                let d = &e.decision;
                println!("verdict:   {}", d.verdict.as_str());
                println!("decided by: {} ({})", d.rule, d.step.as_str());
                println!("why:       {}", d.why);
                if let Some(n) = &d.dial {
                    println!("forwarded as: {n} (the authorization code removed)");
                }
                println!(
                    "hand-up:   {}",
                    if e.handed_up {
                        "yes: the kernel hands this request to the daemon, which decides as above"
                    } else {
                        "no: the kernel does not hand this request up (authorized source, in-dialog, another method, or no rule needs it)"
                    }
                );
                if let Some(f) = &e.facts {
                    println!(
                        "read:      {} to {} from {}@{} (user-agent {:?})",
                        f.method,
                        f.dialed.as_deref().unwrap_or("-"),
                        f.from_user.as_deref().unwrap_or("-"),
                        f.from_host,
                        f.user_agent
                    );
                }
                Ok(())
            }
            Command::Top { every } => {
                if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    bail!(
                        "callguard top needs a terminal; for scripts, `callguard stats --json` every second"
                    );
                }
                top::run(&self.client()?, (*every).max(Duration::from_millis(100))).await
            }
            Command::Events { follow, json } => {
                let client = self.client()?;
                let show = |r: &api::control::EventRecord| {
                    if *json { serde_json::to_string(r).unwrap_or_default() } else { event_line(r) }
                };
                if *follow {
                    client
                        .stream_lines("/v1/events?follow=true", |l| match serde_json::from_str(l) {
                            Ok(r) => println!("{}", show(&r)),
                            Err(_) => println!("{l}"),
                        })
                        .await
                } else {
                    let recent: Vec<api::control::EventRecord> = client.get("/v1/events").await?;
                    for r in &recent {
                        println!("{}", show(r));
                    }
                    if recent.is_empty() && !*json {
                        println!("no events yet (drops are sampled: see [events] sample)");
                    }
                    Ok(())
                }
            }
            Command::Completions { shell } => {
                use clap::CommandFactory as _;
                clap_complete::generate(*shell, &mut Self::command(), "callguard", &mut std::io::stdout());
                Ok(())
            }
            Command::Man { dir } => {
                use clap::CommandFactory as _;
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                clap_mangen::generate_to(Self::command(), dir)
                    .with_context(|| format!("writing into {}", dir.display()))?;
                let n = std::fs::read_dir(dir)?
                    .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1")))
                    .count();
                println!("{n} man pages in {}", dir.display());
                Ok(())
            }
            Command::Config(ConfigCommand::Default) => {
                print!("{}", toml::to_string_pretty(&Config::default())?);
                Ok(())
            }
            Command::Config(ConfigCommand::Check) => {
                let cfg = self.file_config()?;
                daemon::check_config(&cfg)?;
                print!("{}", toml::to_string_pretty(&cfg.redacted())?);
                Ok(())
            }
        }
    }

    async fn sig(&self, cmd: &SigCommand) -> anyhow::Result<()> {
        let client = self.client()?;
        match cmd {
            SigCommand::List { json } => {
                let rows: Vec<api::control::SigRow> = client.get("/v1/sigs").await?;
                if *json {
                    return print_json(&rows);
                }
                println!("{}", sig_table(&rows));
                println!("{} signature{}", rows.len(), if rows.len() == 1 { "" } else { "s" });
            }
            SigCommand::Add { field, text, matches, dry_run, comment } => {
                let req = api::control::AddSig {
                    field: *field,
                    matches: *matches,
                    text: text.clone(),
                    mode: if *dry_run { SigMode::DryRun } else { SigMode::Enforce },
                    comment: comment.clone(),
                };
                let r: api::control::SigRow = client.post("/v1/sigs", &req).await?;
                println!(
                    "signature {}: {} {} `{}` ({})",
                    r.sig.id,
                    r.sig.sig.field.name(),
                    r.sig.sig.matches.name(),
                    r.sig.sig.text,
                    r.sig.sig.mode.name()
                );
            }
            SigCommand::Del { ids } => {
                let r: api::control::Removed =
                    client.post("/v1/sigs/delete", &api::control::DelSigs { ids: ids.clone() }).await?;
                println!("removed {} signature{}", r.count, if r.count == 1 { "" } else { "s" });
            }
            SigCommand::Mode { id, mode } => {
                let r: api::control::SigRow =
                    client.post("/v1/sigs/mode", &api::control::SetSigMode { id: *id, mode: *mode }).await?;
                println!("signature {}: {}", r.sig.id, r.sig.sig.mode.name());
            }
        }
        Ok(())
    }

    async fn net(&self, cmd: &NetCommand) -> anyhow::Result<()> {
        let client = self.client()?;
        match cmd {
            NetCommand::Allow(add) | NetCommand::Deny(add) => {
                let action =
                    if matches!(cmd, NetCommand::Allow(_)) { NetAction::Allow } else { NetAction::Deny };
                if let Some(code) = &add.country {
                    if add.opts.expires.is_some() || add.opts.profile.is_some() {
                        anyhow::bail!("a country rule has no --expires and no --profile");
                    }
                    let req = api::control::SetCountry {
                        code: code.clone(),
                        action,
                        scope: add.opts.scope,
                        comment: add.opts.comment.clone(),
                    };
                    let v: api::control::CountryView = client.post("/v1/nets/countries", &req).await?;
                    println!("{} country {}: {} networks", v.rule.action, v.rule.code, v.networks);
                    return Ok(());
                }
                let req = api::control::AddNets {
                    rules: vec![api::control::NetSpec {
                        cidr: add.cidr.clone().unwrap_or_default(),
                        action,
                        scope: add.opts.scope,
                        profile: add.opts.profile,
                        expires_at: add.opts.expires,
                        comment: add.opts.comment.clone(),
                    }],
                    import: false,
                };
                let r: api::control::Added = client.post("/v1/nets", &req).await?;
                for rule in &r.rules {
                    println!("{} {} (rule {}){}", rule.action, rule.cidr, rule.id, expiry_note(rule));
                }
                Ok(())
            }
            NetCommand::Del { country: Some(code), .. } => {
                let path = format!(
                    "/v1/nets/countries/{}",
                    form_urlencoded::byte_serialize(code.as_bytes()).collect::<String>()
                );
                let body = client.send(hyper::Method::DELETE, &path, None::<&()>).await?;
                let r: api::control::Removed = serde_json::from_slice(&body)?;
                println!(
                    "removed the country rule of {} and its {} networks",
                    code.to_ascii_uppercase(),
                    r.count
                );
                Ok(())
            }
            NetCommand::Del { cidr, contains, all, allowed, country: None } => {
                let req = api::control::DelNets {
                    cidr: cidr.clone(),
                    contains: contains.clone(),
                    all: *all,
                    allowed: *allowed,
                };
                let r: api::control::Removed = client.post("/v1/nets/delete", &req).await?;
                println!("removed {} rule{}", r.count, if r.count == 1 { "" } else { "s" });
                Ok(())
            }
            NetCommand::Check { ip, json } => {
                let c: api::control::Check = client.get(&format!("/v1/nets/check?ip={ip}")).await?;
                if *json {
                    return print_json(&c);
                }
                match &c.rule {
                    Some(r) => println!(
                        "{ip}: {} by {} (rule {}, {}{}){}",
                        c.verdict,
                        r.cidr,
                        r.id,
                        r.list.as_ref().map_or_else(
                            || r.origin.as_str().to_owned(),
                            |l| format!("{} {}", r.origin.as_str(), l.trim_start_matches("country:"))
                        ),
                        if r.action == NetAction::Deny {
                            format!(", scope {}", r.scope.as_str())
                        } else {
                            format!(", profile {}", r.profile.as_str())
                        },
                        expiry_note(r)
                    ),
                    None => println!("{ip}: no rule matches (guarded traffic is inspected, the rest passes)"),
                }
                Ok(())
            }
            NetCommand::List { allowed, contains, json } => {
                let mut q = Vec::new();
                if let Some(a) = allowed {
                    q.push(format!("allowed={a}"));
                }
                if let Some(c) = contains {
                    q.push(format!("contains={c}"));
                }
                let rules: Vec<NetRule> = client.get(&format!("/v1/nets?{}", q.join("&"))).await?;
                if *json {
                    return print_json(&rules);
                }
                let mut t =
                    table(&["id", "action", "network", "scope/profile", "expires", "origin", "comment"]);
                for r in &rules {
                    t.add_row(vec![
                        r.id.to_string(),
                        r.action.to_string(),
                        r.cidr.to_string(),
                        if r.action == NetAction::Deny { r.scope.as_str() } else { r.profile.as_str() }
                            .into(),
                        r.expires_at
                            .map_or("never".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                        r.origin.as_str().into(),
                        r.comment.clone(),
                    ]);
                }
                println!("{t}");
                println!("{} rule{}", rules.len(), if rules.len() == 1 { "" } else { "s" });
                let countries: Vec<api::control::CountryView> = client.get("/v1/nets/countries").await?;
                if !countries.is_empty() {
                    let mut t = table(&["country", "action", "scope", "networks", "comment"]);
                    for c in &countries {
                        t.add_row(vec![
                            c.rule.code.clone(),
                            c.rule.action.to_string(),
                            c.rule.scope.as_str().into(),
                            c.networks.to_string(),
                            c.rule.comment.clone(),
                        ]);
                    }
                    println!("country rules (their networks are the rules of origin country above):\n{t}");
                }
                Ok(())
            }
            NetCommand::Import { file, action, opts } => import_file(&client, file, action, opts).await,
        }
    }
}

async fn import_file(client: &Client, file: &Path, action: &str, opts: &RuleOpts) -> anyhow::Result<()> {
    let action = NetAction::parse(action).unwrap_or(NetAction::Deny);
    let (nets, name) = if file == Path::new("-") {
        (import::parse(std::io::stdin().lock(), |_| {})?, "standard input".to_owned())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = ProgressBar::new(size).with_style(
            ProgressStyle::with_template("reading {bytes}/{total_bytes} [{bar:30}] {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let nets = import::parse(BufReader::new(f), |n| bar.set_position(n))
            .with_context(|| format!("{}: nothing was imported", file.display()))?;
        bar.finish_and_clear();
        (nets, file.display().to_string())
    };
    if nets.is_empty() {
        bail!("{name} holds no address or prefix; nothing was imported");
    }
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "applying {} {} rules (store and kernel, all or nothing)",
        nets.len(),
        action
    ));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let req = api::control::AddNets {
        rules: nets
            .iter()
            .map(|n| api::control::NetSpec {
                cidr: n.to_string(),
                action,
                scope: opts.scope,
                profile: opts.profile,
                expires_at: opts.expires,
                comment: opts.comment.clone(),
            })
            .collect(),
        import: true,
    };
    let r: api::control::Added = client.post("/v1/nets", &req).await?;
    spinner.finish_and_clear();
    println!("imported {} {} rules from {name} in {} ms", r.count, action, r.applied_ms);
    Ok(())
}

/// The whole program: logging, argument parsing, the command. Shared by the `callguard` binary
/// and the test harness's copy of it.
pub fn main() -> std::process::ExitCode {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CALLGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal only: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callguard: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli.execute()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callguard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
