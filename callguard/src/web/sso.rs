//! Social sign-in over OpenID Connect (the authentication seed's social sign-in and its
//! Microsoft 365 redirect; see [`crate::sso`]): starting a sign-in, the provider's redirect back,
//! and a tenant's provider settings.
//!
//! A successful sign-in reaches the panel's `callback` as a one-time code in the URL's fragment
//! (`#code=…&state=…`, the panel's own state), which browsers never send to a server; the panel
//! redeems it within a minute for the token pair (`POST /api/auth/social_sign_in/token`), so
//! that a page which lets the fragment escape (a redirect, a third-party script) leaks a spent
//! code, not the user's tokens. A failure arrives as `#error=access_denied&error_description=…`.
//! Redirects carry `Cache-Control: no-store` and `Referrer-Policy: no-referrer`.

use axum::{
    Json,
    extract::State as AxState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Caller, JsonBody, PathArgs, Peer, QueryArgs,
    auth::{signin_limits, too_many},
    blocking, off_lock,
};
use crate::{
    accounts,
    api::{
        ApiError,
        auth::{Ms365Query, ProviderAnswer, SocialCode, SocialSignIn, SocialSignInUrl, SsoView, Tokens},
    },
    service::{accounts::Hashed, sso::SsoUser},
    sso::{Provider, SsoError, SsoSettings},
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(social_sign_in))
        .routes(routes!(social_sign_in_callback))
        .routes(routes!(social_sign_in_token))
        .routes(routes!(ms365_sign_in))
        .routes(routes!(show_sso, set_sso, delete_sso))
}

/// Sign-ins one source may start in `api.signin_window_secs` (each holds a pending flow, and
/// may make callguard ask the provider for its keys).
const STARTS_PER_WINDOW: u32 = 30;

/// Starts a sign-in: the provider's URL to send the browser to.
async fn start(
    s: &Shared,
    peer: Peer,
    provider: Option<Provider>,
    domain: String,
    callback: String,
    client_state: String,
) -> Result<String, Response> {
    if client_state.len() > 256 {
        return Err(Failure::bad("state", "at most 256 characters").into_response());
    }
    let source = peer.key("sso-start");
    let (_, window) = signin_limits(s);
    {
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = th.blocked(&source, STARTS_PER_WINDOW, window) {
            return Err(too_many("social sign-ins", wait));
        }
        th.fail(&source, window);
    }
    let go = blocking(s, move |st| Ok(st.sso_start(provider, &domain, &callback)?))
        .await
        .map_err(IntoResponse::into_response)?;
    let s = s.clone();
    off_lock(move || {
        s.web
            .sso
            .begin(&go.tenant, &go.settings, &go.redirect, &go.callback, &client_state)
            .map_err(|e| provider_failure(&e))
    })
    .await
    .map_err(IntoResponse::into_response)
}

/// What the caller is told when the provider failed: that it did, not how (its answer may
/// describe hosts inside the network); the log has the detail.
const PROVIDER_FAILED: &str =
    "the identity provider could not be reached or answered badly (the daemon's log says why)";

/// The provider could not be asked (502).
fn provider_failure(e: &SsoError) -> Failure {
    tracing::warn!("social sign-in: {e}");
    Failure(StatusCode::BAD_GATEWAY, ApiError { error: PROVIDER_FAILED.into(), field: None })
}

/// What the panel is told of a refused sign-in: why, unless the provider failed (then the log
/// says why).
fn refusal(e: &SsoError) -> String {
    match e {
        SsoError::Provider(_) => {
            tracing::warn!("social sign-in: {e}");
            PROVIDER_FAILED.into()
        }
        SsoError::Token(_) | SsoError::Refused(_) => e.to_string(),
    }
}

/// Sign in with a social account: the identity provider's authentication URL to send the
/// browser to (the seed's operation; `microsoft` is its only provider name, `oidc` callguard's
/// for any OpenID Connect provider). The provider sends the browser back to
/// `/api/auth/social_sign_in/callback`, which delivers the tokens to `callback`. No token
/// needed; starts are throttled per source.
#[utoipa::path(post, path = "/api/auth/social_sign_in", tag = "Authentication", request_body = SocialSignIn,
    responses((status = 200, body = SocialSignInUrl), (status = 400, body = ApiError),
        (status = 404, description = "No tenant has this domain, or it has no social sign-in", body = ApiError),
        (status = 409, description = "api.public_url is not set", body = ApiError),
        (status = 429, body = ApiError),
        (status = 502, description = "The identity provider could not be reached", body = ApiError)))]
