//! In-process API tests of the social layer: profiles, typing, receipts and read markers,
//! presence, tags, room aliases, the room and user directories, knocking, restricted joins and
//! room upgrades. Every scenario runs on SQLite and on PostgreSQL and checks exact statuses
//! and errcodes.
//!
//! `/sync` does not carry ephemeral events yet, so the scenarios read them from
//! `Social::sync_ephemeral`, the function `/sync` will call.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod directories;
mod ephemeral;
mod membership;
mod profiles;
