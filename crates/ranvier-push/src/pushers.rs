//! Pushers: `GET /pushers` and `POST /pushers/set` (create, update, delete), and removing the
//! pushers of deleted devices.
//!
//! Only HTTP pushers are supported. A pusher remembers the device whose access token created
//! it, so that logging out or deleting the device removes it, as the spec asks. A new pusher
//! delivers only events that arrive after it was set.

use ranvier_core::{Error, Result, util::now_ms};
use ranvier_store::{StreamKind, push::PusherRow};
use ruma::{
    DeviceId, UserId,
    api::client::push::{Pusher, PusherIds, PusherInit, PusherKind, set_pusher::v3::PusherAction},
    push::HttpPusherData,
};

use crate::Push;

/// The path every push gateway URL must have.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// The longest `app_id`, in characters.
const MAX_APP_ID: usize = 64;
/// The longest `pushkey`, in bytes.
const MAX_PUSHKEY: usize = 512;

impl Push {
    /// `GET /pushers`.
    pub async fn pushers(&self, user_id: &UserId) -> Result<Vec<Pusher>> {
        let rows = self.store().pushers_of(user_id.as_str()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let data: HttpPusherData = serde_json::from_str(&row.data).ok()?;
                let init = PusherInit {
                    ids: PusherIds::new(row.pushkey, row.app_id),
                    kind: PusherKind::Http(data),
                    app_display_name: row.app_display_name,
                    device_display_name: row.device_display_name,
                    profile_tag: row.profile_tag,
                    lang: row.lang,
                };
                Some(init.into())
            })
            .collect())
    }

    /// `POST /pushers/set`: create or update a pusher of `user_id` (set through `device_id`'s
    /// access token), or delete one.
    pub async fn set_pusher(&self, user_id: &UserId, device_id: &DeviceId, action: PusherAction) -> Result<()> {
        let post = match action {
            PusherAction::Delete(ids) => {
                self.store().delete_pusher(user_id.as_str(), &ids.app_id, &ids.pushkey).await?;
                self.pushers_changed(user_id);
                return Ok(());
            }
            PusherAction::Post(post) => post,
            _ => return Err(Error::invalid_param("Unknown pusher action")),
        };
        let append = post.append;
        let pusher = post.pusher;
        let PusherIds { pushkey, app_id, .. } = pusher.ids;
        if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID {
            return Err(Error::invalid_param(format!("`app_id` must be 1 to {MAX_APP_ID} characters")));
        }
        if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY {
            return Err(Error::invalid_param(format!("`pushkey` must be 1 to {MAX_PUSHKEY} bytes")));
        }
        let data = match pusher.kind {
            PusherKind::Http(data) => data,
            PusherKind::Email(_) => return Err(Error::invalid_param("Email pushers are not supported")),
            _ => return Err(Error::invalid_param("Unknown pusher kind")),
        };
        check_url(&data.url)?;
        let row = PusherRow {
            user_id: user_id.to_string(),
            app_id,
            pushkey,
            device_id: device_id.to_string(),
            kind: "http".to_owned(),
            app_display_name: pusher.app_display_name,
            device_display_name: pusher.device_display_name,
            profile_tag: pusher.profile_tag,
            lang: pusher.lang,
            data: serde_json::to_string(&data).map_err(|e| Error::internal(format!("serialise pusher data: {e}")))?,
            pushkey_ts: now_ms(),
            last_stream_ordering: self.store().streams().current(StreamKind::Events),
            failing_since: None,
        };
        self.store().set_pusher(&row, append).await?;
        self.start_sender(user_id.as_str(), &row.app_id, &row.pushkey);
        Ok(())
    }

    /// Remove the pushers that the given devices' access tokens created.
    pub async fn devices_removed(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        let ids: Vec<&str> = device_ids.iter().map(String::as_str).collect();
        let removed = self.store().delete_pushers_of_devices(user_id.as_str(), &ids).await?;
        if !removed.is_empty() {
            self.pushers_changed(user_id);
        }
        Ok(())
    }
}

impl Push {
    /// A deactivated account has no pushers, and its push rules (account data, deleted with
    /// the account) are forgotten.
    pub async fn user_deactivated(&self, user_id: &UserId) -> Result<()> {
        for pusher in self.store().pushers_of(user_id.as_str()).await? {
            self.store().delete_pusher(user_id.as_str(), &pusher.app_id, &pusher.pushkey).await?;
        }
        self.pushers_changed(user_id);
        self.forget_rules(user_id);
        self.ignore_list_changed(user_id);
        Ok(())
    }
}

/// A push gateway URL must be `http(s)` with the path `/_matrix/push/v1/notify`.
fn check_url(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|_| Error::invalid_param("`data.url` is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::invalid_param("`data.url` must be an http or https URL"));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!("`data.url` must have the path {NOTIFY_PATH}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert!(check_url("https://push.example.org/_matrix/push/v1/notify").is_ok());
        assert!(check_url("http://127.0.0.1:8080/_matrix/push/v1/notify").is_ok());
        for bad in [
            "https://push.example.org/",
            "https://push.example.org/_matrix/push/v1/notify/extra",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "not a url",
            "/_matrix/push/v1/notify",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
