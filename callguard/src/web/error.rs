//! The one place where the service's and the store's errors become HTTP answers, and the
//! JSON body extractor of the `/v1` routes.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{api::ApiError, kernel::datapath::KernelError, service::ServiceError, store::StoreError};

/// A failed request: status and body.
#[derive(Debug)]
pub struct Failure(pub(crate) StatusCode, pub(crate) ApiError);

impl Failure {
    /// 400, naming the offending field.
    pub fn bad(field: &str, msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, ApiError { error: msg.into(), field: Some(field.into()) })
    }
    /// 404, naming the field that named what is missing.
    pub fn not_found(field: &str, msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, ApiError { error: msg.into(), field: Some(field.into()) })
    }
    /// 401: no valid credentials.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self(StatusCode::UNAUTHORIZED, ApiError { error: msg.into(), field: None })
    }
    /// 403: valid credentials without the right.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self(StatusCode::FORBIDDEN, ApiError { error: msg.into(), field: None })
    }
    /// 409: the request conflicts with what is stored.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self(StatusCode::CONFLICT, ApiError { error: msg.into(), field: None })
    }
    /// The status.
    pub const fn status(&self) -> StatusCode {
        self.0
    }
    /// The body.
    pub const fn body(&self) -> &ApiError {
        &self.1
    }
    /// 500, logged.
    pub fn internal(e: &anyhow::Error) -> Self {
        tracing::error!("{e:#}");
        Self(StatusCode::INTERNAL_SERVER_ERROR, ApiError { error: format!("{e:#}"), field: None })
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self(StatusCode::CONFLICT, ApiError { error: m, field: None }),
            e => Self::internal(&e.into()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut res = (self.0, Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// A JSON answer or a failure.
pub type Answer<T> = Result<Json<T>, Failure>;

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid { field, msg } => Self::bad(&field, msg),
            ServiceError::NotFound { field, msg } => Self::not_found(&field, msg),
            ServiceError::Conflict(m) => Self::conflict(m),
            ServiceError::Forbidden(m) => Self::forbidden(m),
            ServiceError::Unauthorized(m) => Self::unauthorized(m),
            ServiceError::Internal(e) => Self::internal(&e),
            ServiceError::Store(e) => e.into(),
            // A full kernel map is a limit the request ran into, not a fault: 409, naming it.
            ServiceError::Kernel(e @ KernelError::Full { .. }) => {
                Self(StatusCode::CONFLICT, ApiError { error: e.to_string(), field: Some("rules".into()) })
            }
            ServiceError::Kernel(KernelError::Failed(e)) => Self::internal(&e),
        }
    }
}

/// The body of a JSON request, or 4xx saying what is wrong with it.
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    body.map(|Json(b)| b).map_err(|e| Failure(e.status(), ApiError { error: e.body_text(), field: None }))
}
