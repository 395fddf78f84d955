//! `GET /api/info` and `/api/auth/…`: system and tenant information, sign-in, token refresh,
//! token information, sign-out and the forgot-password flow (PortSIP "Authentication" seed).
//!
//! Tokens are 128-bit random strings (32 hex digits); the store keeps only their SHA-256. An
//! access token lives `api.access_token_secs` (1800 s), a refresh token
//! `api.refresh_token_secs`; a refresh replaces both. Sign-in failures are throttled per
//! source address and per user (`api.signin_failures` in `api.signin_window_secs`: 429); a
//! user's limit spares the sources that user has signed in from (see [`super::Throttle`]).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State as AxState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::Utc;

use super::{Caller, JsonBody, Peer, QueryArgs, blocking};
use crate::api::auth::{Forgot, Info, InfoQuery, Refresh, Reset, SignIn, TenantInfo, TokenInfo, Tokens};
use crate::{
    accounts::{self, check_password},
    service::Service as State,
    store::SessionTokens,
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/info", get(info))
        .route("/api/auth/sign_in", post(sign_in))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/token", get(token_info))
        .route("/api/auth/sign_out", post(sign_out))
        .route("/api/auth/forgot_password", post(forgot_password))
        .route("/api/auth/reset_password", post(reset_password))
}

/// System metadata; with `domain`, also that tenant's. No token needed.
#[utoipa::path(get, path = "/api/info", tag = "Authentication", params(InfoQuery),
    responses((status = 200, body = Info), (status = 404, description = "No tenant has this domain", body = crate::api::ApiError)))]
pub async fn info(
    AxState(s): AxState<Shared>,
    QueryArgs(q): QueryArgs<InfoQuery>,
) -> Result<Json<Info>, Failure> {
    blocking(&s, move |st| {
        let system = st.cfg().api.info.clone();
        let tenant = match q.domain.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => {
                let t = st.store().tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(d));
                let t =
                    t.ok_or_else(|| Failure::not_found("domain", format!("no tenant has the domain `{d}`")))?;
                Some(TenantInfo {
                    name: t.name,
                    domain: t.domain,
                    website: t.website,
                    avatar_url: String::new(),
                    ms365_enabled: false,
                })
            }
        };
        Ok(Json(Info { system, tenant }))
    })
    .await
}

/// Starts a session (or rotates `rotate`'s tokens) for `user`.
fn issue(st: &mut State, user: u32, verified: bool, rotate: Option<u32>) -> Result<Tokens, Failure> {
    let api = &st.cfg().api;
    let (access_secs, refresh_secs) = (api.access_token_secs, api.refresh_token_secs);
    let (access, refresh) = (accounts::new_secret(), accounts::new_secret());
    let now = Utc::now();
    let t = SessionTokens {
        access_digest: accounts::secret_digest(&access),
        access_expires: now + chrono::Duration::seconds(access_secs as i64),
        refresh_digest: accounts::secret_digest(&refresh),
        refresh_expires: now + chrono::Duration::seconds(refresh_secs as i64),
    };
    match rotate {
        Some(id) => {
            st.store()
                .rotate_session(id, &t)?
                .ok_or_else(|| Failure::unauthorized("the session was revoked"))?;
        }
        None => {
            st.store().add_session(user, &t, verified)?;
        }
    }
    Ok(Tokens {
        token_type: "Bearer".into(),
        access_token: access,
        refresh_token: refresh,
        expires_in: access_secs,
    })
}

fn too_many(what: &str, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut res = Failure(
        StatusCode::TOO_MANY_REQUESTS,
        crate::api::ApiError { error: format!("too many failed {what}; try again in {secs} s"), field: None },
    )
    .into_response();
    if let Ok(v) = secs.to_string().parse() {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// A hash to verify against when the user does not exist, so that the answer takes as long
/// as for a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| accounts::hash_password("decoy password").unwrap_or_default())
}

/// Sign in with user name, password and SIP domain.
#[utoipa::path(post, path = "/api/auth/sign_in", tag = "Authentication", request_body = SignIn,
    responses((status = 200, body = Tokens), (status = 400, body = crate::api::ApiError),
        (status = 401, description = "Wrong user name, domain or password", body = crate::api::ApiError),
        (status = 429, description = "Too many failures from this source or for this user", body = crate::api::ApiError)))]
