//! Who may do what: tenants (SIP domains), groups, users, roles and their rights, passwords and
//! tokens.
//!
//! A role has a **level** (how far its rights reach: its own user, its group, its tenant, or the
//! whole system) and a set of **permissions** (what it may read or write). The built-in roles are
//! those of the PortSIP seed plus `GroupAdmin`, the "Group Admin" rights level that the
//! authorization-code seed names; custom roles choose a level and permissions, and can never
//! reach further than the user who creates them.

use std::{collections::BTreeSet, fmt};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use utoipa::ToSchema;

/// How far a role's rights reach. Ordered: `User < Group < Tenant < System`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The user's own resources.
    User,
    /// Every user of the user's group.
    Group,
    /// Every group and user of the user's tenant.
    Tenant,
    /// Everything.
    System,
}

impl Level {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Tenant => "tenant",
            Self::System => "system",
        }
    }
    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Group, Self::Tenant, Self::System].into_iter().find(|l| l.as_str() == s)
    }
}

/// One right. `*.read` lets a role see a kind of resource within its level, `*.write` change it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
pub enum Perm {
    /// Networks, signatures, border rules, numbers, prefixes, country codes, counters, events.
    #[serde(rename = "security.read")]
    SecurityRead,
    /// Change any of those (host-wide: they guard every tenant).
    #[serde(rename = "security.write")]
    SecurityWrite,
    /// Outgoing-call-barring authorization codes.
    #[serde(rename = "authcodes.read")]
    AuthCodesRead,
    /// Create and delete authorization codes.
    #[serde(rename = "authcodes.write")]
    AuthCodesWrite,
    /// Users and groups, and their sessions.
    #[serde(rename = "users.read")]
    UsersRead,
    /// Create, change and delete users and groups; revoke their tokens.
    #[serde(rename = "users.write")]
    UsersWrite,
    /// Tenants.
    #[serde(rename = "tenants.read")]
    TenantsRead,
    /// Create and delete tenants.
    #[serde(rename = "tenants.write")]
    TenantsWrite,
    /// Roles.
    #[serde(rename = "roles.read")]
    RolesRead,
    /// Create and delete custom roles.
    #[serde(rename = "roles.write")]
    RolesWrite,
    /// Not a right in the API: a user whose role has it may dial international numbers (PortSIP's
    /// StandardInternationalUser against StandardUser). Checked by the slow path for the calls it
    /// sees (see `calls::policy`).
    #[serde(rename = "calls.international")]
    CallsInternational,
}

impl Perm {
    /// Every permission.
    pub const ALL: [Self; 11] = [
        Self::SecurityRead,
        Self::SecurityWrite,
        Self::AuthCodesRead,
        Self::AuthCodesWrite,
        Self::UsersRead,
        Self::UsersWrite,
        Self::TenantsRead,
        Self::TenantsWrite,
        Self::RolesRead,
        Self::RolesWrite,
        Self::CallsInternational,
    ];

    /// The dotted name (`security.read`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SecurityRead => "security.read",
            Self::SecurityWrite => "security.write",
            Self::AuthCodesRead => "authcodes.read",
            Self::AuthCodesWrite => "authcodes.write",
            Self::UsersRead => "users.read",
            Self::UsersWrite => "users.write",
            Self::TenantsRead => "tenants.read",
            Self::TenantsWrite => "tenants.write",
            Self::RolesRead => "roles.read",
            Self::RolesWrite => "roles.write",
            Self::CallsInternational => "calls.international",
        }
    }

    /// Parses the dotted name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role: built-in or custom.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Role {
    /// Unique name, compared without regard to case.
    pub name: String,
    /// How far its rights reach.
    pub level: Level,
    /// What it may read and write.
    #[schema(value_type = Vec<Perm>)]
    pub permissions: BTreeSet<Perm>,
    /// Built-in roles cannot be changed or deleted, and their names are reserved.
    pub builtin: bool,
    /// Free text.
    pub description: String,
}

impl Role {
    /// Whether the role has `p`.
    pub fn has(&self, p: Perm) -> bool {
        self.permissions.contains(&p)
    }
}

