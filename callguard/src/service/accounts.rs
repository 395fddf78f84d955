//! Accounts through the service: tenants and their groups, users, roles, sessions and API keys.
//!
//! Nobody can give more than they have: a user created or a role defined by a caller never has
//! a permission the caller lacks or a level above the caller's, and a caller acts only on the
//! tenants and users its level reaches.

use chrono::Utc;

use super::{Result, Service, ServiceError, access::Principal};
use crate::{
    accounts::{
        self, AVATAR_MAX, ApiKey, Blob, Group, Level, NAME_MAX, Perm, Role, Session, Tenant, User,
        check_domain, check_password, check_slug, check_username,
    },
    api::admin::{
        CreatedKey, CreatedUser, NewGroup, NewKey, NewPassword, NewRole, NewTenant, NewUserReq, UserPatch,
    },
    numbers::check_len,
    store::NewUser,
};

fn check_name(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.chars().count() > NAME_MAX {
        return Err(ServiceError::invalid(field, format!("1 to {NAME_MAX} characters")));
    }
    Ok(())
}

/// Checks that the caller may hand out `role`: not above its own level, no right it lacks.
fn may_grant(p: &Principal, role: &Role) -> Result<()> {
    if role.level > p.role.level {
        return Err(ServiceError::Forbidden(format!(
            "role {} (level {}) reaches further than yours ({})",
            role.name,
            role.level.as_str(),
            p.role.level.as_str()
        )));
    }
    if let Some(x) = role.permissions.iter().find(|x| !p.role.has(**x)) {
        return Err(ServiceError::Forbidden(format!("role {} has {x}, which you lack", role.name)));
    }
    Ok(())
}

/// Whether user name and role fit the reserved-name rule.
fn reserved_ok(username: &str, role: &Role) -> bool {
    check_username(username, role.name == "SystemAdmin").is_ok()
}

/// A new password, checked and hashed off the daemon's lock ([`Hashed::new`]), ready to store.
#[derive(Debug)]
pub struct Hashed(String);

impl Hashed {
    /// The PHC string to store.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Checks `password` against the password rules and hashes it (Argon2, in one of the
    /// bounded slots). Blocking and slow: call it off the daemon's lock, so that the control
    /// plane never waits for a password hash.
    pub fn new(password: &str) -> Result<Self> {
        check_password(password).map_err(|m| ServiceError::invalid("password", m))?;
        accounts::hash_password(password).map(Self).map_err(ServiceError::Internal)
    }
}

/// A password change that passed the rights checks ([`Service::plan_password`]); what is left
/// needs Argon2 and is done off the lock by [`PasswordChange::hash`].
#[derive(Debug)]
pub struct PasswordChange {
    id: u32,
    /// One's own: the old password and the hash it must match.
    old: Option<(String, String)>,
    new: String,
}

impl PasswordChange {
    /// Verifies the old password (one's own change) and hashes the new one. Blocking and slow:
    /// off the lock.
    pub fn hash(&self) -> Result<Hashed> {
        if let Some((old, old_hash)) = &self.old
            && !accounts::verify_password(old, old_hash)
        {
            return Err(ServiceError::invalid("old_password", "does not match"));
        }
        Hashed::new(&self.new)
    }
}

impl Service {
    /// The role called `name`: built-in or custom.
    pub fn find_role(&self, name: &str) -> Result<Option<Role>> {
        if let Some(r) = accounts::builtin_role(name) {
            return Ok(Some(r));
        }
        Ok(self.store.custom_roles()?.into_iter().find(|r| r.name.eq_ignore_ascii_case(name)))
    }

    /// Every tenant the caller reaches.
    pub fn tenants(&self, p: &Principal) -> Result<Vec<Tenant>> {
        p.need(Perm::TenantsRead)?;
        Ok(self.store.tenants()?.into_iter().filter(|t| p.reaches_tenant(&t.id)).collect())
    }

    /// Creates a tenant (system level only).
    pub fn add_tenant(&mut self, p: &Principal, req: NewTenant) -> Result<Tenant> {
        p.need(Perm::TenantsWrite)?;
        if p.role.level != Level::System {
            return Err(ServiceError::Forbidden("creating tenants needs a system-level role".into()));
        }
        check_slug(&req.id).map_err(|m| ServiceError::invalid("id", m))?;
        check_name("name", &req.name)?;
        check_domain(&req.domain).map_err(|m| ServiceError::invalid("domain", m))?;
        check_len(&req.website, 256).map_err(|m| ServiceError::invalid("website", m))?;
        let t = Tenant {
            id: req.id,
            name: req.name,
            domain: req.domain,
            website: req.website,
            avatar_url: String::new(),
            created_at: Utc::now(),
        };
        self.store.add_tenant(&t)?;
        Ok(t)
    }

