//! The durable rule store.
//!
//! [`Store`] is the one interface the daemon writes through; [`SqliteStore`] is the embedded
//! back end (one file, WAL, `synchronous = FULL`: a write the daemon acknowledged survives
//! `kill -9` and power loss). Every multi-rule change is one transaction: all of it or none.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::rules::{Kind, NetRule, NewNetRule, Origin, Scope};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// A stored row could not be read back (a corrupt or foreign database).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// What the daemon needs from a rule store.
pub trait Store: Send + std::fmt::Debug {
    /// Every network rule, expired ones included, ordered by id.
    fn nets(&self) -> Result<Vec<NetRule>, StoreError>;
    /// Adds rules, or updates the rule with the same network and action. One transaction: a
    /// conflict anywhere stores nothing. Returns the stored rules in input order.
    fn upsert_nets(&mut self, rules: &[NewNetRule]) -> Result<Vec<NetRule>, StoreError>;
    /// Deletes rules by id; returns how many existed.
    fn delete_nets(&mut self, ids: &[u32]) -> Result<usize, StoreError>;
    /// Makes the `config` rules exactly `rules` (one transaction).
    fn replace_config_nets(&mut self, rules: &[NewNetRule]) -> Result<(), StoreError>;
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE net_rules (
        -- AUTOINCREMENT: ids are never reused, so kernel counters never mix two rules.
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cidr TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
        scope TEXT NOT NULL CHECK (scope IN ('sip', 'all')),
        expires_at TEXT,
        comment TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (cidr, action)
    );"];

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating when absent) the database and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory store (tests).
    pub fn memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let done: usize = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = self.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn row_to_rule(r: &rusqlite::Row<'_>) -> Result<Result<NetRule, StoreError>, rusqlite::Error> {
    let corrupt = |detail: String| Err(StoreError::Corrupt { table: "net_rules", detail });
    let id: u32 = r.get(0)?;
    let cidr: String = r.get(1)?;
    let action: String = r.get(2)?;
    let scope: String = r.get(3)?;
    let expires: Option<String> = r.get(4)?;
    let comment: String = r.get(5)?;
    let origin: String = r.get(6)?;
    let created: String = r.get(7)?;
    let Ok(cidr) = cidr.parse() else {
        return Ok(corrupt(format!("id {id}: cidr {cidr}")));
    };
    let (Some(action), Some(scope), Some(origin)) =
        (Kind::parse(&action), Scope::parse(&scope), Origin::parse(&origin))
    else {
        return Ok(corrupt(format!("id {id}: action/scope/origin")));
    };
    let parse_t = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    let expires_at = match expires.as_deref().map(parse_t) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return Ok(corrupt(format!("id {id}: expires_at"))),
    };
    let Ok(created_at) = parse_t(&created) else {
        return Ok(corrupt(format!("id {id}: created_at")));
    };
    Ok(Ok(NetRule { id, cidr, action, scope, expires_at, comment, origin, created_at }))
}

const SELECT: &str = "SELECT id, cidr, action, scope, expires_at, comment, origin, created_at FROM net_rules";

/// Inserts or updates one rule inside an open transaction. A rule set by the configuration file
/// is only replaced by the configuration file.
fn upsert_one(tx: &rusqlite::Transaction<'_>, r: &NewNetRule, now: &str) -> Result<NetRule, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO net_rules (cidr, action, scope, expires_at, comment, origin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (cidr, action) DO UPDATE SET
           scope = excluded.scope, expires_at = excluded.expires_at,
           comment = excluded.comment, origin = excluded.origin
         WHERE net_rules.origin != 'config' OR excluded.origin = 'config'
         RETURNING id, cidr, action, scope, expires_at, comment, origin, created_at",
    )?;
    let row = stmt
        .query_row(
            params![
                r.cidr.to_string(),
                r.action.as_str(),
                r.scope.as_str(),
                ts(r.expires_at),
                r.comment,
                r.origin.as_str(),
                now
            ],
            row_to_rule,
        )
        .optional()?;
    match row {
        Some(rule) => rule,
        None => Err(StoreError::Conflict(format!(
            "{} {} is set in the configuration file; change it there",
            r.action, r.cidr
        ))),
    }
}

impl Store for SqliteStore {
    fn nets(&self) -> Result<Vec<NetRule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("{SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_rule)?;
        rows.map(|r| r?).collect()
    }

