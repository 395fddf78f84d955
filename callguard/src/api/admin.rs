//! Wire types of the accounts routes: tenants, groups, users, roles, sessions and API keys
//! (`/api/v1/…`, the authentication seed).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{ApiKey, Level, Perm, User};

/// A tenant to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The id used in paths: 1 to 64 of a-z 0-9 _ -.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The SIP domain (host name or IP address), unique.
    pub domain: String,
    /// Website.
    #[serde(default)]
    pub website: String,
}

/// A group to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// The id used in paths: 1 to 64 of a-z 0-9 _ -.
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: String,
}

/// User filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Only this tenant's users.
    pub tenant: Option<String>,
    /// Only this group's users.
    pub group: Option<String>,
}

/// A user to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserReq {
    /// The tenant (required unless the role is system-level).
    pub tenant: Option<String>,
    /// The group (required for group- and user-level roles).
    pub group: Option<String>,
    /// Account name: letters, digits, `_ - ' .`, not starting or ending with `.`.
    pub username: String,
    /// Password (8 to 128 characters); absent: a random one, returned once.
    pub password: Option<String>,
    /// The role's name.
    pub role: String,
    /// Must set a new password at the next sign-in.
    #[serde(default)]
    pub force_reset: bool,
}

/// A created user, with the generated password when there was none.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// The generated password (shown once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Changes to a user.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new role.
    pub role: Option<String>,
    /// A new group in the same tenant.
    pub group: Option<String>,
    /// Whether the user must set a new password.
    pub force_reset: Option<bool>,
}

/// A new password.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password (8 to 128 characters).
    pub password: String,
    /// The current password: required when changing one's own.
    pub old_password: Option<String>,
}

/// A custom role to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// Unique name (not a built-in role's, in any case): letters, digits, `_ - .`.
    pub name: String,
    /// How far its rights reach.
    pub level: Level,
    /// What it may read and write.
    pub permissions: Vec<Perm>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Session filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Another user's sessions (needs `users.read` over them); default: one's own.
    pub user: Option<u32>,
}

/// A key to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Whose rights the key carries (default: the caller; another user needs `users.write`
    /// over them).
    pub user_id: Option<u32>,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

/// A created key: the secret is shown once.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret to pass as `api_key`.
    pub api_key: String,
}
