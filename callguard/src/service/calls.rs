//! The number-level call rules through the service: allowed country codes, disallowed codes
//! (dialed prefixes), blacklisted numbers, border rules and users' authorization codes. Each
//! operation checks the caller's right, validates its input naming the field, and writes the
//! store; the slow path's policy follows the store's generation before the next request
//! (see [`Service::refresh_calls`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Result, Service, ServiceError, access::Principal};
use crate::{
    accounts::{AuthCode, Perm, User, check_auth_code},
    border::{BorderRule, BorderRuleInput, RULES_MAX},
    numbers::{
        BlacklistedNumber, CODE_DESCRIPTION_MAX, DisallowedCode, NUMBER_DESCRIPTION_MAX, NUMBER_MAX,
        PREFIX_MAX, check_country, check_len, check_number, country_key,
    },
};

/// Most allowed country codes.
pub const COUNTRIES_MAX: usize = 1000;
/// Most authorization codes per user.
pub const AUTH_CODES_MAX: usize = 1000;
/// Longest description of an authorization code.
pub const AUTH_CODE_DESCRIPTION_MAX: usize = 256;

/// Checks a code's prefix and description, whichever are given.
fn check_code(prefix: Option<&str>, description: Option<&str>) -> Result<()> {
    if let Some(p) = prefix {
        check_number(p, PREFIX_MAX).map_err(|m| ServiceError::invalid("number_prefix", m))?;
    }
    if let Some(d) = description {
        check_len(d, CODE_DESCRIPTION_MAX).map_err(|m| ServiceError::invalid("description", m))?;
    }
    Ok(())
}

/// Checks a blacklisted number's fields, whichever are given.
fn check_blacklisted(
    number: Option<&str>,
    expire_at: Option<DateTime<Utc>>,
    description: Option<&str>,
) -> Result<()> {
    if let Some(n) = number {
        check_number(n, NUMBER_MAX).map_err(|m| ServiceError::invalid("number", m))?;
    }
    if let Some(d) = description {
        check_len(d, NUMBER_DESCRIPTION_MAX).map_err(|m| ServiceError::invalid("description", m))?;
    }
    if expire_at.is_some_and(|t| t <= Utc::now()) {
        return Err(ServiceError::invalid("expire_at", "already in the past"));
    }
    Ok(())
}

/// Checks a list of authorization codes, each at least `min` digits; `field` names the list
/// (`authCodes`), empty for one code given alone.
pub fn check_auth_codes(codes: &[AuthCode], field: &str, min: usize) -> Result<()> {
    let list = if field.is_empty() { "code" } else { field };
    if codes.is_empty() {
        return Err(ServiceError::invalid(list, "give at least one code"));
    }
    if codes.len() > AUTH_CODES_MAX {
        return Err(ServiceError::invalid(list, format!("at most {AUTH_CODES_MAX} codes")));
    }
    let mut seen = HashSet::new();
    for (i, c) in codes.iter().enumerate() {
        let at = |f: &str| if field.is_empty() { f.to_owned() } else { format!("{field}[{i}].{f}") };
        check_auth_code(&c.code, min).map_err(|m| ServiceError::invalid(&at("code"), m))?;
        check_len(&c.description, AUTH_CODE_DESCRIPTION_MAX)
            .map_err(|m| ServiceError::invalid(&at("description"), m))?;
        if !seen.insert(&c.code) {
            return Err(ServiceError::invalid(&at("code"), format!("`{}` is given twice", c.code)));
        }
    }
    Ok(())
}

impl Service {
    /// The allowed country codes.
    pub fn countries(&self, p: &Principal) -> Result<Vec<String>> {
        p.need(Perm::SecurityRead)?;
        Ok(self.store.countries()?)
    }

    /// Replaces the allowed country codes, kept as written (`+49` comes back as `+49`; `49` and
    /// `+49` are one code, compared without the `+`).
    pub fn set_countries(&mut self, p: &Principal, items: &[String]) -> Result<()> {
        p.need(Perm::SecurityWrite)?;
        if items.len() > COUNTRIES_MAX {
            return Err(ServiceError::invalid("items", format!("at most {COUNTRIES_MAX} codes")));
        }
        let mut seen = HashSet::new();
        for (i, c) in items.iter().enumerate() {
            check_country(c).map_err(|m| ServiceError::invalid(&format!("items[{i}]"), m))?;
            if !seen.insert(country_key(c)) {
                return Err(ServiceError::invalid(&format!("items[{i}]"), format!("`{c}` is given twice")));
            }
        }
        Ok(self.store.set_countries(items)?)
    }

    /// Every disallowed code.
    pub fn disallowed_codes(&self, p: &Principal) -> Result<Vec<DisallowedCode>> {
        p.need(Perm::SecurityRead)?;
        Ok(self.store.codes()?)
    }

