//! Storage of end-to-end encryption data: device keys, one-time and fallback keys,
//! to-device messages, device-list changes, cross-signing keys and signatures, key backups
//! (the tables of `0002_e2ee.sql`).
//!
//! # Layout
//! - [`keys`]: device identity keys, one-time keys (claimed atomically) and fallback keys.
//! - [`cross_signing`]: cross-signing keys and the signatures uploaded for keys.
//! - [`device_lists`]: the device-list stream and the membership reads that decide who is told.
//! - [`to_device`]: the to-device inbox and its transaction ids.
//! - [`backup`]: server-side key backup versions and their session keys.
//! - [`dehydrated`]: which device of a user is their dehydrated device, and its data.
//!
//! The store only reads and writes: which signature is valid, which backed-up session is the
//! better one and who must hear of a change are decided by the `ranvier-e2ee` service. Every
//! write that changes what other users see of a device list records a row in
//! `device_list_changes` in the same transaction, with a position in the device-list stream.

pub mod backup;
pub mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod keys;
pub mod to_device;

#[cfg(test)]
mod tests;

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

/// Record that `user_id`'s device list changed at `position` (`device_id` is `""` for
/// cross-signing keys). `audience` is `None` when everyone sharing a room with the user must
/// hear of it, or the one user who must.
pub(crate) async fn record_device_list_change(
    conn: &mut AnyConnection,
    position: i64,
    user_id: &str,
    device_id: &str,
    audience: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO device_list_changes (stream_pos, user_id, device_id, audience) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(position)
    .bind(user_id)
    .bind(device_id)
    .bind(audience.unwrap_or(""))
    .execute(conn)
    .await
    .context("record device list change")?;
    Ok(())
}

/// Raise the remembered high-water mark of the to-device stream to `position`: delivered
/// messages are deleted, and a restart must not hand their positions out again.
pub(crate) async fn raise_to_device_high_water(conn: &mut AnyConnection, position: i64) -> Result<()> {
    sqlx::query("UPDATE e2e_stream_positions SET position = $1 WHERE stream = 'to_device' AND position < $1")
        .bind(position)
        .execute(conn)
        .await
        .context("raise to-device high water")?;
    Ok(())
}
