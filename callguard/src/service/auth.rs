//! Authentication through the service: who a token or an API key belongs to, the stored half
//! of signing in (the user, the session and its tokens), refresh, sign-out and password reset.
//! Throttling is per HTTP peer and lives in the web layer; the password check itself runs off
//! the service's lock (Argon2 takes tens of milliseconds).

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{Result, Service, ServiceError, access::Principal, accounts::Hashed};
use crate::{
    accounts::{self, User, check_password},
    api::auth::{TenantInfo, TokenInfo, Tokens},
    config::SystemInfo,
    store::SessionTokens,
};

/// Why a request's credentials name nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token or key at all.
    Missing,
    /// Something that is not a credential of ours.
    Unknown,
    /// The access token expired.
    Expired,
    /// The session was signed out or revoked, or its user is gone.
    Revoked,
}

/// What a password reset hands to the configured hook, which delivers it.
#[derive(Clone, Debug)]
pub struct ResetTicket {
    /// The single-use token (only its digest is stored).
    pub token: String,
    /// The user's name.
    pub user: String,
    /// The SIP domain given.
    pub domain: String,
    /// Where the user's reset page is.
    pub callback: String,
    /// When the token stops working.
    pub expires: DateTime<Utc>,
}

impl Service {
    /// The system's metadata and, with `domain`, that tenant's (no token needed).
    pub fn info(&self, domain: Option<&str>) -> Result<(SystemInfo, TenantInfo)> {
        let system = self.cfg.api.info.clone();
        let tenant = match domain.map(str::trim).filter(|d| !d.is_empty()) {
            None => TenantInfo::default(),
            Some(d) => {
                let t = self.store.tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(d));
                let t = t.ok_or_else(|| {
                    ServiceError::not_found("domain", format!("no tenant has the domain `{d}`"))
                })?;
                let sso = self.store.tenant_sso(&t.id)?.filter(|s| s.enabled);
                let ms365 = sso.as_ref().and_then(crate::sso::SsoSettings::microsoft_authorization_endpoint);
                TenantInfo {
                    name: Some(t.name),
                    domain: Some(t.domain),
                    website: Some(t.website),
                    avatar_url: Some(t.avatar_url),
                    enable_ms365_integration: Some(ms365.is_some()),
                    ms365_authorization_endpoint: Some(ms365.unwrap_or_default()),
                    social_sign_in: Some(sso.map(|s| s.provider.name().to_owned()).unwrap_or_default()),
                }
            }
        };
        Ok((system, tenant))
    }

    /// The principal acting as user `id` (with the session of the token used, if one was).
    pub fn principal_of(
        &self,
        id: u32,
        session: Option<u32>,
        peer: Option<IpAddr>,
    ) -> Result<std::result::Result<Principal, Denied>> {
        let Some((user, _)) = self.store.user(id)? else { return Ok(Err(Denied::Revoked)) };
        let Some(role) = self.find_role(&user.role)? else { return Ok(Err(Denied::Revoked)) };
        Ok(Ok(Principal { user: Some(user), role, session, peer }))
    }

    /// The principal of an access token.
    pub fn principal_by_token(
        &self,
        token: &str,
        peer: Option<IpAddr>,
    ) -> Result<std::result::Result<Principal, Denied>> {
        let Some(session) = self.store.session_by_access(&accounts::secret_digest(token))? else {
            return Ok(Err(Denied::Unknown));
        };
        if session.revoked_at.is_some() {
            return Ok(Err(Denied::Revoked));
        }
        if session.access_expires <= Utc::now() {
            return Ok(Err(Denied::Expired));
        }
        self.principal_of(session.user_id, Some(session.id), peer)
    }

    /// The principal of a Voximplant-style `account_id` and `api_key` pair.
    pub fn principal_by_api_key(
        &self,
        account_id: &str,
        key: &str,
        peer: Option<IpAddr>,
    ) -> Result<std::result::Result<Principal, Denied>> {
        let Ok(id) = account_id.trim().parse::<u32>() else { return Ok(Err(Denied::Unknown)) };
        let Some((k, digest)) = self.store.api_key(id)? else { return Ok(Err(Denied::Unknown)) };
        if digest != accounts::secret_digest(key) {
            return Ok(Err(Denied::Unknown));
        }
        self.principal_of(k.user_id, None, peer)
    }

    /// The user signing in as `username` in the tenant of `domain` (none: system users), with
    /// the stored password hash to check; `None` when there is no such user.
    pub fn sign_in_candidate(&self, domain: &str, username: &str) -> Result<Option<(User, String)>> {
        let domain = domain.trim();
        let tenant = if domain.is_empty() {
            None
        } else {
            match self.store.tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(domain)) {
                Some(t) => Some(t.id),
                None => return Ok(None),
            }
        };
        Ok(self.store.find_user(tenant.as_deref(), username.trim())?)
    }

    /// Starts a session for `user` (or rotates the tokens of session `rotate`).
    pub fn issue_tokens(&mut self, user: u32, verified: bool, rotate: Option<u32>) -> Result<Tokens> {
        let (access_secs, refresh_secs) = (self.cfg.api.access_token_secs, self.cfg.api.refresh_token_secs);
        let (access, refresh) = (accounts::new_secret(), accounts::new_secret());
        let now = Utc::now();
        let t = SessionTokens {
            access_digest: accounts::secret_digest(&access),
            access_expires: now + chrono::Duration::seconds(access_secs as i64),
            refresh_digest: accounts::secret_digest(&refresh),
            refresh_expires: now + chrono::Duration::seconds(refresh_secs as i64),
        };
        match rotate {
            Some(id) => {
                self.store
                    .rotate_session(id, &t)?
                    .ok_or_else(|| ServiceError::Unauthorized("the session was revoked".into()))?;
            }
            None => {
                self.store.add_session(user, &t, verified)?;
            }
        }
        Ok(Tokens {
            token_type: "Bearer".into(),
            access_token: access,
            refresh_token: refresh,
            expires_in: access_secs,
        })
    }

    /// A new token pair for a refresh token (the old pair stops working).
    pub fn refresh_tokens(&mut self, refresh_token: &str) -> Result<Tokens> {
        let digest = accounts::secret_digest(refresh_token);
        let Some(session) = self.store.session_by_refresh(&digest)? else {
            // A refresh token used a second time: one of the two users holds a stolen copy, and
            // which one cannot be told, so the session ends for both.
            if let Some(s) = self.store.session_by_spent_refresh(&digest)? {
                self.store.revoke_session(s.id, Utc::now())?;
                tracing::warn!(
                    session = s.id,
                    user = s.user_id,
                    "a spent refresh token was used again; session revoked"
                );
                return Err(ServiceError::Unauthorized(
                    "this refresh token was used before: the session is revoked; sign in again".into(),
                ));
            }
            return Err(ServiceError::Unauthorized("unknown refresh token".into()));
        };
        if session.revoked_at.is_some() {
            return Err(ServiceError::Unauthorized("the session was revoked (signed out)".into()));
        }
        if session.refresh_expires <= Utc::now() {
            return Err(ServiceError::Unauthorized("the refresh token has expired; sign in again".into()));
        }
        self.issue_tokens(session.user_id, session.password_verified, Some(session.id))
    }

    /// What the caller's access token is.
    pub fn token_info(&self, p: &Principal) -> Result<TokenInfo> {
        let (Some(user), Some(id)) = (&p.user, p.session) else {
            return Err(ServiceError::invalid("authorization", "this request carries no access token"));
        };
        let session = self
            .store
            .sessions(Some(user.id))?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| ServiceError::Unauthorized("the session is gone".into()))?;
        Ok(TokenInfo {
            expires_at: session.access_expires,
            expires_in: (session.access_expires - Utc::now()).num_seconds().max(0),
            role: p.role.name.clone(),
            user: user.username.clone(),
            user_id: user.id,
            tenant: user.tenant.clone(),
            password_verified: session.password_verified,
            force_reset: user.force_reset,
        })
    }

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub fn sign_out(&mut self, p: &Principal) -> Result<()> {
        let Some(id) = p.session else {
            return Err(ServiceError::invalid("authorization", "this request carries no access token"));
        };
        self.store.revoke_session(id, Utc::now())?;
        Ok(())
    }

    /// Stores a single-use reset token for the user, when there is one; the caller hands the
    /// ticket to the hook. `None` for an unknown user (the API answers the same either way).
    pub fn start_reset(
        &mut self,
        domain: &str,
        username: &str,
        callback: &str,
    ) -> Result<Option<ResetTicket>> {
        if callback.len() > 2048 {
            return Err(ServiceError::invalid("callback", "longer than 2048 bytes"));
        }
        self.check_callback(callback)?;
        let Some((user, _)) = self.sign_in_candidate(domain, username)? else { return Ok(None) };
        let token = accounts::new_secret();
        let expires = Utc::now() + chrono::Duration::seconds(self.cfg.api.reset_token_secs as i64);
        self.store.add_reset(user.id, &accounts::secret_digest(&token), expires)?;
        Ok(Some(ResetTicket {
            token,
            user: user.username,
            domain: domain.trim().to_owned(),
            callback: callback.to_owned(),
            expires,
        }))
    }

    /// Whether `token` is a reset token that can still be used: checked before any Argon2 work,
    /// so that a token nobody was given costs nothing.
    pub fn reset_pending(&self, token: &str) -> Result<()> {
        match self.store.peek_reset(&accounts::secret_digest(token), Utc::now())? {
            Some(_) => Ok(()),
            None => Err(ServiceError::invalid("token", "unknown, used or expired reset token")),
        }
    }

    /// Sets a new password with a reset token; `hashed` is its hash, made off the lock. The
    /// user's sessions, other reset tokens and API keys are revoked with it.
    pub fn finish_reset(&mut self, token: &str, hashed: Hashed) -> Result<()> {
        let user = self
            .store
            .take_reset(&accounts::secret_digest(token), Utc::now())?
            .ok_or_else(|| ServiceError::invalid("token", "unknown, used or expired reset token"))?;
        let hash = hashed.into_string();
        self.store.update_user(user, None, None, Some(&hash), Some(false))?;
        Ok(())
    }

    /// Checks a new password before it is hashed.
    pub fn check_new_password(password: &str) -> Result<()> {
        check_password(password).map_err(|m| ServiceError::invalid("password", m))
    }

    /// Whether `callback` (a forgot-password request's link target, handed to the reset hook)
    /// is allowed: empty, or on one of `api.callback_origins`. Anything else would let a
    /// stranger have a genuine reset token mailed with a link to their own site.
    pub fn check_callback(&self, callback: &str) -> Result<()> {
        if callback.is_empty() {
            return Ok(());
        }
        let origin = accounts::origin_of(callback)
            .ok_or_else(|| ServiceError::invalid("callback", "not an absolute http(s) URL"))?;
        if self.cfg.api.callback_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(&origin))
        {
            Ok(())
        } else {
            Err(ServiceError::invalid(
                "callback",
                format!("{origin} is not one of the configured api.callback_origins"),
            ))
        }
    }
}
