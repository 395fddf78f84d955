//! The management REST API of the seed documents, over HTTP (`api.listen`, default
//! `127.0.0.1:8887`) and over the root-only Unix socket, where the caller is trusted as system
//! administrator.
//!
//! | prefix | what | module |
//! |---|---|---|
//! | `/api/info`, `/api/auth/…` | system info, sign-in, tokens, password reset | [`auth`] |
//! | `/api/v1/tenants`, `/api/v1/users`, `/api/v1/roles`, `/api/v1/sessions`, `/api/v1/api_keys` | accounts | [`admin`] |
//! | `/api/allowed_country_codes`, `/api/disallowed_codes`, `/api/blacklisted_numbers` | PortSIP security | [`portsip`] |
//! | `/api/v1/tenants/{t}/groups/{g}/users/{u}/services/outgoing_call_barring/codes/` | authorization codes | [`codes`] |
//! | `/rest/v1/master/borderrules` | border rules | [`border`] |
//! | `/platform_api/…AuthorizedAccountIP…/` | Voximplant authorized IPs | [`vox`] |
//! | `/v1/…` | the control API of the CLI ([`crate::api::control`]) | [`control`] |
//! | `/api/openapi.json` | the OpenAPI document of all of it | [`openapi`] |
//!
//! Every request passes [`authenticate`] first: it names the caller ([`Principal`]) from the
//! transport, a bearer token or an API key, and handlers check rights with [`Principal::need`]
//! and the `reaches_*` methods.

// utoipa's `params(Type)` expands to a qualified path that this lint flags.
#![allow(unused_qualifications)]

pub mod admin;
pub mod auth;
pub mod border;
pub mod codes;
pub mod control;
pub mod error;
pub mod openapi;
pub mod portsip;
pub mod query;
pub mod serve;
pub mod sso;
pub mod state;
pub mod tls;
pub mod vox;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State as AxState},
    http::{Method, request::Parts},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use serde::de::DeserializeOwned;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use self::{
    error::Failure,
    state::{Shared, lock},
};
pub use crate::service::{access::Principal, auth::Denied};
use crate::{accounts::Perm, service::Service as State};

/// How a request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The root-only Unix socket: the caller is root on this host.
    Unix,
    /// TCP from this peer.
    Tcp(SocketAddr),
}

/// What [`authenticate`] found, for the handlers.
#[derive(Clone, Debug)]
pub struct Auth(pub Result<Principal, Denied>);

/// The authenticated caller (401 when there is none).
#[derive(Debug)]
pub struct Caller(pub Principal);

/// The 401 answer, saying what was wrong with the credentials.
pub fn denied(d: &Denied) -> Failure {
    Failure::unauthorized(match d {
        Denied::Expired => "the access token has expired; refresh it or sign in again",
        Denied::Revoked => "the token was revoked (signed out)",
        Denied::Unknown => "unknown token or API key",
        Denied::Missing => {
            "sign in first: POST /api/auth/sign_in, then send Authorization: Bearer <access_token>"
        }
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Failure> {
        match parts.extensions.get::<Auth>() {
            Some(Auth(Ok(p))) => Ok(Self(p.clone())),
            Some(Auth(Err(d))) => Err(denied(d)),
            None => Err(denied(&Denied::Missing)),
        }
    }
}

/// The peer's address (`None` on the Unix socket).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

impl Peer {
    /// A throttle key for this peer (see [`crate::throttle::source_key`]).
    pub fn key(self, what: &str) -> String {
        crate::throttle::source_key(what, self.0)
    }
}

/// The bearer token of a request: `Authorization: Bearer X`, or the `access_token` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(a) = auth {
        let (scheme, token) = a.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    headers.get("access_token").and_then(|v| v.to_str().ok()).map(|t| t.trim().to_owned())
}

fn form_urlencoded_pairs(query: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default().into_iter().collect()
}

/// Names the caller of every request (see [`Auth`]) and guards the CLI's `/v1` routes:
/// reading needs `security.read`, anything else `security.write`.
pub async fn authenticate(AxState(s): AxState<Shared>, mut req: Request, next: Next) -> Response {
    let transport = if req.extensions().get::<Transport>() == Some(&Transport::Unix) {
        Transport::Unix
    } else {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Transport::Tcp(peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))))
    };
    let auth = match transport {
        Transport::Unix => Ok(Ok(Principal::root())),
        Transport::Tcp(peer) => {
            let token = bearer(req.headers());
            let vox = req.uri().path().starts_with("/platform_api/");
            if token.is_none() && !vox {
                // Nothing to look up (public routes, or a 401 later): leave the store alone.
                Ok(Err(Denied::Missing))
            } else {
                let query = req.uri().query().unwrap_or_default().to_owned();
                let ip = Some(peer.ip());
                blocking(&s, move |st| match token {
                    Some(t) => Ok(st.principal_by_token(&t, ip)?),
                    None => {
                        let pairs = form_urlencoded_pairs(&query);
                        match (pairs.get("account_id"), pairs.get("api_key")) {
                            (Some(id), Some(key)) => Ok(st.principal_by_api_key(id, key, ip)?),
                            _ => Ok(Err(Denied::Missing)),
                        }
                    }
                })
                .await
            }
        }
    };
    let auth = match auth {
        Ok(a) => Auth(a),
        Err(f) => return f.into_response(),
    };
    if req.uri().path().starts_with("/v1/") {
        let need = if req.method() == Method::GET { Perm::SecurityRead } else { Perm::SecurityWrite };
        let allowed =
            |p: &Principal| p.need(need).and_then(|()| p.need_system_level()).map_err(Failure::from);
        if let Err(f) = auth.0.as_ref().map_err(denied).and_then(allowed) {
            return f.into_response();
        }
    }
    req.extensions_mut().insert(auth);
    next.run(req).await
}

