//! Presence: online, unavailable or offline, with a status message and the time of the last
//! activity.
//!
//! Presence is where a homeserver can burn memory and CPU, so it is kept cheap:
//! - The state lives in memory (`Tracker`). Only a change of state or status message takes a
//!   position in the presence stream, and only those are written to the database (the
//!   periodic sweep writes its changes in one transaction). Activity while already online just
//!   moves a timestamp.
//! - `last_active_ago` and `currently_active` are computed when an event is built, not stored.
//! - Nothing is sent anywhere when presence changes: a user's `/sync` asks which users changed
//!   since its token (`Tracker::changed_since`) and keeps only those who share a room with
//!   it.
//!
//! The rules themselves are the pure function [`step`], tested on their own.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Weak,
    time::Duration,
};

use parking_lot::Mutex;
use ranvier_core::{Error, Result, config::PresenceConfig, util::now_ms};
use ranvier_store::{StreamKind, social::presence::PresenceRow};
use ruma::{UserId, presence::PresenceState};
use serde_json::{Map, Value, json};

use crate::{Inner, Social, without_nul};

/// A user counts as "currently active" this long after their last activity.
pub const CURRENTLY_ACTIVE_MS: i64 = 60_000;
/// A remote user not heard of for this long is taken to be offline.
pub const REMOTE_TIMEOUT_MS: i64 = 30 * 60_000;

/// A presence state, without ruma's open-ended variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Online,
    Unavailable,
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Unavailable => "unavailable",
            State::Offline => "offline",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        match text {
            "online" => Some(State::Online),
            "unavailable" => Some(State::Unavailable),
            "offline" => Some(State::Offline),
            _ => None,
        }
    }

    /// The state a ruma presence value names; `M_INVALID_PARAM` for unknown ones.
    pub fn from_ruma(state: &PresenceState) -> Result<State> {
        State::parse(state.as_str()).ok_or_else(|| Error::invalid_param(format!("Unknown presence {}", state.as_str())))
    }
}

/// What the server knows of one user's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    pub status_msg: Option<String>,
    /// When the user last did something (ms since the epoch).
    pub last_active_ts: i64,
    /// `/sync` requests running now (local users).
    pub syncs: u32,
    /// When the last `/sync` ended or the user was last heard of (ms since the epoch).
    pub last_seen_ts: i64,
    /// Whether the user belongs to another server (their server sends their presence).
    pub remote: bool,
}

impl Record {
    fn offline(remote: bool) -> Self {
        Self { state: State::Offline, status_msg: None, last_active_ts: 0, syncs: 0, last_seen_ts: 0, remote }
    }
}

/// What happened to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The user set their presence (`PUT /presence`), or their server told us (federation).
    Set { state: State, status_msg: Option<String> },
    /// The user did something: typing, a receipt, an event.
    Activity,
    /// A `/sync` began with `set_presence` = this state.
    SyncStarted(State),
    /// A `/sync` ended.
    SyncEnded,
    /// Time passed.
    Tick,
}

/// The timeouts of the state machine.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub idle_ms: i64,
    pub offline_ms: i64,
}

