//! Whole-server tests: real `ranvier` processes on loopback ports, driven over HTTP and with
//! the `matrix-sdk` client, on every backend in `RANVIER_TEST_BACKENDS`.
//!
//! Everything lives in this one test binary because each binary links the whole of
//! `matrix-sdk`; a new area of tests is a new module here, not a new file in `tests/`.
//!
//! # Layout
//! - [`harness`]: the harness itself (start, restart, logs, backends).
//! - [`errors`]: exact error codes and statuses, and no 5xx for malformed input.
//! - [`durability`]: acknowledged events survive `kill -9`.
//! - [`e2ee`]: end-to-end encryption with `matrix-sdk` clients (encrypted rooms, emoji
//!   verification, cross-signing, key backup and recovery) and its `/sync` plumbing over raw
//!   HTTP (to-device delivery, key counts, device lists).
//! - [`federation_media`]: remote media between two servers over the federation TLS
//!   listener: fetch, cache, thumbnails, scanning, server keys, X-Matrix refusals.
//! - [`media`]: uploads, downloads, thumbnails (animated ones too), size limits, virus
//!   scanning with clamd, retention by last access, and media in an S3 bucket (moto).
//! - [`media_preview`]: URL previews of pages the test serves on loopback, and their SSRF
//!   defences.
//! - [`push`]: push rules, unread counts, `/notifications`, and pushers delivering to a push
//!   gateway on loopback (raw HTTP and `matrix-sdk`).
//! - [`registration`]: closed registration, shared-secret accounts, registration tokens.
//! - [`relations`]: bundled aggregations (edits, threads, references) on every read path,
//!   `/relations` and `/threads`, over raw HTTP and through `matrix-sdk`.
//! - [`scenario`]: a whole session over raw HTTP, from registration to pagination.
//! - [`sdk`]: the main flows driven by `matrix-sdk`.
//! - [`search`]: server-side search, content reports with their admin listings, and mutual
//!   rooms, over raw HTTP and with `matrix-sdk`.
//! - [`social`]: typing, receipts, unread counts and presence as `/sync` delivers them.
//! - [`social_sdk`]: the social layer driven by `matrix-sdk` clients (profiles, typing,
//!   receipts, presence, tags, aliases and directories, knocking, restricted joins, upgrades).
//! - [`spaces`]: the space hierarchy, restricted joins through spaces, ignored users, direct
//!   chats across upgrades and server notices, over raw HTTP and with `matrix-sdk`.

mod durability;
mod e2ee;
mod errors;
mod federation_media;
mod harness;
mod media;
mod media_preview;
mod push;
mod registration;
mod relations;
mod scenario;
mod sdk;
mod search;
mod social;
mod social_sdk;
mod spaces;

use std::path::Path;

use ranvier_test::{Backend, TestServer, TestServerBuilder};

/// The `ranvier` binary Cargo built for these tests.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ranvier"))
}

/// Start a server with the default test settings.
async fn start(backend: Backend) -> TestServer {
    TestServer::start(binary(), backend).await
}

/// A builder for a server with other settings.
fn builder(backend: Backend) -> TestServerBuilder {
    TestServer::builder(binary(), backend)
}
