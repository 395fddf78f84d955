//! Social sign-in over OpenID Connect (the authentication seed's "sign in with a social
//! account", PortSIP's Microsoft 365 sign-in): a tenant's provider settings, and the relying
//! party's half of the authorization code flow with PKCE, state and nonce, through the
//! `openidconnect` crate (discovery, the provider's published keys, the ID token's signature and
//! claims: nothing of JOSE is written here).
//!
//! A flow: [`Relying::begin`] discovers the provider (cached for [`DISCOVERY_SECS`]) and answers
//! the provider's authorization URL; the state, PKCE verifier and nonce wait in memory, single
//! use, for [`PENDING_SECS`] ([`PENDING_MAX`] at once, the oldest given up first). The provider
//! sends the browser back with a code; [`Relying::take`] claims the flow of its state and
//! [`Relying::finish`] exchanges the code and checks the ID token. Which user the identity is
//! decides [`username_of`] and the service (an existing user of the tenant, bound to the
//! provider's subject on first use).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    core::{CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Seconds a sign-in may take between its start and the provider's redirect back.
pub const PENDING_SECS: u64 = 600;
/// Sign-ins waiting for the provider at once, at most (each holds a few hundred bytes; starting
/// one needs no credentials).
pub const PENDING_MAX: usize = 4096;
/// Seconds a provider's discovery document and keys are reused.
pub const DISCOVERY_SECS: u64 = 600;
/// Seconds at least between two discoveries of one provider forced by an ID token whose key the
/// cached set lacks (a rotation; or a forgery, which must not make callguard fetch at will).
const REDISCOVERY_SECS: u64 = 60;
/// Seconds the one-time code that hands a finished sign-in to the panel stays valid.
pub const CODE_SECS: u64 = 60;
/// Seconds one request to a provider may take.
const HTTP_TIMEOUT_SECS: u64 = 10;
/// Bytes a provider's answer may hold.
const HTTP_BODY_MAX: u64 = 1 << 20;
/// Microsoft Entra ID's sign-in authority.
pub const MICROSOFT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Where a provider sends the browser back, under `api.public_url`.
pub const CALLBACK_PATH: &str = "/api/auth/social_sign_in/callback";

/// An identity provider's kind.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Microsoft Entra ID (Microsoft 365): the issuer is the directory's, from `directory_id`.
    Microsoft,
    /// Any OpenID Connect provider, by its `issuer`.
    Oidc,
}

impl Provider {
    /// Its name in the API.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Microsoft => "microsoft",
            Self::Oidc => "oidc",
        }
    }
}

/// The ID token claim that names the user: `local@domain`, whose domain must be one of the
/// tenant's `allowed_domains` and whose local part is the user's account name.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserClaim {
    /// `preferred_username` (Microsoft Entra ID: the user principal name, `alice@contoso.com`).
    PreferredUsername,
    /// `email`; only when the provider says `email_verified: true` (Microsoft Entra ID never
    /// does: use `preferred_username` there).
    Email,
}

/// A tenant's social sign-in (`PUT /api/v1/tenants/{tenant}/sso`), as stored. Its `Debug`
/// leaves the client secret out.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// Whether the tenant's users may sign in through the provider (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// `microsoft` (Microsoft Entra ID) or `oidc` (any OpenID Connect provider).
    pub provider: Provider,
    /// `microsoft`: the directory (tenant) ID of the organisation's Entra ID, a GUID. Only its
    /// users can sign in (the issuer is the directory's own).
    #[serde(default)]
    pub directory_id: String,
    /// `oidc`: the provider's issuer URL exactly as its ID tokens write it (`https://…`;
    /// `http://` only on a loopback address), where `/.well-known/openid-configuration` is
    /// found. It must be your organisation's own: a provider whose issuer serves everyone
    /// (Google, consumer Microsoft accounts) would let any of its users with a matching address in.
    #[serde(default)]
    pub issuer: String,
    /// The client (application) ID the provider gave callguard.
    pub client_id: String,
    /// The client secret. Write-only: never shown; absent in a change keeps the one stored,
    /// `""` removes it (a public client, PKCE alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The e-mail domains (`contoso.com`) whose users may sign in; at least one.
    pub allowed_domains: Vec<String>,
    /// The claim that names the user (default: `preferred_username` for `microsoft`, `email`
    /// for `oidc`).
    #[serde(default)]
    pub user_claim: Option<UserClaim>,
    /// Where a sign-in started by `GET /api/auth/ms365_sign_in` (which names none) delivers the
    /// tokens: the panel's page, an origin of `api.callback_origins`. Empty: that route is off.
    #[serde(default)]
    pub callback: String,
    /// The group (its id) in which an identity of an allowed domain that no user has the name
    /// of becomes a new `StandardUser`. Absent (the default): such an identity is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_user_group: Option<String>,
}

