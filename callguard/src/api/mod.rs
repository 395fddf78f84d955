//! The wire types of every route the daemon serves: what the server reads and answers and the
//! CLI sends and reads. Both ends import them from here and from nowhere else (the CLI imports
//! no server module).
//!
//! | routes | module |
//! |---|---|
//! | `/v1/…`, the control API of the CLI | [`control`] |
//! | `/api/info`, `/api/auth/…`: sign-in, tokens, password reset | [`auth`] |
//! | `/api/v1/tenants`, `/users`, `/roles`, `/sessions`, `/api_keys` | [`admin`] |
//! | `/api/allowed_country_codes`, `/api/disallowed_codes`, `/api/blacklisted_numbers` | [`portsip`], [`query`] |
//! | `…/services/outgoing_call_barring/codes/` | [`codes`] |
//! | `/rest/v1/master/borderrules` | [`border`] |
//! | `/platform_api/…AuthorizedAccountIP…/` | [`vox`] |
//!
//! Errors answer 4xx/5xx with [`ApiError`] (the seeds' routes reshape it into their own).

pub mod admin;
pub mod auth;
pub mod border;
pub mod codes;
pub mod control;
pub mod portsip;
pub mod query;
pub mod vox;

use serde::{Deserialize, Serialize};

/// An error answer: what went wrong and, when one input caused it, which field.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ApiError {
    /// Human-readable message.
    pub error: String,
    /// The offending field or input line, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
