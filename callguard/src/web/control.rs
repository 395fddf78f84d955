//! The control API of the CLI (`/v1/…`): status, statistics, networks, signatures, events,
//! explain and reload, over the rule service. [`super::router`] serves them with the
//! management API, behind its authentication.

use std::{collections::HashMap, net::IpAddr};

use axum::{
    Json, Router,
    extract::{Query, State as AxState, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{
    error::{Answer, Failure, json_body},
    state::{Shared, lock},
};
use crate::api::{ApiError, control as api};

/// `GET /v1/events`: the recent events, or with `follow=true` an NDJSON stream of the recent
/// events followed by live ones.
async fn events_route(AxState(s): AxState<Shared>, q: Query<HashMap<String, String>>) -> Response {
    use futures_util::StreamExt as _;
    let recent = s.hub.recent();
    if q.get("follow").is_none_or(|v| v != "true") {
        return Json(recent).into_response();
    }
    let line = |r: &crate::events::EventRecord| {
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

/// The `/v1` routes.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/status", get(|AxState(s): AxState<Shared>| async move { Json(lock(&s).status()) }))
        .route(
            "/v1/stats",
            get(|AxState(s): AxState<Shared>| async move {
                let st = lock(&s).stats().map_err(|e| Failure::internal(&e))?;
                Answer::Ok(Json(st))
            }),
        )
        .route(
            "/v1/nets",
            get(|AxState(s): AxState<Shared>, q: Result<Query<api::NetQuery>, _>| async move {
                let Query(q) = q.map_err(|e: axum::extract::rejection::QueryRejection| {
                    Failure(StatusCode::BAD_REQUEST, ApiError { error: e.body_text(), field: None })
                })?;
                Answer::Ok(Json(lock(&s).list(&q)))
            })
            .post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::AddNets>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    // Large imports take seconds: keep them off the async workers.
                    let added = tokio::task::spawn_blocking(move || lock(&s).add_nets(&req))
                        .await
                        .map_err(|e| Failure::internal(&e.into()))??;
                    Answer::Ok(Json(added))
                },
            ),
        )
        .route(
            "/v1/nets/delete",
            post(|AxState(s): AxState<Shared>, body: Result<Json<api::DelNets>, JsonRejection>| async move {
                let req = json_body(body)?;
                Answer::Ok(Json(lock(&s).del_nets(&req)?))
            }),
        )
        .route(
            "/v1/nets/check",
            get(|AxState(s): AxState<Shared>, q: Query<HashMap<String, String>>| async move {
                let ip = q.get("ip").ok_or_else(|| Failure::bad("ip", "missing"))?;
                let ip: IpAddr = ip
                    .trim()
                    .parse()
                    .map_err(|_| Failure::bad("ip", format!("`{ip}` is not an IP address")))?;
                Answer::Ok(Json(lock(&s).check(ip)))
            }),
        )
        .route(
            "/v1/sigs",
            get(|AxState(s): AxState<Shared>| async move {
                Answer::Ok(Json(lock(&s).sig_rows().map_err(|e| Failure::internal(&e))?))
            })
            .post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::AddSig>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).add_sig(&req.into())?))
                },
            ),
        )
        .route(
            "/v1/explain",
            post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::ExplainRequest>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).explain(&req)?))
                },
            ),
        )
        .route(
            "/v1/sigs/delete",
            post(|AxState(s): AxState<Shared>, body: Result<Json<api::DelSigs>, JsonRejection>| async move {
                let req = json_body(body)?;
                Answer::Ok(Json(lock(&s).del_sigs(&req)?))
            }),
        )
        .route(
            "/v1/sigs/mode",
            post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::SetSigMode>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).set_sig_mode(&req)?))
                },
            ),
        )
        .route("/v1/events", get(events_route))
        .route(
            "/v1/reload",
            post(|AxState(s): AxState<Shared>| async move {
                let r = lock(&s).reload().map_err(|e| {
                    Failure(StatusCode::BAD_REQUEST, ApiError { error: format!("{e:#}"), field: None })
                })?;
                Answer::Ok(Json(r))
            }),
        )
}
