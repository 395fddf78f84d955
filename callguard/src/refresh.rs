//! The lists' refreshers. One task per `[[feeds]]` entry fetches its document on the feed's
//! interval, reads it, and hands the networks to the service, which replaces the feed's rules;
//! another reads the country database again when its file changes and replaces the networks of
//! every country rule.
//! A refresh that fails (the source is down, slow, huge or sends something else) changes
//! nothing: the feed keeps its last good copy, in the store and the maps, across restarts too,
//! and is tried again sooner. Progress of a large refresh is logged and shown in its status.

use std::time::Duration;

use chrono::Utc;

use crate::{
    feeds::Feed,
    service::lists::List,
    web::state::{Shared, lock},
};

/// A refresh of at least this many networks logs its progress.
const LARGE: usize = 10_000;

/// The running refreshers; dropping them stops them.
#[derive(Debug, Default)]
pub struct Refreshers {
    feeds: Vec<Feed>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Refreshers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Refreshers {
    /// Runs a refresher for each of `feeds`, replacing those running for another set (a
    /// reload); when the set is the same, nothing is restarted (and nothing fetched again).
    pub fn configure(&mut self, s: &Shared, feeds: &[Feed]) {
        if self.feeds == feeds && !self.tasks.is_empty() {
            return;
        }
        *self = Self::default();
        let board = &s.web.feeds;
        board.retain(&feeds.iter().map(|f| f.name.as_str()).collect::<Vec<_>>());
        let service = lock(s);
        for f in feeds {
            let rules = service.list_rules(&f.name);
            // A feed kept across a reload keeps its history.
            let old = board.get(&f.name).unwrap_or_default();
            board.insert(crate::feeds::FeedStatus {
                name: f.name.clone(),
                source: f.source(),
                state: "waiting".into(),
                rules,
                ..old
            });
        }
        drop(service);
        self.feeds = feeds.to_vec();
        self.tasks = feeds.iter().map(|f| tokio::spawn(run(s.clone(), f.clone()))).collect();
    }
}

/// Keeps a refresher running for each feed of the configuration in force, until aborted.
pub async fn supervise(s: Shared) {
    let mut running = Refreshers::default();
    loop {
        let feeds = lock(&s).cfg().feeds.clone();
        running.configure(&s, &feeds);
        s.web.reloaded.notified().await;
    }
}

async fn run(s: Shared, feed: Feed) {
    let bell = s.web.feeds.bell(&feed.name);
    loop {
        let upto = s.web.feeds.asked(&feed.name);
        let applied = refresh(&s, &feed).await;
        s.web.feeds.answer(&feed.name, upto);
        let wait = if applied { Duration::from_secs(feed.interval_secs) } else { feed.retry() };
        s.web.feeds.update(&feed.name, |st| st.state = "waiting".into());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = bell.notified() => {}
        }
    }
}