const fn enabled_by_default() -> bool {
    true
}

impl std::fmt::Debug for SsoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoSettings")
            .field("enabled", &self.enabled)
            .field("provider", &self.provider)
            .field("directory_id", &self.directory_id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "(hidden)"))
            .field("allowed_domains", &self.allowed_domains)
            .field("user_claim", &self.user_claim)
            .field("callback", &self.callback)
            .field("new_user_group", &self.new_user_group)
            .finish()
    }
}

impl SsoSettings {
    /// The issuer ID tokens must come from.
    pub fn issuer_url(&self) -> String {
        match self.provider {
            Provider::Microsoft => format!("{MICROSOFT_AUTHORITY}/{}/v2.0", self.directory_id),
            Provider::Oidc => self.issuer.clone(),
        }
    }

    /// The claim that names the user.
    pub fn claim(&self) -> UserClaim {
        self.user_claim.unwrap_or(match self.provider {
            Provider::Microsoft => UserClaim::PreferredUsername,
            Provider::Oidc => UserClaim::Email,
        })
    }

    /// Microsoft's authorization endpoint of the directory (PortSIP's "Microsoft Identity
    /// Provider authorization endpoint for this tenant"); `None` for other providers.
    pub fn microsoft_authorization_endpoint(&self) -> Option<String> {
        (self.provider == Provider::Microsoft)
            .then(|| format!("{MICROSOFT_AUTHORITY}/{}/oauth2/v2.0/authorize", self.directory_id))
    }

    /// Checks and normalises the settings (domains lower-cased); the field and what is wrong.
    pub fn check(&mut self) -> Result<(), (&'static str, String)> {
        match self.provider {
            Provider::Microsoft => {
                if !is_guid(&self.directory_id) {
                    return Err((
                        "directory_id",
                        "the directory (tenant) ID, a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47 \
                         (Entra ID → Overview); a domain name would not match the issuer of the tokens"
                            .into(),
                    ));
                }
                if !self.issuer.is_empty() {
                    return Err(("issuer", "only for provider `oidc`; `microsoft` uses directory_id".into()));
                }
                self.directory_id.make_ascii_lowercase();
            }
            Provider::Oidc => {
                if !self.directory_id.is_empty() {
                    return Err(("directory_id", "only for provider `microsoft`".into()));
                }
                self.issuer = self.issuer.trim().to_owned();
                check_issuer(&self.issuer).map_err(|m| ("issuer", m))?;
            }
        }
        if self.client_id.trim().is_empty() || self.client_id.len() > 256 {
            return Err(("client_id", "1 to 256 characters".into()));
        }
        if self.client_secret.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(("client_secret", "at most 1024 characters".into()));
        }
        if self.allowed_domains.is_empty() || self.allowed_domains.len() > 64 {
            return Err(("allowed_domains", "1 to 64 e-mail domains (`contoso.com`)".into()));
        }
        for d in &mut self.allowed_domains {
            *d = d.trim().to_ascii_lowercase();
            if !is_domain(d) {
                return Err(("allowed_domains", format!("`{d}` is not a domain name")));
            }
        }
        Ok(())
    }
}