    /// One tenant, when the caller reaches it.
    pub(super) fn reached_tenant(&self, p: &Principal, id: &str) -> Result<Tenant> {
        let t = self.store.tenants()?.into_iter().find(|t| t.id == id);
        let t = t.ok_or_else(|| ServiceError::not_found("tenant", format!("no tenant `{id}`")))?;
        if !p.reaches_tenant(&t.id) {
            return Err(ServiceError::Forbidden(format!("tenant `{id}` is outside your reach")));
        }
        Ok(t)
    }

    /// One tenant.
    pub fn tenant(&self, p: &Principal, id: &str) -> Result<Tenant> {
        p.need(Perm::TenantsRead)?;
        self.reached_tenant(p, id)
    }

    /// Deletes a tenant with its groups, users, their sessions, keys and codes.
    pub fn delete_tenant(&mut self, p: &Principal, id: &str) -> Result<()> {
        p.need(Perm::TenantsWrite)?;
        self.reached_tenant(p, id)?;
        self.store.delete_tenant(id)?;
        Ok(())
    }

    /// Replaces a tenant's avatar (`tenants.write`): a PNG, JPEG, GIF or WebP image of at most
    /// [`AVATAR_MAX`] bytes, its type found from its content; `declared` (the request's
    /// `Content-Type`), when given, must agree. The tenant's `avatar_url` then names it.
    pub fn set_tenant_avatar(
        &mut self,
        p: &Principal,
        tenant: &str,
        declared: Option<&str>,
        data: Vec<u8>,
    ) -> Result<Tenant> {
        p.need(Perm::TenantsWrite)?;
        self.reached_tenant(p, tenant)?;
        if data.is_empty() {
            return Err(ServiceError::invalid("avatar", "the body is empty: send the image"));
        }
        if data.len() > AVATAR_MAX {
            return Err(ServiceError::invalid(
                "avatar",
                format!("{} bytes; at most {AVATAR_MAX}", data.len()),
            ));
        }
        let Some(found) = accounts::image_type(&data) else {
            return Err(ServiceError::invalid("avatar", "not a PNG, JPEG, GIF or WebP image"));
        };
        if let Some(d) = declared.map(|d| d.split(';').next().unwrap_or_default().trim())
            && !d.eq_ignore_ascii_case(found)
            && !d.eq_ignore_ascii_case("application/octet-stream")
        {
            return Err(ServiceError::invalid("avatar", format!("the body is {found}, not {d}")));
        }
        let blob = Blob { id: accounts::new_blob_id(), content_type: found.into(), data };
        self.store.set_tenant_avatar(tenant, Some(&blob))?;
        self.reached_tenant(p, tenant)
    }

    /// Removes a tenant's avatar (`tenants.write`).
    pub fn delete_tenant_avatar(&mut self, p: &Principal, tenant: &str) -> Result<()> {
        p.need(Perm::TenantsWrite)?;
        self.reached_tenant(p, tenant)?;
        self.store.set_tenant_avatar(tenant, None)?;
        Ok(())
    }

    /// A blob by the id in its path; anyone may download it (the sign-in page shows the
    /// tenant's avatar before anyone signed in), which the id's 128 random bits make safe.
    pub fn blob(&self, id: &str) -> Result<Blob> {
        let missing = || ServiceError::not_found("blob", format!("no blob `{id}`"));
        if !accounts::is_blob_id(id) {
            return Err(missing());
        }
        self.store.blob(id)?.ok_or_else(missing)
    }

    /// The groups of a tenant.
    pub fn groups(&self, p: &Principal, tenant: &str) -> Result<Vec<Group>> {
        p.need(Perm::UsersRead)?;
        self.reached_tenant(p, tenant)?;
        Ok(self.store.groups(Some(tenant))?)
    }

    /// Creates a group (tenant level or above).
    pub fn add_group(&mut self, p: &Principal, tenant: &str, req: NewGroup) -> Result<Group> {
        p.need(Perm::UsersWrite)?;
        if p.role.level < Level::Tenant {
            return Err(ServiceError::Forbidden("creating groups needs a tenant-level role".into()));
        }
        check_slug(&req.id).map_err(|m| ServiceError::invalid("id", m))?;
        let name = if req.name.is_empty() { req.id.clone() } else { req.name };
        check_name("name", &name)?;
        self.reached_tenant(p, tenant)?;
        let g = Group { tenant: tenant.to_owned(), id: req.id, name, created_at: Utc::now() };
        self.store.add_group(&g)?;
        Ok(g)
    }

