//! What every endpoint returns: a [`Response`], or an [`ApiError`] that [`write`] turns into
//! the one failure shape of the API.

use std::borrow::Cow;

use pbts_http::response;
use serde_json::json;

use crate::store::StoreError;

const JSON: &str = "application/json";

/// What an endpoint answers: a status and a body ([`ApiError`] is the other half).
#[derive(Debug)]
pub(crate) struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Self { status, content_type: JSON, body: body.to_string().into_bytes() }
    }

    /// Any other body.
    pub(crate) fn with_type(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self { status, content_type, body }
    }
}

/// Why an endpoint refused a request: every failure of the API answers
/// `{"success": false, "error": <message>}` with this status (and `Retry-After` for 429 and
/// 503 answers that may be retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: u16,
    message: Cow<'static, str>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A failure with `status` and the message for the client.
    pub(crate) fn new(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    /// Tells the client to retry after `secs` seconds.
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// A request that does not decode (the decoders name the bad field): 400.
impl From<String> for ApiError {
    fn from(message: String) -> Self {
        Self::new(400, message)
    }
}

/// The store's failures: conflicts with what is stored are the client's (403, 409); a store
/// that cannot commit is the server's (503).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::UserExists(_)
            | StoreError::KeyExists
            | StoreError::UserHasKey
            | StoreError::TorrentConflict { .. } => 409,
            StoreError::InvalidInvite | StoreError::NoInvitesLeft { .. } => 403,
            _ => 503,
        };
        Self::new(status, e.to_string())
    }
}

/// What every endpoint returns.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Writes an endpoint's answer: the one writer of every API response.
pub(crate) fn write(out: &mut Vec<u8>, result: ApiResult, keep_alive: bool) {
    match result {
        Ok(r) => response::write_response(out, r.status, r.content_type, &r.body, keep_alive),
        Err(e) => {
            let body = json!({ "success": false, "error": e.message }).to_string();
            let secs = e.retry_after.map(|s| s.to_string());
            let headers: &[(&str, &[u8])] = match &secs {
                Some(secs) => &[("Retry-After", secs.as_bytes())],
                None => &[],
            };
            response::write_response_with_headers(
                out,
                e.status,
                JSON,
                headers,
                body.as_bytes(),
                keep_alive,
            );
        }
    }
}
