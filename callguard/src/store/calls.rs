//! Store: the number-level call rules the slow path decides with: disallowed codes (dialed
//! prefixes), blacklisted numbers, allowed country codes (the PortSIP security seed) and border
//! rules.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{SqliteStore, StoreError, conflict_on_unique as unique, ts};
use crate::{
    border::{BorderAction, BorderRule, Ext, Opts},
    numbers::{BlacklistedNumber, DisallowedCode},
};

/// Migration 3: the security resources and border rules.
pub(super) const MIGRATION: &str = "
    CREATE TABLE disallowed_codes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        number_prefix TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE blacklisted_numbers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        number TEXT NOT NULL UNIQUE,
        expire_at TEXT,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE allowed_country_codes (
        position INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE
    );
    CREATE TABLE border_rules (
        id TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        priority INTEGER NOT NULL,
        site TEXT NOT NULL,
        service TEXT NOT NULL,
        domain TEXT NOT NULL,
        username TEXT NOT NULL,
        useragent TEXT NOT NULL,
        remoteipmask TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('allow', 'deny', 'drop')),
        title TEXT NOT NULL,
        comment TEXT NOT NULL,
        ct TEXT NOT NULL,
        lwt TEXT NOT NULL
    );
";

/// What the daemon needs to keep the number-level call rules.
pub trait CallRuleStore {
    /// Every disallowed code, by id.
    fn codes(&self) -> Result<Vec<DisallowedCode>, StoreError>;
    /// Adds a disallowed code (a prefix stored already is a conflict).
    fn add_code(&mut self, prefix: &str, description: &str) -> Result<DisallowedCode, StoreError>;
    /// Changes a code; `None` when there is no such id.
    fn update_code(
        &mut self,
        id: u32,
        prefix: Option<&str>,
        description: Option<&str>,
    ) -> Result<Option<DisallowedCode>, StoreError>;
    /// Deletes a code; whether it existed.
    fn delete_code(&mut self, id: u32) -> Result<bool, StoreError>;

    /// Every blacklisted number, by id (expired ones included until swept).
    fn numbers(&self) -> Result<Vec<BlacklistedNumber>, StoreError>;
    /// Adds a number (a number stored already is a conflict).
    fn add_number(
        &mut self,
        number: &str,
        expire_at: Option<DateTime<Utc>>,
        description: &str,
    ) -> Result<BlacklistedNumber, StoreError>;
    /// Changes a number; `expire_at: Some(None)` clears the expiry. `None` when there is no such id.
    fn update_number(
        &mut self,
        id: u32,
        number: Option<&str>,
        expire_at: Option<Option<DateTime<Utc>>>,
        description: Option<&str>,
    ) -> Result<Option<BlacklistedNumber>, StoreError>;
    /// Deletes a number; whether it existed.
    fn delete_number(&mut self, id: u32) -> Result<bool, StoreError>;
    /// Deletes the numbers whose expiry has passed; how many.
    fn sweep_numbers(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// The allowed country codes, in the order they were given.
    fn countries(&self) -> Result<Vec<String>, StoreError>;
    /// Replaces the allowed country codes (one transaction).
    fn set_countries(&mut self, codes: &[String]) -> Result<(), StoreError>;

    /// Every border rule, by priority then id.
    fn border_rules(&self) -> Result<Vec<BorderRule>, StoreError>;
    /// Inserts (`create`: an existing id is a conflict) or replaces a border rule.
    fn put_border_rule(&mut self, rule: &BorderRule, create: bool) -> Result<(), StoreError>;
    /// Deletes a border rule; whether it existed.
    fn delete_border_rule(&mut self, id: &str) -> Result<bool, StoreError>;

    /// The fraud thresholds written through the API (a `config::Fraud` as JSON) and when;
    /// `None` while the configuration file's apply.
    fn fraud_thresholds(&self) -> Result<Option<(String, DateTime<Utc>)>, StoreError>;
    /// Writes (`Some`) or removes (`None`: the file's apply again) the API's thresholds.
    fn set_fraud_thresholds(&mut self, json: Option<&str>) -> Result<(), StoreError>;
}

/// Migration 9: the fraud thresholds of the API, one row; a change rebuilds the call policy.
pub(super) const MIGRATION_FRAUD: &str = "
    CREATE TABLE fraud_thresholds (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TRIGGER cg_ft_i AFTER INSERT ON fraud_thresholds BEGIN UPDATE calls_generation SET n = n + 1; END;
    CREATE TRIGGER cg_ft_u AFTER UPDATE ON fraud_thresholds BEGIN UPDATE calls_generation SET n = n + 1; END;
    CREATE TRIGGER cg_ft_d AFTER DELETE ON fraud_thresholds BEGIN UPDATE calls_generation SET n = n + 1; END;
";

fn code_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DisallowedCode> {
    Ok(DisallowedCode {
        id: r.get::<_, i64>(0)?.to_string(),
        number_prefix: r.get(1)?,
        description: r.get(2)?,
    })
}

fn number_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlacklistedNumber> {
    Ok(BlacklistedNumber {
        id: r.get::<_, i64>(0)?.to_string(),
        number: r.get(1)?,
        expire_at: r.get(2)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        description: r.get(3)?,
    })
}

fn border_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<BorderRule, StoreError>> {
    let id: String = r.get(0)?;
    let action: String = r.get(9)?;
    let Some(action) = BorderAction::parse(&action) else {
        return Ok(Err(StoreError::Corrupt { table: "border_rules", detail: format!("id {id}: action") }));
    };
    Ok(Ok(BorderRule {
        id,
        enabled: r.get(1)?,
        priority: r.get(2)?,
        site: r.get(3)?,
        service: r.get(4)?,
        domain: r.get(5)?,
        username: r.get(6)?,
        useragent: r.get(7)?,
        remoteipmask: r.get(8)?,
        action,
        opts: Opts { title: r.get(10)?, comment: r.get(11)? },
        ext: Ext { ct: r.get(12)?, lwt: r.get(13)? },
    }))
}

const NUMBER_SELECT: &str =
    "SELECT id, number, expire_at, description, created_at, updated_at FROM blacklisted_numbers";
const BORDER_SELECT: &str = "SELECT id, enabled, priority, site, service, domain, username, useragent, \
     remoteipmask, action, title, comment, ct, lwt FROM border_rules";

impl CallRuleStore for SqliteStore {
    fn codes(&self) -> Result<Vec<DisallowedCode>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, number_prefix, description FROM disallowed_codes ORDER BY id")?;
        Ok(stmt.query_map([], code_row)?.collect::<Result<_, _>>()?)
    }

    fn add_code(&mut self, prefix: &str, description: &str) -> Result<DisallowedCode, StoreError> {
        self.conn
            .query_row(
                "INSERT INTO disallowed_codes (number_prefix, description) VALUES (?1, ?2)
                 RETURNING id, number_prefix, description",
                params![prefix, description],
                code_row,
            )
            .map_err(|e| unique(e, || format!("number_prefix `{prefix}` exists already")))
    }

    fn update_code(
        &mut self,
        id: u32,
        prefix: Option<&str>,
        description: Option<&str>,
    ) -> Result<Option<DisallowedCode>, StoreError> {
        self.conn
            .query_row(
                "UPDATE disallowed_codes SET number_prefix = ifnull(?2, number_prefix),
                   description = ifnull(?3, description) WHERE id = ?1
                 RETURNING id, number_prefix, description",
                params![id, prefix, description],
                code_row,
            )
            .optional()
            .map_err(|e| {
                unique(e, || format!("number_prefix `{}` exists already", prefix.unwrap_or_default()))
            })
    }

    fn delete_code(&mut self, id: u32) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM disallowed_codes WHERE id = ?1", [id])? == 1)
    }

