//! Registering ruma endpoints on an axum router, and the fallback for unknown endpoints.

use axum::{
    Router,
    handler::Handler,
    http::StatusCode,
    response::Response,
    routing::{MethodFilter, on},
};
use ranvier_core::error::ErrorKind;
use ruma::api::{Metadata, path_builder::PathBuilder};

use crate::response::matrix_error;

/// Register `handler` for every path (r0, v3, unstable, ...) of the ruma endpoint `T`.
pub fn route<T, H, X, S>(router: Router<S>, handler: H) -> Router<S>
where
    T: Metadata,
    H: Handler<X, S> + Clone,
    X: 'static,
    S: Clone + Send + Sync + 'static,
{
    let filter = MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        router = router.route(path, on(filter, handler.clone()));
    }
    router
}

/// Unknown endpoints: `404 M_UNRECOGNIZED`, as the spec asks.
pub async fn fallback() -> Response {
    matrix_error(StatusCode::NOT_FOUND, ErrorKind::Unrecognized, "Unrecognized request".to_owned())
}

/// A known path with the wrong method: `405 M_UNRECOGNIZED`.
pub async fn method_not_allowed() -> Response {
    matrix_error(StatusCode::METHOD_NOT_ALLOWED, ErrorKind::Unrecognized, "Unrecognized request".to_owned())
}
