//! The control API of the CLI (`/v1/…`): status, statistics, networks, signatures, events,
//! explain and reload, over the rule service. [`super::router`] serves them with the
//! management API, behind its authentication (reading needs `security.read`, anything else
//! `security.write`).

use axum::{
    Json,
    extract::State as AxState,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    JsonBody, QueryArgs, blocking,
    error::Failure,
    state::{Shared, lock},
};
use crate::{
    api::{ApiError, control as api},
    events::EventRecord,
    net::{NetRule, parse_addr},
};

/// The `/v1` routes, each documented in the OpenAPI document.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(stats))
        .routes(routes!(tables))
        .routes(routes!(feeds))
        .routes(routes!(refresh_feed))
        .routes(routes!(list_nets, add_nets))
        .routes(routes!(delete_nets))
        .routes(routes!(check))
        .routes(routes!(list_countries, set_country))
        .routes(routes!(delete_country))
        .routes(routes!(list_sigs, add_sig))
        .routes(routes!(delete_sigs))
        .routes(routes!(set_sig_mode))
        .routes(routes!(explain))
        .routes(routes!(events))
        .routes(routes!(reload))
        .routes(routes!(fraud, set_fraud, reset_fraud))
}

/// The fraud thresholds in force: the API's when written, else the configuration file's.
#[utoipa::path(get, path = "/v1/fraud", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = api::FraudThresholds), (status = "4XX", body = ApiError)))]
pub async fn fraud(AxState(s): AxState<Shared>) -> Result<Json<api::FraudThresholds>, Failure> {
    blocking(&s, |st| Ok(Json(st.fraud_thresholds()?))).await
}

/// Writes the fraud thresholds (a whole `[calls.fraud]` table as JSON; a limit table may name
/// only some limits, the others keep their defaults): kept in the store, in force for the next
/// call, winning over the configuration file's until deleted.
#[utoipa::path(put, path = "/v1/fraud", tag = "Control", security(("bearer" = [])),
    request_body(content = Object, description = "a [calls.fraud] table as JSON"),
    responses((status = 200, body = api::FraudThresholds), (status = "4XX", body = ApiError)))]
pub async fn set_fraud(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<crate::config::Fraud>,
) -> Result<Json<api::FraudThresholds>, Failure> {
    blocking(&s, move |st| Ok(Json(st.set_fraud_thresholds(Some(&req))?))).await
}

/// Deletes the API's fraud thresholds: the configuration file's apply again.
#[utoipa::path(delete, path = "/v1/fraud", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = api::FraudThresholds), (status = "4XX", body = ApiError)))]
pub async fn reset_fraud(AxState(s): AxState<Shared>) -> Result<Json<api::FraudThresholds>, Failure> {
    blocking(&s, |st| Ok(Json(st.set_fraud_thresholds(None)?))).await
}

/// The daemon: version, uptime, paths, guarded interfaces and ports, rule counts.
#[utoipa::path(get, path = "/v1/status", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = api::Status), (status = "4XX", body = ApiError)))]
pub async fn status(AxState(s): AxState<Shared>) -> Json<api::Status> {
    Json(lock(&s).status())
}

/// Every counter: by action and reason, by rule, by signature, and the slow path's decisions.
#[utoipa::path(get, path = "/v1/stats", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = api::Stats), (status = "4XX", body = ApiError)))]
pub async fn stats(AxState(s): AxState<Shared>) -> Result<Json<api::Stats>, Failure> {
    blocking(&s, |st| Ok(Json(st.stats().map_err(|e| Failure::internal(&e))?))).await
}

/// The kernel's tables of sources against their capacity (rate state, registered phones,
/// failed authentications by source and by user), and the sources the kernel bans now: a walk
/// of each table, off the service's lock. The count of tables over 16,384 entries in all is
/// reused for 15 s. 404 when no kernel maps are pinned.
#[utoipa::path(get, path = "/v1/tables", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = crate::kernel::tables::Tables), (status = "4XX", body = ApiError)))]
pub async fn tables(AxState(s): AxState<Shared>) -> Result<Json<crate::kernel::tables::Tables>, Failure> {
    let dir = lock(&s).cfg().pin_dir.clone();
    if !dir.join(callguard_common::maps::SOURCES).exists() {
        // A daemon without a kernel (the API's tests) pins nothing.
        return Err(Failure::not_found(
            "pin_dir",
            format!("no kernel tables are pinned in {}", dir.display()),
        ));
    }
    let web = s.web.clone();
    let read = tokio::task::spawn_blocking(move || web.tables.read(&dir))
        .await
        .map_err(|e| Failure::internal(&e.into()))?;
    Ok(Json(read.map_err(|e| Failure::internal(&e))?))
}

/// The blocklist feeds of `[[feeds]]`: each one's source, what it is doing, its rules in force,
/// and how its last refreshes went (a refused one keeps the last good copy and says why).
#[utoipa::path(get, path = "/v1/feeds", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = Vec<crate::feeds::FeedStatus>), (status = "4XX", body = ApiError)))]
pub async fn feeds(AxState(s): AxState<Shared>) -> Json<Vec<crate::feeds::FeedStatus>> {
    Json(s.web.feeds.all())
}