    /// Deletes a group with its users (tenant level or above).
    pub fn delete_group(&mut self, p: &Principal, tenant: &str, group: &str) -> Result<()> {
        p.need(Perm::UsersWrite)?;
        if p.role.level < Level::Tenant {
            return Err(ServiceError::Forbidden("deleting groups needs a tenant-level role".into()));
        }
        self.reached_tenant(p, tenant)?;
        if self.store.delete_group(tenant, group)? {
            Ok(())
        } else {
            Err(ServiceError::not_found("group", format!("no group `{group}` in tenant `{tenant}`")))
        }
    }

    /// The users the caller reaches, of one tenant and group when given.
    pub fn users(&self, p: &Principal, tenant: Option<&str>, group: Option<&str>) -> Result<Vec<User>> {
        p.need(Perm::UsersRead)?;
        Ok(self
            .store
            .users()?
            .into_iter()
            .filter(|u| p.reaches_user(u))
            .filter(|u| tenant.is_none() || u.tenant.as_deref() == tenant)
            .filter(|u| group.is_none() || u.group.as_deref() == group)
            .collect())
    }

    /// Where a user of `role` sits: checks tenant and group against the level.
    fn placement(&self, role: &Role, tenant: Option<&str>, group: Option<&str>) -> Result<()> {
        match (role.level, tenant, group) {
            (Level::System, None, None) => return Ok(()),
            (Level::System, _, _) => {
                return Err(ServiceError::invalid(
                    "tenant",
                    format!("role {} is system-wide: no tenant or group", role.name),
                ));
            }
            (_, None, _) => {
                return Err(ServiceError::invalid("tenant", format!("role {} needs a tenant", role.name)));
            }
            (Level::Group | Level::User, _, None) => {
                return Err(ServiceError::invalid("group", format!("role {} needs a group", role.name)));
            }
            _ => {}
        }
        let t = tenant.unwrap_or_default();
        if !self.store.tenants()?.iter().any(|x| x.id == t) {
            return Err(ServiceError::invalid("tenant", format!("no tenant `{t}`")));
        }
        if let Some(g) = group
            && !self.store.groups(Some(t))?.iter().any(|x| x.id == g)
        {
            return Err(ServiceError::invalid("group", format!("no group `{g}` in tenant `{t}`")));
        }
        Ok(())
    }

    /// Creates a user within the caller's reach, with a role no stronger than the caller's; a
    /// password is generated (and answered once) when none is given.
    /// Creates a user with `password` (the request's, or a generated one, `generated`), hashed
    /// beforehand off the lock.
    pub fn add_user(
        &mut self,
        p: &Principal,
        req: NewUserReq,
        password: Hashed,
        generated: Option<String>,
    ) -> Result<CreatedUser> {
        p.need(Perm::UsersWrite)?;
        let role = self
            .find_role(&req.role)?
            .ok_or_else(|| ServiceError::invalid("role", format!("no role `{}`", req.role)))?;
        check_username(&req.username, role.name == "SystemAdmin")
            .map_err(|m| ServiceError::invalid("username", m))?;
        may_grant(p, &role)?;
        self.placement(&role, req.tenant.as_deref(), req.group.as_deref())?;
        let probe = User {
            id: 0,
            tenant: req.tenant.clone(),
            group: req.group.clone(),
            username: req.username.clone(),
            role: role.name.clone(),
            force_reset: false,
            created_at: Utc::now(),
        };
        p.reach_user(&probe)?;
        let user = self.store.add_user(&NewUser {
            tenant: req.tenant,
            group: req.group,
            username: req.username,
            password_hash: password.0,
            role: role.name,
            force_reset: req.force_reset,
        })?;
        Ok(CreatedUser { user, password: generated })
    }

    /// User `id`, when the caller reaches it.
    fn reached_user(&self, p: &Principal, id: u32) -> Result<User> {
        let u = self
            .store
            .user(id)?
            .map(|(u, _)| u)
            .ok_or_else(|| ServiceError::not_found("id", format!("no user {id}")))?;
        p.reach_user(&u)?;
        Ok(u)
    }

    /// One user.
    pub fn user(&self, p: &Principal, id: u32) -> Result<User> {
        p.need(Perm::UsersRead)?;
        self.reached_user(p, id)
    }

