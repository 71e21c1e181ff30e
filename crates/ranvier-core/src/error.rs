//! The domain error: a Matrix errcode plus a human-readable message.
//!
//! Services return [`Error`]; only `ranvier-http` decides the HTTP status. Internal failures
//! (database unreachable, corrupt row) are [`Error::Internal`]: they are logged once where the
//! response is built and reach the client as `500 M_UNKNOWN` without details.

use std::fmt;

pub use ruma::api::error::ErrorKind;

/// Result alias used across the services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error every service function returns.
#[derive(Debug)]
pub enum Error {
    /// A client-visible Matrix error (`M_FORBIDDEN`, `M_NOT_FOUND`, ...).
    Matrix { kind: ErrorKind, message: String },
    /// User-interactive authentication is needed: the body is the UIA flows object, sent with 401.
    Uiaa(Box<serde_json::Value>),
    /// A failure on the server side; the text is for the log only.
    Internal(String),
}

impl Error {
    /// A Matrix error of the given kind.
    pub fn matrix(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { kind, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::BadJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::InvalidParam, message)
    }
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::MissingParam, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::TooLarge, message)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::Unknown, message)
    }
    /// An internal failure; `context` names the action that failed.
    pub fn internal(context: impl fmt::Display) -> Self {
        Self::Internal(context.to_string())
    }
    /// The errcode kind, if this is a Matrix error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Matrix { kind, message } => write!(f, "{}: {message}", kind.errcode()),
            Self::Uiaa(_) => f.write_str("user-interactive authentication required"),
            Self::Internal(text) => write!(f, "internal error: {text}"),
        }
    }
}

impl std::error::Error for Error {}

/// Attach the name of the failed action to any displayable error, producing [`Error::Internal`].
pub trait Context<T> {
    fn context(self, action: &str) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, action: &str) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("{action}: {e}")))
    }
}
