//! Request extractors: parse the body with ruma, authenticate according to the endpoint.
//!
//! - [`Ruma<T>`] is for endpoints that need no access token (or accept one optionally: a token
//!   that is sent must still be valid, and then `identity` is set).
//! - [`Authed<T>`] is for endpoints that require one. It only compiles for endpoints whose ruma
//!   metadata says `AccessToken`, and hands the handler a non-optional [`Identity`].

use std::future::Future;

use axum::{
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use ranvier_core::{Error, error::ErrorKind};
use ruma::api::path_builder::PathBuilder;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt,
        auth_scheme::AccessToken,
        error::{DeserializationError, FromHttpRequestError},
    },
};

use crate::response::{error_response, matrix_error};

/// The authenticated user and device behind a request.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// What the extractors need from the application state.
pub trait AuthState: Clone + Send + Sync + 'static {
    /// Resolve an access token, failing with `M_UNKNOWN_TOKEN` if it is not valid.
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Identity, Error>> + Send;
    /// The largest request body accepted.
    fn max_body_bytes(&self) -> usize;
}

/// Marker for ruma auth schemes that require an access token.
pub trait RequiresAccessToken {}
impl RequiresAccessToken for AccessToken {}

/// A parsed request for an endpoint without required authentication.
pub struct Ruma<T> {
    pub body: T,
    /// Set when the client sent a (valid) access token.
    pub identity: Option<Identity>,
}

/// A parsed request from an authenticated client.
pub struct Authed<T> {
    pub body: T,
    pub identity: Identity,
    /// The access token used, for logout.
    pub access_token: String,
}

impl<T> Authed<T> {
    pub fn user_id(&self) -> &ruma::UserId {
        &self.identity.user_id
    }
    pub fn device_id(&self) -> &ruma::DeviceId {
        &self.identity.device_id
    }
}

/// A rejection from the extractors: always a Matrix error response.
pub struct Rejection(Response);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.0
    }
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection(error_response(error))
    }
}

/// The access token from `Authorization: Bearer` or the `access_token` query parameter.
pub fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| pair.strip_prefix("access_token=").map(percent_decode))
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Map a ruma parse failure to the spec's errors.
fn parse_error(error: FromHttpRequestError) -> Rejection {
    let (kind, message) = match error {
        FromHttpRequestError::MethodMismatch { .. } => {
            return Rejection(matrix_error(
                http::StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::Unrecognized,
                "Unrecognized request".to_owned(),
            ));
        }
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                (ErrorKind::NotJson, format!("Content not JSON: {e}"))
            }
            _ => (ErrorKind::BadJson, format!("Bad JSON: {e}")),
        },
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(e)) => {
            (ErrorKind::NotJson, format!("Content not UTF-8: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            (ErrorKind::InvalidParam, format!("Invalid query parameter: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            (ErrorKind::InvalidParam, format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => (ErrorKind::BadJson, format!("Bad request: {e}")),
        _ => (ErrorKind::BadJson, "Bad request".to_owned()),
    };
    Rejection::from(Error::matrix(kind, message))
}

/// ruma's `/login` body parser (ruma-client-api 0.25) indexes the `type` field without
/// checking that it exists, which panics; check it here so the client gets `M_BAD_JSON`.
fn check_login_type(body: &[u8]) -> Result<(), Error> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) if map.get("type").is_some_and(serde_json::Value::is_string) => Ok(()),
        Ok(serde_json::Value::Object(_)) => Err(Error::bad_json("Missing or invalid field `type`")),
        Ok(_) => Err(Error::bad_json("Expected a JSON object")),
        Err(e) => Err(Error::matrix(ErrorKind::NotJson, format!("Content not JSON: {e}"))),
    }
}

/// Split the request, read the body within the limit, and parse it as `T`.
async fn parse<T: IncomingRequest, S: AuthState>(req: Request, state: &S) -> Result<(T, Option<String>), Rejection> {
    let (mut parts, body) = req.into_parts();
    let token = access_token(&parts);
    let path_params = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .map_err(|_| Rejection::from(Error::invalid_param("Invalid path parameters")))?;
    let limit = state.max_body_bytes();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Rejection::from(Error::too_large(format!("Request body exceeds {limit} bytes"))))?;
    let args: Vec<&str> = path_params.iter().map(|(_, value)| value).collect();
    // NUL characters cannot be stored in PostgreSQL text and have no use in Matrix
    // identifiers or content, so they are refused at the door on every backend alike.
    if args.iter().any(|arg| arg.contains('\0')) || parts.uri.query().is_some_and(|query| query.contains("%00")) {
        return Err(Error::invalid_param("NUL characters are not allowed").into());
    }
    if bytes.windows(6).any(|window| window == b"\\u0000") {
        return Err(Error::bad_json("NUL characters are not allowed").into());
    }
    // Some clients send an empty body to POST endpoints whose body is all optional.
    let body: &[u8] = if bytes.is_empty() && T::METHOD != http::Method::GET { b"{}" } else { &bytes };
    if T::METHOD == http::Method::POST && T::PATH_BUILDER.all_paths().any(|path| path.ends_with("/login")) {
        check_login_type(body)?;
    }
    let http_request = http::Request::from_parts(parts, body);
    // Some ruma deserialisers index into JSON objects and panic on a missing key (for example
    // `/login` without `type`). A malformed body must be a 400, never a dropped connection,
    // so parsing runs under `catch_unwind` and a panic becomes `M_BAD_JSON`.
    let parsed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(http_request, &args)));
    let request = match parsed {
        Ok(result) => result.map_err(parse_error)?,
        Err(_) => return Err(Error::bad_json("Malformed request body").into()),
    };
    Ok((request, token))
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send,
    S: AuthState,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Boxed, as in `Authed`'s extraction.
        let (body, token) = Box::pin(parse::<T, S>(req, state)).await?;
        let identity = match token {
            Some(token) => Some(Box::pin(state.authenticate(&token)).await?),
            None => None,
        };
        Ok(Ruma { body, identity })
    }
}

impl<T, S> FromRequest<S> for Authed<T>
where
    T: IncomingRequest + Send,
    T::Authentication: RequiresAccessToken,
    S: AuthState,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        // Authenticate before parsing, so an anonymous request learns only that it needs a token.
        let Some(token) = access_token(&parts) else {
            return Err(Error::matrix(ErrorKind::MissingToken, "Missing access token").into());
        };
        // Both steps run boxed: the handler's future holds room for the largest state of
        // everything it awaits inline, for as long as the request lasts (a waiting `/sync`
        // too), and these two are larger than most handlers.
        let identity = Box::pin(state.authenticate(&token)).await?;
        let (body, _) = Box::pin(parse::<T, S>(Request::from_parts(parts, body), state)).await?;
        Ok(Authed { body, identity, access_token: token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_or_query() {
        let (parts, _) = http::Request::builder().uri("/x?a=1&access_token=abc%2Bd").body(()).unwrap().into_parts();
        assert_eq!(access_token(&parts).as_deref(), Some("abc+d"));
        let (parts, _) =
            http::Request::builder().uri("/x").header("Authorization", "Bearer tok").body(()).unwrap().into_parts();
        assert_eq!(access_token(&parts).as_deref(), Some("tok"));
        let (parts, _) = http::Request::builder().uri("/x?b=%zz").body(()).unwrap().into_parts();
        assert_eq!(access_token(&parts), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
