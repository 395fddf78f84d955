//! The number-level rules of the PortSIP security seed: blacklisted numbers (callers),
//! disallowed codes (dialed prefixes) and allowed country codes. The daemon keeps them for the
//! calls the kernel hands up; the kernel cannot evaluate them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest disallowed number prefix.
pub const PREFIX_MAX: usize = 16;
/// Longest blacklisted number.
pub const NUMBER_MAX: usize = 64;
/// Longest description of a disallowed code.
pub const CODE_DESCRIPTION_MAX: usize = 1024;
/// Longest description of a blacklisted number.
pub const NUMBER_DESCRIPTION_MAX: usize = 255;
/// Longest allowed country code.
pub const COUNTRY_MAX: usize = 32;

/// A dialed-number prefix that outside callers may not reach.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct DisallowedCode {
    /// The unique ID of the blocked code.
    pub id: String,
    /// The number prefix: an alphanumeric sequence beginning with an optional plus sign.
    pub number_prefix: String,
    /// The description of the blocked code.
    pub description: String,
}

/// A caller number that is refused.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct BlacklistedNumber {
    /// The unique ID of this blacklisted number.
    pub id: String,
    /// An alphanumeric sequence beginning with an optional plus sign.
    pub number: String,
    /// When the entry stops applying (RFC 3339); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<DateTime<Utc>>,
    /// Creation time (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Last update (RFC 3339).
    pub updated_at: DateTime<Utc>,
    /// Remarks.
    pub description: String,
}

impl BlacklistedNumber {
    /// Whether the entry applies at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expire_at.is_none_or(|t| t > now)
    }
}

/// Checks a number or prefix: an optional `+` then 1 or more ASCII letters or digits, at most
/// `max` characters in all.
pub fn check_number(s: &str, max: usize) -> Result<(), String> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if s.len() > max {
        return Err(format!("longer than {max} characters"));
    }
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("`{s}`: letters and digits, optionally after one leading `+`"));
    }
    Ok(())
}

/// Checks a country calling code: an optional `+` then 1 or more digits, at most 32 characters.
pub fn check_country(s: &str) -> Result<(), String> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if s.len() > COUNTRY_MAX {
        return Err(format!("longer than {COUNTRY_MAX} characters"));
    }
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}`: digits, optionally after one leading `+`"));
    }
    Ok(())
}

/// The canonical form a country code is compared in (no `+`).
pub fn country_key(s: &str) -> &str {
    s.strip_prefix('+').unwrap_or(s)
}

/// Checks a description's length in characters.
pub fn check_len(s: &str, max: usize) -> Result<(), String> {
    if s.chars().count() > max { Err(format!("longer than {max} characters")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_alphanumeric_after_an_optional_plus() {
        for ok in ["+4930123", "900", "ABC1", "+1"] {
            assert_eq!(check_number(ok, NUMBER_MAX), Ok(()), "{ok}");
        }
        for bad in ["", "+", "++1", "12 34", "1-2", "12*"] {
            assert!(check_number(bad, NUMBER_MAX).is_err(), "{bad}");
        }
        assert!(check_number(&"1".repeat(17), PREFIX_MAX).is_err());
        assert!(check_number(&"1".repeat(16), PREFIX_MAX).is_ok());
    }

    #[test]
    fn country_codes_are_digits() {
        assert!(check_country("+44").is_ok());
        assert!(check_country("1242").is_ok());
        assert!(check_country("4a").is_err());
        assert!(check_country("").is_err());
        assert_eq!(country_key("+44"), "44");
    }
}
