//! Content scanning: every upload passes a [`Scanner`] before it is stored, so nothing a
//! scanner refuses can ever be downloaded or thumbnailed.
//!
//! A scanner answers [`Verdict::Clean`] or [`Verdict::Infected`], or fails with
//! [`ScanUnavailable`] when it cannot give an answer (not running, timed out, its own error).
//! What happens then is the caller's policy (`media.scanner_fail_open`), not the scanner's.

use std::path::Path;

use futures_util::future::BoxFuture;

/// The scanner's answer about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The file matched a signature; the name of the detection.
    Infected(String),
}

/// The scanner could not say whether the file is clean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanUnavailable(pub String);

impl std::fmt::Display for ScanUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something that inspects a file before it is accepted.
pub trait Scanner: Send + Sync {
    /// A short name for logs (`clamav`).
    fn name(&self) -> &'static str;
    /// Scan the file at `path`.
    fn scan<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Verdict, ScanUnavailable>>;
}

/// No scanning: every file is clean.
pub struct NoScanner;

impl Scanner for NoScanner {
    fn name(&self) -> &'static str {
        "none"
    }

    fn scan<'a>(&'a self, _path: &'a Path) -> BoxFuture<'a, Result<Verdict, ScanUnavailable>> {
        Box::pin(async { Ok(Verdict::Clean) })
    }
}
