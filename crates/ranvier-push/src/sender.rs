//! Delivery to push gateways: one background task per HTTP pusher.
//!
//! A pusher's task delivers, in order, the user's notifying push outcomes after the pusher's
//! stored progress (`last_stream_ordering`), each as one `POST` in the Push Gateway API format
//! (`format: event_id_only` sends only the ids and counts). It records its progress after each
//! delivery, so a restart resumes where it stopped and nothing is sent twice. A failed
//! delivery is tried again after a wait that doubles up to a limit, and dropped after a
//! configured time; a pushkey the gateway lists as `rejected` removes the pusher.
//!
//! The persist path only wakes the tasks of the users an event notifies (after its commit);
//! it never waits for them. A task reads events only up to the events stream's visible
//! position, and waits for the stream when it was woken for an event not visible yet.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use ranvier_core::{Result, config::PushConfig, util::now_ms};
use ranvier_store::{StreamKind, events::StoredEvent, push::PushActionRow, push::PusherRow};
use ruma::{
    EventId, RoomAliasId, RoomId, SecondsSinceUnixEpoch, UInt, UserId,
    api::push_gateway::send_event_notification::v1::{
        Device, Notification, NotificationCounts, NotificationPriority, PusherData,
    },
    push::{Action, PushFormat, Tweak},
};
use serde_json::{Value, json, value::to_raw_value};
use tokio::sync::Notify;

use crate::Push;

/// How many outcomes a task reads at once.
const BATCH: i64 = 20;
/// How long a task waits before trying again after a database error.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// `(app_id, pushkey)` of one pusher of a user.
type PusherKey = (String, String);

/// The running pusher tasks, by user.
pub(crate) struct Senders {
    /// Built when the first notification is sent, so that a server without pushers never
    /// loads TLS roots or the client's code.
    http: OnceLock<reqwest::Client>,
    request_timeout: Duration,
    tasks: parking_lot::Mutex<HashMap<String, HashMap<PusherKey, Arc<TaskHandle>>>>,
}

/// What the rest of the service shares with one task.
#[derive(Default)]
struct TaskHandle {
    /// New events to deliver.
    events: Notify,
    /// The pusher was changed or deleted.
    changed: Notify,
    /// Set when the pusher was set again while the task may be finishing: it must look again.
    revive: AtomicBool,
    /// The highest events-stream position the task was woken for.
    wanted: AtomicI64,
}

/// The outcome of one delivery.
enum Delivery {
    /// The gateway accepted the notification; `rejected` says whether it rejected this pushkey.
    Done {
        rejected: bool,
    },
    Failed(String),
}

impl Senders {
    pub(crate) fn new(config: &PushConfig) -> Self {
        Self {
            http: OnceLock::new(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            tasks: Default::default(),
        }
    }

    /// The client notifications are sent with.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder().timeout(self.request_timeout).user_agent("Ranvier").build().unwrap_or_default()
        })
    }
}

impl Push {
    /// Start the tasks of every stored pusher. Call once, inside the runtime.
    pub async fn start(&self) -> Result<()> {
        for user_id in self.store().users_with_pushers().await? {
            for pusher in self.store().pushers_of(&user_id).await? {
                self.start_sender(&user_id, &pusher.app_id, &pusher.pushkey);
            }
        }
        Ok(())
    }

