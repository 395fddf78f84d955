//! `GET /api/info` and `/api/auth/…`: system and tenant information, sign-in, token refresh,
//! token information, sign-out and the forgot-password flow (PortSIP "Authentication" seed).
//!
//! Tokens are 128-bit random strings (32 hex digits); the store keeps only their SHA-256. An
//! access token lives `api.access_token_secs` (1800 s), a refresh token
//! `api.refresh_token_secs`; a refresh replaces both. Sign-in failures are throttled per
//! source address and per user (`api.signin_failures` in `api.signin_window_secs`: 429); a
//! user's limit spares the sources that user has signed in from (see [`crate::throttle`]).

use std::time::Duration;

use axum::{
    Json,
    extract::State as AxState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, JsonBody, PathArgs, Peer, QueryArgs, blocking, off_lock};
use crate::api::auth::{Forgot, Info, InfoQuery, Refresh, Reset, SignIn, SignInQuery, TokenInfo, Tokens};
use crate::{
    accounts::{self},
    service::{Service, accounts::Hashed, auth::ResetTicket},
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(blob))
        .routes(routes!(sign_in))
        .routes(routes!(verify_password))
        .routes(routes!(refresh))
        .routes(routes!(token_info))
        .routes(routes!(sign_out))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
}

/// System metadata; with `domain`, also that tenant's. No token needed.
#[utoipa::path(get, path = "/api/info", tag = "Authentication", params(InfoQuery),
    responses((status = 200, body = Info), (status = 404, description = "No tenant has this domain", body = crate::api::ApiError)))]
pub async fn info(
    AxState(s): AxState<Shared>,
    QueryArgs(q): QueryArgs<InfoQuery>,
) -> Result<Json<Info>, Failure> {
    blocking(&s, move |st| {
        let (system, tenant) = st.info(q.domain.as_deref())?;
        Ok(Json(Info { system, tenant }))
    })
    .await
}

/// Download an uploaded file (a tenant's avatar: `avatar_url`). No token needed: the sign-in
/// page shows the avatar, and a blob's path holds 128 random bits.
#[utoipa::path(get, path = "/api/blobs/{id}", tag = "Authentication", params(("id" = String, Path)),
    responses((status = 200, description = "The file, with its media type", content_type = "image/png", body = Vec<u8>),
        (status = 404, description = "No such blob", body = crate::api::ApiError)))]
pub async fn blob(AxState(s): AxState<Shared>, PathArgs(id): PathArgs<String>) -> Result<Response, Failure> {
    let b = blocking(&s, move |st| Ok(st.blob(&id)?)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, b.content_type),
            // Served as what it is, and as nothing a browser could run.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox".into()),
            // A new upload gets a new path: this one never changes.
            (header::CACHE_CONTROL, "public, max-age=604800, immutable".into()),
        ],
        b.data,
    )
        .into_response())
}

/// A 429 with `Retry-After`: too many failed `what` from the source or for the subject.
pub(super) fn too_many(what: &str, wait: Duration) -> Response {
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

/// `api.signin_failures` and `api.signin_window_secs`: the failures a source (or a subject) may
/// have in the window, for every throttled route.
pub(super) fn signin_limits(s: &Shared) -> (u32, Duration) {
    let st = crate::web::lock(s);
    let a = &st.cfg().api;
    (a.signin_failures, Duration::from_secs(a.signin_window_secs))
}

/// A hash to verify against when the user does not exist, so that the answer takes as long
/// as for a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| accounts::hash_password("decoy password").unwrap_or_default())
}

