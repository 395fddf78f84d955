//! Store: tenants, groups, users, custom roles, sessions (tokens), password resets, API keys and
//! authorization codes. Secrets are stored only as digests ([`crate::accounts::secret_digest`]).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{SqliteStore, StoreError, conflict_on_unique, ts};
use crate::{
    accounts::{ApiKey, AuthCode, Blob, Caller, Group, Level, Perm, Role, Session, Tenant, User, blob_url},
    sso::SsoSettings,
};

/// Migration 4: accounts.
pub(super) const MIGRATION: &str = "
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        domain TEXT NOT NULL UNIQUE COLLATE NOCASE,
        website TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE groups (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    );
    CREATE TABLE roles (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        level TEXT NOT NULL CHECK (level IN ('user', 'group', 'tenant', 'system')),
        -- Space-separated permission names.
        permissions TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
        group_id TEXT,
        username TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        force_reset INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE
    );
    -- One name per tenant, any case; system users (no tenant) share one namespace.
    CREATE UNIQUE INDEX users_name ON users (ifnull(tenant_id, ''), username COLLATE NOCASE);
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        access_digest BLOB NOT NULL UNIQUE,
        access_expires TEXT NOT NULL,
        refresh_digest BLOB NOT NULL UNIQUE,
        refresh_expires TEXT NOT NULL,
        password_verified INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE password_resets (
        digest BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        account_id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        digest BLOB NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE auth_codes (
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        code TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, code)
    );
";

/// Migration 6: refresh tokens already exchanged, so that a second use of one (a stolen copy)
/// is recognised and ends the session (OAuth 2.0 Security BCP, refresh token rotation).
pub(super) const MIGRATION_SPENT_REFRESH: &str = "
    CREATE TABLE spent_refresh (
        digest BLOB PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE
    );
";

/// Migration 12: uploaded files (tenants' avatars), deleted with the tenant or when replaced.
pub(super) const MIGRATION_AVATARS: &str = "
    CREATE TABLE blobs (
        id TEXT PRIMARY KEY,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    ALTER TABLE tenants ADD COLUMN avatar TEXT REFERENCES blobs (id);
    CREATE TRIGGER blob_of_tenant_replaced AFTER UPDATE OF avatar ON tenants
        WHEN OLD.avatar IS NOT NULL AND OLD.avatar IS NOT NEW.avatar
        BEGIN DELETE FROM blobs WHERE id = OLD.avatar; END;
    CREATE TRIGGER blob_of_tenant_deleted AFTER DELETE ON tenants WHEN OLD.avatar IS NOT NULL
        BEGIN DELETE FROM blobs WHERE id = OLD.avatar; END;
";

/// Migration 13: social sign-in. A tenant's provider settings ([`SsoSettings`] as JSON, the
/// client secret with them: the daemon must send it to the provider), and the provider identity
/// (issuer and subject) each user is bound to by a first sign-in: one identity, one user.
pub(super) const MIGRATION_SSO: &str = "
    CREATE TABLE tenant_sso (
        tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
        settings TEXT NOT NULL
    );
    CREATE TABLE sso_subjects (
        user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        bound_at TEXT NOT NULL,
        UNIQUE (issuer, subject)
    );
";

/// Migration 7: the right to dial international numbers (`calls.international`), which the
/// slow path checks since roles decide calls. Custom roles made before it keep what they could
/// do; a user's new role, and a role created or deleted, change what the slow path decides.
pub(super) const MIGRATION_CALL_RIGHTS: &str = "
    UPDATE roles SET permissions = trim(permissions || ' calls.international');
    CREATE TRIGGER cg_us_r AFTER UPDATE OF role ON users BEGIN UPDATE calls_generation SET n = n + 1; END;
    CREATE TRIGGER cg_ro_i AFTER INSERT ON roles BEGIN UPDATE calls_generation SET n = n + 1; END;
    CREATE TRIGGER cg_ro_d AFTER DELETE ON roles BEGIN UPDATE calls_generation SET n = n + 1; END;
";

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Tenant (none: system-wide).
    pub tenant: Option<String>,
    /// Group inside the tenant.
    pub group: Option<String>,
    /// Account name.
    pub username: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// Role name.
    pub role: String,
    /// Must set a new password at the next sign-in.
    pub force_reset: bool,
}