/// The presence rules: the record after `input` at `now`.
///
/// - Setting presence takes effect as given; going online counts as activity.
/// - Activity brings an `unavailable` user back online (an `offline` one stays offline: they
///   may have chosen to appear so).
/// - A `/sync` asking for `online` brings an `offline` user online; one asking for
///   `unavailable` makes an online or offline user unavailable. A sync that asks for
///   `offline` is not a sync for presence at all and never reaches here.
/// - An online user inactive for the idle timeout becomes `unavailable`; a local user with
///   no `/sync` running and none for the offline timeout becomes `offline`; a remote user
///   not heard of for [`REMOTE_TIMEOUT_MS`] becomes `offline`.
pub fn step(record: &Record, input: &Input, now: i64, timeouts: Timeouts) -> Record {
    let mut next = record.clone();
    match input {
        Input::Set { state, status_msg } => {
            next.state = *state;
            next.status_msg = status_msg.clone();
            next.last_seen_ts = now;
            if *state == State::Online {
                next.last_active_ts = now;
            }
        }
        Input::Activity => {
            next.last_active_ts = now;
            next.last_seen_ts = now;
            if next.state == State::Unavailable {
                next.state = State::Online;
            }
        }
        Input::SyncStarted(requested) => {
            next.syncs += 1;
            next.last_seen_ts = now;
            match requested {
                State::Online if next.state == State::Offline => {
                    next.state = State::Online;
                    next.last_active_ts = now;
                }
                State::Unavailable if next.state != State::Unavailable => next.state = State::Unavailable,
                _ => {}
            }
        }
        Input::SyncEnded => {
            next.syncs = next.syncs.saturating_sub(1);
            next.last_seen_ts = now;
        }
        Input::Tick => {
            if next.state == State::Online && now - next.last_active_ts >= timeouts.idle_ms {
                next.state = State::Unavailable;
            }
            let gone = if next.remote {
                now - next.last_seen_ts >= REMOTE_TIMEOUT_MS
            } else {
                next.syncs == 0 && now - next.last_seen_ts.max(next.last_active_ts) >= timeouts.offline_ms
            };
            if next.state != State::Offline && gone {
                next.state = State::Offline;
            }
        }
    }
    next
}

/// Whether a change is worth telling others about (and persisting).
pub fn is_notable(before: &Record, after: &Record) -> bool {
    before.state != after.state || before.status_msg != after.status_msg
}

/// The `m.presence` content others see of a record at `now`.
pub fn presence_content(record: &Record, now: i64) -> Map<String, Value> {
    let mut content = Map::new();
    content.insert("presence".into(), json!(record.state.as_str()));
    if record.last_active_ts > 0 {
        content.insert("last_active_ago".into(), json!((now - record.last_active_ts).max(0)));
    }
    if record.state != State::Offline {
        let active = record.state == State::Online && now - record.last_active_ts < CURRENTLY_ACTIVE_MS;
        content.insert("currently_active".into(), json!(active));
    }
    if let Some(status) = &record.status_msg {
        content.insert("status_msg".into(), json!(status));
    }
    content
}

#[derive(Default)]
struct TrackerState {
    /// Whether the persisted presence has been read into memory.
    loaded: bool,
    records: HashMap<String, Record>,
    /// Position of each user's last notable change.
    positions: HashMap<String, i64>,
    /// The same, ordered by position: one entry per user.
    log: BTreeMap<i64, String>,
}

impl TrackerState {
    fn record_change(&mut self, user_id: &str, position: i64) {
        if let Some(old) = self.positions.insert(user_id.to_owned(), position) {
            self.log.remove(&old);
        }
        self.log.insert(position, user_id.to_owned());
    }
}

/// The in-memory presence of every user heard of.
pub(crate) struct Tracker {
    config: PresenceConfig,
    state: Mutex<TrackerState>,
    /// Serialises the one-time load from the database.
    load: tokio::sync::Mutex<()>,
}

impl Tracker {
    pub(crate) fn new(config: PresenceConfig) -> Self {
        Self { config, state: Mutex::new(TrackerState::default()), load: tokio::sync::Mutex::new(()) }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            idle_ms: i64::try_from(self.config.idle_timeout_ms).unwrap_or(i64::MAX),
            offline_ms: i64::try_from(self.config.offline_timeout_ms).unwrap_or(i64::MAX),
        }
    }

    /// How often the sweep runs: often enough for the configured timeouts.
    fn sweep_interval(&self) -> Duration {
        let shortest = self.config.idle_timeout_ms.min(self.config.offline_timeout_ms);
        Duration::from_millis((shortest / 4).clamp(20, 10_000))
    }

    /// The users whose presence changed after position `since`, with their records (`None`
    /// for a user whose record was forgotten: they are offline).
    pub(crate) fn changed_since(&self, since: i64) -> Vec<(String, Option<Record>)> {
        let state = self.state.lock();
        state
            .log
            .range(since.saturating_add(1)..)
            .map(|(_, user)| (user.clone(), state.records.get(user).cloned()))
            .collect()
    }

    /// The records of `user_ids` that are worth showing on a first sync (not plain offline).
    pub(crate) fn live_records(&self, user_ids: &[String]) -> Vec<(String, Record)> {
        let state = self.state.lock();
        user_ids
            .iter()
            .filter_map(|user| {
                let record = state.records.get(user)?;
                (record.state != State::Offline || record.status_msg.is_some()).then(|| (user.clone(), record.clone()))
            })
            .collect()
    }

    /// How many users have a live record (to choose how to find who shares a room).
    pub(crate) fn live_count(&self) -> usize {
        self.state.lock().records.len()
    }

    /// The users with a record.
    pub(crate) fn known_users(&self) -> Vec<String> {
        self.state.lock().records.keys().cloned().collect()
    }

    pub(crate) fn record(&self, user_id: &str) -> Option<Record> {
        self.state.lock().records.get(user_id).cloned()
    }
}