pub async fn sign_in(AxState(s): AxState<Shared>, peer: Peer, JsonBody(req): JsonBody<SignIn>) -> Response {
    let source = peer.key("ip");
    let who =
        format!("user:{}/{}", req.domain.trim().to_ascii_lowercase(), req.username.to_ascii_lowercase());
    let (max, window) = {
        let st = crate::web::lock(&s);
        let a = &st.cfg().api;
        (a.signin_failures, Duration::from_secs(a.signin_window_secs))
    };
    {
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = th.sign_in_blocked(&source, &who, max, window) {
            return too_many("sign-ins", wait);
        }
    }
    let s2 = s.clone();
    let result = blocking(&s, move |st| {
        let domain = req.domain.trim();
        let tenant = if domain.is_empty() {
            None
        } else {
            st.store().tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(domain)).map(|t| t.id)
        };
        let found = if domain.is_empty() || tenant.is_some() {
            st.store().find_user(tenant.as_deref(), req.username.trim())?
        } else {
            None
        };
        Ok((found, req.password))
    })
    .await;
    let (found, password) = match result {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let hash = found.as_ref().map_or_else(|| decoy_hash().to_owned(), |(_, h)| h.clone());
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match (found, ok) {
        (Some((u, _)), true) => u,
        _ => {
            let mut th = s2.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            th.sign_in_failed(&source, &who, window);
            return Failure::unauthorized("wrong user name, domain or password").into_response();
        }
    };
    s2.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).signed_in(&source, &who);
    tracing::info!(user = user.username, tenant = ?user.tenant, "signed in");
    match blocking(&s2, move |st| issue(st, user.id, true, None)).await {
        Ok(t) => Json(t).into_response(),
        Err(f) => f.into_response(),
    }
}

/// Exchange a refresh token for a new token pair (the old pair stops working).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "Authentication", request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 400, body = crate::api::ApiError),
        (status = 401, description = "Unknown, expired or revoked refresh token", body = crate::api::ApiError)))]
pub async fn refresh(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<Refresh>,
) -> Result<Json<Tokens>, Failure> {
    blocking(&s, move |st| {
        let session = st
            .store()
            .session_by_refresh(&accounts::secret_digest(&req.refresh_token))?
            .ok_or_else(|| Failure::unauthorized("unknown refresh token"))?;
        if session.revoked_at.is_some() {
            return Err(Failure::unauthorized("the session was revoked (signed out)"));
        }
        if session.refresh_expires <= Utc::now() {
            return Err(Failure::unauthorized("the refresh token has expired; sign in again"));
        }
        issue(st, session.user_id, session.password_verified, Some(session.id)).map(Json)
    })
    .await
}

/// Information on the access token sent (in `Authorization: Bearer` or the `access_token`
/// header).
#[utoipa::path(get, path = "/api/auth/token", tag = "Authentication", security(("bearer" = [])),
    responses((status = 200, body = TokenInfo), (status = 401, body = crate::api::ApiError)))]
pub async fn token_info(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<TokenInfo>, Failure> {
    let (Some(user), Some(id)) = (p.user, p.session) else {
        return Err(Failure::bad("authorization", "this request carries no access token"));
    };
    blocking(&s, move |st| {
        let session = st
            .store()
            .sessions(Some(user.id))?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| Failure::unauthorized("the session is gone"))?;
        Ok(Json(TokenInfo {
            expires_at: session.access_expires,
            expires_in: (session.access_expires - Utc::now()).num_seconds().max(0),
            role: p.role.name,
            user: user.username,
            user_id: user.id,
            tenant: user.tenant,
            password_verified: session.password_verified,
            force_reset: user.force_reset,
        }))
    })
    .await
}