    /// Make sure a task delivers for this pusher.
    pub(crate) fn start_sender(&self, user_id: &str, app_id: &str, pushkey: &str) {
        let key = (app_id.to_owned(), pushkey.to_owned());
        let mut tasks = self.inner.senders.tasks.lock();
        let of_user = tasks.entry(user_id.to_owned()).or_default();
        if let Some(handle) = of_user.get(&key) {
            handle.revive.store(true, Ordering::SeqCst);
            handle.changed.notify_one();
            handle.events.notify_one();
            return;
        }
        let handle = Arc::new(TaskHandle::default());
        of_user.insert(key.clone(), handle.clone());
        let push = self.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move { push.run_sender(user_id, key, handle).await });
    }

    /// Wake the tasks of `users` for an event at `stream_ordering`.
    pub(crate) fn wake_pushers<'a>(&self, users: impl Iterator<Item = &'a str>, stream_ordering: i64) {
        let tasks = self.inner.senders.tasks.lock();
        for user_id in users {
            for handle in tasks.get(user_id).into_iter().flat_map(HashMap::values) {
                handle.wanted.fetch_max(stream_ordering, Ordering::SeqCst);
                handle.events.notify_one();
            }
        }
    }

    /// Tell the tasks of a user that their pushers changed (one may be gone).
    pub(crate) fn pushers_changed(&self, user_id: &UserId) {
        let tasks = self.inner.senders.tasks.lock();
        for handle in tasks.get(user_id.as_str()).into_iter().flat_map(HashMap::values) {
            handle.changed.notify_one();
            handle.events.notify_one();
        }
    }

    /// Whether the task may end now that its pusher is gone (`false` if it was set again).
    fn retire(&self, user_id: &str, key: &PusherKey, handle: &Arc<TaskHandle>) -> bool {
        let mut tasks = self.inner.senders.tasks.lock();
        if handle.revive.swap(false, Ordering::SeqCst) {
            return false;
        }
        if let Some(of_user) = tasks.get_mut(user_id) {
            if of_user.get(key).is_some_and(|current| Arc::ptr_eq(current, handle)) {
                of_user.remove(key);
            }
            if of_user.is_empty() {
                tasks.remove(user_id);
            }
        }
        true
    }

    /// The task of one pusher.
    async fn run_sender(self, user_id: String, key: PusherKey, handle: Arc<TaskHandle>) {
        let config = self.config().clone();
        let mut backoff = Duration::from_millis(config.retry_initial_ms);
        loop {
            let pusher = match self.store().get_pusher(&user_id, &key.0, &key.1).await {
                Ok(Some(pusher)) => pusher,
                Ok(None) => {
                    if self.retire(&user_id, &key, &handle) {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%user_id, %error, "reading pusher failed");
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            handle.revive.store(false, Ordering::SeqCst);
            let up_to = self.store().streams().current(StreamKind::Events);
            let rows = match self.store().push_actions_after(&user_id, pusher.last_stream_ordering, up_to, BATCH).await
            {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%user_id, %error, "reading notifications failed");
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            if rows.is_empty() {
                if handle.wanted.load(Ordering::SeqCst) > up_to {
                    // Woken for an event that committed but is not visible yet.
                    let mut changes = self.store().streams().subscribe();
                    if self.store().streams().current(StreamKind::Events) == up_to {
                        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                    }
                } else {
                    handle.events.notified().await;
                }
                continue;
            }
            let mut failing_since = pusher.failing_since;
            let mut delivered = pusher.last_stream_ordering;
            for row in rows {
                match self.deliver(&pusher, &row).await {
                    Delivery::Done { rejected } => {
                        backoff = Duration::from_millis(config.retry_initial_ms);
                        if rejected {
                            tracing::info!(%user_id, app_id = %key.0, "the push gateway rejected the pushkey; removing the pusher");
                            if let Err(error) = self.store().delete_pusher(&user_id, &key.0, &key.1).await {
                                tracing::warn!(%user_id, %error, "removing a rejected pusher failed");
                            }
                            break;
                        }
                        self.record_progress(&pusher, row.stream_ordering, None).await;
                        delivered = row.stream_ordering;
                        failing_since = None;
                    }
                    Delivery::Failed(reason) => {
                        let since = *failing_since.get_or_insert_with(now_ms);
                        if now_ms() - since >= config.give_up_after_ms as i64 {
                            tracing::warn!(%user_id, app_id = %key.0, %reason, event_id = %row.event_id, "dropping a notification the push gateway did not take");
                            self.record_progress(&pusher, row.stream_ordering, None).await;
                            delivered = row.stream_ordering;
                            failing_since = None;
                            continue;
                        }
                        tracing::info!(%user_id, app_id = %key.0, %reason, ?backoff, "push gateway delivery failed; trying again later");
                        self.record_progress(&pusher, delivered, Some(since)).await;
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = handle.changed.notified() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(config.retry_max_ms.max(1)));
                        break;
                    }
                }
            }
        }
    }

    async fn record_progress(&self, pusher: &PusherRow, last: i64, failing_since: Option<i64>) {
        let result = self
            .store()
            .update_pusher_progress(&pusher.user_id, &pusher.app_id, &pusher.pushkey, last, failing_since)
            .await;
        if let Err(error) = result {
            tracing::warn!(user_id = %pusher.user_id, %error, "recording pusher progress failed");
        }
    }

    /// Send one notification to the pusher's gateway.
    async fn deliver(&self, pusher: &PusherRow, row: &PushActionRow) -> Delivery {
        let notification = match self.notification(pusher, row).await {
            Ok(Some(notification)) => notification,
            // The event is gone (purged): nothing to say.
            Ok(None) => return Delivery::Done { rejected: false },
            Err(error) => return Delivery::Failed(error.to_string()),
        };
        let data: Value = serde_json::from_str(&pusher.data).unwrap_or_default();
        let Some(url) = data["url"].as_str() else { return Delivery::Done { rejected: false } };
        let request = self.inner.senders.http().post(url).json(&json!({ "notification": notification }));
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Delivery::Failed(error.to_string()),
        };
        let status = response.status();
        if !status.is_success() {
            return Delivery::Failed(format!("status {status}"));
        }
        let body: Value = response.json().await.unwrap_or_default();
        let rejected = body["rejected"]
            .as_array()
            .is_some_and(|rejected| rejected.iter().any(|key| key.as_str() == Some(pusher.pushkey.as_str())));
        Delivery::Done { rejected }
    }

    /// The Push Gateway API notification of `row` for `pusher`; `None` if the event is gone.
    async fn notification(&self, pusher: &PusherRow, row: &PushActionRow) -> Result<Option<Notification>> {
        let store = self.store();
        let Some(event) = store.get_event(&row.event_id).await? else { return Ok(None) };
        let actions: Vec<Action> = serde_json::from_str(&row.actions).unwrap_or_default();
        let tweaks: Vec<Tweak> = actions
            .iter()
            .filter_map(|action| match action {
                Action::SetTweak(tweak) => Some(tweak.clone()),
                _ => None,
            })
            .collect();

        let mut data: serde_json::Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
        data.remove("url");
        let device_data: PusherData = serde_json::from_value(Value::Object(data)).unwrap_or_default();
        let event_id_only = matches!(device_data.format, Some(PushFormat::EventIdOnly));
        let mut device = Device::new(pusher.app_id.clone(), pusher.pushkey.clone());
        device.pushkey_ts = UInt::new(u64::try_from(pusher.pushkey_ts / 1000).unwrap_or(0)).map(SecondsSinceUnixEpoch);
        device.data = device_data;
        device.tweaks = tweaks;

        let mut notification = Notification::new(vec![device]);
        notification.event_id = EventId::parse(&event.event_id).ok();
        notification.room_id = RoomId::parse(&event.room_id).ok();
        notification.counts =
            NotificationCounts::new(UInt::new(self.badge_count(&pusher.user_id).await?).unwrap_or_default(), UInt::MIN);
        let sound = actions.iter().any(|action| action.sound().is_some());
        notification.prio = if row.highlight || sound || event.event_type == "m.room.encrypted" {
            NotificationPriority::High
        } else {
            NotificationPriority::Low
        };
        if !event_id_only {
            self.describe(&mut notification, &event, &pusher.user_id).await?;
        }
        Ok(Some(notification))
    }

    /// The event's type, sender, room name and alias, and content (unless configured off).
    async fn describe(&self, notification: &mut Notification, event: &StoredEvent, user_id: &str) -> Result<()> {
        let store = self.store();
        notification.event_type = Some(event.event_type.as_str().into());
        notification.sender = UserId::parse(&event.sender).ok();
        notification.user_is_target = event.state_key.as_deref() == Some(user_id);
        let state_content = |event: Option<StoredEvent>, field: &str| -> Option<String> {
            let pdu: Value = serde_json::from_str(&event?.pdu).ok()?;
            pdu["content"][field].as_str().filter(|value| !value.is_empty()).map(str::to_owned)
        };
        let member = store.current_state_event(&event.room_id, "m.room.member", &event.sender).await?;
        notification.sender_display_name = state_content(member, "displayname");
        let name = store.current_state_event(&event.room_id, "m.room.name", "").await?;
        notification.room_name = state_content(name, "name");
        let alias = store.current_state_event(&event.room_id, "m.room.canonical_alias", "").await?;
        notification.room_alias = state_content(alias, "alias").and_then(|alias| RoomAliasId::parse(alias).ok());
        if self.config().include_content {
            let pdu: Value = serde_json::from_str(&event.pdu).unwrap_or_default();
            notification.content = to_raw_value(&pdu["content"]).ok();
        }
        Ok(())
    }

    /// The badge a push gateway shows: the rooms with unread notifications plus pending
    /// invites, as Synapse counts.
    pub async fn badge_count(&self, user_id: &str) -> Result<u64> {
        let (rooms, _) = self.store().unread_totals(user_id).await?;
        let invites =
            self.store().memberships_of(user_id).await?.iter().filter(|row| row.membership == "invite").count();
        Ok(u64::try_from(rooms).unwrap_or(0) + invites as u64)
    }
}
