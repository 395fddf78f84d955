//! Wire types of the border-rules seed (`/rest/v1/master/borderrules`): its list parameters and
//! its own error shape.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// This seed's error body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct BorderError {
    /// 1000 + the HTTP status (1404: not found).
    pub error_code: u16,
    /// What went wrong.
    pub error_message: String,
    /// The offending field, when one input caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `mask` and `flat` of one rule.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Comma-separated fields to output.
    pub mask: Option<String>,
    /// Nested objects as dotted keys.
    pub flat: Option<bool>,
}

/// Border-rule list parameters.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BorderQuery {
    /// A JSON object of field values that must all be equal.
    pub filter: Option<String>,
    /// Comma-separated fields to output.
    pub mask: Option<String>,
    /// Resources to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<u32>,
    /// Most resources to return (1 to 10000; default all).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// Sort order: `field`, `-field`, or a JSON array of those or of `{"field": "asc"|"desc"}`.
    pub order: Option<String>,
    /// Nested objects as dotted keys.
    pub flat: Option<bool>,
}