/// Keeps a user counted as syncing while a `/sync` runs; dropping it ends the sync.
#[must_use = "the user stops counting as syncing when this is dropped"]
pub struct SyncPresence {
    social: Option<Social>,
    user_id: String,
}

impl Drop for SyncPresence {
    fn drop(&mut self) {
        if let Some(social) = &self.social {
            // Ending a sync is never notable, so it needs no position and no write.
            let tracker = &social.inner.presence;
            let mut state = tracker.state.lock();
            if let Some(record) = state.records.get(&self.user_id) {
                let next = step(record, &Input::SyncEnded, now_ms(), tracker.timeouts());
                state.records.insert(self.user_id.clone(), next);
            }
        }
    }
}

impl Social {
    /// Whether presence is tracked at all.
    pub fn presence_enabled(&self) -> bool {
        self.inner.presence.config.enabled
    }

    /// Read the persisted presence into memory, once.
    pub(crate) async fn load_presence(&self) -> Result<()> {
        let tracker = &self.inner.presence;
        if tracker.state.lock().loaded {
            return Ok(());
        }
        let _loading = tracker.load.lock().await;
        if tracker.state.lock().loaded {
            return Ok(());
        }
        let rows = self.store().all_presence().await?;
        let now = now_ms();
        let mut state = tracker.state.lock();
        for row in rows {
            let Some(presence) = State::parse(&row.state) else {
                continue;
            };
            // Every user keeps their place in the change log, so that a client whose token is
            // older still learns of the last change; only the live are held in memory.
            if !state.positions.contains_key(&row.user_id) {
                state.record_change(&row.user_id, row.stream_pos);
            }
            if presence == State::Offline && row.status_msg.is_none() {
                continue;
            }
            let remote = UserId::parse(row.user_id.as_str()).is_ok_and(|user| !self.is_local(&user));
            // Nobody is syncing with a server that just started: the sweep takes users
            // offline unless they come back.
            let record = Record {
                state: presence,
                status_msg: row.status_msg,
                last_active_ts: row.last_active_ts,
                syncs: 0,
                last_seen_ts: now,
                remote,
            };
            state.records.entry(row.user_id.clone()).or_insert(record);
        }
        state.loaded = true;
        Ok(())
    }

    /// Apply `input` to several users; notable changes take positions and are written in one
    /// transaction.
    async fn apply_inputs(&self, inputs: &[(String, Input)]) -> Result<()> {
        if !self.presence_enabled() || inputs.is_empty() {
            return Ok(());
        }
        self.load_presence().await?;
        let tracker = &self.inner.presence;
        let now = now_ms();
        let mut rows = Vec::new();
        let mut guards = Vec::new();
        {
            let mut state = tracker.state.lock();
            for (user_id, input) in inputs {
                let remote = UserId::parse(user_id.as_str()).is_ok_and(|user| !self.is_local(&user));
                let before = state.records.get(user_id).cloned().unwrap_or_else(|| Record::offline(remote));
                let after = step(&before, input, now, tracker.timeouts());
                if is_notable(&before, &after) {
                    let guard = self.store().streams().allocate(StreamKind::Presence);
                    state.record_change(user_id, guard.position());
                    rows.push(PresenceRow {
                        user_id: user_id.clone(),
                        state: after.state.as_str().to_owned(),
                        status_msg: after.status_msg.clone(),
                        last_active_ts: after.last_active_ts,
                        stream_pos: guard.position(),
                    });
                    guards.push(guard);
                }
                state.records.insert(user_id.clone(), after);
            }
        }
        // The positions become visible (and `/sync` wakes) when the guards drop, after the
        // write.
        self.store().put_presence(&rows).await
    }