    /// Changes a user's role, group or reset flag; not one's own role.
    pub fn update_user(&mut self, p: &Principal, id: u32, req: &UserPatch) -> Result<User> {
        p.need(Perm::UsersWrite)?;
        let u = self.reached_user(p, id)?;
        if p.user.as_ref().is_some_and(|me| me.id == id) && req.role.is_some() {
            return Err(ServiceError::Forbidden("you cannot change your own role".into()));
        }
        // Nobody changes a user stronger than themselves: the role held now counts, not only
        // the one given (else a Dealer could demote a system administrator).
        if let Some(current) = self.find_role(&u.role)? {
            may_grant(p, &current)?;
        }
        let role_name = req.role.clone().unwrap_or_else(|| u.role.clone());
        let role = self
            .find_role(&role_name)?
            .ok_or_else(|| ServiceError::invalid("role", format!("no role `{role_name}`")))?;
        may_grant(p, &role)?;
        let group = req.group.clone().or_else(|| u.group.clone());
        self.placement(&role, u.tenant.as_deref(), group.as_deref())?;
        if !reserved_ok(&u.username, &role) {
            return Err(ServiceError::invalid(
                "role",
                format!("`{}` is reserved for the system administrator", u.username),
            ));
        }
        let moved = User { group: group.clone(), ..u.clone() };
        p.reach_user(&moved)?;
        let updated = self.store.update_user(
            id,
            Some(&role.name),
            req.group.as_ref().map(|g| Some(g.as_str())),
            None,
            req.force_reset,
        )?;
        updated.ok_or_else(|| ServiceError::not_found("id", format!("no user {id}")))
    }

    /// Deletes a user with its sessions, keys and codes; not oneself.
    pub fn delete_user(&mut self, p: &Principal, id: u32) -> Result<()> {
        p.need(Perm::UsersWrite)?;
        if p.user.as_ref().is_some_and(|me| me.id == id) {
            return Err(ServiceError::Forbidden("you cannot delete yourself".into()));
        }
        let u = self.reached_user(p, id)?;
        if let Some(r) = self.find_role(&u.role)? {
            may_grant(p, &r)?;
        }
        self.store.delete_user(id)?;
        Ok(())
    }

    /// Checks the rights for a password change. One's own needs the old password (and clears a
    /// forced reset); another user's needs `users.write` over them and forces them to choose a
    /// new one. The Argon2 work is left to [`PasswordChange::hash`], off the lock.
    pub fn plan_password(&self, p: &Principal, id: u32, req: &NewPassword) -> Result<PasswordChange> {
        check_password(&req.password).map_err(|m| ServiceError::invalid("password", m))?;
        let own = p.user.as_ref().is_some_and(|me| me.id == id);
        let (target, old_hash) =
            self.store.user(id)?.ok_or_else(|| ServiceError::not_found("id", format!("no user {id}")))?;
        let old = if own {
            let old =
                req.old_password.clone().ok_or_else(|| ServiceError::invalid("old_password", "required"))?;
            Some((old, old_hash))
        } else {
            p.need(Perm::UsersWrite)?;
            p.reach_user(&target)?;
            if let Some(r) = self.find_role(&target.role)? {
                may_grant(p, &r)?;
            }
            None
        };
        Ok(PasswordChange { id, old, new: req.password.clone() })
    }

    /// Stores a password change planned by [`Service::plan_password`] and hashed off the lock.
    /// Sessions, pending reset tokens and API keys of the user are revoked with it.
    pub fn set_password(&mut self, change: &PasswordChange, hashed: Hashed) -> Result<()> {
        let own = change.old.is_some();
        if let Some((_, old_hash)) = &change.old {
            // The old password was checked against this hash off the lock: it must still be it.
            let now = self.store.user(change.id)?.map(|(_, h)| h);
            if now.as_ref() != Some(old_hash) {
                return Err(ServiceError::Conflict("the password changed meanwhile; try again".into()));
            }
        }
        // Set by someone else (root on the control socket included), the password is one the
        // user must replace at the next sign-in.
        let Hashed(hash) = hashed;
        self.store.update_user(change.id, None, None, Some(&hash), Some(!own))?;
        Ok(())
    }

    /// Built-in and custom roles.
    pub fn roles(&self, p: &Principal) -> Result<Vec<Role>> {
        p.need(Perm::RolesRead)?;
        let mut all = accounts::builtin_roles();
        all.extend(self.store.custom_roles()?);
        Ok(all)
    }

    /// One role.
    pub fn role(&self, p: &Principal, name: &str) -> Result<Role> {
        p.need(Perm::RolesRead)?;
        self.find_role(name)?.ok_or_else(|| ServiceError::not_found("name", format!("no role `{name}`")))
    }