/// Tokens and expiries of a session being created or rotated.
#[derive(Clone, Debug)]
pub struct SessionTokens {
    /// Digest of the access token.
    pub access_digest: Vec<u8>,
    /// When it expires.
    pub access_expires: DateTime<Utc>,
    /// Digest of the refresh token.
    pub refresh_digest: Vec<u8>,
    /// When it expires.
    pub refresh_expires: DateTime<Utc>,
}

/// What the daemon needs to keep accounts.
pub trait AccountStore {
    /// Every tenant, by id.
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Adds a tenant (id or domain taken: conflict).
    fn add_tenant(&mut self, t: &Tenant) -> Result<(), StoreError>;
    /// Deletes a tenant with its groups, users, sessions and codes; whether it existed.
    fn delete_tenant(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Replaces (`None`: removes) a tenant's avatar; the one it replaces is deleted with it.
    /// Whether the tenant exists.
    fn set_tenant_avatar(&mut self, tenant: &str, avatar: Option<&Blob>) -> Result<bool, StoreError>;
    /// A blob by id.
    fn blob(&self, id: &str) -> Result<Option<Blob>, StoreError>;
    /// A tenant's social sign-in settings.
    fn tenant_sso(&self, tenant: &str) -> Result<Option<SsoSettings>, StoreError>;
    /// Replaces (`None`: removes) a tenant's social sign-in settings; whether the tenant exists
    /// (removing: whether it had some).
    fn set_tenant_sso(&mut self, tenant: &str, settings: Option<&SsoSettings>) -> Result<bool, StoreError>;
    /// The user a provider identity is bound to.
    fn sso_user(&self, issuer: &str, subject: &str) -> Result<Option<u32>, StoreError>;
    /// The provider identity a user is bound to: issuer and subject.
    fn sso_identity(&self, user: u32) -> Result<Option<(String, String)>, StoreError>;
    /// Binds a user to a provider identity (either bound already: conflict).
    fn bind_sso(&mut self, user: u32, issuer: &str, subject: &str) -> Result<(), StoreError>;
    /// Adds a user bound to a provider identity, both or neither.
    fn add_sso_user(&mut self, u: &NewUser, issuer: &str, subject: &str) -> Result<User, StoreError>;

    /// The groups of one tenant, or of all.
    fn groups(&self, tenant: Option<&str>) -> Result<Vec<Group>, StoreError>;
    /// Adds a group.
    fn add_group(&mut self, g: &Group) -> Result<(), StoreError>;
    /// Deletes a group with its users; whether it existed.
    fn delete_group(&mut self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// The custom roles, by name.
    fn custom_roles(&self) -> Result<Vec<Role>, StoreError>;
    /// Adds a custom role.
    fn add_role(&mut self, r: &Role) -> Result<(), StoreError>;
    /// Deletes a custom role (in use: conflict); whether it existed.
    fn delete_role(&mut self, name: &str) -> Result<bool, StoreError>;

    /// Every user, by id.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// One user with its password hash.
    fn user(&self, id: u32) -> Result<Option<(User, String)>, StoreError>;
    /// The user named `username` (any case) in `tenant` (none: system-wide), with its hash.
    fn find_user(&self, tenant: Option<&str>, username: &str) -> Result<Option<(User, String)>, StoreError>;
    /// Adds a user.
    fn add_user(&mut self, u: &NewUser) -> Result<User, StoreError>;
    /// Changes a user's role, group, password hash or reset flag; `None`: no such user. A new
    /// password hash revokes every session of the user in the same transaction.
    fn update_user(
        &mut self,
        id: u32,
        role: Option<&str>,
        group: Option<Option<&str>>,
        password_hash: Option<&str>,
        force_reset: Option<bool>,
    ) -> Result<Option<User>, StoreError>;
    /// Deletes a user with its sessions, keys and codes; whether it existed.
    fn delete_user(&mut self, id: u32) -> Result<bool, StoreError>;

    /// Starts a session.
    fn add_session(
        &mut self,
        user: u32,
        t: &SessionTokens,
        password_verified: bool,
    ) -> Result<Session, StoreError>;
    /// The session an access token belongs to.
    fn session_by_access(&self, digest: &[u8]) -> Result<Option<Session>, StoreError>;
    /// The session a refresh token belongs to.
    fn session_by_refresh(&self, digest: &[u8]) -> Result<Option<Session>, StoreError>;
    /// Replaces a live session's tokens (refresh); `None` when it is gone or revoked. The old
    /// refresh token is remembered as spent ([`AccountStore::session_by_spent_refresh`]).
    fn rotate_session(&mut self, id: u32, t: &SessionTokens) -> Result<Option<Session>, StoreError>;
    /// The session a refresh token belonged to before it was exchanged.
    fn session_by_spent_refresh(&self, digest: &[u8]) -> Result<Option<Session>, StoreError>;
    /// Revokes a session; whether it was live.
    fn revoke_session(&mut self, id: u32, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Sessions of one user, or of all, newest first.
    fn sessions(&self, user: Option<u32>) -> Result<Vec<Session>, StoreError>;
    /// Deletes sessions whose refresh token expired before `now`; how many.
    fn purge_sessions(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Records a password-reset token.
    fn add_reset(&mut self, user: u32, digest: &[u8], expires: DateTime<Utc>) -> Result<(), StoreError>;
    /// Consumes a reset token: the user it was for, when it exists and has not expired.
    fn take_reset(&mut self, digest: &[u8], now: DateTime<Utc>) -> Result<Option<u32>, StoreError>;
    /// The user a reset token is for, when it exists and has not expired; leaves it in place.
    fn peek_reset(&self, digest: &[u8], now: DateTime<Utc>) -> Result<Option<u32>, StoreError>;

    /// Adds an API key for `user`.
    fn add_api_key(&mut self, user: u32, digest: &[u8], comment: &str) -> Result<ApiKey, StoreError>;
    /// One key with its digest.
    fn api_key(&self, account_id: u32) -> Result<Option<(ApiKey, Vec<u8>)>, StoreError>;
    /// Every key.
    fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Deletes a key; whether it existed.
    fn delete_api_key(&mut self, account_id: u32) -> Result<bool, StoreError>;

    /// A user's authorization codes, by code.
    fn auth_codes(&self, user: u32) -> Result<Vec<AuthCode>, StoreError>;
    /// Adds codes, all or none (a code the user has already: conflict).
    fn add_auth_codes(&mut self, user: u32, codes: &[AuthCode]) -> Result<(), StoreError>;
    /// Deletes codes; how many existed.
    fn delete_auth_codes(&mut self, user: u32, codes: &[String]) -> Result<usize, StoreError>;
    /// Every user of a tenant: SIP domain, user name, role and authorization codes (what the
    /// slow path maps a caller's From user and host to).
    fn callers(&self) -> Result<Vec<Caller>, StoreError>;
}

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

// Times are read with rusqlite's chrono conversion: a malformed stored time is a read error
// naming its column, like any other wrong type.

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        domain: r.get(2)?,
        website: r.get(3)?,
        created_at: r.get(4)?,
        avatar_url: r.get::<_, Option<String>>(5)?.as_deref().map(blob_url).unwrap_or_default(),
    })
}

const USER_SELECT: &str =
    "SELECT id, tenant_id, group_id, username, role, force_reset, created_at, password_hash FROM users";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(User, String)> {
    Ok((
        User {
            id: r.get(0)?,
            tenant: r.get(1)?,
            group: r.get(2)?,
            username: r.get(3)?,
            role: r.get(4)?,
            force_reset: r.get(5)?,
            created_at: r.get(6)?,
        },
        r.get(7)?,
    ))
}

const SESSION_SELECT: &str = "SELECT id, user_id, access_expires, refresh_expires, password_verified, \
     created_at, revoked_at FROM sessions";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        access_expires: r.get(2)?,
        refresh_expires: r.get(3)?,
        password_verified: r.get(4)?,
        created_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey { account_id: r.get(0)?, user_id: r.get(1)?, comment: r.get(2)?, created_at: r.get(3)? })
}

