//! The durable store of the whole rule model and of the accounts.
//!
//! [`Store`] is the one interface the daemon writes through (with its parts [`CallRuleStore`]
//! and [`AccountStore`]); [`SqliteStore`] is the embedded back end (one file, WAL,
//! `synchronous = FULL`: a write the daemon acknowledged survives `kill -9` and power loss).
//! Every multi-row change is one transaction: all of it or none. Another back end (PostgreSQL
//! for a fleet) implements the same traits with the same schema and passes the same tests.

mod accounts;
mod calls;

pub use accounts::{AccountStore, NewUser, SessionTokens};
pub use calls::CallRuleStore;

use std::{collections::HashMap, path::Path};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::{
    geo::CountryRule,
    net::{NetAction, NetRule, NewNetRule, Origin, Profile, Scope},
    sig::{self, NewSignature, SigMode, Signature},
};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database: {0}")]
    Db(rusqlite::Error),
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

/// Database failures since the process started, every [`StoreError::Db`] made: what the
/// daemon's metrics report as `callguard_store_errors_total` (a disk full, a locked or corrupt
/// file). Process-wide, as the failures of the one database file are.
static DB_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`DB_FAILURES`].
pub fn db_failures() -> u64 {
    DB_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        DB_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::Db(e)
    }
}

/// What [`Store::replace_list_nets`] did.
#[derive(Debug, Default)]
pub struct ListNets {
    /// The list's rules now, new and kept.
    pub rules: Vec<NetRule>,
    /// Networks left out because another rule holds them.
    pub held_by_others: usize,
    /// The list's rules removed (no longer in it).
    pub removed: Vec<NetRule>,
}

