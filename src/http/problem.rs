//! Errors as HTTP responses: status, `WWW-Authenticate` and RFC 9457
//! problem details. The client learns the code; the log gets the detail.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::error::{Code, Error};

/// The HTTP status for an error code (spec/http.md).
pub fn status_for(code: Code) -> StatusCode {
    let text = code.as_str();
    match code {
        Code::PolicyDenied => StatusCode::FORBIDDEN,
        Code::ReplayStoreUnavailable | Code::ReplayStoreFull => StatusCode::SERVICE_UNAVAILABLE,
        Code::HttpHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Code::HttpBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::HttpPathNotNormalized | Code::HttpBodyUnreadable => StatusCode::BAD_REQUEST,
        Code::IssuerBadRequest
        | Code::IssuerInvalidName
        | Code::IssuerInvalidKey
        | Code::IssuerUnknownAudience
        | Code::IssuerUnknownProject
        | Code::IssuerLifetimeExceeded => StatusCode::BAD_REQUEST,
        Code::IssuerInvalidCredentials => StatusCode::UNAUTHORIZED,
        Code::IssuerLocked => StatusCode::TOO_MANY_REQUESTS,
        Code::IssuerDisabled | Code::IssuerRoleNotHeld | Code::IssuerForbidden => StatusCode::FORBIDDEN,
        Code::IssuerNotFound => StatusCode::NOT_FOUND,
        Code::IssuerConflict => StatusCode::CONFLICT,
        Code::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ if ["cbor.", "cose.", "cwt.", "proof.", "replay.", "key.", "http."]
            .iter()
            .any(|p| text.starts_with(p)) =>
        {
            StatusCode::UNAUTHORIZED
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_for(code: Code) -> &'static str {
    let text = code.as_str();
    match code {
        Code::PolicyDenied => "Forbidden by policy",
        Code::ReplayDetected => "Replayed request",
        Code::ReplayStoreRestarted => "Proof older than the service's replay store",
        Code::ReplayStoreUnavailable | Code::ReplayStoreFull => "Request verification unavailable",
        Code::ProofNonceRequired | Code::ProofNonceInvalid => "Server nonce required",
        Code::HttpHeaderTooLarge | Code::HttpBodyTooLarge => "Request too large",
        Code::HttpBodyUnreadable => "Request body unreadable",
        Code::HttpPathNotNormalized => "Request path not normalised",
        Code::HttpTokenMissing => "Authentication required",
        Code::IssuerInvalidCredentials => "Login failed",
        Code::IssuerLocked => "Too many failed logins",
        _ if text.starts_with("issuer.") => "Request refused by the issuer",
        _ if text.starts_with("proof.") => "Invalid request proof",
        _ if text.starts_with("http.") => "Invalid authorization header",
        _ if text.starts_with("cwt.") || text.starts_with("key.") => "Invalid token",
        _ if text.starts_with("cbor.") || text.starts_with("cose.") => "Malformed token or proof",
        _ => "Request refused",
    }
}

/// Builds the response for `error`. Details of server-side failures (5xx)
/// and of policy decisions stay in the log; `nonce` (base64url) is sent in
/// `KB-Nonce` when the client must retry with it.
pub fn error_response(error: &Error, nonce: Option<&str>) -> Response<Body> {
    let code = error.code();
    let status = status_for(code);
    let detail = if status.is_server_error() {
        "the service cannot verify requests right now; retry shortly".to_owned()
    } else if code == Code::PolicyDenied {
        "the service's policy does not allow this action for the roles in your token".to_owned()
    } else {
        error.message().to_owned()
    };
    let body = json!({
        "type": format!("urn:keybound:error:{}", code.as_str()),
        "title": title_for(code),
        "status": status.as_u16(),
        "code": code.as_str(),
        "detail": detail,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Codes are ASCII letters, dots and underscores: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&format!("KB error=\"{}\"", code.as_str())) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
        headers.insert(super::NONCE_HEADER, nonce);
    }
    response
}