    /// Set a user's presence (`PUT /presence/{userId}/status`, or a remote server's update):
    /// only users may set their own (`403 M_FORBIDDEN`).
    pub async fn set_presence(
        &self,
        requester: &UserId,
        target: &UserId,
        state: &PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        if requester != target {
            return Err(Error::forbidden("Cannot set the presence of another user"));
        }
        if let Some(message) = &status_msg {
            without_nul(message, || Error::invalid_param("The status message must not contain NUL"))?;
        }
        self.apply_presence(target, State::from_ruma(state)?, status_msg).await
    }

    /// Record a presence update for any user, local or remote (federation calls this for
    /// remote users' `m.presence` EDUs).
    pub async fn apply_presence(&self, user_id: &UserId, state: State, status_msg: Option<String>) -> Result<()> {
        self.apply_inputs(&[(user_id.to_string(), Input::Set { state, status_msg })]).await
    }

    /// Note that a local user did something (sent an event, typed, sent a receipt): an
    /// unavailable user comes back online. Cheap when nothing changes.
    pub async fn note_activity(&self, user_id: &UserId) -> Result<()> {
        self.apply_inputs(&[(user_id.to_string(), Input::Activity)]).await
    }

    /// Called by `/sync` with its `set_presence` parameter (`None` means `online`). Keep the
    /// returned guard for the whole request: the user counts as syncing until it drops, and
    /// goes offline only once no sync has run for the offline timeout.
    ///
    /// `set_presence=offline` leaves presence alone, as the spec asks.
    pub async fn set_presence_from_sync(
        &self,
        user_id: &UserId,
        state: Option<&PresenceState>,
    ) -> Result<SyncPresence> {
        let requested = match state {
            Some(state) => State::from_ruma(state).unwrap_or(State::Online),
            None => State::Online,
        };
        if !self.presence_enabled() || requested == State::Offline {
            return Ok(SyncPresence { social: None, user_id: user_id.to_string() });
        }
        self.apply_inputs(&[(user_id.to_string(), Input::SyncStarted(requested))]).await?;
        Ok(SyncPresence { social: Some(self.clone()), user_id: user_id.to_string() })
    }

    /// A user's presence as `requester` may see it (`GET /presence/{userId}/status`): their own,
    /// or that of someone they share a room with (`403 M_FORBIDDEN` otherwise); `404` for an
    /// unknown local user.
    pub async fn presence_of(&self, requester: &UserId, target: &UserId) -> Result<Map<String, Value>> {
        without_nul(target.as_str(), || Error::not_found("Unknown user"))?;
        if self.is_local(target) && self.store().get_user(target.as_str()).await?.is_none() {
            return Err(Error::not_found("Unknown user"));
        }
        if requester != target
            && self.store().users_sharing_a_room(requester.as_str(), &[target.to_string()]).await?.is_empty()
        {
            return Err(Error::forbidden("You are not allowed to see their presence"));
        }
        if !self.presence_enabled() {
            return Ok(presence_content(&Record::offline(false), now_ms()));
        }
        self.load_presence().await?;
        let now = now_ms();
        let tracker = &self.inner.presence;
        let record = tracker.record(target.as_str()).unwrap_or_else(|| Record::offline(false));
        // The sweep may not have run yet: show what it would make of the record now.
        let record = step(&record, &Input::Tick, now, tracker.timeouts());
        Ok(presence_content(&record, now))
    }

