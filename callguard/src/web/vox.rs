//! Voximplant "Authorized IPs" seed: `AddAuthorizedAccountIP`, `CheckAuthorizedAccountIP`,
//! `DelAuthorizedAccountIP`, `GetAuthorizedAccountIPs` under `/platform_api/`, by GET or POST
//! with query parameters, authenticated by `account_id` + `api_key` (an API key of a callguard
//! user: `callguard apikey add`) or a bearer token.
//!
//! The white list is callguard's allow rules and the black list its deny rules: the same rules
//! `callguard net list` shows and the kernel enforces, changed through the same path
//! ([`crate::service::Service::add_nets`]), so a change is in the kernel before the answer
//! leaves. Errors use Voximplant's shape: `{"error": {"code": …, "msg": …, "field": …}}`.

use std::net::IpAddr;

use axum::{
    Json,
    extract::{Request, State as AxState},
    middleware::Next,
    response::Response,
    routing::get,
};
use chrono::Utc;
use ipnet::IpNet;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, QueryArgs, blocking};
use crate::api::vox::{
    AddQuery, CheckQuery, Checked, Count, DelQuery, ListAnswer, ListQuery, Listed, VoxError, VoxErrorBody,
};
use crate::{
    accounts::Perm,
    api::control::{AddNets, DelNets, NetQuery, NetSpec},
    net::{NetAction, NetRule, parse_addr, parse_net},
    service::ServiceError,
    web::{Failure, Shared},
};

/// The routes (each with and without the trailing slash).
/// The documented paths end in `/`, as the seed's; each also answers without it (an alias the
/// OpenAPI document does not repeat).
pub fn routes() -> OpenApiRouter<Shared> {
    let mut r = OpenApiRouter::new()
        .routes(routes!(add))
        .routes(routes!(check))
        .routes(routes!(del))
        .routes(routes!(list));
    for (name, handler) in [
        ("AddAuthorizedAccountIP", get(add).post(add)),
        ("CheckAuthorizedAccountIP", get(check).post(check)),
        ("DelAuthorizedAccountIP", get(del).post(del)),
        ("GetAuthorizedAccountIPs", get(list).post(list)),
    ] {
        r = r.route(&format!("/platform_api/{name}"), handler);
    }
    r.route_layer(axum::middleware::from_fn(seed_errors))
}

async fn seed_errors(req: Request, next: Next) -> Response {
    super::reshape_error(next.run(req).await, |code, e| {
        serde_json::json!(VoxError { error: VoxErrorBody { code, msg: e.error, field: e.field } })
    })
    .await
}

/// A single address without its `/32` or `/128`, as the seed prints them.
fn show(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() }
}

/// Adds an IP or network to the white list (allowed, the default) or the black list.
#[utoipa::path(method(get, post), path = "/platform_api/AddAuthorizedAccountIP/", tag = "Authorized IPs",
    params(AddQuery), responses((status = 200, body = Count), (status = "4XX", body = VoxError)))]
pub async fn add(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<AddQuery>,
) -> Result<Json<Count>, Failure> {
    p.need(Perm::SecurityWrite)?;
    parse_net(&q.authorized_ip).map_err(|m| Failure::bad("authorized_ip", m))?;
    let who = p.user.as_ref().map_or_else(|| "root".into(), |u| u.username.clone());
    let req = AddNets {
        rules: vec![NetSpec {
            cidr: q.authorized_ip.clone(),
            action: if q.allowed.unwrap_or(true) { NetAction::Allow } else { NetAction::Deny },
            scope: Default::default(),
            profile: None,
            expires_at: None,
            comment: format!("AddAuthorizedAccountIP by {who}"),
        }],
        import: false,
    };
    blocking(&s, move |st| {
        let added = st.add_nets(&req).map_err(|e| rename(e, "cidr", "authorized_ip"))?;
        Ok(Json(Count { result: added.count }))
    })
    .await
}

/// The service's error with the seed's name for a field.
fn rename(e: ServiceError, from: &str, to: &str) -> ServiceError {
    match e {
        ServiceError::Invalid { field, msg } if field == from => {
            ServiceError::Invalid { field: to.into(), msg }
        }
        ServiceError::NotFound { field, msg } if field == from => {
            ServiceError::NotFound { field: to.into(), msg }
        }
        e => e,
    }
}

