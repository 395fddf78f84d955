//! Who is calling and what they may do: the principal of a request, its role's rights and the
//! reach of its level (system, tenant, group, user). The web layer names the principal from
//! the transport and the credentials; the service checks rights with it.

use std::net::IpAddr;

use super::{Result, ServiceError};
use crate::accounts::{self, Level, Perm, Role, User};

/// Who is calling, with the rights of their role.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user; `None` for root on the Unix socket.
    pub user: Option<User>,
    /// The user's role.
    pub role: Role,
    /// The session of the access token used, if one was.
    pub session: Option<u32>,
    /// Where the request came from (`None`: the Unix socket).
    pub peer: Option<IpAddr>,
}

impl Principal {
    /// Root on the Unix socket: every right, everywhere.
    pub fn root() -> Self {
        Self {
            user: None,
            role: accounts::builtin_role("SystemAdmin").expect("built-in role"),
            session: None,
            peer: None,
        }
    }

    /// The caller as logs and errors name them.
    pub fn name(&self) -> String {
        self.user.as_ref().map_or_else(|| "root (control socket)".into(), |u| u.username.clone())
    }

    /// 403 when the user must set a new password before anything else.
    pub fn no_pending_reset(&self) -> Result<()> {
        if self.user.as_ref().is_some_and(|u| u.force_reset) {
            return Err(ServiceError::Forbidden(
                "set a new password first (POST /api/v1/users/{id}/password)".into(),
            ));
        }
        Ok(())
    }

    /// 403 unless the role has `p` (and the user need not set a new password first).
    pub fn need(&self, p: Perm) -> Result<()> {
        self.no_pending_reset()?;
        if self.role.has(p) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "role {} of {} lacks the right {p}",
                self.role.name,
                self.name()
            )))
        }
    }

    /// 403 unless the role is of system level: what concerns the whole host (the CLI's `/v1`
    /// routes: every network rule, every call event with its callers and numbers, file paths)
    /// is not for a tenant's administrators.
    pub fn need_system_level(&self) -> Result<()> {
        if self.role.level == Level::System {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "role {} of {} is of {} level; this concerns the whole system",
                self.role.name,
                self.name(),
                self.role.level.as_str()
            )))
        }
    }

    /// The caller's tenant, for users below system level.
    pub fn tenant(&self) -> Option<&str> {
        self.user.as_ref().and_then(|u| u.tenant.as_deref())
    }

    /// Whether the role's level reaches the tenant `t`.
    pub fn reaches_tenant(&self, t: &str) -> bool {
        match self.role.level {
            Level::System => true,
            _ => self.tenant() == Some(t),
        }
    }

    /// Whether the role's level reaches the user `u`.
    pub fn reaches_user(&self, u: &User) -> bool {
        let me = self.user.as_ref();
        match self.role.level {
            Level::System => true,
            Level::Tenant => me.is_some_and(|m| m.tenant.is_some() && m.tenant == u.tenant),
            Level::Group => {
                me.is_some_and(|m| m.tenant.is_some() && m.tenant == u.tenant && m.group == u.group)
            }
            Level::User => me.is_some_and(|m| m.id == u.id),
        }
    }

    /// 403 unless [`Principal::reaches_user`].
    pub fn reach_user(&self, u: &User) -> Result<()> {
        if self.reaches_user(u) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "user {} is outside the reach of {} (role {}, level {})",
                u.username,
                self.name(),
                self.role.name,
                self.role.level.as_str()
            )))
        }
    }
}
