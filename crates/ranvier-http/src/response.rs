//! Responses: ruma response types and errors into HTTP responses.
//!
//! [`error_response`] is the only place that maps an error to an HTTP status. Internal errors
//! are logged here, once, and reach the client as a bare `500 M_UNKNOWN`.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use http::{HeaderValue, StatusCode, header};
use ranvier_core::{Error, error::ErrorKind};
use ruma::api::{
    OutgoingResponse, OutgoingResponseExt,
    error::{ErrorBody, StandardErrorBody},
};

/// What handlers return. `?` converts service errors; write `Err(error.into())` to return one.
pub type ApiResult<T> = Result<RumaResponse<T>, ErrorResponse>;

/// A ruma response type, serialised by ruma.
pub struct RumaResponse<T>(pub T);

impl<T> From<T> for RumaResponse<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(e) => error_response(Error::internal(format!("serialise response: {e}"))),
        }
    }
}

/// The HTTP status of a Matrix error kind.
fn status_of(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Forbidden
        | ErrorKind::GuestAccessForbidden
        | ErrorKind::UserDeactivated
        | ErrorKind::ThreepidDenied
        | ErrorKind::UserSuspended
        | ErrorKind::WrongRoomKeysVersion(_)
        | ErrorKind::InviteBlocked
        | ErrorKind::CannotLeaveServerNoticeRoom => StatusCode::FORBIDDEN,
        ErrorKind::UnknownToken(_) | ErrorKind::MissingToken | ErrorKind::UserLocked | ErrorKind::Unauthorized => {
            StatusCode::UNAUTHORIZED
        }
        ErrorKind::NotFound | ErrorKind::Unrecognized => StatusCode::NOT_FOUND,
        ErrorKind::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::CannotOverwriteMedia => StatusCode::CONFLICT,
        ErrorKind::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Turn an error into a Matrix error response.
pub fn error_response(error: Error) -> Response {
    match error {
        Error::Matrix { kind, message } => matrix_error(status_of(&kind), kind, message),
        Error::Uiaa(body) => {
            let mut response = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Error::Internal(text) => {
            tracing::error!(error = %text, "internal error");
            matrix_error(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown, "Internal server error".to_owned())
        }
    }
}

/// A Matrix error response with an explicit status (for the few errcodes whose status varies).
pub fn matrix_error(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    let error = ruma::api::error::Error::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)));
    match error.try_into_http_response::<BytesMut>() {
        Ok(response) => response.map(|body| Body::from(body.freeze())),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A service error on its way out as a response.
#[derive(Debug)]
pub struct ErrorResponse(pub Error);

impl From<Error> for ErrorResponse {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}