/// What the daemon needs from a rule store.
pub trait Store: CallRuleStore + AccountStore + Send + std::fmt::Debug {
    /// Every network rule, expired ones included, ordered by id.
    fn nets(&self) -> Result<Vec<NetRule>, StoreError>;
    /// Adds rules, or updates the rule with the same network and action. One transaction: a
    /// conflict anywhere stores nothing. Returns the stored rules in input order.
    fn upsert_nets(&mut self, rules: &[NewNetRule]) -> Result<Vec<NetRule>, StoreError>;
    /// Deletes rules by id; returns how many existed.
    fn delete_nets(&mut self, ids: &[u32]) -> Result<usize, StoreError>;
    /// In one transaction: deletes the rules `remove` and writes `restore` back exactly as they
    /// were, ids included (undoes a change the kernel refused).
    fn revert_nets(&mut self, remove: &[u32], restore: &[NetRule]) -> Result<(), StoreError>;
    /// Makes the `config` rules exactly `rules` (one transaction).
    fn replace_config_nets(&mut self, rules: &[NewNetRule]) -> Result<(), StoreError>;
    /// Makes the rules of list `list` (a feed, a country: their `list` and `origin`) exactly
    /// `rules`, in one transaction, leaving every other rule alone: a network and action another
    /// rule already holds (an operator's, the configuration file's, a ban, another list's) stays
    /// that rule's and is left out.
    fn replace_list_nets(&mut self, list: &str, rules: &[NewNetRule]) -> Result<ListNets, StoreError>;
    /// Every country rule, by code.
    fn country_rules(&self) -> Result<Vec<CountryRule>, StoreError>;
    /// Adds a country rule, or replaces the one for the same country.
    fn put_country_rule(&mut self, rule: &CountryRule) -> Result<(), StoreError>;
    /// Deletes the country rule of `code`; whether there was one.
    fn delete_country_rule(&mut self, code: &str) -> Result<bool, StoreError>;
    /// Every scanner signature, ordered by id.
    fn sigs(&self) -> Result<Vec<Signature>, StoreError>;
    /// Adds signatures, each with the lowest free counter slot. One transaction: a duplicate
    /// (same field, match and text, ignoring case) or running out of slots stores nothing.
    fn add_sigs(&mut self, sigs: &[NewSignature], origin: &str) -> Result<Vec<Signature>, StoreError>;
    /// Deletes signatures by id; returns how many existed.
    fn delete_sigs(&mut self, ids: &[u32]) -> Result<usize, StoreError>;
    /// Sets a signature's mode; `None` when there is no such signature.
    fn set_sig_mode(&mut self, id: u32, mode: SigMode) -> Result<Option<Signature>, StoreError>;
    /// A number that changes whenever a rule the slow path decides with changes (codes,
    /// numbers, countries, border rules, authorization codes, users, tenants), whoever wrote it:
    /// kept by triggers in the database, so no write path can forget it.
    fn calls_generation(&self) -> Result<u64, StoreError>;
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: network rules.
    "CREATE TABLE net_rules (
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
    );",
    // 2: scanner signatures (the default set is added by `seed`).
    "CREATE TABLE signatures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        field TEXT NOT NULL CHECK (field IN ('user-agent', 'from-to')),
        match_kind TEXT NOT NULL CHECK (match_kind IN ('prefix', 'contains')),
        text TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('enforce', 'dry-run')),
        -- The kernel counter slot: unique among live signatures, reused after a delete.
        slot INTEGER NOT NULL UNIQUE,
        comment TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (field, match_kind, text COLLATE NOCASE)
    );",
    // 3: disallowed codes, blacklisted numbers, allowed country codes, border rules.
    calls::MIGRATION,
    // 4: tenants, groups, roles, users, sessions, resets, API keys, authorization codes.
    accounts::MIGRATION,
    // 5: the generation of the rules the slow path decides with (see `Store::calls_generation`).
    "CREATE TABLE calls_generation (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
     INSERT INTO calls_generation VALUES (1, 0);
     CREATE TRIGGER cg_dc_i AFTER INSERT ON disallowed_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_dc_u AFTER UPDATE ON disallowed_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_dc_d AFTER DELETE ON disallowed_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_bn_i AFTER INSERT ON blacklisted_numbers BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_bn_u AFTER UPDATE ON blacklisted_numbers BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_bn_d AFTER DELETE ON blacklisted_numbers BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_cc_i AFTER INSERT ON allowed_country_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_cc_d AFTER DELETE ON allowed_country_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_br_i AFTER INSERT ON border_rules BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_br_u AFTER UPDATE ON border_rules BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_br_d AFTER DELETE ON border_rules BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_ac_i AFTER INSERT ON auth_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_ac_d AFTER DELETE ON auth_codes BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_us_i AFTER INSERT ON users BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_us_u AFTER UPDATE OF username, tenant_id ON users BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_us_d AFTER DELETE ON users BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_te_i AFTER INSERT ON tenants BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_te_u AFTER UPDATE ON tenants BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_te_d AFTER DELETE ON tenants BEGIN UPDATE calls_generation SET n = n + 1; END;",
    // 6: refresh tokens already exchanged (reuse ends the session).
    accounts::MIGRATION_SPENT_REFRESH,
    // 7: the right to dial international numbers; roles and users' roles decide calls.
    accounts::MIGRATION_CALL_RIGHTS,
    // 8: call profiles of allow rules, which the slow path decides with.
    "ALTER TABLE net_rules ADD COLUMN profile TEXT NOT NULL DEFAULT 'trusted'
         CHECK (profile IN ('trusted', 'trunk', 'phones'));
     CREATE TRIGGER cg_nr_i AFTER INSERT ON net_rules WHEN NEW.action = 'allow'
         BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_nr_u AFTER UPDATE ON net_rules WHEN NEW.action = 'allow' OR OLD.action = 'allow'
         BEGIN UPDATE calls_generation SET n = n + 1; END;
     CREATE TRIGGER cg_nr_d AFTER DELETE ON net_rules WHEN OLD.action = 'allow'
         BEGIN UPDATE calls_generation SET n = n + 1; END;",
    // 9: fraud thresholds written through the API, which win over the configuration file's.
    calls::MIGRATION_FRAUD,
    // 10: the list (a feed, a country) a generated rule belongs to.
    "ALTER TABLE net_rules ADD COLUMN list TEXT;
     CREATE INDEX net_rules_list ON net_rules (list) WHERE list IS NOT NULL;",
    // 11: country rules (their networks are net_rules of origin 'country').
    "CREATE TABLE country_rules (
        code TEXT PRIMARY KEY,
        action TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
        scope TEXT NOT NULL CHECK (scope IN ('sip', 'all')),
        comment TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );",
    // 12: uploaded files (tenants' avatars).
    accounts::MIGRATION_AVATARS,
    // 13: social sign-in: tenants' providers, users' bound identities.
    accounts::MIGRATION_SSO,
];