    /// Creates a custom role, no stronger than the caller's own.
    pub fn add_role(&mut self, p: &Principal, req: NewRole) -> Result<Role> {
        p.need(Perm::RolesWrite)?;
        let ok = !req.name.is_empty()
            && req.name.len() <= NAME_MAX
            && req.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            return Err(ServiceError::invalid("name", format!("1 to {NAME_MAX} letters, digits, _ - or .")));
        }
        if accounts::builtin_role(&req.name).is_some() {
            return Err(ServiceError::invalid("name", format!("`{}` is a built-in role's name", req.name)));
        }
        check_len(&req.description, 256).map_err(|m| ServiceError::invalid("description", m))?;
        let role = Role {
            name: req.name,
            level: req.level,
            permissions: req.permissions.into_iter().collect(),
            builtin: false,
            description: req.description,
        };
        may_grant(p, &role)?;
        self.store.add_role(&role)?;
        Ok(role)
    }

    /// Deletes a custom role (not while a user holds it).
    pub fn delete_role(&mut self, p: &Principal, name: &str) -> Result<()> {
        p.need(Perm::RolesWrite)?;
        if accounts::builtin_role(name).is_some() {
            return Err(ServiceError::Conflict(format!("{name} is a built-in role: it cannot be deleted")));
        }
        let role = self
            .find_role(name)?
            .ok_or_else(|| ServiceError::not_found("name", format!("no role `{name}`")))?;
        may_grant(p, &role)?;
        self.store.delete_role(&role.name)?;
        Ok(())
    }

    /// Sessions: one's own, or another user's (`users.read` over them).
    pub fn sessions(&self, p: &Principal, user: Option<u32>) -> Result<Vec<Session>> {
        let me = p.user.as_ref().map(|u| u.id);
        let who = match (user, me) {
            (Some(id), m) if Some(id) != m => {
                p.need(Perm::UsersRead)?;
                self.reached_user(p, id)?;
                Some(id)
            }
            (None, None) => None,
            (_, m) => m,
        };
        Ok(self.store.sessions(who)?)
    }

    /// Revokes a session: one's own, or with `users.write` over its user.
    pub fn revoke_session(&mut self, p: &Principal, id: u32) -> Result<()> {
        let session = self
            .store
            .sessions(None)?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| ServiceError::not_found("id", format!("no session {id}")))?;
        if p.user.as_ref().is_none_or(|me| me.id != session.user_id) {
            p.need(Perm::UsersWrite)?;
            self.reached_user(p, session.user_id)?;
        }
        self.store.revoke_session(id, Utc::now())?;
        Ok(())
    }

    /// API keys: the caller's own, or all with a system-level `users.read`.
    pub fn api_keys(&self, p: &Principal) -> Result<Vec<ApiKey>> {
        let all = self.store.api_keys()?;
        let sees_all = p.role.level == Level::System && p.role.has(Perm::UsersRead);
        let me = p.user.as_ref().map(|u| u.id);
        Ok(all.into_iter().filter(|k| sees_all || Some(k.user_id) == me).collect())
    }

    /// Creates an API key for the caller, or for another user with `users.write` over them; the
    /// secret is answered once.
    pub fn add_api_key(&mut self, p: &Principal, req: &NewKey) -> Result<CreatedKey> {
        check_len(&req.comment, 256).map_err(|m| ServiceError::invalid("comment", m))?;
        let me = p.user.as_ref().map(|u| u.id);
        let owner = match (req.user_id, me) {
            (Some(id), m) if Some(id) != m => {
                p.need(Perm::UsersWrite)?;
                let u = self.reached_user(p, id)?;
                if let Some(r) = self.find_role(&u.role)? {
                    may_grant(p, &r)?;
                }
                id
            }
            (_, Some(m)) => {
                // A key outlives passwords: not for an account that must first replace its own.
                p.no_pending_reset()?;
                m
            }
            (_, None) => return Err(ServiceError::invalid("user_id", "required on the control socket")),
        };
        let secret = accounts::new_secret();
        let key = self.store.add_api_key(owner, &accounts::secret_digest(&secret), &req.comment)?;
        Ok(CreatedKey { key, api_key: secret })
    }

    /// Deletes an API key: one's own, or with `users.write` over its user.
    pub fn delete_api_key(&mut self, p: &Principal, id: u32) -> Result<()> {
        let (k, _) = self
            .store
            .api_key(id)?
            .ok_or_else(|| ServiceError::not_found("account_id", format!("no API key {id}")))?;
        if p.user.as_ref().is_none_or(|me| me.id != k.user_id) {
            p.need(Perm::UsersWrite)?;
            self.reached_user(p, k.user_id)?;
        }
        self.store.delete_api_key(id)?;
        Ok(())
    }
}