/// Whether `s` is a GUID (8-4-4-4-12 hex digits).
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `d` is a lower-case domain name of two labels or more.
fn is_domain(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').count() >= 2
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Checks an issuer URL: `https://`, or `http://` on a loopback address (a provider on the same
/// host), no query or fragment.
fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = openidconnect::url::Url::parse(issuer).map_err(|e| format!("not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("an issuer URL has no query, fragment or user".into());
    }
    if may_fetch(&url) {
        Ok(())
    } else {
        Err("https:// (http:// only for a provider on a loopback address)".into())
    }
}

/// Whether callguard may ask `url` anything: `https://`, or `http://` on a loopback address.
/// Every request to a provider is checked, the endpoints its discovery document names too.
fn may_fetch(url: &openidconnect::url::Url) -> bool {
    let loopback = match url.host() {
        Some(openidconnect::url::Host::Ipv4(a)) => a.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(a)) => a.is_loopback(),
        Some(openidconnect::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// A sign-in waiting for the provider's redirect. Its `Debug` leaves the secrets out.
pub struct Flow {
    /// The tenant signing in.
    pub tenant: String,
    /// The issuer it was started with (settings changed since: refused).
    pub issuer: String,
    /// Where the result goes.
    pub callback: String,
    /// The panel's own state, handed back with the result (its defence against login CSRF).
    pub client_state: String,
    verifier: String,
    nonce: String,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("tenant", &self.tenant)
            .field("issuer", &self.issuer)
            .field("callback", &self.callback)
            .finish_non_exhaustive()
    }
}

/// Bearer secrets, each waiting to be used once: kept by digest for `ttl`, at most
/// [`PENDING_MAX`] at once (the oldest given up first: starting a sign-in needs no credentials).
#[derive(Debug)]
struct OneTime<T> {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], (Instant, T)>>,
}

impl<T> OneTime<T> {
    fn new(secs: u64) -> Self {
        Self { ttl: Duration::from_secs(secs), map: Mutex::default() }
    }

    /// Keeps `value` under `secret`.
    fn put(&self, secret: &str, value: T) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (at, _)| at.elapsed() < self.ttl);
        if map.len() >= PENDING_MAX
            && let Some(oldest) = map.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(state_key(secret), (Instant::now(), value));
    }

    /// The value of `secret`, once, within `ttl`.
    fn take(&self, secret: &str) -> Option<T> {
        let (at, v) =
            self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&state_key(secret))?;
        (at.elapsed() < self.ttl).then_some(v)
    }
}

/// Who the provider says signed in, from a verified ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The issuer.
    pub issuer: String,
    /// The provider's subject (`sub`): stable for the user and this client.
    pub subject: String,
    /// The value of the configured claim.
    pub name: Option<String>,
    /// `email_verified`, when the claim is `email` and the provider says.
    pub email_verified: Option<bool>,
}

/// Why a social sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached or answered nonsense (discovery, token exchange); the
    /// detail is for the log, not for the caller.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The provider's answer is not to be trusted (signature, issuer, audience, expiry, nonce).
    #[error("the ID token was refused: {0}")]
    Token(String),
    /// The identity maps to no user that may sign in.
    #[error("{0}")]
    Refused(String),
}

/// The relying party: the HTTP client, discovered providers, flows under way and finished
/// sign-ins waiting for their code to be redeemed.
#[derive(Debug)]
pub struct Relying {
    http: ureq::Agent,
    discovered: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
    pending: OneTime<Flow>,
    finished: OneTime<u32>,
}

impl Default for Relying {
    fn default() -> Self {
        Self {
            http: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(HTTP_TIMEOUT_SECS)))
                // The provider's errors are answers to read, not failures of the transport.
                .http_status_as_error(false)
                // OpenID Connect needs no redirect, and following one could carry the client
                // secret or the code to another host.
                .max_redirects(0)
                .user_agent(concat!("callguard/", env!("CARGO_PKG_VERSION")))
                .build()
                .into(),
            discovered: Mutex::default(),
            pending: OneTime::new(PENDING_SECS),
            finished: OneTime::new(CODE_SECS),
        }
    }
}

