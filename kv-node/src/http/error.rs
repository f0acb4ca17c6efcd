//! Every error the HTTP surface returns, and the one function that maps
//! each to its status code and API code (API.md, "Errors").

use crate::driver::DriverError;
use warp::http::{Response, StatusCode, header};

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a missing field, a bad key or parameter.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The lease is unknown, expired or revoked; nothing was applied.
    #[error("{0}")]
    LeaseNotFound(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// A newer seq was already applied for this client.
    #[error("seq {seq} of client {client_id:?} is older than the newest seen, {newest}")]
    StaleSeq {
        client_id: String,
        seq: u64,
        newest: u64,
    },
    /// Key, value or body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// Certainly not proposed (no leader, no quorum, overload, shutdown).
    #[error("{0}")]
    Unavailable(String),
    /// Proposed, outcome unknown.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    NotImplemented(String),
    /// Another membership change is in flight; nothing was proposed.
    #[error("{0}")]
    ChangeInProgress(String),
    /// This node was removed from the cluster and serves no writes.
    #[error("{0}")]
    Removed(String),
    /// No bearer token, or one that no token file lists.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token whose role does not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The node's disk is almost full: writes are refused, reads served.
    #[error("{0}")]
    DiskFull(String),
    /// The request body did not arrive within the body deadline.
    #[error("{0}")]
    RequestTimeout(String),
    /// A member's URL may not be changed through the client API.
    #[error("{0}")]
    MemberUrlConflict(String),
    /// A peer batch from a node that is not a member of this node's
    /// configuration; `commit_index` lets the sender tell whether the
    /// refusal is news to it (see `peer/membership_check.rs`).
    #[error("{message}")]
    NotAMember { message: String, commit_index: u64 },
    /// The store is over `--quota-bytes` and the write adds data; nothing
    /// was proposed (deletes still work).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A watch asked for revisions older than the history kept; events
    /// from `compact_revision` on are available.
    #[error("{message}")]
    Compacted {
        message: String,
        compact_revision: u64,
    },
    /// Too many requests in flight (`--max-concurrent-requests`); answered
    /// as 503 `unavailable` with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
}

impl ApiError {
    /// The one mapping from errors to HTTP status codes and API codes.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::LeaseNotFound(_) => (StatusCode::NOT_FOUND, "lease_not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::StaleSeq { .. } => (StatusCode::CONFLICT, "stale_seq"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::ChangeInProgress(_) => (StatusCode::CONFLICT, "change_in_progress"),
            ApiError::Removed(_) => (StatusCode::SERVICE_UNAVAILABLE, "removed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::DiskFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "disk_full"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::MemberUrlConflict(_) => (StatusCode::CONFLICT, "member_url_conflict"),
            ApiError::NotAMember { .. } => (StatusCode::FORBIDDEN, "not_a_member"),
            ApiError::QuotaExceeded(_) => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            ApiError::Compacted { .. } => (StatusCode::GONE, "compacted"),
        }
    }

    pub fn into_response(self) -> Response<Vec<u8>> {
        let (status, code) = self.status_and_code();
        let mut body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        if let ApiError::NotAMember { commit_index, .. } = &self {
            body["error"]["commit_index"] = (*commit_index).into();
        }
        if let ApiError::Compacted {
            compact_revision, ..
        } = &self
        {
            body["error"]["compact_revision"] = (*compact_revision).into();
        }
        let mut response = super::json_response(status, &body);
        if let ApiError::MethodNotAllowed { allow, .. } = self
            && let Ok(value) = header::HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::Overloaded(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> ApiError {
        match e {
            DriverError::Unavailable(message) => ApiError::Unavailable(message),
            DriverError::OutcomeUnknown(message) => ApiError::Timeout(message),
            DriverError::ChangeInProgress(message) => ApiError::ChangeInProgress(message),
            DriverError::BadChange(message) => ApiError::BadRequest(message),
            DriverError::Removed(message) => ApiError::Removed(message),
            DriverError::DiskFull(message) => ApiError::DiskFull(message),
            DriverError::QuotaExceeded(message) => ApiError::QuotaExceeded(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_class_has_its_status_and_code() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::LeaseNotFound("x".into()), 404, "lease_not_found"),
            (
                ApiError::MethodNotAllowed {
                    method: "PATCH".into(),
                    allow: "GET",
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::StaleSeq {
                    client_id: "c".into(),
                    seq: 1,
                    newest: 2,
                },
                409,
                "stale_seq",
            ),
            (ApiError::TooLarge("x".into()), 413, "too_large"),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
            (ApiError::Timeout("x".into()), 504, "timeout"),
            (ApiError::NotImplemented("x".into()), 501, "not_implemented"),
            (
                ApiError::ChangeInProgress("x".into()),
                409,
                "change_in_progress",
            ),
            (ApiError::Removed("x".into()), 503, "removed"),
            (ApiError::DiskFull("x".into()), 503, "disk_full"),
            (ApiError::QuotaExceeded("x".into()), 507, "quota_exceeded"),
            (
                ApiError::Compacted {
                    message: "x".into(),
                    compact_revision: 4,
                },
                410,
                "compacted",
            ),
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::Overloaded("x".into()), 503, "unavailable"),
            (ApiError::RequestTimeout("x".into()), 408, "request_timeout"),
            (
                ApiError::MemberUrlConflict("x".into()),
                409,
                "member_url_conflict",
            ),
            (
                ApiError::NotAMember {
                    message: "x".into(),
                    commit_index: 3,
                },
                403,
                "not_a_member",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(
                error.status_and_code(),
                (StatusCode::from_u16(status).unwrap(), code)
            );
        }
    }

    #[test]
    fn overload_says_when_to_retry_and_401_names_the_scheme() {
        let overloaded = ApiError::Overloaded("busy".into()).into_response();
        assert_eq!(overloaded.headers()[header::RETRY_AFTER], "1");
        let unauthorized = ApiError::Unauthorized("who".into()).into_response();
        assert_eq!(unauthorized.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn driver_errors_keep_their_class() {
        assert_eq!(
            ApiError::from(DriverError::Unavailable("no leader".into()))
                .status_and_code()
                .0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(DriverError::OutcomeUnknown("slow".into()))
                .status_and_code()
                .0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
