//! The PortSIP seeds' list parameters (`filter`, `orderby`, `skip`, `top`), shared by their
//! list routes.

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

/// PortSIP list parameters.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Conditions: `FIELD OP VALUE [and …]`, OP one of eq ne lt le gt ge startswith contains.
    pub filter: Option<String>,
    /// A case-insensitive substring of any text field.
    pub search: Option<String>,
    /// `FIELD [asc|desc]`, comma-separated.
    pub orderby: Option<String>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub skip: Option<u32>,
    /// Page size, 1 to 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    pub top: Option<u32>,
}
