//! HTTP glue shared by the API crates.
//!
//! # Layout
//! - [`extract`]: [`Ruma`] and [`Authed`], axum extractors that parse a ruma request type and,
//!   for [`Authed`], resolve the access token to a non-optional [`Identity`].
//! - [`response`]: [`RumaResponse`] and the one place where an [`ranvier_core::Error`] becomes
//!   an HTTP status and a Matrix error body.
//! - [`route`]: [`route`](route::route) registers a handler on every path of a ruma endpoint, and
//!   [`fallback`](route::fallback) answers unknown paths with `M_UNRECOGNIZED`.

pub mod extract;
pub mod response;
pub mod route;

pub use extract::{AuthState, Authed, Identity, Ruma};
pub use response::{ApiResult, ErrorResponse, RumaResponse, error_response, matrix_error};
pub use route::{fallback, route};