/// The built-in roles.
pub fn builtin_roles() -> Vec<Role> {
    use Perm::*;
    let role = |name: &str, level, perms: &[Perm], description: &str| Role {
        name: name.into(),
        level,
        permissions: perms.iter().copied().collect(),
        builtin: true,
        description: description.into(),
    };
    vec![
        role("SystemAdmin", Level::System, &Perm::ALL, "the system administrator: every right everywhere"),
        role(
            "Replicator",
            Level::System,
            &[SecurityRead, AuthCodesRead, UsersRead, TenantsRead, RolesRead],
            "applications that replicate the configuration: read everything, change nothing",
        ),
        role(
            "Dealer",
            Level::System,
            &[
                AuthCodesRead,
                AuthCodesWrite,
                UsersRead,
                UsersWrite,
                TenantsRead,
                TenantsWrite,
                RolesRead,
                CallsInternational,
            ],
            "the sales manager: tenants and their users, not the host's security rules",
        ),
        role(
            "Admin",
            Level::Tenant,
            &[
                SecurityRead,
                AuthCodesRead,
                AuthCodesWrite,
                UsersRead,
                UsersWrite,
                TenantsRead,
                RolesRead,
                CallsInternational,
            ],
            "the tenant administrator: every user and group of the tenant",
        ),
        role(
            "GroupAdmin",
            Level::Group,
            &[AuthCodesRead, AuthCodesWrite, UsersRead, RolesRead, CallsInternational],
            "the group administrator: the authorization codes of the group's users",
        ),
        role(
            "StandardUser",
            Level::User,
            &[AuthCodesRead, UsersRead],
            "an end user: its own resources; national calls only",
        ),
        role(
            "StandardInternationalUser",
            Level::User,
            &[AuthCodesRead, UsersRead, CallsInternational],
            "an end user with international call permissions: its own resources",
        ),
        role(
            "QueueManager",
            Level::User,
            &[AuthCodesRead, UsersRead, CallsInternational],
            "a call queue manager",
        ),
    ]
}

/// The built-in role named `name` (any case).
pub fn builtin_role(name: &str) -> Option<Role> {
    builtin_roles().into_iter().find(|r| r.name.eq_ignore_ascii_case(name))
}

/// User names only the system administrator may have (compared without regard to case).
pub const RESERVED_USERNAMES: [&str; 4] = ["admin", "system", "administrator", "root"];

/// Longest user, tenant, group or role name.
pub const NAME_MAX: usize = 64;
/// Shortest password.
pub const PASSWORD_MIN: usize = 8;
/// Longest password (bytes hashed are bounded).
pub const PASSWORD_MAX: usize = 128;

/// Checks a user name against the seed's rules: letters, digits and `_ - ' .`, not starting or
/// ending with `.`, 1 to 64 characters; the reserved names only for system administrators.
pub fn check_username(name: &str, system_admin: bool) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err(format!("must be 1 to {NAME_MAX} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-'.".contains(*c))) {
        return Err(format!("`{c}` is not allowed: only letters, digits, _ - ' and ."));
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Err("cannot start or end with `.`".into());
    }
    if !system_admin && RESERVED_USERNAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!("`{name}` is reserved for the system administrator"));
    }
    Ok(())
}

/// Checks a password's length.
pub fn check_password(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(format!("must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"));
    }
    Ok(())
}

/// Checks a tenant or group id (it appears in URL paths): lower-case letters, digits, `_` and
/// `-`, starting with a letter or digit, 1 to 64 characters.
pub fn check_slug(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= NAME_MAX
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}`: 1 to {NAME_MAX} of a-z 0-9 _ -, starting with a letter or digit"))
    }
}

/// Checks a SIP domain: a host name (labels of letters, digits and `-`) or an IP address.
pub fn check_domain(s: &str) -> Result<(), String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
        return Err(format!("`{s}` is not a host name or IP address"));
    }
    Ok(())
}

/// Argon2 computations running at once, at most: half the CPUs, at least one. Each takes 19 MiB
/// and a core for tens of milliseconds, so without a bound a burst of sign-ins or reset requests
/// (anyone can send them) would take every core and gigabytes, and starve the slow path; with
/// it, the burst waits its turn (cheaply: no memory is taken before the turn comes).
static ARGON2_SLOTS: std::sync::LazyLock<(std::sync::Mutex<usize>, std::sync::Condvar)> =
    std::sync::LazyLock::new(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        (std::sync::Mutex::new((cpus / 2).max(1)), std::sync::Condvar::new())
    });

/// Argon2 computations done since the start (hashes and verifications).
static ARGON2_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many Argon2 computations this process has done: what a request that should cost none
/// (a reset with a token nobody was given) can be checked against.
pub fn argon2_runs() -> u64 {
    ARGON2_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f` in one of the [`ARGON2_SLOTS`], waiting for one to be free. Blocking: call it from a