/// Checks a user name, password and SIP domain as sign-in does, throttled the same way (the
/// same counts: a guesser gains nothing by switching between the two routes); the user, or the
/// answer to give.
async fn check_credentials(s: &Shared, peer: &Peer, req: SignIn) -> Result<accounts::User, Response> {
    let source = peer.key("ip");
    let (max, window) = signin_limits(s);
    let Some(who) = accounts::sign_in_identity(&req.domain, &req.username) else {
        // A name no user can have: a failure of the source, and no key kept for the name.
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = th.blocked(&source, max, window) {
            return Err(too_many("sign-ins", wait));
        }
        th.fail(&source, window);
        return Err(Failure::unauthorized("wrong user name, domain or password").into_response());
    };
    {
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(wait) = th.begin(&source, &who, max, window) {
            return Err(too_many("sign-ins", wait));
        }
    }
    let result =
        blocking(s, move |st| Ok((st.sign_in_candidate(&req.domain, &req.username)?, req.password))).await;
    let (found, password) = result.map_err(IntoResponse::into_response)?;
    let hash = found.as_ref().map_or_else(|| decoy_hash().to_owned(), |(_, h)| h.clone());
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match (found, ok) {
        (Some((u, _)), true) => u,
        // Counted already, when the attempt began.
        _ => return Err(Failure::unauthorized("wrong user name, domain or password").into_response()),
    };
    s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).succeeded(&source, &who);
    Ok(user)
}

/// Sign in with user name, password and SIP domain. `qr=true` (PortSIP's sign-in from a QR
/// code in its apps) is accepted and signs in the same way: callguard provisions no app.
#[utoipa::path(post, path = "/api/auth/sign_in", tag = "Authentication", request_body = SignIn, params(SignInQuery),
    responses((status = 200, body = Tokens), (status = 400, body = crate::api::ApiError),
        (status = 401, description = "Wrong user name, domain or password", body = crate::api::ApiError),
        (status = 429, description = "Too many failures from this source or for this user", body = crate::api::ApiError)))]
pub async fn sign_in(
    AxState(s): AxState<Shared>,
    peer: Peer,
    QueryArgs(_qr): QueryArgs<SignInQuery>,
    JsonBody(req): JsonBody<SignIn>,
) -> Response {
    let user = match check_credentials(&s, &peer, req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    tracing::info!(user = user.username, tenant = ?user.tenant, "signed in");
    match blocking(&s, move |st| Ok(st.issue_tokens(user.id, true, None)?)).await {
        Ok(t) => Json(t).into_response(),
        Err(f) => f.into_response(),
    }
}

/// Check a user name, password and SIP domain without signing in: 204 when they are right,
/// 401 when not, throttled as sign-in is (the seed's unlabelled operation that takes the
/// sign-in fields and answers 204 No content). For a panel that confirms a user's password
/// before a sensitive step, or checks a phone user's credentials, without creating a session.
#[utoipa::path(post, path = "/api/auth/verify_password", tag = "Authentication", request_body = SignIn,
    responses((status = 204, description = "The credentials are right"), (status = 400, body = crate::api::ApiError),
        (status = 401, description = "Wrong user name, domain or password", body = crate::api::ApiError),
        (status = 429, description = "Too many failures from this source or for this user", body = crate::api::ApiError)))]
pub async fn verify_password(
    AxState(s): AxState<Shared>,
    peer: Peer,
    JsonBody(req): JsonBody<SignIn>,
) -> Response {
    match check_credentials(&s, &peer, req).await {
        Ok(user) => {
            tracing::info!(user = user.username, tenant = ?user.tenant, "password verified");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
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
    blocking(&s, move |st| Ok(Json(st.refresh_tokens(&req.refresh_token)?))).await
}

/// Information on the access token sent (in `Authorization: Bearer` or the `access_token`
/// header).
#[utoipa::path(get, path = "/api/auth/token", tag = "Authentication", security(("bearer" = [])),
    responses((status = 200, body = TokenInfo), (status = 401, body = crate::api::ApiError)))]
