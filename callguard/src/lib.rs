//! callguard: a SIP security filter. The XDP program (`callguard-ebpf`) drops hostile packets at
//! the NIC; this crate is everything else: the rule model and its store, the kernel loader, the
//! slow path, the rule service, the HTTP API, the daemon and the CLI.
//!
//! # The house map
//!
//! One concept, one home. Layers are numbered from the bottom: a module imports only modules of
//! its own layer or below (`layers_only_look_down` checks it against this table, and
//! `scripts/module-cycles` checks that no two modules import each other through any chain).
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | 0 | [`clock`] | `CLOCK_BOOTTIME`, the kernel's clock, and its mapping to wall-clock time |
//! | 0 | [`net`] | network rules (allow/deny, scope, origin, expiry) and how they compile into kernel entries |
//! | 0 | [`sig`] | scanner signatures and their compilation into the kernel's automata |
//! | 0 | [`numbers`] | blacklisted numbers, disallowed prefixes, country codes |
//! | 0 | [`border`] | border rules (the border-rules seed) |
//! | 0 | [`accounts`] | tenants, groups, users, roles and rights, sessions, keys, authorization codes, passwords |
//! | 0 | [`feeds`] | blocklist feeds: their settings, formats, fetching and status |
//! | 0 | [`geo`] | country rules, and the networks a MaxMind-format database places in a country |
//! | 0 | [`config`] | the TOML configuration file, its sections and errors |
//! | 0 | [`sso`] | social sign-in over OpenID Connect: a tenant's provider settings, the relying party's flow |
//! | 0 | [`throttle`] | failures counted per source and subject in sliding windows: sign-ins, reset tokens, authorization codes |
//! | 1 | [`store`] | the durable store (SQLite): one trait, its migrations and queries |
//! | 1 | [`kernel`] | the embedded XDP object, pins and links, typed maps; the [`kernel::datapath::Datapath`] boundary and its fake |
//! | 1 | [`events`] | kernel events (drop samples, bans) and decided calls: records, the hub, the ring reader |
//! | 1 | [`calls`] | the slow path: the daemon's SIP parser, the number-level policy, the hand-up thread |
//! | 2 | [`api`] | the wire types of every route, shared by the server and the CLI |
//! | 2 | [`alerts`] | bans and fraud refusals told as they happen: a webhook and a command |
//! | 3 | [`service`] | the rule service: every rule and account change, store then kernel; typed errors, no HTTP |
//! | 4 | [`web`] | the HTTP layer: routes, extractors, authentication, the one mapping of errors to statuses |
//! | 5 | [`metrics`] | Prometheus metrics: what the daemon counts, encoded at each scrape |
//! | 5 | [`refresh`] | the feeds' refreshers: fetch, read, apply through the service, keep the last good copy |
//! | 5 | [`daemon`] | process wiring: start, serve, read events, sweep, reload, stop |
//! | 6 | [`cli`] | the command line: `callguard run` and every command that talks to the daemon |
//!
//! Two more rules: the CLI and the server meet only in [`api`] (the CLI imports [`daemon`] only
//! to run, detach and check a configuration), and nothing but [`cli`] prints for people.

pub mod accounts;
pub mod alerts;
pub mod api;
pub mod border;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod events;
pub mod feeds;
pub mod geo;
pub mod kernel;
pub mod metrics;
pub mod net;
pub mod numbers;
pub mod refresh;
pub mod service;
pub mod sig;
pub mod sso;
pub mod store;
pub mod throttle;
pub mod web;

#[cfg(test)]
mod layers {
    use std::{collections::BTreeMap, path::Path};

    /// The house map's table: module → layer.
    fn table() -> BTreeMap<String, u32> {
        include_str!("lib.rs")
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.strip_prefix("//! |")?.split('|').map(str::trim).collect();
                let layer = cells.first()?.parse().ok()?;
                let module = cells.get(1)?.strip_prefix("[`")?.split('`').next()?;
                Some((module.to_owned(), layer))
            })
            .collect()
    }

    /// Every `crate::module` a file names (in `use` lists and in paths), module by module.
    fn imports(text: &str) -> Vec<String> {
        let text: String =
            text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        let mut out = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                // `use crate::{a::X, b, c::{…}}`: the first segment of each top-level item.
                let mut depth = 0;
                let mut item = String::new();
                for ch in list.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push(std::mem::take(&mut item));
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 && ch != '}' {
                        item.push(ch);
                    }
                }
                out.push(item);
            } else {
                out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        out.into_iter()
            .map(|s| s.trim().split("::").next().unwrap_or_default().trim().to_owned())
            .filter(|s| !s.is_empty() && s != "self")
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("callguard/src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// No module imports one of a higher layer than its own, and every module has a layer.
    #[test]
    fn layers_only_look_down() {
        let layers = table();
        assert!(layers.len() >= 16, "the house map lists every module: {layers:?}");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut upward = Vec::new();
        for file in all {
            let rel = file.strip_prefix(&src).expect("under src");
            let top = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
            let module = top.trim_end_matches(".rs");
            if matches!(module, "lib" | "main") {
                continue;
            }
            let Some(&mine) = layers.get(module) else {
                panic!(
                    "src/{} belongs to module `{module}`, which the house map in lib.rs does not list",
                    rel.display()
                )
            };
            let text = std::fs::read_to_string(&file).expect("source");
            for target in imports(&text) {
                let Some(&theirs) = layers.get(&target) else {
                    panic!("src/{} imports crate::{target}, which the house map does not list", rel.display())
                };
                if theirs > mine {
                    upward.push(format!(
                        "src/{} (layer {mine}) imports crate::{target} (layer {theirs})",
                        rel.display()
                    ));
                }
            }
        }
        assert!(upward.is_empty(), "imports that look up:\n{}", upward.join("\n"));
    }

    /// The check itself sees an upward import, in every form a file can write one.
    #[test]
    fn the_layer_check_sees_every_form_of_import() {
        let text = "use crate::{\n    api::control::{A, B},\n    web,\n};\nfn f() { crate::daemon::run(); }\n// crate::cli in a comment\n";
        assert_eq!(imports(text), ["api", "web", "daemon"]);
    }
}