pub async fn social_sign_in(
    AxState(s): AxState<Shared>,
    peer: Peer,
    JsonBody(req): JsonBody<SocialSignIn>,
) -> Response {
    match start(&s, peer, Some(req.provider), req.domain, req.callback, req.state).await {
        Ok(url) => Json(SocialSignInUrl { url }).into_response(),
        Err(r) => r,
    }
}

/// The Microsoft 365 redirect (the seed's operation that takes a SIP domain and answers 302
/// Found): a browser sent here goes straight on to the tenant's identity provider, and comes
/// back with its tokens delivered to `callback` (absent: the tenant's). For a sign-in page's
/// "Sign in with Microsoft" link; the same flow as `POST /api/auth/social_sign_in`.
#[utoipa::path(get, path = "/api/auth/ms365_sign_in", tag = "Authentication", params(Ms365Query),
    responses((status = 302, description = "On to the identity provider (`Location`)"), (status = 400, body = ApiError),
        (status = 404, description = "No tenant has this domain, or it has no social sign-in", body = ApiError),
        (status = 409, description = "api.public_url is not set", body = ApiError),
        (status = 429, body = ApiError), (status = 502, body = ApiError)))]
pub async fn ms365_sign_in(
    AxState(s): AxState<Shared>,
    peer: Peer,
    QueryArgs(q): QueryArgs<Ms365Query>,
) -> Response {
    match start(&s, peer, None, q.domain, q.callback.unwrap_or_default(), q.state.unwrap_or_default()).await {
        Ok(url) => redirect(&url),
        Err(r) => r,
    }
}

/// A 302 to `to`, neither cached nor told where it came from.
fn redirect(to: &str) -> Response {
    let Ok(location) = header::HeaderValue::from_str(to) else {
        return Failure::internal(&anyhow::anyhow!("a redirect to an unusable URL")).into_response();
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")),
            (header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer")),
        ],
    )
        .into_response()
}

/// `callback` with `pairs` as its fragment (one it had is replaced).
fn with_fragment(callback: &str, pairs: &[(&str, &str)]) -> String {
    let base = callback.split('#').next().unwrap_or_default();
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    format!("{base}#{}", f.finish())
}

/// Where the identity provider sends the browser back. The state must be one this daemon
/// handed out, within 10 minutes, and is used once; unknown states are counted against the
/// source. The code is exchanged (with the PKCE verifier and the client secret), the ID token
/// checked (signature by the provider's published keys, issuer, audience, expiry, nonce), and
/// the identity mapped to a user of the tenant; the browser then goes on to the sign-in's
/// `callback` with a one-time code (and the panel's state), or the reason, in the fragment.
#[utoipa::path(get, path = "/api/auth/social_sign_in/callback", tag = "Authentication", params(ProviderAnswer),
    responses((status = 302, description = "On to the callback, with the code or the error in the fragment"),
        (status = 400, description = "An unknown, used or expired state", body = ApiError),
        (status = 429, body = ApiError)))]