/// blocking thread, never with the daemon's state lock held.
fn in_argon2_slot<T>(f: impl FnOnce() -> T) -> T {
    ARGON2_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (free, freed) = &*ARGON2_SLOTS;
    {
        let mut n = free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n == 0 {
            n = freed.wait(n).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n -= 1;
    }
    /// Gives the slot back however `f` ends.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let (free, freed) = &*ARGON2_SLOTS;
            *free.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            freed.notify_one();
        }
    }
    let _release = Release;
    f()
}

/// The origin (`scheme://host[:port]`, lower case) of an absolute `http` or `https` URL; `None`
/// for anything else, and for a URL with user information (`https://a.example@b.example/`, whose
/// host is `b.example`), which only serves to mislead.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() || authority.contains('@') || authority.contains('\\') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Whether two secrets (tokens, tags) are equal, compared in full whatever differs first, so
/// that the time taken tells nothing of where they differ. Their lengths are not secret.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Hashes a password with Argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    in_argon2_slot(|| {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    in_argon2_slot(|| {
        PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
}

/// A new random secret: 128 bits as 32 upper-case hex digits (the seed's token form).
pub fn new_secret() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The identity a sign-in attempt names, as the store looks it up (blanks around the name and
/// the domain ignored, ASCII case folded): the key sign-in throttling counts failures under, so
/// that `" admin"` and `"ADMIN\t"` count against `admin`. `None` for a name no user can have (longer
/// than [`NAME_MAX`]), which then names nobody and takes no memory.
pub fn sign_in_identity(domain: &str, username: &str) -> Option<String> {
    let name = username.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || domain.trim().chars().count() > 253 {
        return None;
    }
    Some(format!("user:{}/{}", domain.trim().to_ascii_lowercase(), name.to_ascii_lowercase()))
}

/// A new random password for generated accounts: 20 characters from an unambiguous alphabet.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the kernel's random source");
    // 256 % 56 != 0 skews a few letters by under 0.4%: irrelevant at 115 bits of entropy.
    b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect()
}

/// What the store keeps of a secret: its SHA-256, so a copy of the database holds no usable
/// token. (Tokens are 128 random bits; a slow hash adds nothing there.)
pub fn secret_digest(secret: &str) -> Vec<u8> {
    sha2::Sha256::digest(secret.trim().to_ascii_uppercase().as_bytes()).to_vec()
}

/// A tenant: one SIP domain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Tenant {
    /// The id used in paths (`/api/v1/tenants/{id}/…`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The SIP domain (unique, any case).
    pub domain: String,
    /// The tenant's website.
    pub website: String,
    /// The relative path its avatar downloads from (`/api/blobs/…`; empty: none).
    #[serde(default)]
    pub avatar_url: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An uploaded file served at `/api/blobs/{id}` (a tenant's avatar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The random id in its path ([`new_blob_id`]).
    pub id: String,
    /// Its media type, found from its content ([`image_type`]).
    pub content_type: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The relative path a blob downloads from.
pub fn blob_url(id: &str) -> String {
    format!("/api/blobs/{id}")
}

/// A new blob id: 128 random bits as 22 characters of the URL-safe alphabet, so that nobody
/// can find a blob they were not given the path of.
pub fn new_blob_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut b = [0u8; 22];
    getrandom::fill(&mut b).expect("the kernel's random source");
    // 64 divides 256: every character equally likely, 6 bits each.
    b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect()
}

