//! Errors as HTTP responses: status, `WWW-Authenticate` and RFC 9457
//! problem details. The client learns the code; the log gets the detail.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::error::{Code, Error};

/// The HTTP status for an error code (spec/http.md §5), from the code table.
pub fn status_for(code: Code) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Builds the response for `error`. Details of server-side failures (5xx)
/// and of policy decisions stay in the log; `nonce` (base64url) is sent in
/// `KB-Nonce` when the client must retry with it.
pub fn error_response(error: &Error, nonce: Option<&str>) -> Response<Body> {
    problem_response(error, status_for(error.code()), nonce)
}

/// [`error_response`] with another status than the code's (a readiness
/// probe answers 503 whatever part failed).
pub(crate) fn problem_response(error: &Error, status: StatusCode, nonce: Option<&str>) -> Response<Body> {
    let code = error.code();
    let detail = if status.is_server_error() {
        "the service cannot verify requests right now; retry shortly".to_owned()
    } else if code == Code::PolicyDenied {
        // The deciding rule stays in the log; only a denial that no rule
        // names the action says so (it repeats what the client sent).
        error.client_detail().map_or_else(
            || "the service's policy does not allow this action for the roles in your token".to_owned(),
            str::to_owned,
        )
    } else {
        error.message().to_owned()
    };
    let body = json!({
        "type": format!("urn:keybound:error:{}", code.as_str()),
        "title": code.title(),
        "status": status.as_u16(),
        "code": code.as_str(),
        "detail": detail,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    // For layers outside (the gateway's forward-auth copies it into a header).
    response.extensions_mut().insert(code);
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn detail(error: &Error) -> String {
        let response = error_response(error, None);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "policy.denied");
        problem["detail"].as_str().unwrap().to_owned()
    }

    /// A policy denial keeps its rule in the log; only "no rule for …",
    /// which repeats what the client sent, reaches the client.
    #[tokio::test]
    async fn policy_denials_show_only_the_no_rule_detail() {
        let by_role = Error::new(
            Code::PolicyDenied,
            "rule \"servers\" requires one of the roles [\"admin\"]",
        );
        assert_eq!(
            detail(&by_role).await,
            "the service's policy does not allow this action for the roles in your token"
        );
        let no_rule = Error::new(Code::PolicyDenied, "no rule for GET /v2/server")
            .with_client_detail("no rule for GET /v2/server");
        assert_eq!(detail(&no_rule).await, "no rule for GET /v2/server");
    }
}
