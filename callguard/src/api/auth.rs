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
    /// Whether Microsoft 365 sign-in is enabled for the tenant (social sign-in is not offered
    /// yet: always false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ms365_integration: Option<bool>,
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