    /// One disallowed code.
    pub fn disallowed_code(&self, p: &Principal, id: u32) -> Result<DisallowedCode> {
        let found = self.disallowed_codes(p)?.into_iter().find(|c| c.id == id.to_string());
        found.ok_or_else(|| ServiceError::not_found("id", format!("no disallowed code {id}")))
    }

    /// Adds a disallowed code (a prefix stored already is a conflict).
    pub fn add_disallowed_code(
        &mut self,
        p: &Principal,
        prefix: &str,
        description: &str,
    ) -> Result<DisallowedCode> {
        p.need(Perm::SecurityWrite)?;
        check_code(Some(prefix), Some(description))?;
        Ok(self.store.add_code(prefix, description)?)
    }

    /// Changes a disallowed code (absent fields are kept).
    pub fn update_disallowed_code(
        &mut self,
        p: &Principal,
        id: u32,
        prefix: Option<&str>,
        description: Option<&str>,
    ) -> Result<DisallowedCode> {
        p.need(Perm::SecurityWrite)?;
        check_code(prefix, description)?;
        let c = self.store.update_code(id, prefix, description)?;
        c.ok_or_else(|| ServiceError::not_found("id", format!("no disallowed code {id}")))
    }

    /// Deletes a disallowed code.
    pub fn delete_disallowed_code(&mut self, p: &Principal, id: u32) -> Result<()> {
        p.need(Perm::SecurityWrite)?;
        if self.store.delete_code(id)? {
            Ok(())
        } else {
            Err(ServiceError::not_found("id", format!("no disallowed code {id}")))
        }
    }

    /// Every blacklisted number.
    pub fn blacklisted_numbers(&self, p: &Principal) -> Result<Vec<BlacklistedNumber>> {
        p.need(Perm::SecurityRead)?;
        Ok(self.store.numbers()?)
    }

    /// One blacklisted number.
    pub fn blacklisted_number(&self, p: &Principal, id: u32) -> Result<BlacklistedNumber> {
        let found = self.blacklisted_numbers(p)?.into_iter().find(|x| x.id == id.to_string());
        found.ok_or_else(|| ServiceError::not_found("id", format!("no blacklisted number {id}")))
    }

    /// Blacklists a number (one stored already is a conflict).
    pub fn add_blacklisted_number(
        &mut self,
        p: &Principal,
        number: &str,
        expire_at: Option<DateTime<Utc>>,
        description: &str,
    ) -> Result<BlacklistedNumber> {
        p.need(Perm::SecurityWrite)?;
        check_blacklisted(Some(number), expire_at, Some(description))?;
        Ok(self.store.add_number(number, expire_at, description)?)
    }

    /// Changes a blacklisted number (absent fields are kept; `expire_at: Some(None)` clears the
    /// expiry).
    pub fn update_blacklisted_number(
        &mut self,
        p: &Principal,
        id: u32,
        number: Option<&str>,
        expire_at: Option<Option<DateTime<Utc>>>,
        description: Option<&str>,
    ) -> Result<BlacklistedNumber> {
        p.need(Perm::SecurityWrite)?;
        check_blacklisted(number, expire_at.flatten(), description)?;
        let x = self.store.update_number(id, number, expire_at, description)?;
        x.ok_or_else(|| ServiceError::not_found("id", format!("no blacklisted number {id}")))
    }

    /// Deletes a blacklisted number.
    pub fn delete_blacklisted_number(&mut self, p: &Principal, id: u32) -> Result<()> {
        p.need(Perm::SecurityWrite)?;
        if self.store.delete_number(id)? {
            Ok(())
        } else {
            Err(ServiceError::not_found("id", format!("no blacklisted number {id}")))
        }
    }

    /// Every border rule.
    pub fn border_rules(&self, p: &Principal) -> Result<Vec<BorderRule>> {
        p.need(Perm::SecurityRead)?;
        Ok(self.store.border_rules()?)
    }

    /// One border rule.
    pub fn border_rule(&self, p: &Principal, id: &str) -> Result<BorderRule> {
        let found = self.border_rules(p)?.into_iter().find(|r| r.id == id);
        found.ok_or_else(|| ServiceError::not_found("id", format!("no border rule `{id}`")))
    }

    /// Creates a border rule from `input` over the defaults.
    pub fn add_border_rule(&mut self, p: &Principal, input: BorderRuleInput) -> Result<BorderRule> {
        p.need(Perm::SecurityWrite)?;
        let rule = input.apply(None, Utc::now()).map_err(|(f, m)| ServiceError::invalid(&f, m))?;
        if self.store.border_rules()?.len() >= RULES_MAX {
            return Err(ServiceError::Conflict(format!("there are {RULES_MAX} border rules already")));
        }
        self.store.put_border_rule(&rule, true)?;
        Ok(rule)
    }