    fn upsert_nets(&mut self, rules: &[NewNetRule]) -> Result<Vec<NetRule>, StoreError> {
        let now = ts(Some(Utc::now())).unwrap_or_default();
        let tx = self.conn.transaction()?;
        let out = rules.iter().map(|r| upsert_one(&tx, r, &now)).collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(out)
    }

    fn delete_nets(&mut self, ids: &[u32]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM net_rules WHERE id = ?1")?;
            for id in ids {
                n += stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn replace_config_nets(&mut self, rules: &[NewNetRule]) -> Result<(), StoreError> {
        let now = ts(Some(Utc::now())).unwrap_or_default();
        let tx = self.conn.transaction()?;
        let mut keep = Vec::with_capacity(rules.len());
        for r in rules {
            keep.push(upsert_one(&tx, r, &now)?.id);
        }
        let stale: Vec<u32> = {
            let mut stmt = tx.prepare("SELECT id FROM net_rules WHERE origin = 'config'")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<u32>, _>>()?
                .into_iter()
                .filter(|id| !keep.contains(id))
                .collect()
        };
        for id in stale {
            tx.execute("DELETE FROM net_rules WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(cidr: &str, action: Kind, origin: Origin) -> NewNetRule {
        NewNetRule {
            cidr: cidr.parse().unwrap(),
            action,
            scope: Scope::Sip,
            expires_at: None,
            comment: "c".into(),
            origin,
        }
    }

    #[test]
    fn upsert_keeps_id_and_updates_fields() {
        let mut s = SqliteStore::memory().unwrap();
        let a = s.upsert_nets(&[new("198.18.0.0/24", Kind::Deny, Origin::Manual)]).unwrap();
        let mut again = new("198.18.0.0/24", Kind::Deny, Origin::Manual);
        again.scope = Scope::All;
        let b = s.upsert_nets(&[again]).unwrap();
        assert_eq!(a[0].id, b[0].id);
        assert_eq!(b[0].scope, Scope::All);
        let c = s.upsert_nets(&[new("198.18.0.0/24", Kind::Allow, Origin::Manual)]).unwrap();
        assert_ne!(c[0].id, a[0].id);
        assert_eq!(s.nets().unwrap().len(), 2);
    }

    #[test]
    fn a_conflict_stores_nothing() {
        let mut s = SqliteStore::memory().unwrap();
        s.replace_config_nets(&[new("198.18.1.0/24", Kind::Deny, Origin::Config)]).unwrap();
        let err = s
            .upsert_nets(&[
                new("198.18.2.0/24", Kind::Deny, Origin::Import),
                new("198.18.1.0/24", Kind::Deny, Origin::Import),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("configuration file"), "{err}");
        let nets = s.nets().unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].origin, Origin::Config);
    }

    #[test]
    fn replace_config_removes_only_stale_config_rules() {
        let mut s = SqliteStore::memory().unwrap();
        s.upsert_nets(&[new("198.18.9.0/24", Kind::Allow, Origin::Manual)]).unwrap();
        s.replace_config_nets(&[
            new("198.18.1.0/24", Kind::Deny, Origin::Config),
            new("198.18.2.0/24", Kind::Deny, Origin::Config),
        ])
        .unwrap();
        s.replace_config_nets(&[new("198.18.2.0/24", Kind::Deny, Origin::Config)]).unwrap();
        let cidrs: Vec<String> = s.nets().unwrap().iter().map(|r| r.cidr.to_string()).collect();
        assert_eq!(cidrs, ["198.18.9.0/24", "198.18.2.0/24"]);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut s = SqliteStore::memory().unwrap();
        let a = s.upsert_nets(&[new("198.18.0.0/24", Kind::Deny, Origin::Manual)]).unwrap();
        s.delete_nets(&[a[0].id]).unwrap();
        let b = s.upsert_nets(&[new("198.18.0.0/24", Kind::Deny, Origin::Manual)]).unwrap();
        assert!(b[0].id > a[0].id);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.db");
        let id = {
            let mut s = SqliteStore::open(&path).unwrap();
            s.upsert_nets(&[new("2001:db8::/32", Kind::Deny, Origin::Manual)]).unwrap()[0].id
        };
        let s = SqliteStore::open(&path).unwrap();
        let nets = s.nets().unwrap();
        assert_eq!((nets[0].id, nets[0].cidr.to_string()), (id, "2001:db8::/32".to_string()));
    }
}