/// Whether `id` has the form [`new_blob_id`] gives (anything else names no blob).
pub fn is_blob_id(id: &str) -> bool {
    id.len() == 22 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The largest avatar accepted, in bytes.
pub const AVATAR_MAX: usize = 256 * 1024;

/// The media type of an image callguard serves, from its first bytes: PNG, JPEG, GIF or WebP.
/// Nothing else (SVG carries script; an unknown type could be anything a browser sniffs).
pub fn image_type(data: &[u8]) -> Option<&'static str> {
    match data {
        [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', ..] => Some("image/png"),
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

/// A group of users inside a tenant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Group {
    /// The tenant.
    pub tenant: String,
    /// The id used in paths, unique in the tenant.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A user (without its password hash).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct User {
    /// Numeric id.
    pub id: u32,
    /// The user's tenant; none for system-wide users.
    pub tenant: Option<String>,
    /// The user's group.
    pub group: Option<String>,
    /// Account name, unique in its tenant (any case).
    pub username: String,
    /// The role's name.
    pub role: String,
    /// Whether the user must set a new password at the next sign-in.
    pub force_reset: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An outgoing-call-barring authorization code of one user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthCode {
    /// The code: `calls.authcode_min_digits` (default 4) to 16 digits.
    pub code: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Longest authorization code.
pub const AUTH_CODE_MAX: usize = 16;

/// Checks an authorization code: `min` to [`AUTH_CODE_MAX`] digits. A short code falls to
/// guessing however slowly guesses are allowed (ten thousand tries cover four digits).
pub fn check_auth_code(code: &str, min: usize) -> Result<(), String> {
    if code.len() < min || code.len() > AUTH_CODE_MAX || !code.bytes().all(|b| b.is_ascii_digit()) {
        let why = if min > 1 { " (calls.authcode_min_digits)" } else { "" };
        return Err(format!("`{code}`: {min} to {AUTH_CODE_MAX} digits{why}"));
    }
    Ok(())
}

/// A user of a tenant as the slow path knows them: by the From of their calls (user name at the
/// tenant's SIP domain), with what their calls may do.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The tenant's SIP domain.
    pub domain: String,
    /// The user name (the From user of the user's calls).
    pub username: String,
    /// The user's role (its name).
    pub role: String,
    /// The user's authorization codes.
    pub codes: Vec<String>,
}

/// A sign-in session: one access token and one refresh token, rotated together.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Session {
    /// Session id.
    pub id: u32,
    /// Whose.
    pub user_id: u32,
    /// When the access token expires.
    pub access_expires: DateTime<Utc>,
    /// When the refresh token expires.
    pub refresh_expires: DateTime<Utc>,
    /// Whether the session began with a verified password (not a reset token).
    pub password_verified: bool,
    /// When the session began.
    pub created_at: DateTime<Utc>,
    /// When it was revoked (signed out), if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An API key for the Voximplant-style calls (`account_id` + `api_key`), acting as its user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct ApiKey {
    /// The `account_id` to pass.
    pub account_id: u32,
    /// The user whose rights the key carries.
    pub user_id: u32,
    /// Free text.
    pub comment: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_seed_rules() {
        for ok in ["alice", "a.b", "o'neil", "x_y-z", "Bob99"] {
            assert_eq!(check_username(ok, false), Ok(()), "{ok}");
        }
        for bad in ["", ".a", "a.", "a b", "a@b", "ü", &"x".repeat(65)] {
            assert!(check_username(bad, false).is_err(), "{bad}");
        }
        for reserved in ["admin", "ROOT", "System", "administrator"] {
            assert!(check_username(reserved, false).unwrap_err().contains("reserved"));
            assert_eq!(check_username(reserved, true), Ok(()));
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn secrets_are_random_hex_and_digests_ignore_case() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        assert_eq!(secret_digest(&a), secret_digest(&a.to_ascii_lowercase()));
        let p = new_password();
        assert_eq!(p.len(), 20);
        assert!(check_password(&p).is_ok());
    }

    #[test]
    fn builtin_roles_are_the_seeds_plus_group_admin() {
        let names: Vec<String> = builtin_roles().into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "SystemAdmin",
                "Replicator",
                "Dealer",
                "Admin",
                "GroupAdmin",
                "StandardUser",
                "StandardInternationalUser",
                "QueueManager"
            ]
        );
        assert!(builtin_role("systemadmin").is_some());
        let admin = builtin_role("Admin").unwrap();
        assert!(admin.has(Perm::AuthCodesWrite) && !admin.has(Perm::SecurityWrite));
    }

    #[test]
    fn slugs_and_domains() {
        assert!(check_slug("footenant").is_ok());
        assert!(check_slug("Foo").is_err());
        assert!(check_slug("-x").is_err());
        assert!(check_domain("pbx.example.com").is_ok());
        assert!(check_domain("192.0.2.1").is_ok());
        assert!(check_domain("bad_domain").is_err());
        assert!(check_domain("a..b").is_err());
    }
}
