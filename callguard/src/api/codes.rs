//! Wire types of a user's outgoing-call-barring authorization codes (the authorization-code
//! seed).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::AuthCode;

/// The path's tenant, group and user.
#[derive(Debug, Deserialize)]
pub struct Owner {
    /// The tenant's name.
    pub tenant: String,
    /// The group's name.
    pub group: String,
    /// The user's name.
    pub user: String,
}

/// `{tenant, group, user, code}`.
#[derive(Debug, Deserialize)]
pub struct OwnerCode {
    /// The tenant's name.
    pub tenant: String,
    /// The group's name.
    pub group: String,
    /// The user's name.
    pub user: String,
    /// The code.
    pub code: String,
}

/// A list of codes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthCodes {
    /// The codes.
    #[serde(rename = "authCodes")]
    pub auth_codes: Vec<AuthCode>,
}

/// One code to delete.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CodeRef {
    /// The code.
    pub code: String,
    /// Ignored.
    #[serde(default)]
    pub description: Option<String>,
}

/// Codes to delete.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRefs {
    /// The codes.
    #[serde(rename = "authCodes")]
    pub auth_codes: Vec<CodeRef>,
}

/// Create one code or many.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateCodes {
    /// `{"authCodes": [{code, description}, …]}`.
    Many(AuthCodes),
    /// `{code, description}`.
    One(AuthCode),
}