/// Rewrites the generic error body ([`crate::api::ApiError`]) of a response into a seed's own
/// error shape, keeping status and headers (`Retry-After`, `WWW-Authenticate`).
pub async fn reshape_error(
    res: Response,
    shape: impl Fn(u16, crate::api::ApiError) -> serde_json::Value,
) -> Response {
    let status = res.status();
    if status.is_success() {
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let Ok(e) = serde_json::from_slice::<crate::api::ApiError>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let mut out = (status, axum::Json(shape(status.as_u16(), e))).into_response();
    for (k, v) in &parts.headers {
        if k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::CONTENT_TYPE {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

/// A JSON request body whose errors name the field (`number`, `authCodes[1].code`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| Failure::bad("body", e.body_text()))?;
        parse_json(&bytes).map(Self)
    }
}

/// The field an error of serde is about: its path, or for a missing field that field's own
/// path (serde reports those at the enclosing object), or `body` for the whole document.
fn field_of(path: &str, message: &str) -> String {
    let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (".", None) => "body".to_owned(),
        (_, None) => path.to_owned(),
    }
}

/// Reads an already parsed JSON value as `T`, naming the field of the first error.
pub fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Failure::bad(&field_of(&path, &message), message)
    })
}

/// Parses JSON, naming the field of the first error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure::bad("body", "a JSON body is required"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Malformed JSON is the body's fault; a wrong value is its field's.
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let message = inner.to_string();
        let field = if syntax { "body".to_owned() } else { field_of(&path, &message) };
        Failure::bad(&field, message)
    })?;
    de.end().map_err(|e| Failure::bad("body", e.to_string()))?;
    Ok(v)
}

/// A query string whose errors name the parameter.
#[derive(Debug)]
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Failure> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "query".to_owned() } else { path };
            Failure::bad(&field, e.into_inner().to_string())
        })
    }
}

/// Path parameters whose errors answer JSON naming the parameter (`id`), like every other
/// bad input; axum's own `Path` answers plain text.
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        use axum::extract::{Path, RawPathParams, path::ErrorKind, rejection::PathRejection};
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    // One parameter (`Path<u32>`): its name is the route's only one.
                    _ => match RawPathParams::from_request_parts(parts, state).await {
                        Ok(raw) if raw.iter().count() == 1 => {
                            raw.iter().next().map_or_else(|| "path".to_owned(), |(k, _)| k.to_owned())
                        }
                        _ => "path".to_owned(),
                    },
                };
                Err(Failure::bad(&field, e.body_text()))
            }
            Err(e) => Err(Failure::bad("path", e.body_text())),
        }
    }
}

/// Runs `f` off the async workers and without the state: for the slow work (Argon2) that
/// must not hold the daemon's lock.
pub async fn off_lock<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Failure::internal(&e.into()))?
}

/// Runs `f` on the state off the async workers (the store is synchronous).
pub async fn blocking<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&mut State) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut st = lock(&s);
        let out = f(&mut st);
        // A write may have changed what the slow path decides with: put it in force before the
        // answer, so a 2xx means the next call is decided by the new rules.
        if let Err(e) = st.refresh_calls() {
            tracing::error!("rebuilding the call checks: {e:#}");
        }
        out
    })
    .await
    .map_err(|e| Failure::internal(&e.into()))?
}

/// What the API keeps besides the store.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Failed sign-ins and reset requests.
    pub throttle: Mutex<crate::throttle::Throttle>,
    /// The kernel's tables of sources, last counted (`/v1/tables` and the metrics).
    pub tables: crate::kernel::tables::Counted,
    /// The blocklist feeds' status, which their refreshers write.
    pub feeds: crate::feeds::Board,
    /// Told after every reload that was applied (the feeds' refreshers follow the new file).
    pub reloaded: tokio::sync::Notify,
    /// Social sign-ins: discovered providers, flows waiting for the provider's redirect.
    pub sso: crate::sso::Relying,
}

/// Every route with its OpenAPI operation, in one list: a route is served exactly when it is
/// documented (the `utoipa::path` annotation of its handler gives both).
pub fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(openapi::Doc::openapi())
        .merge(control::routes())
        .merge(auth::routes())
        .merge(sso::routes())
        .merge(admin::routes())
        .merge(portsip::routes())
        .merge(codes::routes())
        .merge(border::routes())
        .merge(vox::routes())
}

/// The OpenAPI document of every route.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The whole HTTP API: the management routes, the CLI's `/v1` routes and the OpenAPI document,
/// behind [`authenticate`].
pub fn router(shared: Shared) -> Router {
    let (routes, doc) = api_routes().split_for_parts();
    routes
        .merge(openapi::routes(doc))
        .with_state(shared.clone())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), border::lookup_layer))
        .layer(axum::middleware::from_fn_with_state(shared, authenticate))
}