/// Refreshes a feed now and answers with its status once a refresh that started after the
/// request has ended: applied, or refused with the reason (the feed then keeps its last good
/// copy). 404 for a feed the configuration does not name.
#[utoipa::path(post, path = "/v1/feeds/{name}/refresh", tag = "Control", security(("bearer" = [])),
    params(("name" = String, Path, description = "The feed's name")),
    responses((status = 200, body = crate::feeds::FeedStatus), (status = "4XX", body = ApiError)))]
pub async fn refresh_feed(
    AxState(s): AxState<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<crate::feeds::FeedStatus>, Failure> {
    let timeout = lock(&s).cfg().feeds.iter().find(|f| f.name == name).map(|f| f.timeout_secs);
    let (Some(timeout), Some(_)) = (timeout, s.web.feeds.get(&name)) else {
        return Err(Failure::not_found("name", format!("no feed `{name}` is configured")));
    };
    // Answered by a refresh that starts after this request, not one already under way.
    let asked = s.web.feeds.ask(&name);
    // The fetch's own limit, and time to apply a large document.
    let limit = timeout + 300;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(limit);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        match s.web.feeds.get(&name) {
            Some(now) if s.web.feeds.answered(&name, asked) => return Ok(Json(now)),
            Some(_) if tokio::time::Instant::now() < deadline => {}
            _ => {
                return Err(Failure::internal(&anyhow::anyhow!(
                    "feed `{name}` did not finish a refresh in {limit} s"
                )));
            }
        }
    }
}

/// The country rules, each with its country's networks in force.
#[utoipa::path(get, path = "/v1/nets/countries", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::CountryView>), (status = "4XX", body = ApiError)))]
pub async fn list_countries(AxState(s): AxState<Shared>) -> Result<Json<Vec<api::CountryView>>, Failure> {
    blocking(&s, |st| Ok(Json(st.country_rules()?))).await
}

/// Allows or denies a country's source addresses: the networks the country database
/// (`[geoip] database`) places in it become the rule's network rules, in the kernel at once, and
/// follow the database when it changes. 400 when no database is set or it cannot be read.
#[utoipa::path(post, path = "/v1/nets/countries", tag = "Control", security(("bearer" = [])),
    request_body = api::SetCountry,
    responses((status = 200, body = api::CountryView), (status = "4XX", body = ApiError)))]
pub async fn set_country(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::SetCountry>,
) -> Result<Json<api::CountryView>, Failure> {
    let (rule, database) = lock(&s).country_request(req)?;
    // The whole database is read outside the service's lock.
    let wanted = std::collections::BTreeSet::from([rule.code.clone()]);
    let read = tokio::task::spawn_blocking(move || crate::geo::networks(&database, &wanted))
        .await
        .map_err(|e| Failure::internal(&e.into()))?;
    let nets = read.map_err(|m| Failure::bad("code", m))?.remove(&rule.code).unwrap_or_default();
    blocking(&s, move |st| {
        st.set_country(&rule, &nets)?;
        let networks = st.list_rules(&rule.list());
        Ok(Json(api::CountryView { rule, networks }))
    })
    .await
}

/// Deletes a country rule and its networks.
#[utoipa::path(delete, path = "/v1/nets/countries/{code}", tag = "Control", security(("bearer" = [])),
    params(("code" = String, Path, description = "The country's code")),
    responses((status = 200, body = api::Removed), (status = "4XX", body = ApiError)))]
pub async fn delete_country(
    AxState(s): AxState<Shared>,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Result<Json<api::Removed>, Failure> {
    let code = crate::geo::parse_code(&code).map_err(|m| Failure::bad("code", m))?;
    blocking(&s, move |st| Ok(Json(api::Removed { count: st.del_country(&code)? }))).await
}

/// The network rules (authorized and blocked networks), optionally only allow or deny rules,
/// or those containing an address.
#[utoipa::path(get, path = "/v1/nets", tag = "Control", security(("bearer" = [])), params(api::NetQuery),
    responses((status = 200, body = Vec<NetRule>), (status = "4XX", body = ApiError)))]
pub async fn list_nets(
    AxState(s): AxState<Shared>,
    QueryArgs(q): QueryArgs<api::NetQuery>,
) -> Json<Vec<NetRule>> {
    Json(lock(&s).list(&q))
}

/// Adds or updates network rules, all or none: stored, then in the kernel before the answer.
/// A batch the kernel maps cannot hold is refused whole (409 naming the map).
#[utoipa::path(post, path = "/v1/nets", tag = "Control", security(("bearer" = [])), request_body = api::AddNets,
    responses((status = 200, body = api::Added), (status = "4XX", body = ApiError)))]
pub async fn add_nets(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::AddNets>,
) -> Result<Json<api::Added>, Failure> {
    // Large imports take seconds: off the async workers.
    blocking(&s, move |st| Ok(Json(st.add_nets(&req)?))).await
}

/// Deletes network rules chosen by network, containment or all (the configuration file's stay).
#[utoipa::path(post, path = "/v1/nets/delete", tag = "Control", security(("bearer" = [])), request_body = api::DelNets,
    responses((status = 200, body = api::Removed), (status = "4XX", body = ApiError)))]
