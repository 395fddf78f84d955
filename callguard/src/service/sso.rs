//! Social sign-in through the service: a tenant's identity provider settings (`tenants.write` to
//! change them; the client secret is never shown), and the stored half of a sign-in: the tenant
//! a SIP domain names, and which user a verified identity is — an existing user of the tenant
//! named by the identity's claim, bound to the provider's subject on first use, so that a name
//! the provider later gives someone else does not open the account. The provider's half (HTTP,
//! tokens, signatures) is [`crate::sso`], run by the web layer off the lock.

use super::{Result, Service, ServiceError, access::Principal, accounts::Hashed};
use crate::{
    accounts::{Perm, User},
    api::auth::{SsoView, Tokens},
    sso::{self, Identity, Provider, SsoSettings},
    store::NewUser,
};

/// What a social sign-in starts with: the tenant, its provider, where the provider sends the
/// browser back and where the tokens go in the end.
#[derive(Clone, Debug)]
pub struct SsoStart {
    /// The tenant's id.
    pub tenant: String,
    /// Its provider settings.
    pub settings: SsoSettings,
    /// callguard's callback URL (`api.public_url` + [`sso::CALLBACK_PATH`]).
    pub redirect: String,
    /// The panel's page the tokens are delivered to.
    pub callback: String,
}

/// Who a verified identity is.
#[derive(Debug)]
pub enum SsoUser {
    /// This user, bound to the identity.
    Existing(User),
    /// Nobody yet: the tenant creates the user, with a password hash ([`Service::sso_user`]).
    ToCreate,
}

/// The role a user created by a social sign-in gets (`new_user_group`).
const CREATED_ROLE: &str = "StandardUser";

impl Service {
    /// A tenant's social sign-in settings, the client secret left out (`tenants.read`).
    pub fn tenant_sso(&self, p: &Principal, tenant: &str) -> Result<SsoView> {
        p.need(Perm::TenantsRead)?;
        self.reached_tenant(p, tenant)?;
        let s = self.store.tenant_sso(tenant)?.ok_or_else(|| {
            ServiceError::not_found("tenant", format!("tenant `{tenant}` has no social sign-in"))
        })?;
        Ok(self.sso_view(s))
    }

    fn sso_view(&self, mut settings: SsoSettings) -> SsoView {
        let client_secret_set = settings.client_secret.take().is_some_and(|s| !s.is_empty());
        SsoView {
            authorization_endpoint: settings.microsoft_authorization_endpoint().unwrap_or_default(),
            issuer_url: settings.issuer_url(),
            redirect_uri: self.sso_redirect().unwrap_or_default(),
            client_secret_set,
            settings,
        }
    }

    /// Sets a tenant's social sign-in (`tenants.write`). A change without `client_secret`
    /// keeps the one stored.
    pub fn set_tenant_sso(
        &mut self,
        p: &Principal,
        tenant: &str,
        mut settings: SsoSettings,
    ) -> Result<SsoView> {
        p.need(Perm::TenantsWrite)?;
        self.reached_tenant(p, tenant)?;
        settings.check().map_err(|(field, msg)| ServiceError::invalid(field, msg))?;
        if !settings.callback.is_empty() {
            self.check_callback(&settings.callback)?;
        }
        if let Some(g) = &settings.new_user_group
            && !self.store.groups(Some(tenant))?.iter().any(|x| &x.id == g)
        {
            return Err(ServiceError::invalid(
                "new_user_group",
                format!("no group `{g}` in tenant `{tenant}`"),
            ));
        }
        if settings.client_secret.is_none() {
            settings.client_secret = self.store.tenant_sso(tenant)?.and_then(|s| s.client_secret);
        }
        self.store.set_tenant_sso(tenant, Some(&settings))?;
        Ok(self.sso_view(settings))
    }

    /// Removes a tenant's social sign-in (`tenants.write`); the identities bound to its users
    /// stay bound.
    pub fn delete_tenant_sso(&mut self, p: &Principal, tenant: &str) -> Result<()> {
        p.need(Perm::TenantsWrite)?;
        self.reached_tenant(p, tenant)?;
        if !self.store.set_tenant_sso(tenant, None)? {
            return Err(ServiceError::not_found(
                "tenant",
                format!("tenant `{tenant}` has no social sign-in"),
            ));
        }
        Ok(())
    }

    /// callguard's callback URL, which the provider sends the browser back to.
    pub fn sso_redirect(&self) -> Result<String> {
        let base = self.cfg.api.public_url.as_deref().ok_or_else(|| {
            ServiceError::Conflict(
                "social sign-in is off: set api.public_url (the URL browsers reach this API at)".into(),
            )
        })?;
        Ok(format!("{}{}", base.trim_end_matches('/'), sso::CALLBACK_PATH))
    }