    /// Run the timeouts over every record now (the sweep task does this periodically).
    pub async fn sweep_presence(&self) -> Result<()> {
        if !self.presence_enabled() {
            return Ok(());
        }
        self.load_presence().await?;
        let tracker = &self.inner.presence;
        let now = now_ms();
        let due: Vec<(String, Input)> = {
            let state = tracker.state.lock();
            state
                .records
                .iter()
                .filter(|(_, record)| is_notable(record, &step(record, &Input::Tick, now, tracker.timeouts())))
                .map(|(user, _)| (user.clone(), Input::Tick))
                .collect()
        };
        self.apply_inputs(&due).await?;
        // Forget offline users without a status message: memory holds only the live. Their
        // place in the change log stays, so syncs still learn that they went offline.
        let mut state = tracker.state.lock();
        state
            .records
            .retain(|_, record| record.state != State::Offline || record.status_msg.is_some() || record.syncs > 0);
        Ok(())
    }

    /// `m.presence` events of the given users at `now`.
    pub(crate) fn presence_events(&self, users: Vec<(String, Option<Record>)>) -> Vec<Value> {
        let now = now_ms();
        let timeouts = self.inner.presence.timeouts();
        users
            .into_iter()
            .map(|(user, record)| {
                let record =
                    record.map_or_else(|| Record::offline(false), |record| step(&record, &Input::Tick, now, timeouts));
                json!({ "type": "m.presence", "sender": user, "content": presence_content(&record, now) })
            })
            .collect()
    }
}