/// Data a migration adds besides its schema, by migration index.
fn seed(tx: &rusqlite::Transaction<'_>, migration: usize) -> Result<(), StoreError> {
    if migration == 1 {
        add_sigs_tx(tx, &sig::defaults(), "default")?;
    }
    Ok(())
}

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
            seed(&tx, i)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The one stored time form: RFC 3339, UTC, milliseconds (so text order is time order).
fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A constraint failure as a conflict: a unique key (`what` says which thing exists) or a
/// missing tenant or group; other errors unchanged.
fn conflict_on_unique(e: rusqlite::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::Conflict("it refers to a tenant or group that does not exist".into())
        }
        _ => e.into(),
    }
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
    let profile: String = r.get(8)?;
    let list: Option<String> = r.get(9)?;
    let Ok(cidr) = cidr.parse() else {
        return Ok(corrupt(format!("id {id}: cidr {cidr}")));
    };
    let (Some(action), Some(scope), Some(origin), Some(profile)) =
        (NetAction::parse(&action), Scope::parse(&scope), Origin::parse(&origin), Profile::parse(&profile))
    else {
        return Ok(corrupt(format!("id {id}: action/scope/origin/profile")));
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
    Ok(Ok(NetRule { id, cidr, action, scope, profile, expires_at, comment, origin, list, created_at }))
}

/// The columns of a network rule besides its id, in the order [`row_to_rule`] reads them after
/// the id and [`params_of`] writes them: one list for every statement.
macro_rules! rule_columns {
    () => {
        "cidr, action, scope, expires_at, comment, origin, created_at, profile, list"
    };
}

const SELECT: &str = concat!("SELECT id, ", rule_columns!(), " FROM net_rules");

/// Inserts or updates one rule inside an open transaction. A rule set by the configuration file
/// is only replaced by the configuration file; any other rule (a list's too) becomes the
/// writer's.
fn upsert_one(tx: &rusqlite::Transaction<'_>, r: &NewNetRule, now: &str) -> Result<NetRule, StoreError> {
    let mut stmt = tx.prepare_cached(concat!(
        "INSERT INTO net_rules (",
        rule_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (cidr, action) DO UPDATE SET
               scope = excluded.scope, expires_at = excluded.expires_at,
               comment = excluded.comment, origin = excluded.origin, profile = excluded.profile,
               list = excluded.list
             WHERE net_rules.origin != 'config' OR excluded.origin = 'config'
             RETURNING id, ",
        rule_columns!()
    ))?;
    let row = stmt.query_row(params_of(r, now), row_to_rule).optional()?;
    match row {
        Some(rule) => rule,
        None => Err(StoreError::Conflict(format!(
            "{} {} is set in the configuration file; change it there",
            r.action, r.cidr
        ))),
    }
}

/// The columns of [`upsert_one`]'s and `replace_list_nets`'s statements, in their order.
fn params_of<'a>(r: &'a NewNetRule, now: &'a str) -> impl rusqlite::Params + 'a {
    (
        r.cidr.to_string(),
        r.action.as_str(),
        r.scope.as_str(),
        ts(r.expires_at),
        r.comment.as_str(),
        r.origin.as_str(),
        now,
        r.profile.as_str(),
        r.list.as_deref(),
    )
}

const SIG_SELECT: &str =
    "SELECT id, field, match_kind, text, mode, slot, comment, origin, created_at FROM signatures";

fn row_to_sig(r: &rusqlite::Row<'_>) -> Result<Result<Signature, StoreError>, rusqlite::Error> {
    let id: u32 = r.get(0)?;
    let corrupt =
        |what: &str| Err(StoreError::Corrupt { table: "signatures", detail: format!("id {id}: {what}") });
    let (field, matches, mode): (String, String, String) = (r.get(1)?, r.get(2)?, r.get(4)?);
    let created: String = r.get(8)?;
    let (Some(field), Some(matches), Some(mode)) =
        (sig::SigField::parse(&field), sig::SigMatch::parse(&matches), SigMode::parse(&mode))
    else {
        return Ok(corrupt("field/match/mode"));
    };
    let Ok(created_at) = DateTime::parse_from_rfc3339(&created) else { return Ok(corrupt("created_at")) };
    Ok(Ok(Signature {
        id,
        sig: NewSignature { field, matches, text: r.get(3)?, mode, comment: r.get(6)? },
        slot: r.get(5)?,
        origin: r.get(7)?,
        created_at: created_at.with_timezone(&Utc),
    }))
}