    /// The tenant of `domain` and its enabled social sign-in (no token needed): `provider`,
    /// when given, must be the tenant's; the tokens go to `callback`, or to the tenant's own.
    pub fn sso_start(&self, provider: Option<Provider>, domain: &str, callback: &str) -> Result<SsoStart> {
        let redirect = self.sso_redirect()?;
        let domain = domain.trim();
        let tenant = self.store.tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(domain));
        let tenant = tenant.ok_or_else(|| {
            ServiceError::not_found("domain", format!("no tenant has the domain `{domain}`"))
        })?;
        let settings = self.store.tenant_sso(&tenant.id)?.filter(|s| s.enabled).ok_or_else(|| {
            ServiceError::not_found("domain", format!("the tenant of `{domain}` has no social sign-in"))
        })?;
        if let Some(want) = provider
            && want != settings.provider
        {
            return Err(ServiceError::invalid(
                "provider",
                format!("the tenant of `{domain}` signs in with `{}`", settings.provider.name()),
            ));
        }
        let callback = if callback.is_empty() { settings.callback.clone() } else { callback.to_owned() };
        if callback.is_empty() {
            return Err(ServiceError::invalid(
                "callback",
                "a callback URL (the page the sign-in is delivered to)",
            ));
        }
        // It becomes a `Location` header: printable ASCII only, anything else percent-encoded.
        if !callback.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServiceError::invalid(
                "callback",
                "printable ASCII without spaces (percent-encode the rest)",
            ));
        }
        self.check_callback(&callback)?;
        Ok(SsoStart { tenant: tenant.id, settings, redirect, callback })
    }

    /// A tenant's enabled social sign-in, when a flow comes back.
    pub fn sso_settings(&self, tenant: &str) -> Result<Option<SsoSettings>> {
        Ok(self.store.tenant_sso(tenant)?.filter(|s| s.enabled))
    }

    /// The user a verified identity is (see the module's documentation). With no user of that
    /// name, a tenant with a `new_user_group` creates one: [`SsoUser::ToCreate`] asks for the
    /// password hash it is stored with (made off the lock), `created` gives it. Refused:
    /// [`ServiceError::Forbidden`], with why.
    pub fn sso_user(
        &mut self,
        tenant: &str,
        settings: &SsoSettings,
        id: &Identity,
        created: Option<Hashed>,
    ) -> Result<SsoUser> {
        let refuse = |m: String| ServiceError::Forbidden(m);
        let username = sso::username_of(id, settings).map_err(|e| refuse(e.to_string()))?;
        let bound = self.store.sso_user(&id.issuer, &id.subject)?;
        let found = self.store.find_user(Some(tenant), &username)?.map(|(u, _)| u);
        match (bound, found) {
            (Some(b), Some(u)) if b == u.id => Ok(SsoUser::Existing(u)),
            (Some(_), _) => Err(refuse(format!(
                "this identity signed in as another user before; it now says `{username}` (an administrator \
                 must delete that user, or rename it back)"
            ))),
            (None, Some(u)) => {
                if self.store.sso_identity(u.id)?.is_some() {
                    return Err(refuse(format!(
                        "user `{username}` is bound to another identity of the provider (a name given to someone \
                         else since?)"
                    )));
                }
                self.store.bind_sso(u.id, &id.issuer, &id.subject)?;
                tracing::info!(
                    user = username,
                    tenant,
                    subject = id.subject,
                    "bound to its provider identity"
                );
                Ok(SsoUser::Existing(u))
            }
            (None, None) => {
                let Some(group) = settings.new_user_group.clone() else {
                    return Err(refuse(format!(
                        "no user `{username}` in the tenant: an administrator must create it"
                    )));
                };
                crate::accounts::check_username(&username, false)
                    .map_err(|m| refuse(format!("`{username}` cannot be a user name: {m}")))?;
                let Some(hash) = created else { return Ok(SsoUser::ToCreate) };
                let new = NewUser {
                    tenant: Some(tenant.to_owned()),
                    group: Some(group),
                    username: username.clone(),
                    password_hash: hash.into_string(),
                    role: CREATED_ROLE.into(),
                    force_reset: false,
                };
                let u = self.store.add_sso_user(&new, &id.issuer, &id.subject)?;
                tracing::info!(user = username, tenant, "user created by social sign-in");
                Ok(SsoUser::Existing(u))
            }
        }
    }

    /// The token pair of a finished social sign-in, as a password sign-in gets (the user may
    /// have been deleted since: 401).
    pub fn sso_tokens(&mut self, user: u32) -> Result<Tokens> {
        if self.store.user(user)?.is_none() {
            return Err(ServiceError::Unauthorized("the user is gone".into()));
        }
        self.issue_tokens(user, false, None)
    }
}