    fn numbers(&self) -> Result<Vec<BlacklistedNumber>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("{NUMBER_SELECT} ORDER BY id"))?;
        Ok(stmt.query_map([], number_row)?.collect::<Result<_, _>>()?)
    }

    fn add_number(
        &mut self,
        number: &str,
        expire_at: Option<DateTime<Utc>>,
        description: &str,
    ) -> Result<BlacklistedNumber, StoreError> {
        let now = ts(Some(Utc::now()));
        self.conn
            .query_row(
                "INSERT INTO blacklisted_numbers (number, expire_at, description, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 RETURNING id, number, expire_at, description, created_at, updated_at",
                params![number, ts(expire_at), description, now],
                number_row,
            )
            .map_err(|e| unique(e, || format!("number `{number}` exists already")))
    }

    fn update_number(
        &mut self,
        id: u32,
        number: Option<&str>,
        expire_at: Option<Option<DateTime<Utc>>>,
        description: Option<&str>,
    ) -> Result<Option<BlacklistedNumber>, StoreError> {
        let now = ts(Some(Utc::now()));
        self.conn
            .query_row(
                "UPDATE blacklisted_numbers SET number = ifnull(?2, number),
                   expire_at = CASE WHEN ?3 THEN ?4 ELSE expire_at END,
                   description = ifnull(?5, description), updated_at = ?6 WHERE id = ?1
                 RETURNING id, number, expire_at, description, created_at, updated_at",
                params![id, number, expire_at.is_some(), ts(expire_at.flatten()), description, now],
                number_row,
            )
            .optional()
            .map_err(|e| unique(e, || format!("number `{}` exists already", number.unwrap_or_default())))
    }

    fn delete_number(&mut self, id: u32) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM blacklisted_numbers WHERE id = ?1", [id])? == 1)
    }

    fn sweep_numbers(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // Times are stored in one fixed RFC 3339 form (UTC, milliseconds), so text order is time order.
        Ok(self.conn.execute(
            "DELETE FROM blacklisted_numbers WHERE expire_at IS NOT NULL AND expire_at <= ?1",
            [ts(Some(now))],
        )?)
    }

    fn fraud_thresholds(&self) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT body, updated_at FROM fraud_thresholds WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(body, at)| {
            let at = DateTime::parse_from_rfc3339(&at).map_err(|_| StoreError::Corrupt {
                table: "fraud_thresholds",
                detail: format!("updated_at {at}"),
            })?;
            Ok((body, at.with_timezone(&Utc)))
        })
        .transpose()
    }

    fn set_fraud_thresholds(&mut self, json: Option<&str>) -> Result<(), StoreError> {
        match json {
            Some(body) => self.conn.execute(
                "INSERT INTO fraud_thresholds (id, body, updated_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                params![body, Utc::now().to_rfc3339()],
            )?,
            None => self.conn.execute("DELETE FROM fraud_thresholds", [])?,
        };
        Ok(())
    }

    fn countries(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT code FROM allowed_country_codes ORDER BY position")?;
        Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    fn set_countries(&mut self, codes: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM allowed_country_codes", [])?;
        for (i, c) in codes.iter().enumerate() {
            tx.execute("INSERT INTO allowed_country_codes (position, code) VALUES (?1, ?2)", params![i, c])
                .map_err(|e| unique(e, || format!("country code `{c}` is given twice")))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn border_rules(&self) -> Result<Vec<BorderRule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("{BORDER_SELECT} ORDER BY priority, id"))?;
        stmt.query_map([], border_row)?.map(|r| r?).collect()
    }

    fn put_border_rule(&mut self, r: &BorderRule, create: bool) -> Result<(), StoreError> {
        let sql = if create {
            "INSERT INTO border_rules VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        } else {
            "UPDATE border_rules SET enabled = ?2, priority = ?3, site = ?4, service = ?5, domain = ?6,
               username = ?7, useragent = ?8, remoteipmask = ?9, action = ?10, title = ?11,
               comment = ?12, ct = ?13, lwt = ?14 WHERE id = ?1"
        };
        let n = self
            .conn
            .execute(
                sql,
                params![
                    r.id,
                    r.enabled,
                    r.priority,
                    r.site,
                    r.service,
                    r.domain,
                    r.username,
                    r.useragent,
                    r.remoteipmask,
                    r.action.as_str(),
                    r.opts.title,
                    r.opts.comment,
                    r.ext.ct,
                    r.ext.lwt
                ],
            )
            .map_err(|e| unique(e, || format!("border rule `{}` exists already", r.id)))?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("border rule `{}` is gone", r.id)));
        }
        Ok(())
    }

    fn delete_border_rule(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM border_rules WHERE id = ?1", [id])? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::border::BorderRuleInput;

    #[test]
    fn codes_numbers_and_countries_round_trip() {
        let mut s = SqliteStore::memory().unwrap();
        let c = s.add_code("+900", "premium").unwrap();
        assert!(matches!(s.add_code("+900", "again"), Err(StoreError::Conflict(_))));
        let c2 = s.update_code(c.id.parse().unwrap(), None, Some("changed")).unwrap().unwrap();
        assert_eq!((c2.number_prefix.as_str(), c2.description.as_str()), ("+900", "changed"));
        assert!(s.update_code(999, Some("1"), None).unwrap().is_none());
        assert!(s.delete_code(c.id.parse().unwrap()).unwrap());
        assert!(!s.delete_code(c.id.parse().unwrap()).unwrap());

        let past = Utc::now() - chrono::Duration::seconds(5);
        let n = s.add_number("+4930123", Some(past), "spam").unwrap();
        let keep = s.add_number("4930999", None, "").unwrap();
        let cleared =
            s.update_number(keep.id.parse().unwrap(), None, Some(None), Some("x")).unwrap().unwrap();
        assert_eq!((cleared.expire_at, cleared.description.as_str()), (None, "x"));
        assert_eq!(s.sweep_numbers(Utc::now()).unwrap(), 1);
        let left: Vec<String> = s.numbers().unwrap().into_iter().map(|n| n.number).collect();
        assert_eq!(left, ["4930999"]);
        assert!(!s.delete_number(n.id.parse().unwrap()).unwrap());

        s.set_countries(&["+44".into(), "1".into()]).unwrap();
        assert_eq!(s.countries().unwrap(), ["+44", "1"], "each as written");
        // (`44` with `+44` is the service's to refuse: one code twice.)
        assert!(s.set_countries(&["44".into(), "44".into()]).is_err());
        assert_eq!(s.countries().unwrap(), ["+44", "1"], "a refused replacement changes nothing");
    }

    #[test]
    fn border_rules_keep_every_field() {
        let mut s = SqliteStore::memory().unwrap();
        let r = BorderRuleInput {
            username: Some("test[A-Z]*".into()),
            remoteipmask: Some("192.168.0.0/24".into()),
            action: Some(BorderAction::Drop),
            priority: Some(95),
            ..Default::default()
        }
        .apply(None, Utc::now())
        .unwrap();
        s.put_border_rule(&r, true).unwrap();
        assert!(matches!(s.put_border_rule(&r, true), Err(StoreError::Conflict(_))));
        assert_eq!(s.border_rules().unwrap(), std::slice::from_ref(&r));
        assert!(s.delete_border_rule(&r.id).unwrap());
        assert!(matches!(s.put_border_rule(&r, false), Err(StoreError::Conflict(_))));
    }
}
