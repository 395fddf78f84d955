//! Wire types of the Voximplant authorized-IP seed (`/platform_api/…AuthorizedAccountIP…/`): its
//! query parameters, answers and error shape.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Voximplant's error body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct VoxError {
    /// What went wrong.
    pub error: VoxErrorBody,
}

/// The inside of [`VoxError`].
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct VoxErrorBody {
    /// The HTTP status.
    pub code: u16,
    /// What went wrong.
    pub msg: String,
    /// The offending parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `true`/`false`, also `1`/`0`.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(serde::de::Error::custom(format!("`{other}` is not true or false"))),
    })
    .transpose()
}

/// `AddAuthorizedAccountIP` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AddQuery {
    /// The account id.
    pub account_id: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// The IP address or network (host bits clear) to add.
    pub authorized_ip: String,
    /// `true` (default): white list (allow); `false`: black list (deny).
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    pub allowed: Option<bool>,
}

/// `{"result": N}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Count {
    /// 1 for an add; the number removed for a delete.
    pub result: usize,
}

/// `CheckAuthorizedAccountIP` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    /// The account id.
    pub account_id: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// The IP (or network) to test.
    pub authorized_ip: String,
}

/// The verdict on an address.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Checked {
    /// True if the IP is allowed.
    pub result: bool,
    /// The matched network (absent when no rule matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_ip: Option<String>,
}

/// `DelAuthorizedAccountIP` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DelQuery {
    /// The account id.
    pub account_id: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// The IP or network to remove, or `all`.
    pub authorized_ip: Option<String>,
    /// Instead of `authorized_ip`: remove every network that contains this IP.
    pub contains_ip: Option<String>,
    /// `true`: only the white list; `false`: only the black list; absent: both.
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    pub allowed: Option<bool>,
}

/// `GetAuthorizedAccountIPs` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The account id.
    pub account_id: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// Only this IP or network.
    pub authorized_ip: Option<String>,
    /// Only the white list (`true`) or the black list (`false`).
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    pub allowed: Option<bool>,
    /// Only networks that contain this IP.
    pub contains_ip: Option<String>,
    /// Most records returned (1 to 10000, default 50).
    #[param(minimum = 1, maximum = 10000)]
    pub count: Option<u32>,
    /// Records skipped (default 0).
    #[param(minimum = 0)]
    pub offset: Option<u32>,
}

/// One listed network, as the seed prints it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Listed {
    /// `"true"` (white list) or `"false"` (black list): strings, as in the seed.
    pub allowed: String,
    /// When it was added (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub created: String,
    /// The IP or network.
    pub authorized_ip: String,
}

/// A page of networks.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ListAnswer {
    /// The page.
    pub result: Vec<Listed>,
    /// Records in this page.
    pub count: usize,
    /// Records matching in all.
    pub total_count: usize,
}