fn add_sigs_tx(
    tx: &rusqlite::Transaction<'_>,
    sigs: &[NewSignature],
    origin: &str,
) -> Result<Vec<Signature>, StoreError> {
    let now = ts(Some(Utc::now())).unwrap_or_default();
    let mut used: Vec<u16> = {
        let mut stmt = tx.prepare_cached("SELECT slot FROM signatures")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(sigs.len());
    for s in sigs {
        let dup: Option<u32> = tx
            .query_row(
                "SELECT id FROM signatures WHERE field = ?1 AND match_kind = ?2 AND text = ?3 COLLATE NOCASE",
                params![s.field.name(), s.matches.name(), s.text],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = dup {
            return Err(StoreError::Conflict(format!(
                "signature {} {} `{}` exists already (id {id})",
                s.field.name(),
                s.matches.name(),
                s.text
            )));
        }
        let slot = sig::free_slot(used.iter().copied()).ok_or_else(|| {
            StoreError::Conflict(format!(
                "all {} signature slots are taken",
                callguard_common::sig::SLOTS - 1
            ))
        })?;
        used.push(slot);
        let row = tx.query_row(
            "INSERT INTO signatures (field, match_kind, text, mode, slot, comment, origin, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             RETURNING id, field, match_kind, text, mode, slot, comment, origin, created_at",
            params![s.field.name(), s.matches.name(), s.text, s.mode.name(), slot, s.comment, origin, now],
            row_to_sig,
        )??;
        out.push(row);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn sigs(&self) -> Result<Vec<Signature>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("{SIG_SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_sig)?;
        rows.map(|r| r?).collect()
    }

    fn add_sigs(&mut self, sigs: &[NewSignature], origin: &str) -> Result<Vec<Signature>, StoreError> {
        let tx = self.conn.transaction()?;
        let out = add_sigs_tx(&tx, sigs, origin)?;
        tx.commit()?;
        Ok(out)
    }

    fn delete_sigs(&mut self, ids: &[u32]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for id in ids {
            n += tx.execute("DELETE FROM signatures WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn set_sig_mode(&mut self, id: u32, mode: SigMode) -> Result<Option<Signature>, StoreError> {
        let row = self
            .conn
            .query_row(
                "UPDATE signatures SET mode = ?1 WHERE id = ?2
                 RETURNING id, field, match_kind, text, mode, slot, comment, origin, created_at",
                params![mode.name(), id],
                row_to_sig,
            )
            .optional()?;
        row.transpose()
    }

    fn calls_generation(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row("SELECT n FROM calls_generation", [], |r| r.get(0))?)
    }

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

    fn revert_nets(&mut self, remove: &[u32], restore: &[NetRule]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM net_rules WHERE id = ?1")?;
            for id in remove {
                del.execute([id])?;
            }
            let mut put = tx.prepare_cached(concat!(
                "INSERT OR REPLACE INTO net_rules (id, ",
                rule_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?;
            for r in restore {
                put.execute(params![
                    r.id,
                    r.cidr.to_string(),
                    r.action.as_str(),
                    r.scope.as_str(),
                    ts(r.expires_at),
                    r.comment,
                    r.origin.as_str(),
                    ts(Some(r.created_at)),
                    r.profile.as_str(),
                    r.list,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
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

    fn country_rules(&self) -> Result<Vec<CountryRule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT code, action, scope, comment, created_at FROM country_rules ORDER BY code",
        )?;
        let rows = stmt.query_map([], |r| {
            let (code, action, scope, comment, created): (String, String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            Ok((code, action, scope, comment, created))
        })?;
        rows.map(|row| {
            let (code, action, scope, comment, created) = row?;
            let corrupt = || StoreError::Corrupt { table: "country_rules", detail: format!("code {code}") };
            Ok(CountryRule {
                action: NetAction::parse(&action).ok_or_else(corrupt)?,
                scope: Scope::parse(&scope).ok_or_else(corrupt)?,
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map_err(|_| corrupt())?
                    .with_timezone(&Utc),
                code,
                comment,
            })
        })
        .collect()
    }

    fn put_country_rule(&mut self, rule: &CountryRule) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO country_rules (code, action, scope, comment, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (code) DO UPDATE SET action = excluded.action, scope = excluded.scope,
               comment = excluded.comment",
            params![
                rule.code,
                rule.action.as_str(),
                rule.scope.as_str(),
                rule.comment,
                ts(Some(rule.created_at))
            ],
        )?;
        Ok(())
    }

    fn delete_country_rule(&mut self, code: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM country_rules WHERE code = ?1", [code])? > 0)
    }

    fn replace_list_nets(&mut self, list: &str, rules: &[NewNetRule]) -> Result<ListNets, StoreError> {
        let now = ts(Some(Utc::now())).unwrap_or_default();
        let tx = self.conn.transaction()?;
        let mut out = ListNets::default();
        {
            let mut put = tx.prepare_cached(concat!(
                "INSERT INTO net_rules (",
                rule_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (cidr, action) DO UPDATE SET
                       scope = excluded.scope, expires_at = excluded.expires_at, comment = excluded.comment,
                       profile = excluded.profile
                     WHERE net_rules.origin = excluded.origin AND net_rules.list = excluded.list
                     RETURNING id, ",
                rule_columns!()
            ))?;
            // The list's rules as stored: one that a new version names unchanged is kept
            // without a write (a refresh that changes nothing writes nothing).
            let mut stored: HashMap<(IpNet, NetAction), NetRule> = HashMap::new();
            let mut stmt = tx.prepare_cached(&format!("{SELECT} WHERE list = ?1"))?;
            for r in stmt.query_map([list], row_to_rule)? {
                let r = r??;
                stored.insert((r.cidr, r.action), r);
            }
            for r in rules {
                debug_assert!(r.list.as_deref() == Some(list));
                // Taken out of `stored` either way: named again, it is not removed.
                if let Some(was) = stored.remove(&(r.cidr, r.action))
                    && was.scope == r.scope
                    && was.comment == r.comment
                    && was.expires_at == r.expires_at
                    && was.profile == r.profile
                    && was.origin == r.origin
                {
                    out.rules.push(was);
                    continue;
                }
                match put.query_row(params_of(r, &now), row_to_rule).optional()? {
                    Some(rule) => out.rules.push(rule?),
                    None => out.held_by_others += 1,
                }
            }
            // What the new version no longer names.
            out.removed = stored.into_values().collect();
            out.removed.sort_by_key(|r| r.id);
            let mut del = tx.prepare_cached("DELETE FROM net_rules WHERE id = ?1")?;
            for r in &out.removed {
                del.execute([r.id])?;
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(cidr: &str, action: NetAction, origin: Origin) -> NewNetRule {
        NewNetRule {
            cidr: cidr.parse().unwrap(),
            action,
            scope: Scope::Sip,
            profile: Profile::Trusted,
            expires_at: None,
            comment: "c".into(),
            origin,
            list: None,
        }
    }

    fn fed(cidr: &str, feed: &str) -> NewNetRule {
        NewNetRule { list: Some(feed.into()), ..new(cidr, NetAction::Deny, Origin::Feed) }
    }

    #[test]
    fn a_feed_replaces_only_its_own_rules() {
        let mut s = SqliteStore::memory().unwrap();
        s.replace_config_nets(&[new("198.18.1.0/24", NetAction::Deny, Origin::Config)]).unwrap();
        s.upsert_nets(&[new("198.18.2.0/24", NetAction::Deny, Origin::Manual)]).unwrap();
        let a = s.replace_list_nets("a", &[fed("198.18.1.0/24", "a"), fed("198.18.3.0/24", "a")]).unwrap();
        assert_eq!((a.rules.len(), a.held_by_others), (1, 1));
        // Another feed listing the same network leaves it to the first.
        let b = s.replace_list_nets("b", &[fed("198.18.3.0/24", "b"), fed("198.18.2.0/24", "b")]).unwrap();
        assert_eq!((b.rules.len(), b.held_by_others), (0, 2));
        // An empty replacement lifts only feed a's rule.
        let gone = s.replace_list_nets("a", &[]).unwrap();
        assert_eq!(gone.removed.iter().map(|r| r.cidr.to_string()).collect::<Vec<_>>(), ["198.18.3.0/24"]);
        let mut left: Vec<_> =
            s.nets().unwrap().into_iter().map(|r| (r.cidr.to_string(), r.origin)).collect();
        left.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            left,
            [("198.18.1.0/24".to_owned(), Origin::Config), ("198.18.2.0/24".to_owned(), Origin::Manual)]
        );
    }

    #[test]
    fn upsert_keeps_id_and_updates_fields() {
        let mut s = SqliteStore::memory().unwrap();
        let a = s.upsert_nets(&[new("198.18.0.0/24", NetAction::Deny, Origin::Manual)]).unwrap();
        let mut again = new("198.18.0.0/24", NetAction::Deny, Origin::Manual);
        again.scope = Scope::All;
        let b = s.upsert_nets(&[again]).unwrap();
        assert_eq!(a[0].id, b[0].id);
        assert_eq!(b[0].scope, Scope::All);
        let c = s.upsert_nets(&[new("198.18.0.0/24", NetAction::Allow, Origin::Manual)]).unwrap();
        assert_ne!(c[0].id, a[0].id);
        assert_eq!(s.nets().unwrap().len(), 2);
    }

    #[test]
    fn a_conflict_stores_nothing() {
        let mut s = SqliteStore::memory().unwrap();
        s.replace_config_nets(&[new("198.18.1.0/24", NetAction::Deny, Origin::Config)]).unwrap();
        let err = s
            .upsert_nets(&[
                new("198.18.2.0/24", NetAction::Deny, Origin::Import),
                new("198.18.1.0/24", NetAction::Deny, Origin::Import),
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
        s.upsert_nets(&[new("198.18.9.0/24", NetAction::Allow, Origin::Manual)]).unwrap();
        s.replace_config_nets(&[
            new("198.18.1.0/24", NetAction::Deny, Origin::Config),
            new("198.18.2.0/24", NetAction::Deny, Origin::Config),
        ])
        .unwrap();
        s.replace_config_nets(&[new("198.18.2.0/24", NetAction::Deny, Origin::Config)]).unwrap();
        let cidrs: Vec<String> = s.nets().unwrap().iter().map(|r| r.cidr.to_string()).collect();
        assert_eq!(cidrs, ["198.18.9.0/24", "198.18.2.0/24"]);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut s = SqliteStore::memory().unwrap();
        let a = s.upsert_nets(&[new("198.18.0.0/24", NetAction::Deny, Origin::Manual)]).unwrap();
        s.delete_nets(&[a[0].id]).unwrap();
        let b = s.upsert_nets(&[new("198.18.0.0/24", NetAction::Deny, Origin::Manual)]).unwrap();
        assert!(b[0].id > a[0].id);
    }

    #[test]
    fn signatures_seeded_unique_and_slots_reused() {
        let mut s = SqliteStore::memory().unwrap();
        let defaults = s.sigs().unwrap();
        assert_eq!(defaults.len(), sig::DEFAULTS.len());
        assert!(defaults.iter().all(|d| d.origin == "default"));
        let mut slots: Vec<u16> = defaults.iter().map(|d| d.slot).collect();
        slots.dedup();
        assert_eq!(slots.len(), defaults.len(), "distinct slots");
        // Same text in another case: refused, and nothing of the batch is stored.
        let ok = NewSignature { text: "brand-new".into(), ..sig::defaults().remove(0) };
        let dup = NewSignature { text: "FRIENDLY-SCANNER".into(), ..sig::defaults().remove(0) };
        let err = s.add_sigs(&[ok.clone(), dup], "operator").unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(s.sigs().unwrap().len(), defaults.len());
        // A deleted signature's slot goes to the next one; its id does not.
        let first = defaults[0].clone();
        assert_eq!(s.delete_sigs(&[first.id, 9999]).unwrap(), 1);
        let added = s.add_sigs(&[ok], "operator").unwrap().remove(0);
        assert_eq!(added.slot, first.slot);
        assert!(added.id > defaults.last().unwrap().id);
        let changed = s.set_sig_mode(added.id, SigMode::DryRun).unwrap().unwrap();
        assert_eq!(changed.sig.mode, SigMode::DryRun);
        assert!(s.set_sig_mode(9999, SigMode::DryRun).unwrap().is_none());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.db");
        let id = {
            let mut s = SqliteStore::open(&path).unwrap();
            s.upsert_nets(&[new("2001:db8::/32", NetAction::Deny, Origin::Manual)]).unwrap()[0].id
        };
        let s = SqliteStore::open(&path).unwrap();
        let nets = s.nets().unwrap();
        assert_eq!((nets[0].id, nets[0].cidr.to_string()), (id, "2001:db8::/32".to_string()));
    }
}