/// The digest a flow's state, or a finished sign-in's code, is kept under (each is a bearer
/// secret).
fn state_key(state: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(state.as_bytes()).into()
}

impl Relying {
    /// One HTTP exchange with a provider (the `openidconnect` crate's client interface).
    fn call(&self, req: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, SsoError> {
        let url = openidconnect::url::Url::parse(&req.uri().to_string())
            .map_err(|e| SsoError::Provider(format!("{}: {e}", req.uri())))?;
        if !may_fetch(&url) {
            return Err(SsoError::Provider(format!(
                "{url}: not https:// (nor http:// on a loopback address)"
            )));
        }
        let fail = |e: ureq::Error| SsoError::Provider(e.to_string());
        let mut resp = self.http.run(req).map_err(fail)?;
        let body = resp.body_mut().with_config().limit(HTTP_BODY_MAX).read_to_vec().map_err(fail)?;
        let (parts, _) = resp.into_parts();
        Ok(openidconnect::HttpResponse::from_parts(parts, body))
    }

    /// The provider's metadata and keys, discovered again after [`DISCOVERY_SECS`] (or when
    /// `fresh`, its keys may have rotated: then after [`REDISCOVERY_SECS`]).
    fn metadata(&self, issuer: &str, fresh: bool) -> Result<CoreProviderMetadata, SsoError> {
        let ttl = Duration::from_secs(DISCOVERY_SECS);
        let keep = if fresh { Duration::from_secs(REDISCOVERY_SECS) } else { ttl };
        if let Some((at, m)) =
            self.discovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(issuer)
            && at.elapsed() < keep
        {
            return Ok(m.clone());
        }
        let url =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| SsoError::Provider(format!("issuer: {e}")))?;
        let http = |r| self.call(r);
        let m = CoreProviderMetadata::discover(&url, &http)
            .map_err(|e| SsoError::Provider(format!("discovery of {issuer}: {}", chain(&e))))?;
        let mut d = self.discovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        d.retain(|_, (at, _)| at.elapsed() < ttl);
        d.insert(issuer.to_owned(), (Instant::now(), m.clone()));
        Ok(m)
    }

    /// Starts a sign-in of `tenant` through its provider: the URL to send the browser to.
    /// `redirect` is callguard's callback URL, `callback` where the result goes in the end, with
    /// `client_state` (the panel's own, may be empty).
    pub fn begin(
        &self,
        tenant: &str,
        settings: &SsoSettings,
        redirect: &str,
        callback: &str,
        client_state: &str,
    ) -> Result<String, SsoError> {
        let issuer = settings.issuer_url();
        let meta = self.metadata(&issuer, false)?;
        let client = rp_client(meta, settings, redirect)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let flow = Flow {
            tenant: tenant.to_owned(),
            issuer,
            callback: callback.to_owned(),
            client_state: client_state.to_owned(),
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        };
        self.pending.put(state.secret(), flow);
        Ok(url.to_string())
    }

    /// Claims the flow of `state`: each is used once, and not after [`PENDING_SECS`].
    pub fn take(&self, state: &str) -> Option<Flow> {
        self.pending.take(state)
    }

    /// A one-time code for user `user`'s finished sign-in, which the panel redeems for the
    /// token pair within [`CODE_SECS`] (the browser carries only the code).
    pub fn finished(&self, user: u32) -> String {
        let code = crate::accounts::new_secret();
        self.finished.put(&code, user);
        code
    }

    /// The user of a finished sign-in's `code`: each is redeemed once, within [`CODE_SECS`].
    pub fn redeem(&self, code: &str) -> Option<u32> {
        self.finished.take(code)
    }

