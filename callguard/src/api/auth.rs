//! Wire types of system info, sign-in, tokens and password reset (`/api/info`, `/api/auth/…`,
//! the authentication seed).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::config::SystemInfo;

/// `GET /api/info` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InfoQuery {
    /// A tenant's SIP domain: adds that tenant's fields.
    pub domain: Option<String>,
}

/// A tenant's public fields, each present when a tenant was asked for (`domain`) and absent
/// otherwise.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TenantInfo {
    /// The name of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The SIP domain of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The official website of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// The relative path the tenant's avatar downloads from (`/api/blobs/…`; empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Whether Microsoft 365 sign-in is enabled for the tenant (its social sign-in goes
    /// through Microsoft Entra ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ms365_integration: Option<bool>,
    /// The Microsoft Identity Provider authorization endpoint for this tenant (empty when it
    /// does not sign in with Microsoft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms365_authorization_endpoint: Option<String>,
    /// The provider the tenant's social sign-in goes through, `microsoft` or `oidc`; empty:
    /// none (callguard's own field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_sign_in: Option<String>,
}

/// System (and tenant) metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Info {
    /// The system's fields, from `[api.info]`.
    #[serde(flatten)]
    pub system: SystemInfo,
    /// The tenant of `domain`, when one was asked for: its fields beside the system's, as
    /// PortSIP answers.
    #[serde(flatten)]
    pub tenant: TenantInfo,
}

/// Sign-in's query (PortSIP's).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignInQuery {
    /// Signing in from a QR code (PortSIP's apps); accepted, and the same sign-in here.
    #[serde(default)]
    pub qr: Option<bool>,
}

/// Sign-in request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The user's account name.
    pub username: String,
    /// The user's password.
    pub password: String,
    /// The SIP domain of the user's tenant; empty or absent for system users.
    #[serde(default)]
    pub domain: String,
}

/// A token pair.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Tokens {
    /// Always `Bearer`.
    pub token_type: String,
    /// The access token: `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// The refresh token (for `POST /api/auth/refresh`).
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Refresh request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The refresh token.
    pub refresh_token: String,
}

/// What an access token is.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TokenInfo {
    /// The access token's expiry (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// Seconds it stays valid.
    pub expires_in: i64,
    /// The role of its user.
    pub role: String,
    /// The user's account name.
    pub user: String,
    /// The user's id.
    pub user_id: u32,
    /// The user's tenant.
    pub tenant: Option<String>,
    /// Whether the session began with a verified password.
    pub password_verified: bool,
    /// Whether the user must set a new password first.
    pub force_reset: bool,
}

/// Forgot-password request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Forgot {
    /// The SIP domain of the user's tenant (empty for system users).
    #[serde(default)]
    pub domain: String,
    /// The user's account name.
    pub username: String,
    /// The URL the user follows to set a new password; the token is handed to the hook with it.
    #[serde(default)]
    pub callback: String,
}

/// Reset-password request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// The token the hook delivered.
    pub token: String,
    /// The new password (8 to 128 characters).
    pub password: String,
}

/// Social sign-in request (the seed's "sign in with a social account").
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SocialSignIn {
    /// The name of the identity provider: `microsoft` (the seed's only one) or `oidc`; it must
    /// be the tenant's.
    pub provider: crate::sso::Provider,
    /// The SIP domain of the user's tenant.
    pub domain: String,
    /// The page the result is delivered to (an origin of `api.callback_origins`); empty: the
    /// tenant's `callback`.
    #[serde(default)]
    pub callback: String,
    /// The panel's own random value, handed back with the result for the panel to compare
    /// with what it sent (its defence against login CSRF); at most 256 characters.
    #[serde(default)]
    pub state: String,
}

/// The one-time code of a finished social sign-in. Its `Debug` leaves the code out.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SocialCode {
    /// The `code` the sign-in delivered to the callback.
    pub code: String,
}

impl std::fmt::Debug for SocialCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocialCode").finish_non_exhaustive()
    }
}

/// Where to send the browser to sign in.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct SocialSignInUrl {
    /// The identity provider's authentication URL (with state, nonce and PKCE challenge).
    pub url: String,
}

/// `GET /api/auth/ms365_sign_in` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Ms365Query {
    /// The SIP domain of the tenant.
    pub domain: String,
    /// The page the result is delivered to; absent: the tenant's `callback`.
    #[serde(default)]
    pub callback: Option<String>,
    /// The panel's own random value, handed back with the result.
    #[serde(default)]
    pub state: Option<String>,
}

/// What the identity provider sends the browser back with (OAuth 2.0 authorization response).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProviderAnswer {
    /// The state of the sign-in (single use).
    #[serde(default)]
    pub state: Option<String>,
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The provider's error code, when the user or the provider declined.
    #[serde(default)]
    pub error: Option<String>,
    /// The provider's description of the error.
    #[serde(default)]
    pub error_description: Option<String>,
    /// The issuer that answers (RFC 9207), when the provider says: it must be the one the
    /// sign-in was sent to (a defence against a provider answering for another).
    #[serde(default)]
    pub iss: Option<String>,
}

/// A tenant's social sign-in as shown: the settings without the client secret, and what to
/// register with the provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct SsoView {
    /// The settings (`client_secret` never shown).
    #[serde(flatten)]
    pub settings: crate::sso::SsoSettings,
    /// Whether a client secret is stored.
    pub client_secret_set: bool,
    /// The issuer ID tokens must come from.
    pub issuer_url: String,
    /// The redirect URI to register with the provider (`api.public_url` +
    /// `/api/auth/social_sign_in/callback`; empty while `api.public_url` is unset).
    pub redirect_uri: String,
    /// `microsoft`: the directory's authorization endpoint.
    pub authorization_endpoint: String,
}