pub async fn token_info(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<TokenInfo>, Failure> {
    blocking(&s, move |st| Ok(Json(st.token_info(&p)?))).await
}

/// Sign out: the access and refresh tokens of this session stop working.
#[utoipa::path(post, path = "/api/auth/sign_out", tag = "Authentication", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = crate::api::ApiError)))]
pub async fn sign_out(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| Ok(st.sign_out(&p)?)).await?;
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
    let (max, window, callback) = {
        let st = crate::web::lock(&s);
        (
            st.cfg().api.signin_failures,
            Duration::from_secs(st.cfg().api.signin_window_secs),
            st.check_callback(&req.callback),
        )
    };
    if let Err(e) = callback {
        return Failure::from(e).into_response();
    }
    {
        // Every request counts, per source and per user: a reset request has no failure to
        // wait for, and each may send a mail.
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let user = accounts::sign_in_identity(&req.domain, &req.username).map(|u| format!("reset-user:{u}"));
        let keys: Vec<&str> = [Some(source.as_str()), user.as_deref()].into_iter().flatten().collect();
        if let Some(wait) = keys.iter().find_map(|k| th.blocked(k, max, window)) {
            return too_many("password-reset requests", wait);
        }
        for k in keys {
            th.fail(k, window);
        }
    }
    let made = blocking(&s, move |st| {
        let ticket = st.start_reset(&req.domain, &req.username, &req.callback)?;
        Ok(ticket.map(|t| (st.cfg().api.reset_hook.clone(), t)))
    })
    .await;
    match made {
        Ok(Some((Some(cmd), t))) => {
            tokio::spawn(run_reset_hook(cmd, t));
        }
        Ok(Some((None, t))) => {
            // Never the token itself: whoever reads the log could take the account over.
            tracing::warn!(
                user = t.user,
                "password reset asked for, but no api.reset_hook is configured to deliver it"
            );
        }
        Ok(None) => tracing::info!("password reset asked for an unknown user"),
        Err(f) => return f.into_response(),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Hands a reset token to the `api.reset_hook` command (30 s at most), which delivers it.
async fn run_reset_hook(cmd: std::path::PathBuf, t: ResetTicket) {
    let run = tokio::process::Command::new(&cmd)
        .env("CALLGUARD_RESET_TOKEN", &t.token)
        .env("CALLGUARD_RESET_USER", &t.user)
        .env("CALLGUARD_RESET_DOMAIN", &t.domain)
        .env("CALLGUARD_RESET_CALLBACK", &t.callback)
        .env("CALLGUARD_RESET_EXPIRES", t.expires.to_rfc3339())
        .kill_on_drop(true)
        .status();
    let user = t.user;
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(st)) if st.success() => tracing::info!(user, "password-reset token handed to the hook"),
        Ok(Ok(st)) => tracing::error!(user, hook = %cmd.display(), "reset hook failed: {st}"),
        Ok(Err(e)) => tracing::error!(user, hook = %cmd.display(), "reset hook did not start: {e}"),
        Err(_) => tracing::error!(user, hook = %cmd.display(), "reset hook timed out after 30 s"),
    }
}

/// Sets a new password with a reset token. Every session of the user is revoked.
#[utoipa::path(post, path = "/api/auth/reset_password", tag = "Authentication", request_body = Reset,
    responses((status = 204, description = "Password set"), (status = 400, body = crate::api::ApiError),
        (status = 429, description = "Too many wrong tokens from this source", body = crate::api::ApiError)))]
pub async fn reset_password(
    AxState(s): AxState<Shared>,
    peer: Peer,
    JsonBody(req): JsonBody<Reset>,
) -> Response {
    if let Err(e) = Service::check_new_password(&req.password) {
        return Failure::from(e).into_response();
    }
    // Wrong tokens are counted per source, and a token is checked before any Argon2 work: a
    // token nobody was given costs the daemon a lookup, not a hash.
    let source = peer.key("reset-token");
    let (max, window) = signin_limits(&s);
    if let Some(wait) =
        s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).blocked(&source, max, window)
    {
        return too_many("password resets", wait);
    }
    let token = req.token.clone();
    if let Err(f) = blocking(&s, move |st| Ok(st.reset_pending(&token)?)).await {
        s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fail(&source, window);
        return f.into_response();
    }
    let password = req.password;
    let hashed = match off_lock(move || Ok(Hashed::new(&password)?)).await {
        Ok(h) => h,
        Err(f) => return f.into_response(),
    };
    match blocking(&s, move |st| Ok(st.finish_reset(&req.token, hashed)?)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}