/// One refresh; whether it was applied.
pub async fn refresh(s: &Shared, feed: &Feed) -> bool {
    let board = &s.web.feeds;
    let name = feed.name.clone();
    board.update(&name, |st| st.state = "fetching".into());
    let f = feed.clone();
    let parsed = match off_runtime(move || f.fetch().and_then(|doc| f.parse(&doc))).await {
        Ok(p) => p,
        Err(why) => return failed(s, feed, why),
    };
    let total = parsed.nets.len();
    if total >= LARGE {
        tracing::info!(feed = %name, networks = total, "applying a large feed");
    }
    let (s2, f) = (s.clone(), feed.clone());
    let nets = parsed.nets;
    let applied = off_runtime(move || {
        let board = &s2.web.feeds;
        let mut tenth = 0;
        let mut st = lock(&s2);
        // A reload may have changed or dropped the feed while it was being fetched: then this
        // document is not the feed's any more.
        if !st.cfg().feeds.contains(&f) {
            return Err(crate::service::ServiceError::Conflict("the feed changed in a reload".into()));
        }
        let applied = st.replace_list(&List::feed(&f), &nets, &mut |done, all| {
            board.update(&f.name, |st| st.state = format!("applying {done} of {all}"));
            if all >= LARGE && done * 10 / all > tenth {
                tenth = done * 10 / all;
                tracing::info!(feed = %f.name, done, of = all, "applying");
            }
        });
        // Allow rules are what the slow path decides calls by: put the new ones in force.
        if applied.is_ok()
            && f.action == crate::net::NetAction::Allow
            && let Err(e) = st.refresh_calls()
        {
            tracing::error!("rebuilding the call checks after feed {}: {e:#}", f.name);
        }
        applied
    })
    .await;
    match applied {
        Ok(a) => {
            tracing::info!(
                feed = %name, rules = a.rules, added = a.added, removed = a.removed,
                held_by_others = a.held_by_others, bad_entries = parsed.bad, "feed refreshed"
            );
            board.update(&name, |st| {
                st.rules = a.rules;
                st.held_by_others = a.held_by_others;
                st.bad_entries = parsed.bad;
                st.last_success = Some(Utc::now());
                st.last_attempt = st.last_success;
                st.last_error = None;
                st.refreshes += 1;
            });
            true
        }
        Err(e) => failed(s, feed, format!("applying: {e}")),
    }
}

/// Runs `f` on a blocking thread (a fetch, a parse, a write of many rules must not hold up the
/// runtime); its error, or the task's own failure, as a message.
async fn off_runtime<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the task stopped: {e}")),
    }
}

fn failed(s: &Shared, feed: &Feed, why: String) -> bool {
    tracing::warn!(feed = %feed.name, "refresh refused, keeping the last good copy: {why}");
    s.web.feeds.update(&feed.name, |st| {
        st.last_attempt = Some(Utc::now());
        st.last_error = Some(why);
        st.failures += 1;
    });
    false
}

/// Reads the country database (`[geoip] database`) again whenever its file changes (size or
/// modification time, checked every `geoip.check_secs`), and at start, and replaces the networks
/// of every country rule. A file that cannot be read changes nothing: the rules keep their
/// networks, and it is tried again at the next check. Until aborted.
pub async fn watch_countries(s: Shared) {
    let mut seen = None;
    loop {
        let (path, every) = {
            let st = lock(&s);
            (st.cfg().geoip.database.clone(), st.cfg().geoip.check_secs)
        };
        if !path.as_os_str().is_empty() {
            let stamp = std::fs::metadata(&path).map(|m| (m.len(), m.modified().ok()));
            match stamp {
                Ok(stamp) if seen != Some(stamp) => {
                    if reread_countries(&s, path).await {
                        seen = Some(stamp);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    "the country database {}: {e}; country rules keep their networks",
                    path.display()
                ),
            }
        }
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
    }
}

/// Reads the countries of every country rule from `path` and applies them; whether it could.
async fn reread_countries(s: &Shared, path: std::path::PathBuf) -> bool {
    let codes: std::collections::BTreeSet<String> = match lock(s).country_rules() {
        Ok(rules) => rules.into_iter().map(|v| v.rule.code).collect(),
        Err(e) => {
            tracing::error!("reading the country rules: {e}");
            return false;
        }
    };
    if codes.is_empty() {
        return true;
    }
    let shown = path.display().to_string();
    let by_code = match off_runtime(move || crate::geo::networks(&path, &codes)).await {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!("{why}; country rules keep their networks");
            return false;
        }
    };
    let s2 = s.clone();
    match off_runtime(move || lock(&s2).refresh_countries(&by_code)).await {
        Ok(done) => {
            for (code, a) in done {
                tracing::info!(database = %shown, country = %code, networks = a.rules, added = a.added, removed = a.removed, "country rule follows the database");
            }
            true
        }
        Err(e) => {
            tracing::error!("applying the country database: {e}; country rules keep their networks");
            false
        }
    }
}
