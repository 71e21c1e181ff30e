//! Dehydrated devices (MSC3814): at most one per user, a device without access tokens whose
//! keys and to-device inbox are kept like any device's, with the client's opaque data.
//!
//! The device is a row of `devices`, so key queries, key claims and to-device sends find it
//! like any other; `dehydrated_devices` says which device it is. Its keys and inbox are
//! removed by the caller through [`Store::delete_device_e2ee`], which also records the
//! device-list change.

use ranvier_core::{Result, error::Context, util::now_ms};
use sqlx::AnyConnection;

use crate::Store;

/// A user's dehydrated device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DehydratedDevice {
    pub device_id: String,
    /// The client's device data, as JSON.
    pub device_data: String,
}

/// What [`Store::put_dehydrated_device`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutDehydrated {
    /// The device was stored; it replaced this earlier dehydrated device, if any (whose
    /// device row and tokens are gone; its keys and inbox are the caller's to delete).
    Stored { replaced: Option<String> },
    /// The user has an ordinary device with that id: nothing was written.
    DeviceIdTaken,
}

impl Store {
    /// The user's dehydrated device, if they have one (and its device still exists).
    pub async fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT h.device_id, h.device_data FROM dehydrated_devices h \
             JOIN devices d ON d.user_id = h.user_id AND d.device_id = h.device_id WHERE h.user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
        .context("read dehydrated device")?;
        Ok(row.map(|(device_id, device_data)| DehydratedDevice { device_id, device_data }))
    }

    /// Make `device_id` the user's dehydrated device, replacing the one they had.
    pub async fn put_dehydrated_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &str,
    ) -> Result<PutDehydrated> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let previous = take_dehydrated(conn, user_id).await?;
        if previous.as_deref() != Some(device_id) {
            let taken: Option<String> =
                sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .context("look for a device with the dehydrated device's id")?;
            if taken.is_some() {
                // Dropping the transaction rolls back the removal of the previous device.
                return Ok(PutDehydrated::DeviceIdTaken);
            }
        }
        let now = now_ms();
        sqlx::query("INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(user_id)
            .bind(device_id)
            .bind(display_name)
            .bind(now)
            .execute(&mut *conn)
            .await
            .context("create dehydrated device")?;
        sqlx::query(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(device_data)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("record dehydrated device")?;
        txn.commit().await?;
        Ok(PutDehydrated::Stored { replaced: previous })
    }

    /// Delete the user's dehydrated device (its device row and any tokens); returns its id.
    /// Its keys and inbox are the caller's to delete.
    pub async fn delete_dehydrated_device(&self, user_id: &str) -> Result<Option<String>> {
        let mut txn = self.begin_write().await?;
        let previous = take_dehydrated(&mut txn, user_id).await?;
        txn.commit().await?;
        Ok(previous)
    }
}

/// Remove the user's dehydrated device record with its device row and tokens; returns the id
/// of the device if it still existed.
async fn take_dehydrated(conn: &mut AnyConnection, user_id: &str) -> Result<Option<String>> {
    let previous: Option<String> = sqlx::query_scalar("SELECT device_id FROM dehydrated_devices WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await
        .context("read dehydrated device")?;
    let Some(previous) = previous else { return Ok(None) };
    sqlx::query("DELETE FROM dehydrated_devices WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .context("forget dehydrated device")?;
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(&previous)
        .execute(&mut *conn)
        .await
        .context("delete dehydrated device tokens")?;
    let removed = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(&previous)
        .execute(&mut *conn)
        .await
        .context("delete dehydrated device")?;
    // A record whose device was deleted by other means (`DELETE /devices`) names nothing.
    Ok((removed.rows_affected() > 0).then_some(previous))
}
