//! Shared foundations of Ranvier: configuration, the Matrix domain error, and small utilities.
//!
//! # Layout
//! - [`config`]: the TOML configuration, its defaults, and `RANVIER_*` environment overrides.
//! - [`error`]: [`Error`], the one error type services return. It carries a Matrix errcode but
//!   no HTTP types; `ranvier-http` maps it to a status code in exactly one place.
//! - [`util`]: clock, random identifiers and the core count.

pub mod config;
pub mod error;
pub mod util;

pub use config::Config;
pub use error::{Error, Result};