/// Tests whether an IP is allowed (`result: true`), forbidden (`false` with the deny rule's
/// network) or unknown (`false` alone). For a network, the rules that contain all of it count.
#[utoipa::path(method(get, post), path = "/platform_api/CheckAuthorizedAccountIP/", tag = "Authorized IPs",
    params(CheckQuery), responses((status = 200, body = Checked), (status = "4XX", body = VoxError)))]
pub async fn check(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<CheckQuery>,
) -> Result<Json<Checked>, Failure> {
    p.need(Perm::SecurityRead)?;
    let asked: IpNet = match q.authorized_ip.trim().parse::<IpAddr>() {
        Ok(a) => IpNet::from(a),
        Err(_) => q.authorized_ip.trim().parse::<IpNet>().map_err(|_| {
            Failure::bad("authorized_ip", format!("`{}` is not an IP address or network", q.authorized_ip))
        })?,
    };
    blocking(&s, move |st| {
        let rules = st.list(&NetQuery::default());
        let now = Utc::now();
        // What the kernel decides for the whole of `asked`.
        let best = crate::net::decide_net(&rules, &asked, now);
        Ok(Json(match best {
            Some(r) => Checked { result: r.action == NetAction::Allow, authorized_ip: Some(show(&r.cidr)) },
            None => Checked { result: false, authorized_ip: None },
        }))
    })
    .await
}

/// Removes an IP or network (or `all`, or those containing `contains_ip`) from the white list,
/// the black list or both. Rules from the configuration file are kept (409 when named).
#[utoipa::path(method(get, post), path = "/platform_api/DelAuthorizedAccountIP/", tag = "Authorized IPs",
    params(DelQuery), responses((status = 200, body = Count), (status = "4XX", body = VoxError)))]
pub async fn del(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<DelQuery>,
) -> Result<Json<Count>, Failure> {
    p.need(Perm::SecurityWrite)?;
    let req = match (q.authorized_ip.as_deref().map(str::trim), q.contains_ip) {
        (Some("all"), None) => DelNets { all: true, allowed: q.allowed, ..Default::default() },
        (Some(ip), None) => DelNets { cidr: Some(ip.to_owned()), allowed: q.allowed, ..Default::default() },
        (None, Some(c)) => DelNets { contains: Some(c), allowed: q.allowed, ..Default::default() },
        (Some(_), Some(_)) => {
            return Err(Failure::bad("contains_ip", "give authorized_ip or contains_ip, not both"));
        }
        (None, None) => {
            return Err(Failure::bad("authorized_ip", "give authorized_ip (or `all`) or contains_ip"));
        }
    };
    blocking(&s, move |st| match st.del_nets(&req) {
        Ok(r) => Ok(Json(Count { result: r.count })),
        // The seed counts what it removed: nothing to remove is a count of 0.
        Err(ServiceError::NotFound { .. }) => Ok(Json(Count { result: 0 })),
        Err(e) => Err(rename(rename(e, "cidr", "authorized_ip"), "contains", "contains_ip").into()),
    })
    .await
}

/// Gets the authorized (and blocked) IPs and networks.
#[utoipa::path(method(get, post), path = "/platform_api/GetAuthorizedAccountIPs/", tag = "Authorized IPs",
    params(ListQuery), responses((status = 200, body = ListAnswer), (status = "4XX", body = VoxError)))]
pub async fn list(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<ListQuery>,
) -> Result<Json<ListAnswer>, Failure> {
    p.need(Perm::SecurityRead)?;
    let count = q.count.unwrap_or(50);
    if !(1..=10_000).contains(&count) {
        return Err(Failure::bad("count", format!("1 to 10000, not {count}")));
    }
    let exact = q
        .authorized_ip
        .as_deref()
        .map(parse_net)
        .transpose()
        .map_err(|m| Failure::bad("authorized_ip", m))?;
    let contains = q
        .contains_ip
        .as_deref()
        .map(|c| parse_addr(c).map_err(|m| Failure::bad("contains_ip", m)))
        .transpose()?;
    blocking(&s, move |st| {
        let rules: Vec<NetRule> = st
            .list(&NetQuery { allowed: q.allowed, contains })
            .into_iter()
            .filter(|r| exact.is_none_or(|e| r.cidr == e))
            .collect();
        let total_count = rules.len();
        let result: Vec<Listed> = rules
            .into_iter()
            .skip(q.offset.unwrap_or(0) as usize)
            .take(count as usize)
            .map(|r| Listed {
                allowed: (r.action == NetAction::Allow).to_string(),
                created: r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                authorized_ip: show(&r.cidr),
            })
            .collect();
        Ok(Json(ListAnswer { count: result.len(), result, total_count }))
    })
    .await
}