/// Run the presence timeouts periodically, for as long as the service lives.
pub(crate) async fn sweeper_task(weak: Weak<Inner>) {
    loop {
        let interval = match weak.upgrade() {
            Some(inner) if inner.presence.config.enabled => inner.presence.sweep_interval(),
            _ => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let social = Social { inner };
        if let Err(error) = social.sweep_presence().await {
            tracing::warn!(%error, "presence sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { idle_ms: 300_000, offline_ms: 30_000 };

    fn run(record: &Record, inputs: &[(i64, Input)]) -> Record {
        inputs.iter().fold(record.clone(), |record, (now, input)| step(&record, input, *now, T))
    }

    #[test]
    fn sync_brings_offline_users_online_and_they_idle_then_leave() {
        let start = Record::offline(false);
        let online = run(&start, &[(1_000, Input::SyncStarted(State::Online))]);
        assert_eq!((online.state, online.last_active_ts, online.syncs), (State::Online, 1_000, 1));
        assert!(is_notable(&start, &online));
        // Still syncing after the idle timeout: unavailable, not offline.
        let idle = run(&online, &[(301_000, Input::Tick)]);
        assert_eq!(idle.state, State::Unavailable);
        // Another sync does not bring an idle user back; activity does.
        let still_idle = run(&idle, &[(302_000, Input::SyncStarted(State::Online))]);
        assert_eq!(still_idle.state, State::Unavailable);
        let back = run(&still_idle, &[(303_000, Input::Activity)]);
        assert_eq!((back.state, back.last_active_ts), (State::Online, 303_000));
        // Syncs end; offline only after the offline timeout with none running.
        let ended = run(&back, &[(304_000, Input::SyncEnded), (305_000, Input::SyncEnded)]);
        assert_eq!(ended.syncs, 0);
        assert_eq!(run(&ended, &[(333_000, Input::Tick)]).state, State::Online);
        assert_eq!(run(&ended, &[(335_000, Input::Tick)]).state, State::Offline);
    }

    #[test]
    fn explicit_states_and_messages() {
        let start = Record::offline(false);
        let set = Input::Set { state: State::Unavailable, status_msg: Some("lunch".into()) };
        let away = run(&start, &[(10, set)]);
        assert_eq!((away.state, away.status_msg.as_deref()), (State::Unavailable, Some("lunch")));
        assert_eq!(away.last_active_ts, 0, "going unavailable is not activity");
        // An offline user who acts stays offline (they may be hiding).
        let hidden = run(&start, &[(10, Input::Activity)]);
        assert_eq!(hidden.state, State::Offline);
        assert!(!is_notable(&start, &hidden));
        // A sync asking for unavailable makes an online user unavailable.
        let online = run(&start, &[(10, Input::Set { state: State::Online, status_msg: None })]);
        assert_eq!(run(&online, &[(20, Input::SyncStarted(State::Unavailable))]).state, State::Unavailable);
        // A changed message alone is notable; the same state and message are not.
        let msg = run(&online, &[(30, Input::Set { state: State::Online, status_msg: Some("hi".into()) })]);
        assert!(is_notable(&online, &msg));
        let again = run(&msg, &[(40, Input::Set { state: State::Online, status_msg: Some("hi".into()) })]);
        assert!(!is_notable(&msg, &again));
    }

    #[test]
    fn remote_users_time_out_on_silence_only() {
        let remote = Record { remote: true, ..Record::offline(true) };
        let online = run(&remote, &[(0, Input::Set { state: State::Online, status_msg: None })]);
        // No syncs for a remote user is normal: they stay online until their server is silent.
        assert_eq!(run(&online, &[(60_000, Input::Tick)]).state, State::Online);
        assert_eq!(run(&online, &[(REMOTE_TIMEOUT_MS, Input::Tick)]).state, State::Offline);
    }

    async fn service(dir: &std::path::Path, config: PresenceConfig) -> Social {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = ranvier_store::Store::open(&url, 2).await.unwrap();
        let key = ruma::signatures::Ed25519KeyPair::from_der(&ruma::signatures::Ed25519KeyPair::generate(), "t".into())
            .unwrap();
        let rooms = ranvier_rooms::Rooms::new(store.clone(), "test.local".try_into().unwrap(), key);
        Social::new(store, rooms, config)
    }

    #[tokio::test]
    async fn presence_survives_a_restart_and_positions_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let alice = UserId::parse("@alice:test.local").unwrap();
        let bob = UserId::parse("@bob:test.local").unwrap();
        let config = PresenceConfig { idle_timeout_ms: 600_000, offline_timeout_ms: 600_000, ..Default::default() };
        let position = {
            let social = service(dir.path(), config.clone()).await;
            for user in [&alice, &bob] {
                assert!(social.store().create_user(user.as_str(), None, false).await.unwrap());
            }
            social.apply_presence(&alice, State::Unavailable, Some("away".into())).await.unwrap();
            social.apply_presence(&bob, State::Online, None).await.unwrap();
            social.apply_presence(&bob, State::Offline, None).await.unwrap();
            social.store().streams().current(StreamKind::Presence)
        };
        let social = service(dir.path(), config).await;
        assert_eq!(social.store().streams().current(StreamKind::Presence), position);
        let content = social.presence_of(&alice, &alice).await.unwrap();
        assert_eq!((content["presence"].as_str(), content["status_msg"].as_str()), (Some("unavailable"), Some("away")));
        // An older token still learns of both users' last changes, bob's offline included.
        social.load_presence().await.unwrap();
        let changed: Vec<(String, Option<State>)> = social
            .inner
            .presence
            .changed_since(0)
            .into_iter()
            .map(|(user, record)| (user, record.map(|record| record.state)))
            .collect();
        assert_eq!(changed, vec![(alice.to_string(), Some(State::Unavailable)), (bob.to_string(), None)]);
        social.apply_presence(&bob, State::Online, None).await.unwrap();
        assert!(social.store().streams().current(StreamKind::Presence) > position);
    }

    #[test]
    fn content_is_computed_at_read_time() {
        let record = Record {
            state: State::Online,
            status_msg: Some("here".into()),
            last_active_ts: 1_000,
            syncs: 1,
            last_seen_ts: 1_000,
            remote: false,
        };
        let now = presence_content(&record, 11_000);
        assert_eq!(
            Value::Object(now),
            json!({ "presence": "online", "last_active_ago": 10_000, "currently_active": true, "status_msg": "here" })
        );
        let later = presence_content(&record, 1_000 + CURRENTLY_ACTIVE_MS);
        assert_eq!(later["currently_active"], json!(false));
        let offline = presence_content(&Record::offline(false), 5);
        assert_eq!(Value::Object(offline), json!({ "presence": "offline" }));
    }
}