impl SqliteStore {
    fn one_user(&self, where_: &str, p: impl rusqlite::Params) -> Result<Option<(User, String)>, StoreError> {
        Ok(self.conn.query_row(&format!("{USER_SELECT} WHERE {where_}"), p, user_row).optional()?)
    }

    fn one_session(&self, where_: &str, p: impl rusqlite::Params) -> Result<Option<Session>, StoreError> {
        Ok(self.conn.query_row(&format!("{SESSION_SELECT} WHERE {where_}"), p, session_row).optional()?)
    }
}

/// Inserts a user (in `conn`, or in a transaction on it).
fn insert_user(conn: &rusqlite::Connection, u: &NewUser) -> Result<User, StoreError> {
    let row = conn
        .query_row(
            "INSERT INTO users (tenant_id, group_id, username, password_hash, role, force_reset, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             RETURNING id, tenant_id, group_id, username, role, force_reset, created_at, password_hash",
            params![
                u.tenant,
                u.group,
                u.username,
                u.password_hash,
                u.role,
                u.force_reset,
                ts(Some(Utc::now()))
            ],
            user_row,
        )
        .map_err(|e| conflict_on_unique(e, || format!("user `{}` exists already", u.username)))?;
    Ok(row.0)
}

impl AccountStore for SqliteStore {
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, domain, website, created_at, avatar FROM tenants ORDER BY id",
        )?;
        Ok(stmt.query_map([], tenant_row)?.collect::<Result<_, _>>()?)
    }

    fn add_tenant(&mut self, t: &Tenant) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tenants (id, name, domain, website, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.name, t.domain, t.website, ts(Some(t.created_at))],
            )
            .map_err(|e| {
                conflict_on_unique(e, || {
                    format!("a tenant with id `{}` or domain `{}` exists", t.id, t.domain)
                })
            })?;
        Ok(())
    }

    fn delete_tenant(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM tenants WHERE id = ?1", [id])? == 1)
    }

    fn set_tenant_avatar(&mut self, tenant: &str, avatar: Option<&Blob>) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        if let Some(b) = avatar {
            tx.execute(
                "INSERT INTO blobs (id, content_type, data, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![b.id, b.content_type, b.data, ts(Some(Utc::now()))],
            )?;
        }
        // The trigger of migration 12 deletes the blob this one replaces.
        let found = tx.execute(
            "UPDATE tenants SET avatar = ?2 WHERE id = ?1",
            params![tenant, avatar.map(|b| &b.id)],
        )?;
        if found == 1 {
            tx.commit()?;
        }
        Ok(found == 1)
    }

    fn blob(&self, id: &str) -> Result<Option<Blob>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT id, content_type, data FROM blobs WHERE id = ?1", [id], |r| {
                Ok(Blob { id: r.get(0)?, content_type: r.get(1)?, data: r.get(2)? })
            })
            .optional()?)
    }

    fn tenant_sso(&self, tenant: &str) -> Result<Option<SsoSettings>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT settings FROM tenant_sso WHERE tenant_id = ?1", [tenant], |r| r.get(0))
            .optional()?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError::Corrupt { table: "tenant_sso", detail: format!("{tenant}: {e}") })
        })
        .transpose()
    }

    fn set_tenant_sso(&mut self, tenant: &str, settings: Option<&SsoSettings>) -> Result<bool, StoreError> {
        let Some(s) = settings else {
            return Ok(self.conn.execute("DELETE FROM tenant_sso WHERE tenant_id = ?1", [tenant])? == 1);
        };
        let json = serde_json::to_string(s)
            .map_err(|e| StoreError::Corrupt { table: "tenant_sso", detail: e.to_string() })?;
        let done = self.conn.execute(
            "INSERT INTO tenant_sso (tenant_id, settings) SELECT id, ?2 FROM tenants WHERE id = ?1
             ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings",
            params![tenant, json],
        )?;
        Ok(done == 1)
    }

    fn sso_user(&self, issuer: &str, subject: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT user_id FROM sso_subjects WHERE issuer = ?1 AND subject = ?2",
                [issuer, subject],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn sso_identity(&self, user: u32) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT issuer, subject FROM sso_subjects WHERE user_id = ?1", [user], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn bind_sso(&mut self, user: u32, issuer: &str, subject: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sso_subjects (user_id, issuer, subject, bound_at) VALUES (?1, ?2, ?3, ?4)",
                params![user, issuer, subject, ts(Some(Utc::now()))],
            )
            .map_err(|e| conflict_on_unique(e, || "the user or the identity is bound already".into()))?;
        Ok(())
    }

    fn add_sso_user(&mut self, u: &NewUser, issuer: &str, subject: &str) -> Result<User, StoreError> {
        let tx = self.conn.transaction()?;
        let user = insert_user(&tx, u)?;
        tx.execute(
            "INSERT INTO sso_subjects (user_id, issuer, subject, bound_at) VALUES (?1, ?2, ?3, ?4)",
            params![user.id, issuer, subject, ts(Some(Utc::now()))],
        )
        .map_err(|e| conflict_on_unique(e, || "the identity is bound already".into()))?;
        tx.commit()?;
        Ok(user)
    }

    fn groups(&self, tenant: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tenant_id, id, name, created_at FROM groups
             WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, id",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(Group { tenant: r.get(0)?, id: r.get(1)?, name: r.get(2)?, created_at: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_group(&mut self, g: &Group) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO groups (tenant_id, id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![g.tenant, g.id, g.name, ts(Some(g.created_at))],
            )
            .map_err(|e| {
                conflict_on_unique(e, || format!("group `{}` exists in tenant `{}`", g.id, g.tenant))
            })?;
        Ok(())
    }

    fn delete_group(&mut self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM groups WHERE tenant_id = ?1 AND id = ?2", [tenant, id])? == 1)
    }

    fn custom_roles(&self) -> Result<Vec<Role>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, level, permissions, description FROM roles ORDER BY name")?;
        let rows: Vec<(String, String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(name, level, perms, description)| {
                let level = Level::parse(&level).ok_or_else(|| corrupt("roles", format!("{name}: level")))?;
                let permissions = perms
                    .split_whitespace()
                    .map(|p| {
                        Perm::parse(p).ok_or_else(|| corrupt("roles", format!("{name}: permission {p}")))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Role { name, level, permissions, builtin: false, description })
            })
            .collect()
    }

    fn add_role(&mut self, r: &Role) -> Result<(), StoreError> {
        let perms: Vec<&str> = r.permissions.iter().map(|p| p.as_str()).collect();
        self.conn
            .execute(
                "INSERT INTO roles (name, level, permissions, description) VALUES (?1, ?2, ?3, ?4)",
                params![r.name, r.level.as_str(), perms.join(" "), r.description],
            )
            .map_err(|e| conflict_on_unique(e, || format!("role `{}` exists", r.name)))?;
        Ok(())
    }

    fn delete_role(&mut self, name: &str) -> Result<bool, StoreError> {
        let users: u32 = self.conn.query_row(
            "SELECT count(*) FROM users WHERE role = ?1 COLLATE NOCASE",
            [name],
            |r| r.get(0),
        )?;
        if users > 0 {
            return Err(StoreError::Conflict(format!("role `{name}` is held by {users} user(s)")));
        }
        Ok(self.conn.execute("DELETE FROM roles WHERE name = ?1", [name])? == 1)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("{USER_SELECT} ORDER BY id"))?;
        Ok(stmt.query_map([], |r| user_row(r).map(|(u, _)| u))?.collect::<Result<_, _>>()?)
    }

    fn user(&self, id: u32) -> Result<Option<(User, String)>, StoreError> {
        self.one_user("id = ?1", [id])
    }

    fn find_user(&self, tenant: Option<&str>, username: &str) -> Result<Option<(User, String)>, StoreError> {
        self.one_user(
            "ifnull(tenant_id, '') = ifnull(?1, '') AND username = ?2 COLLATE NOCASE",
            params![tenant, username],
        )
    }

    fn add_user(&mut self, u: &NewUser) -> Result<User, StoreError> {
        insert_user(&self.conn, u)
    }

    fn update_user(
        &mut self,
        id: u32,
        role: Option<&str>,
        group: Option<Option<&str>>,
        password_hash: Option<&str>,
        force_reset: Option<bool>,
    ) -> Result<Option<User>, StoreError> {
        let tx = self.conn.transaction()?;
        let row = tx
            .query_row(
                "UPDATE users SET role = ifnull(?2, role),
                   group_id = CASE WHEN ?3 THEN ?4 ELSE group_id END,
                   password_hash = ifnull(?5, password_hash), force_reset = ifnull(?6, force_reset)
                 WHERE id = ?1
                 RETURNING id, tenant_id, group_id, username, role, force_reset, created_at, password_hash",
                params![id, role, group.is_some(), group.flatten(), password_hash, force_reset],
                user_row,
            )
            .optional()
            .map_err(|e| conflict_on_unique(e, String::new))?;
        if row.is_some() && password_hash.is_some() {
            // A new password ends everything the old one let anybody obtain: sessions, pending
            // reset tokens and API keys.
            tx.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![id, ts(Some(Utc::now()))],
            )?;
            tx.execute("DELETE FROM password_resets WHERE user_id = ?1", [id])?;
            tx.execute("DELETE FROM api_keys WHERE user_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(row.map(|(u, _)| u))
    }

    fn delete_user(&mut self, id: u32) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM users WHERE id = ?1", [id])? == 1)
    }

    fn add_session(
        &mut self,
        user: u32,
        t: &SessionTokens,
        password_verified: bool,
    ) -> Result<Session, StoreError> {
        let row = self.conn.query_row(
            "INSERT INTO sessions (user_id, access_digest, access_expires, refresh_digest, refresh_expires,
               password_verified, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             RETURNING id, user_id, access_expires, refresh_expires, password_verified, created_at, revoked_at",
            params![
                user,
                t.access_digest,
                ts(Some(t.access_expires)),
                t.refresh_digest,
                ts(Some(t.refresh_expires)),
                password_verified,
                ts(Some(Utc::now()))
            ],
            session_row,
        )?;
        Ok(row)
    }

    fn session_by_access(&self, digest: &[u8]) -> Result<Option<Session>, StoreError> {
        self.one_session("access_digest = ?1", [digest])
    }

    fn session_by_refresh(&self, digest: &[u8]) -> Result<Option<Session>, StoreError> {
        self.one_session("refresh_digest = ?1", [digest])
    }

    fn rotate_session(&mut self, id: u32, t: &SessionTokens) -> Result<Option<Session>, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO spent_refresh (digest, session_id)
             SELECT refresh_digest, id FROM sessions WHERE id = ?1 AND revoked_at IS NULL",
            [id],
        )?;
        let row = tx
            .query_row(
                "UPDATE sessions SET access_digest = ?2, access_expires = ?3, refresh_digest = ?4,
                   refresh_expires = ?5 WHERE id = ?1 AND revoked_at IS NULL
                 RETURNING id, user_id, access_expires, refresh_expires, password_verified, created_at, revoked_at",
                params![
                    id,
                    t.access_digest,
                    ts(Some(t.access_expires)),
                    t.refresh_digest,
                    ts(Some(t.refresh_expires))
                ],
                session_row,
            )
            .optional()?;
        tx.commit()?;
        Ok(row)
    }

    fn session_by_spent_refresh(&self, digest: &[u8]) -> Result<Option<Session>, StoreError> {
        self.one_session("id = (SELECT session_id FROM spent_refresh WHERE digest = ?1)", [digest])
    }

    fn revoke_session(&mut self, id: u32, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, ts(Some(now))],
        )? == 1)
    }

    fn sessions(&self, user: Option<u32>) -> Result<Vec<Session>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SESSION_SELECT} WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id DESC"))?;
        Ok(stmt.query_map([user], session_row)?.collect::<Result<_, _>>()?)
    }

    fn purge_sessions(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now = ts(Some(now));
        let n = self.conn.execute("DELETE FROM sessions WHERE refresh_expires <= ?1", [&now])?;
        self.conn.execute("DELETE FROM password_resets WHERE expires_at <= ?1", [&now])?;
        Ok(n)
    }

    fn add_reset(&mut self, user: u32, digest: &[u8], expires: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO password_resets (digest, user_id, expires_at) VALUES (?1, ?2, ?3)",
            params![digest, user, ts(Some(expires))],
        )?;
        Ok(())
    }

    fn take_reset(&mut self, digest: &[u8], now: DateTime<Utc>) -> Result<Option<u32>, StoreError> {
        let row: Option<(u32, DateTime<Utc>)> = self
            .conn
            .query_row(
                "DELETE FROM password_resets WHERE digest = ?1 RETURNING user_id, expires_at",
                [digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.filter(|(_, exp)| *exp > now).map(|(user, _)| user))
    }

    fn peek_reset(&self, digest: &[u8], now: DateTime<Utc>) -> Result<Option<u32>, StoreError> {
        let row: Option<(u32, DateTime<Utc>)> = self
            .conn
            .query_row("SELECT user_id, expires_at FROM password_resets WHERE digest = ?1", [digest], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.filter(|(_, exp)| *exp > now).map(|(user, _)| user))
    }

    fn add_api_key(&mut self, user: u32, digest: &[u8], comment: &str) -> Result<ApiKey, StoreError> {
        let now = Utc::now();
        let account_id: u32 = self.conn.query_row(
            "INSERT INTO api_keys (user_id, digest, comment, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING account_id",
            params![user, digest, comment, ts(Some(now))],
            |r| r.get(0),
        )?;
        Ok(ApiKey { account_id, user_id: user, comment: comment.into(), created_at: now })
    }

    fn api_key(&self, account_id: u32) -> Result<Option<(ApiKey, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT account_id, user_id, comment, created_at, digest FROM api_keys WHERE account_id = ?1",
                [account_id],
                |r| Ok((key_row(r)?, r.get(4)?)),
            )
            .optional()?)
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT account_id, user_id, comment, created_at FROM api_keys ORDER BY account_id",
        )?;
        Ok(stmt.query_map([], key_row)?.collect::<Result<_, _>>()?)
    }

    fn delete_api_key(&mut self, account_id: u32) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM api_keys WHERE account_id = ?1", [account_id])? == 1)
    }

    fn callers(&self) -> Result<Vec<Caller>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.domain, u.username, u.role, a.code FROM users u
             JOIN tenants t ON t.id = u.tenant_id LEFT JOIN auth_codes a ON a.user_id = u.id
             ORDER BY u.id, a.code",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut callers: Vec<Caller> = Vec::new();
        for row in rows {
            let (domain, username, role, code) = row?;
            match callers.last_mut() {
                Some(c) if c.domain == domain && c.username == username => c.codes.extend(code),
                _ => callers.push(Caller { domain, username, role, codes: code.into_iter().collect() }),
            }
        }
        Ok(callers)
    }

    fn auth_codes(&self, user: u32) -> Result<Vec<AuthCode>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT code, description FROM auth_codes WHERE user_id = ?1 ORDER BY code")?;
        Ok(stmt
            .query_map([user], |r| Ok(AuthCode { code: r.get(0)?, description: r.get(1)? }))?
            .collect::<Result<_, _>>()?)
    }

    fn add_auth_codes(&mut self, user: u32, codes: &[AuthCode]) -> Result<(), StoreError> {
        let now = ts(Some(Utc::now()));
        let tx = self.conn.transaction()?;
        for c in codes {
            tx.execute(
                "INSERT INTO auth_codes (user_id, code, description, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user, c.code, c.description, now],
            )
            .map_err(|e| conflict_on_unique(e, || format!("code `{}` exists already", c.code)))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_auth_codes(&mut self, user: u32, codes: &[String]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for c in codes {
            n += tx.execute("DELETE FROM auth_codes WHERE user_id = ?1 AND code = ?2", params![user, c])?;
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, domain: &str) -> Tenant {
        Tenant {
            id: id.into(),
            name: id.into(),
            domain: domain.into(),
            website: String::new(),
            avatar_url: String::new(),
            created_at: Utc::now(),
        }
    }

    fn user(tenant: Option<&str>, group: Option<&str>, name: &str) -> NewUser {
        NewUser {
            tenant: tenant.map(Into::into),
            group: group.map(Into::into),
            username: name.into(),
            password_hash: "h".into(),
            role: "StandardUser".into(),
            force_reset: false,
        }
    }

    #[test]
    fn users_are_unique_per_tenant_in_any_case_and_cascade() {
        let mut s = SqliteStore::memory().unwrap();
        s.add_tenant(&tenant("foo", "foo.example")).unwrap();
        assert!(matches!(s.add_tenant(&tenant("bar", "FOO.example")), Err(StoreError::Conflict(_))));
        s.add_tenant(&tenant("bar", "bar.example")).unwrap();
        s.add_group(&Group {
            tenant: "foo".into(),
            id: "g".into(),
            name: "G".into(),
            created_at: Utc::now(),
        })
        .unwrap();
        let alice = s.add_user(&user(Some("foo"), Some("g"), "alice")).unwrap();
        assert!(matches!(s.add_user(&user(Some("foo"), Some("g"), "ALICE")), Err(StoreError::Conflict(_))));
        assert!(matches!(s.add_user(&user(Some("bar"), Some("nogroup"), "x")), Err(StoreError::Conflict(_))));
        s.add_user(&user(None, None, "admin")).unwrap();
        assert!(matches!(s.add_user(&user(None, None, "Admin")), Err(StoreError::Conflict(_))));
        assert_eq!(s.find_user(Some("foo"), "Alice").unwrap().unwrap().0.id, alice.id);
        assert!(s.find_user(Some("bar"), "alice").unwrap().is_none());
        s.add_auth_codes(alice.id, &[AuthCode { code: "01".into(), description: "d".into() }]).unwrap();
        assert!(s.delete_tenant("foo").unwrap());
        assert!(s.user(alice.id).unwrap().is_none(), "deleting the tenant deletes its users");
        assert!(s.auth_codes(alice.id).unwrap().is_empty());
    }

    #[test]
    fn sessions_rotate_revoke_and_a_new_password_revokes_all() {
        let mut s = SqliteStore::memory().unwrap();
        let u = s.add_user(&user(None, None, "admin")).unwrap();
        let now = Utc::now();
        let tokens = |a: u8| SessionTokens {
            access_digest: vec![a],
            access_expires: now + chrono::Duration::seconds(1800),
            refresh_digest: vec![a, a],
            refresh_expires: now + chrono::Duration::days(1),
        };
        let one = s.add_session(u.id, &tokens(1), true).unwrap();
        assert_eq!(s.session_by_access(&[1]).unwrap().unwrap().id, one.id);
        s.rotate_session(one.id, &tokens(2)).unwrap().unwrap();
        assert!(s.session_by_access(&[1]).unwrap().is_none(), "the old token is gone");
        assert!(s.session_by_refresh(&[2, 2]).unwrap().is_some());
        let two = s.add_session(u.id, &tokens(3), true).unwrap();
        assert!(s.revoke_session(one.id, now).unwrap());
        assert!(!s.revoke_session(one.id, now).unwrap());
        assert!(s.rotate_session(one.id, &tokens(4)).unwrap().is_none(), "a revoked session stays revoked");
        s.update_user(u.id, None, None, Some("new"), None).unwrap().unwrap();
        assert!(s.session_by_access(&[3]).unwrap().unwrap().revoked_at.is_some());
        assert_eq!(s.sessions(Some(u.id)).unwrap()[0].id, two.id);
    }

    #[test]
    fn reset_tokens_are_single_use_and_expire() {
        let mut s = SqliteStore::memory().unwrap();
        let u = s.add_user(&user(None, None, "admin")).unwrap();
        let now = Utc::now();
        s.add_reset(u.id, b"a", now + chrono::Duration::seconds(60)).unwrap();
        s.add_reset(u.id, b"b", now - chrono::Duration::seconds(1)).unwrap();
        assert_eq!(s.take_reset(b"a", now).unwrap(), Some(u.id));
        assert_eq!(s.take_reset(b"a", now).unwrap(), None);
        assert_eq!(s.take_reset(b"b", now).unwrap(), None);
    }

    #[test]
    fn roles_in_use_cannot_be_deleted() {
        let mut s = SqliteStore::memory().unwrap();
        let r = Role {
            name: "Auditor".into(),
            level: Level::System,
            permissions: [Perm::SecurityRead].into(),
            builtin: false,
            description: String::new(),
        };
        s.add_role(&r).unwrap();
        assert_eq!(s.custom_roles().unwrap(), [r]);
        let mut u = user(None, None, "audit");
        u.role = "Auditor".into();
        let u = s.add_user(&u).unwrap();
        assert!(matches!(s.delete_role("auditor"), Err(StoreError::Conflict(_))));
        s.delete_user(u.id).unwrap();
        assert!(s.delete_role("auditor").unwrap());
    }
}
