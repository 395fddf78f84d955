//! Country rules for source addresses (`net deny --country CN`): a rule names a country, and the
//! networks a MaxMind-format database (GeoLite2 Country, DB-IP lite; the operator supplies it,
//! `[geoip] database`) places there become that rule's network rules, origin `country`, list
//! `country:CC`, compiled into the kernel's prefix maps like any other. This module is the
//! model: the rule, and reading a country's networks out of the database.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::net::{NetAction, Scope};

/// A country rule.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CountryRule {
    /// ISO 3166-1 alpha-2 code, upper case (`CN`).
    pub code: String,
    /// Allow or deny the country's networks.
    pub action: NetAction,
    /// For deny: guarded ports only (`sip`) or every packet (`all`).
    pub scope: Scope,
    /// Free text.
    pub comment: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl CountryRule {
    /// The name of the list its networks form.
    pub fn list(&self) -> String {
        list_name(&self.code)
    }
}

/// The list name of country `code`'s networks.
pub fn list_name(code: &str) -> String {
    format!("country:{code}")
}

/// A country code as typed (`cn`, `CN`): two ASCII letters, returned upper case.
pub fn parse_code(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(format!("`{s}` is not a two-letter country code (ISO 3166-1: CN, RU, US)"))
    }
}

/// `[geoip]` of the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// The MaxMind-format country database (`GeoLite2-Country.mmdb`, `dbip-country-lite.mmdb`);
    /// empty: no country rules. The daemon reads it again when it changes.
    pub database: PathBuf,
    /// How often the file is checked for a change, in seconds.
    pub check_secs: u64,
}

impl Default for GeoIpConfig {
    /// No database; a database set is checked every minute.
    fn default() -> Self {
        Self { database: PathBuf::new(), check_secs: 60 }
    }
}

/// The networks of each country of `codes` in the database at `path`: each network's
/// `country.iso_code`, or `registered_country.iso_code` where a network has no `country`
/// (anonymous proxies, satellite providers). Networks come sorted. Reads the whole database:
/// call it off the runtime and outside the service's lock.
pub fn networks(path: &Path, codes: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<IpNet>>, String> {
    let reader = maxminddb::Reader::open_readfile(path)
        .map_err(|e| format!("reading the country database {}: {e}", path.display()))?;
    let bad =
        |e: maxminddb::MaxMindDbError| format!("the country database {} is damaged: {e}", path.display());
    let mut out: BTreeMap<String, Vec<IpNet>> = codes.iter().map(|c| (c.clone(), Vec::new())).collect();
    // Networks share records: decode each record once.
    let mut code_at: HashMap<usize, Option<String>> = HashMap::new();
    for found in reader.networks(maxminddb::WithinOptions::default()).map_err(bad)? {
        let found = found.map_err(bad)?;
        let Some(offset) = found.offset() else { continue };
        let code = match code_at.get(&offset) {
            Some(c) => c.clone(),
            None => {
                let country: Option<String> =
                    found.decode_path(&maxminddb::path!["country", "iso_code"]).map_err(bad)?;
                let code = match country {
                    Some(c) => Some(c),
                    None => {
                        found.decode_path(&maxminddb::path!["registered_country", "iso_code"]).map_err(bad)?
                    }
                };
                code_at.insert(offset, code.clone());
                code
            }
        };
        let Some(nets) = code.and_then(|c| out.get_mut(&c)) else { continue };
        let n = found.network().map_err(bad)?;
        let net = IpNet::new(n.ip(), n.prefix()).map_err(|e| format!("a network of the database: {e}"))?;
        nets.push(net.trunc());
    }
    for nets in out.values_mut() {
        nets.sort_unstable();
        nets.dedup();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters() {
        assert_eq!(parse_code(" cn "), Ok("CN".into()));
        assert!(parse_code("CHN").is_err());
        assert!(parse_code("C1").is_err());
        assert_eq!(list_name("CN"), "country:CN");
    }

    #[test]
    fn a_missing_or_damaged_database_says_so() {
        let e = networks(Path::new("/nonexistent/GeoLite2-Country.mmdb"), &BTreeSet::new()).unwrap_err();
        assert!(e.contains("reading the country database /nonexistent"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.mmdb");
        std::fs::write(&f, b"<html>not a database</html>").unwrap();
        let e = networks(&f, &BTreeSet::new()).unwrap_err();
        assert!(e.contains("reading the country database"), "{e}");
    }
}
