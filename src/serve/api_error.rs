//! Error answers in A1111's JSON shape (`{"error", "detail", "body", "errors"}`), with the HTTP
//! status a client can act on: 4xx for what the caller can fix, 503/504 for capacity.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::Error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A short kind, as A1111 puts the exception's class name here.
    pub error: &'static str,
    pub detail: String,
    /// The policy limit that refused the request, when one did.
    pub limit: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, error, detail: detail.into(), limit: None, retry_after: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", detail)
    }

    pub fn limit(mut self, limit: &'static str) -> ApiError {
        self.limit = Some(limit);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }
}

impl From<Error> for ApiError {
    /// Library errors about the request (bad values, unknown names, sizes over a limit) are the
    /// caller's to fix; the rest are the server's.
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid { .. } | Error::Shape { .. } | Error::Limit { .. } | Error::DType { .. } => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.error, "detail": self.detail, "body": "", "errors": self.detail});
        if let Some(l) = self.limit {
            body["limit"] = json!(l);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}