pub async fn delete_nets(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::DelNets>,
) -> Result<Json<api::Removed>, Failure> {
    blocking(&s, move |st| Ok(Json(st.del_nets(&req)?))).await
}

/// The verdict for one address: the deciding rule and whether the kernel holds it.
#[utoipa::path(get, path = "/v1/nets/check", tag = "Control", security(("bearer" = [])), params(api::CheckQuery),
    responses((status = 200, body = api::Check), (status = "4XX", body = ApiError)))]
pub async fn check(
    AxState(s): AxState<Shared>,
    QueryArgs(q): QueryArgs<api::CheckQuery>,
) -> Result<Json<api::Check>, Failure> {
    let ip = parse_addr(&q.ip).map_err(|m| Failure::bad("ip", m))?;
    Ok(Json(lock(&s).check(ip)))
}

/// Every scanner signature with its counters.
#[utoipa::path(get, path = "/v1/sigs", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::SigRow>), (status = "4XX", body = ApiError)))]
pub async fn list_sigs(AxState(s): AxState<Shared>) -> Result<Json<Vec<api::SigRow>>, Failure> {
    blocking(&s, |st| Ok(Json(st.sig_rows().map_err(|e| Failure::internal(&e))?))).await
}

/// Adds a scanner signature (refused with nothing stored when the kernel's automaton bank
/// cannot hold it).
#[utoipa::path(post, path = "/v1/sigs", tag = "Control", security(("bearer" = [])), request_body = api::AddSig,
    responses((status = 200, body = api::SigRow), (status = "4XX", body = ApiError)))]
pub async fn add_sig(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::AddSig>,
) -> Result<Json<api::SigRow>, Failure> {
    blocking(&s, move |st| Ok(Json(st.add_sig(&req.into())?))).await
}

/// Deletes signatures by id.
#[utoipa::path(post, path = "/v1/sigs/delete", tag = "Control", security(("bearer" = [])), request_body = api::DelSigs,
    responses((status = 200, body = api::Removed), (status = "4XX", body = ApiError)))]
pub async fn delete_sigs(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::DelSigs>,
) -> Result<Json<api::Removed>, Failure> {
    blocking(&s, move |st| Ok(Json(st.del_sigs(&req)?))).await
}

/// Switches a signature between enforce and dry-run.
#[utoipa::path(post, path = "/v1/sigs/mode", tag = "Control", security(("bearer" = [])), request_body = api::SetSigMode,
    responses((status = 200, body = api::SigRow), (status = "4XX", body = ApiError)))]
pub async fn set_sig_mode(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::SetSigMode>,
) -> Result<Json<api::SigRow>, Failure> {
    blocking(&s, move |st| Ok(Json(st.set_sig_mode(&req)?))).await
}

/// What the rules in force would do with a SIP request from an address: whether the kernel
/// hands it up, what the checks read in it, and the decision.
#[utoipa::path(post, path = "/v1/explain", tag = "Control", security(("bearer" = [])), request_body = api::ExplainRequest,
    responses((status = 200, body = api::Explained), (status = "4XX", body = ApiError)))]
pub async fn explain(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<api::ExplainRequest>,
) -> Result<Json<api::Explained>, Failure> {
    Ok(Json(lock(&s).explain(&req)?))
}

/// The recent drop samples, bans and decided calls; with `follow=true` an NDJSON stream of
/// them followed by live ones.
#[utoipa::path(get, path = "/v1/events", tag = "Control", security(("bearer" = [])), params(api::EventsQuery),
    responses((status = 200, body = Vec<EventRecord>, description = "JSON, or with `follow=true` NDJSON (`application/x-ndjson`): one event a line"),
        (status = "4XX", body = ApiError)))]
pub async fn events(AxState(s): AxState<Shared>, QueryArgs(q): QueryArgs<api::EventsQuery>) -> Response {
    use futures_util::StreamExt as _;
    let recent = s.hub.recent();
    if !q.follow.unwrap_or(false) {
        return Json(recent).into_response();
    }
    let line = |r: &EventRecord| {
        let mut v = serde_json::to_vec(r).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(v))
    };
    let head: Vec<_> = recent.iter().map(line).collect();
    let live = futures_util::stream::unfold(s.hub.subscribe(), move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(r) => return Some((line(&r), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::iter(head).chain(live));
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Re-reads the configuration file and applies the difference; an invalid file changes
/// nothing (400 saying why).
#[utoipa::path(post, path = "/v1/reload", tag = "Control", security(("bearer" = [])),
    responses((status = 200, body = api::Reloaded), (status = "4XX", body = ApiError)))]
pub async fn reload(AxState(s): AxState<Shared>) -> Result<Json<api::Reloaded>, Failure> {
    let done =
        blocking(&s, |st| Ok(Json(st.reload().map_err(|e| Failure::bad("config", format!("{e:#}")))?))).await;
    // Also after a refusal: the refreshers follow whatever settings are in force.
    s.web.reloaded.notify_one();
    done
}