    /// Exchanges the provider's `code` for tokens and checks the ID token: its signature by one
    /// of the provider's published keys (an asymmetric algorithm), issuer, audience, expiry and
    /// the flow's nonce. The identity it names.
    pub fn finish(
        &self,
        flow: Flow,
        settings: &SsoSettings,
        redirect: &str,
        code: &str,
    ) -> Result<Identity, SsoError> {
        let issuer = settings.issuer_url();
        if issuer != flow.issuer {
            return Err(SsoError::Refused(
                "the tenant's identity provider changed during the sign-in".into(),
            ));
        }
        let http = |r| self.call(r);
        let client = rp_client(self.metadata(&issuer, false)?, settings, redirect)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier))
            .request(&http)
            .map_err(|e| SsoError::Provider(format!("token exchange: {}", chain(&e))))?;
        let id_token = tokens
            .extra_fields()
            .id_token()
            .ok_or_else(|| SsoError::Token("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(flow.nonce);
        let verify = |c: &DiscoveredClient| {
            let verifier = c.id_token_verifier().set_allowed_algs([
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
                CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            ]);
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verify(&client) {
            Ok(c) => c,
            // A key the cached set does not hold: the provider may have rotated its keys.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let again = rp_client(self.metadata(&issuer, true)?, settings, redirect)?;
                verify(&again).map_err(|e| SsoError::Token(chain(&e)))?
            }
            Err(e) => return Err(SsoError::Token(chain(&e))),
        };
        let (name, email_verified) = match settings.claim() {
            UserClaim::PreferredUsername => {
                (claims.preferred_username().map(|u| u.as_str().to_owned()), None)
            }
            UserClaim::Email => (claims.email().map(|e| e.as_str().to_owned()), claims.email_verified()),
        };
        Ok(Identity { issuer, subject: claims.subject().as_str().to_owned(), name, email_verified })
    }
}

