//! Wire types of the PortSIP security seed: allowed country codes, disallowed codes,
//! blacklisted numbers, and the page and id shapes that seed's lists and creates answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A collection of allowed region or country codes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Countries {
    /// Country calling codes (1 to 32 characters: digits after an optional `+`).
    pub items: Vec<String>,
}

/// `{}`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Empty {}

/// `{"id": …}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Created {
    /// The unique ID of the resource.
    pub id: String,
}

/// A page of a collection.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Page<T> {
    /// Total number of resources matching (before `skip`/`top`).
    pub count: u64,
    /// The page.
    pub items: Vec<T>,
}

/// A new disallowed code (the seed's `createBlockCode` body: the server picks the id).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCode {
    /// The number prefix of blocked code: an alphanumeric sequence beginning with an optional
    /// plus sign, 1 to 16 characters.
    #[schema(min_length = 1, max_length = 16)]
    pub number_prefix: String,
    /// The description of blocked code (at most 1024 characters).
    #[schema(max_length = 1024)]
    #[serde(default)]
    pub description: Option<String>,
}

/// A change to a disallowed code (absent fields are kept).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeChange {
    /// The code's id: may repeat the path's id, never change it.
    #[serde(default)]
    pub id: Option<String>,
    /// The number prefix of blocked code: an alphanumeric sequence beginning with an optional
    /// plus sign, 1 to 16 characters.
    #[schema(min_length = 1, max_length = 16)]
    pub number_prefix: Option<String>,
    /// The description of blocked code (at most 1024 characters).
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

/// `expire_at`: absent keeps (on update), `null` clears, a time sets.
fn some_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(d).map(Some)
}

/// A new blacklisted number (the seed's create body: the server picks the id).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNumber {
    /// An alphanumeric sequence beginning with an optional plus sign, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub number: String,
    /// Expiry (RFC 3339, in the future); absent or `null`: never.
    #[serde(default)]
    pub expire_at: Option<DateTime<Utc>>,
    /// Remarks (at most 255 characters).
    #[schema(max_length = 255)]
    #[serde(default)]
    pub description: Option<String>,
}

/// A change to a blacklisted number (absent fields are kept).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberChange {
    /// The number's id: may repeat the path's id, never change it.
    #[serde(default)]
    pub id: Option<String>,
    /// An alphanumeric sequence beginning with an optional plus sign, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub number: Option<String>,
    /// Expiry (RFC 3339, in the future); `null` removes it.
    #[serde(default, deserialize_with = "some_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expire_at: Option<Option<DateTime<Utc>>>,
    /// Remarks (at most 255 characters).
    #[schema(max_length = 255)]
    pub description: Option<String>,
}