/// Sign out: the access and refresh tokens of this session stop working.
#[utoipa::path(post, path = "/api/auth/sign_out", tag = "Authentication", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = crate::api::ApiError)))]
pub async fn sign_out(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<StatusCode, Failure> {
    let Some(id) = p.session else {
        return Err(Failure::bad("authorization", "this request carries no access token"));
    };
    blocking(&s, move |st| st.store().revoke_session(id, Utc::now()).map_err(Failure::from)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts the forgot-password flow: a single-use reset token is handed to the `api.reset_hook`
/// command, which delivers it. Always 204, whether the user exists or not.
#[utoipa::path(post, path = "/api/auth/forgot_password", tag = "Authentication", request_body = Forgot,
    responses((status = 204, description = "Accepted"), (status = 400, body = crate::api::ApiError),
        (status = 429, body = crate::api::ApiError)))]
pub async fn forgot_password(
    AxState(s): AxState<Shared>,
    peer: Peer,
    JsonBody(req): JsonBody<Forgot>,
) -> Response {
    if req.callback.len() > 2048 {
        return Failure::bad("callback", "longer than 2048 bytes").into_response();
    }
    let source = peer.key("reset");
    let (max, window) = {
        let st = crate::web::lock(&s);
        (st.cfg().api.signin_failures, Duration::from_secs(st.cfg().api.signin_window_secs))
    };
    {
        // Every request counts: a reset request has no failure to wait for.
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = th.blocked(&source, max, window) {
            return too_many("password-reset requests", wait);
        }
        th.fail(&source, window);
    }
    let made = blocking(&s, move |st| {
        let domain = req.domain.trim().to_owned();
        let tenant = match domain.as_str() {
            "" => None,
            d => match st.store().tenants()?.into_iter().find(|t| t.domain.eq_ignore_ascii_case(d)) {
                Some(t) => Some(t.id),
                None => return Ok(None),
            },
        };
        let Some((user, _)) = st.store().find_user(tenant.as_deref(), req.username.trim())? else {
            return Ok(None);
        };
        let token = accounts::new_secret();
        let expires = Utc::now() + chrono::Duration::seconds(st.cfg().api.reset_token_secs as i64);
        st.store().add_reset(user.id, &accounts::secret_digest(&token), expires)?;
        Ok(Some((st.cfg().api.reset_hook.clone(), token, user.username, domain, req.callback, expires)))
    })
    .await;
    match made {
        Ok(Some((hook, token, user, domain, callback, expires))) => match hook {
            Some(cmd) => {
                tokio::spawn(async move {
                    let run = tokio::process::Command::new(&cmd)
                        .env("CALLGUARD_RESET_TOKEN", &token)
                        .env("CALLGUARD_RESET_USER", &user)
                        .env("CALLGUARD_RESET_DOMAIN", &domain)
                        .env("CALLGUARD_RESET_CALLBACK", &callback)
                        .env("CALLGUARD_RESET_EXPIRES", expires.to_rfc3339())
                        .kill_on_drop(true)
                        .status();
                    match tokio::time::timeout(Duration::from_secs(30), run).await {
                        Ok(Ok(st)) if st.success() => {
                            tracing::info!(user, "password-reset token handed to the hook");
                        }
                        Ok(Ok(st)) => tracing::error!(user, hook = %cmd.display(), "reset hook failed: {st}"),
                        Ok(Err(e)) => {
                            tracing::error!(user, hook = %cmd.display(), "reset hook did not start: {e}");
                        }
                        Err(_) => {
                            tracing::error!(user, hook = %cmd.display(), "reset hook timed out after 30 s");
                        }
                    }
                });
            }
            None => tracing::debug!(user, token, "password-reset token (no api.reset_hook configured)"),
        },
        Ok(None) => tracing::info!("password reset asked for an unknown user"),
        Err(f) => return f.into_response(),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Sets a new password with a reset token. Every session of the user is revoked.
#[utoipa::path(post, path = "/api/auth/reset_password", tag = "Authentication", request_body = Reset,
    responses((status = 204, description = "Password set"), (status = 400, body = crate::api::ApiError)))]
pub async fn reset_password(
    AxState(s): AxState<Shared>,
    JsonBody(req): JsonBody<Reset>,
) -> Result<StatusCode, Failure> {
    check_password(&req.password).map_err(|m| Failure::bad("password", m))?;
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&req.password))
        .await
        .map_err(|e| Failure::internal(&e.into()))?
        .map_err(|e| Failure::internal(&e))?;
    blocking(&s, move |st| {
        let user = st
            .store()
            .take_reset(&accounts::secret_digest(&req.token), Utc::now())?
            .ok_or_else(|| Failure::bad("token", "unknown, used or expired reset token"))?;
        st.store().update_user(user, None, None, Some(&hash), Some(false))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