/// The client `CoreClient::from_provider_metadata` makes: authorization endpoint set, token and
/// user-info endpoints as the provider published them.
type DiscoveredClient = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The client of a tenant's settings at a discovered provider.
fn rp_client(
    meta: CoreProviderMetadata,
    settings: &SsoSettings,
    redirect: &str,
) -> Result<DiscoveredClient, SsoError> {
    let secret = settings.client_secret.clone().filter(|s| !s.is_empty()).map(ClientSecret::new);
    let redirect = RedirectUrl::new(redirect.to_owned())
        .map_err(|e| SsoError::Provider(format!("api.public_url: {e}")))?;
    Ok(CoreClient::from_provider_metadata(meta, ClientId::new(settings.client_id.clone()), secret)
        .set_redirect_uri(redirect))
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The account name an identity signs in as: the local part of its claim, whose domain must be
/// one of the tenant's `allowed_domains`; why not, when it may not sign in at all.
pub fn username_of(id: &Identity, settings: &SsoSettings) -> Result<String, SsoError> {
    let claim = match settings.claim() {
        UserClaim::PreferredUsername => "preferred_username",
        UserClaim::Email => "email",
    };
    let Some(name) = id.name.as_deref() else {
        return Err(SsoError::Refused(format!("the ID token has no `{claim}` claim")));
    };
    if settings.claim() == UserClaim::Email && id.email_verified != Some(true) {
        return Err(SsoError::Refused(format!("the provider has not verified the e-mail address {name}")));
    }
    let Some((local, domain)) = name.rsplit_once('@') else {
        return Err(SsoError::Refused(format!("`{claim}` is {name}, not local@domain")));
    };
    if !settings.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(SsoError::Refused(format!("{domain} is not one of the tenant's allowed domains")));
    }
    Ok(local.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: Provider) -> SsoSettings {
        SsoSettings {
            enabled: true,
            provider,
            directory_id: String::new(),
            issuer: String::new(),
            client_id: "client".into(),
            client_secret: None,
            allowed_domains: vec!["Contoso.com".into()],
            user_claim: None,
            callback: String::new(),
            new_user_group: None,
        }
    }

    #[test]
    fn microsoft_settings_name_the_directory_issuer_and_endpoint() {
        let mut s = settings(Provider::Microsoft);
        assert_eq!(s.check().map_err(|e| e.0), Err("directory_id"));
        s.directory_id = "contoso.onmicrosoft.com".into();
        assert_eq!(s.check().map_err(|e| e.0), Err("directory_id"), "a domain, not the GUID");
        s.directory_id = "72F988BF-86f1-41af-91ab-2d7cd011db47".into();
        s.check().unwrap();
        assert_eq!(
            s.issuer_url(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
        assert_eq!(
            s.microsoft_authorization_endpoint().unwrap(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize"
        );
        assert_eq!(s.allowed_domains, ["contoso.com"]);
        assert_eq!(s.claim(), UserClaim::PreferredUsername);
    }

    #[test]
    fn an_issuer_is_https_unless_on_this_host() {
        let mut s = settings(Provider::Oidc);
        for bad in
            ["", "idp.example.com", "http://idp.example.com", "https://idp.example.com/?x=1", "ftp://h/"]
        {
            s.issuer = bad.into();
            assert_eq!(s.check().map_err(|e| e.0), Err("issuer"), "{bad}");
        }
        for good in [
            "https://idp.example.com/realms/pbx",
            "http://127.0.0.1:8080",
            "http://[::1]:1",
            "http://localhost",
        ] {
            s.issuer = good.into();
            s.check().unwrap();
            assert_eq!(s.issuer_url(), good);
        }
        // Kept as written: ID tokens of Authentik and Auth0 write the issuer with its slash.
        s.issuer = " https://idp.example.com/application/o/pbx/ ".into();
        s.check().unwrap();
        assert_eq!(s.issuer_url(), "https://idp.example.com/application/o/pbx/");
        assert_eq!(s.claim(), UserClaim::Email);
        s.allowed_domains = vec!["not a domain".into()];
        assert_eq!(s.check().map_err(|e| e.0), Err("allowed_domains"));
        s.allowed_domains.clear();
        assert_eq!(s.check().map_err(|e| e.0), Err("allowed_domains"));
    }

    #[test]
    fn a_user_is_the_local_part_of_an_allowed_domain() {
        let mut s = settings(Provider::Oidc);
        s.issuer = "https://idp.example.com".into();
        s.check().unwrap();
        let id = |name: Option<&str>, verified| Identity {
            issuer: s.issuer_url(),
            subject: "s".into(),
            name: name.map(Into::into),
            email_verified: verified,
        };
        assert_eq!(username_of(&id(Some("alice@CONTOSO.com"), Some(true)), &s).unwrap(), "alice");
        assert_eq!(username_of(&id(Some("a@b@contoso.com"), Some(true)), &s).unwrap(), "a@b");
        for refused in [
            id(None, Some(true)),
            id(Some("alice"), Some(true)),
            id(Some("alice@evil.com"), Some(true)),
            id(Some("alice@contoso.com.evil.com"), Some(true)),
            id(Some("alice@contoso.com"), Some(false)),
            // An e-mail address the provider does not say it verified.
            id(Some("alice@contoso.com"), None),
        ] {
            assert!(matches!(username_of(&refused, &s), Err(SsoError::Refused(_))), "{refused:?}");
        }
    }

    #[test]
    fn a_code_is_redeemed_once() {
        let r = Relying::default();
        let code = r.finished(7);
        assert_eq!(r.redeem("made-up"), None);
        assert_eq!(r.redeem(&code), Some(7));
        assert_eq!(r.redeem(&code), None, "a replayed code");
    }

    #[test]
    fn only_https_or_this_host_is_asked() {
        let ok = |u: &str| may_fetch(&openidconnect::url::Url::parse(u).unwrap());
        assert!(ok("https://login.example.com/x") && ok("http://127.0.0.1:9/jwks") && ok("http://[::1]/"));
        assert!(
            !ok("http://169.254.169.254/latest/meta-data/")
                && !ok("http://10.0.0.1/")
                && !ok("file:///etc/passwd")
        );
    }

    #[test]
    fn a_state_is_used_once() {
        let r = Relying::default();
        let flow = Flow {
            tenant: "t".into(),
            issuer: "i".into(),
            callback: String::new(),
            client_state: String::new(),
            verifier: "v".into(),
            nonce: "n".into(),
        };
        r.pending.put("s", flow);
        assert!(r.take("other").is_none());
        assert_eq!(r.take("s").unwrap().tenant, "t");
        assert!(r.take("s").is_none(), "a replayed state");
    }
}