pub async fn social_sign_in_callback(
    AxState(s): AxState<Shared>,
    peer: Peer,
    QueryArgs(answer): QueryArgs<ProviderAnswer>,
) -> Response {
    // A key of its own: a reloaded callback page must not count against password sign-in.
    let source = peer.key("sso-state");
    let (max, window) = signin_limits(&s);
    if let Some(wait) =
        s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).blocked(&source, max, window)
    {
        return too_many("social sign-in states", wait);
    }
    let Some(flow) = answer.state.as_deref().and_then(|st| s.web.sso.take(st)) else {
        s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fail(&source, window);
        return Failure::bad("state", "unknown, used or expired sign-in state: start the sign-in again")
            .into_response();
    };
    let (callback, client_state, tenant) =
        (flow.callback.clone(), flow.client_state.clone(), flow.tenant.clone());
    let fail = |why: &str| {
        tracing::warn!(tenant, "social sign-in refused: {why}");
        let mut pairs = vec![("error", "access_denied"), ("error_description", why)];
        if !client_state.is_empty() {
            pairs.push(("state", &client_state));
        }
        redirect(&with_fragment(&callback, &pairs))
    };
    if let Some(iss) = answer.iss.as_deref()
        && iss != flow.issuer
    {
        return fail(&format!("the answer came from issuer {iss}, not from {}", flow.issuer));
    }
    if let Some(e) = answer.error {
        let why = answer.error_description.unwrap_or_default();
        return fail(&format!("the identity provider said {e}: {why}"));
    }
    let Some(code) = answer.code else { return fail("the identity provider sent no code") };
    let settings = blocking(&s, {
        let tenant = tenant.clone();
        move |st| Ok((st.sso_settings(&tenant)?, st.sso_redirect()?))
    })
    .await;
    let (settings, redirect_uri) = match settings {
        Ok((Some(set), r)) => (set, r),
        Ok((None, _)) => return fail("the tenant's social sign-in was turned off"),
        Err(f) => return fail(&f.1.error),
    };
    let id = {
        let (s, settings) = (s.clone(), settings.clone());
        off_lock(move || {
            s.web
                .sso
                .finish(flow, &settings, &redirect_uri, &code)
                .map_err(|e| Failure::forbidden(refusal(&e)))
        })
        .await
    };
    let id = match id {
        Ok(id) => id,
        // Not counted against the source: only a valid state gets here, and what failed is the
        // provider's answer, not a guess.
        Err(f) => return fail(&f.1.error),
    };
    let mut created = None;
    let user = loop {
        let (settings, id, tenant) = (settings.clone(), id.clone(), tenant.clone());
        let given = created.take();
        let hashed = given.is_some();
        match blocking(&s, move |st| Ok(st.sso_user(&tenant, &settings, &id, given)?)).await {
            Ok(SsoUser::Existing(u)) => break u,
            // A user to create needs a password hash (random, unused): Argon2 runs off the lock,
            // and only then.
            Ok(SsoUser::ToCreate) if !hashed => {
                match off_lock(|| Ok(Hashed::new(&accounts::new_password())?)).await {
                    Ok(h) => created = Some(h),
                    Err(f) => return fail(&f.1.error),
                }
            }
            Ok(SsoUser::ToCreate) => return fail("the user could not be created"),
            Err(f) => return fail(&f.1.error),
        }
    };
    tracing::info!(user = user.username, tenant, "signed in through the identity provider");
    let code = s.web.sso.finished(user.id);
    let mut pairs = vec![("code", code.as_str())];
    if !client_state.is_empty() {
        pairs.push(("state", &client_state));
    }
    redirect(&with_fragment(&callback, &pairs))
}

/// Redeem the one-time code a social sign-in delivered to the callback for the token pair (the
/// same as `sign_in` answers): once, within a minute. Wrong codes are counted against the source.
#[utoipa::path(post, path = "/api/auth/social_sign_in/token", tag = "Authentication", request_body = SocialCode,
    responses((status = 200, body = Tokens), (status = 400, description = "An unknown, used or expired code", body = ApiError),
        (status = 429, body = ApiError)))]
pub async fn social_sign_in_token(
    AxState(s): AxState<Shared>,
    peer: Peer,
    JsonBody(req): JsonBody<SocialCode>,
) -> Response {
    let source = peer.key("sso-code");
    let (max, window) = signin_limits(&s);
    let user = {
        let mut th = s.web.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = th.blocked(&source, max, window) {
            return too_many("social sign-in codes", wait);
        }
        match s.web.sso.redeem(&req.code) {
            Some(user) => user,
            None => {
                th.fail(&source, window);
                return Failure::bad("code", "unknown, used or expired code: sign in again").into_response();
            }
        }
    };
    match blocking(&s, move |st| Ok(st.sso_tokens(user)?)).await {
        Ok(t) => Json::<Tokens>(t).into_response(),
        Err(f) => f.into_response(),
    }
}

/// A tenant's social sign-in settings (`tenants.read`), without the client secret, with the
/// redirect URI to register with the provider.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/sso", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 200, body = SsoView), (status = "4XX", body = ApiError)))]
pub async fn show_sso(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(tenant): PathArgs<String>,
) -> Result<Json<SsoView>, Failure> {
    blocking(&s, move |st| Ok(Json(st.tenant_sso(&p, &tenant)?))).await
}

/// Set a tenant's social sign-in (`tenants.write`): Microsoft Entra ID by its directory ID, or
/// any OpenID Connect provider by its issuer; the client ID and secret the provider gave; the
/// e-mail domains whose users may sign in. A change without `client_secret` keeps the stored
/// one.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/sso", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), request_body = SsoSettings,
    responses((status = 200, body = SsoView), (status = "4XX", body = ApiError)))]
pub async fn set_sso(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(tenant): PathArgs<String>,
    JsonBody(req): JsonBody<SsoSettings>,
) -> Result<Json<SsoView>, Failure> {
    blocking(&s, move |st| Ok(Json(st.set_tenant_sso(&p, &tenant, req)?))).await
}

/// Remove a tenant's social sign-in (`tenants.write`).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/sso", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = ApiError)))]
pub async fn delete_sso(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(tenant): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_tenant_sso(&p, &tenant)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