    /// Changes a border rule: the fields given replace the stored ones; `id` may not change.
    pub fn update_border_rule(
        &mut self,
        p: &Principal,
        id: &str,
        input: BorderRuleInput,
    ) -> Result<BorderRule> {
        p.need(Perm::SecurityWrite)?;
        let old = self.border_rule(p, id)?;
        let rule = input.apply(Some(&old), Utc::now()).map_err(|(f, m)| ServiceError::invalid(&f, m))?;
        self.store.put_border_rule(&rule, false)?;
        Ok(rule)
    }

    /// Deletes a border rule.
    pub fn delete_border_rule(&mut self, p: &Principal, id: &str) -> Result<()> {
        p.need(Perm::SecurityWrite)?;
        if self.store.delete_border_rule(id)? {
            Ok(())
        } else {
            Err(ServiceError::not_found("id", format!("no border rule `{id}`")))
        }
    }

    /// The user `tenant`/`group`/`user` of an authorization-code path, when the caller has `perm`
    /// and reaches the user.
    fn code_owner(&self, p: &Principal, perm: Perm, tenant: &str, group: &str, user: &str) -> Result<User> {
        p.need(perm)?;
        // Beyond the caller's reach, one answer for every name, whether it exists or not: the
        // answers must not tell a tenant's administrator which other tenants, groups and users
        // exist.
        let nobody = || {
            ServiceError::not_found(
                "user",
                format!("no user `{user}` in group `{group}` of tenant `{tenant}`"),
            )
        };
        if !p.reaches_tenant(tenant) {
            return Err(nobody());
        }
        if !self.store.tenants()?.iter().any(|t| t.id == tenant) {
            return Err(ServiceError::not_found("tenant", format!("no tenant `{tenant}`")));
        }
        if !self.store.groups(Some(tenant))?.iter().any(|g| g.id == group) {
            return Err(ServiceError::not_found("group", format!("no group `{group}` in tenant `{tenant}`")));
        }
        let found = self
            .store
            .find_user(Some(tenant), user)?
            .map(|(u, _)| u)
            .filter(|u| u.group.as_deref() == Some(group));
        let u = found
            .ok_or_else(|| ServiceError::not_found("user", format!("no user `{user}` in group `{group}`")))?;
        if !p.reaches_user(&u) {
            return Err(nobody());
        }
        Ok(u)
    }

    /// A user's authorization codes.
    pub fn auth_codes(&self, p: &Principal, tenant: &str, group: &str, user: &str) -> Result<Vec<AuthCode>> {
        let u = self.code_owner(p, Perm::AuthCodesRead, tenant, group, user)?;
        Ok(self.store.auth_codes(u.id)?)
    }

    /// Gives a user authorization codes, all or none (one the user has already is a conflict);
    /// `field` names the list in errors (see [`check_auth_codes`]).
    pub fn add_auth_codes(
        &mut self,
        p: &Principal,
        (tenant, group, user): (&str, &str, &str),
        codes: &[AuthCode],
        field: &str,
    ) -> Result<()> {
        check_auth_codes(codes, field, self.cfg.calls.authcode_min_digits)?;
        let u = self.code_owner(p, Perm::AuthCodesWrite, tenant, group, user)?;
        if self.store.auth_codes(u.id)?.len() + codes.len() > AUTH_CODES_MAX {
            return Err(ServiceError::invalid(
                if field.is_empty() { "code" } else { field },
                format!("a user has at most {AUTH_CODES_MAX} codes"),
            ));
        }
        Ok(self.store.add_auth_codes(u.id, codes)?)
    }

    /// Takes authorization codes from a user (codes the user does not have are no error).
    /// A list given in a body (`field`, as `authCodes`) must hold well-formed codes; one code
    /// named in the path (`field` empty) is only looked for, as the seed's own example deletes
    /// `fooCode`.
    pub fn delete_auth_codes(
        &mut self,
        p: &Principal,
        (tenant, group, user): (&str, &str, &str),
        codes: &[String],
        field: &str,
    ) -> Result<()> {
        if !field.is_empty() {
            for (i, c) in codes.iter().enumerate() {
                // Any well-formed code, however short: codes stored before a longer minimum was
                // configured must still be removable.
                check_auth_code(c, 1).map_err(|m| ServiceError::invalid(&format!("{field}[{i}].code"), m))?;
            }
        }
        let u = self.code_owner(p, Perm::AuthCodesWrite, tenant, group, user)?;
        self.store.delete_auth_codes(u.id, codes)?;
        Ok(())
    }
}
