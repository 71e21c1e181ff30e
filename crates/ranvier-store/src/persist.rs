//! The write path of the room graph: persisting an event with its DAG edges, auth edges,
//! state group, current state, membership and forward extremities in one transaction.
//!
//! The room service decides everything (state before the event, the new state group, the
//! current-state delta, redactions); this module only writes what it is told, atomically. The
//! same function stores local and remote events, outliers and rejected events.

use std::borrow::Cow;

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::{Backend, Store, Writer, events::StoredEvent};

/// A state group to create: `prev_group` plus `entries`, or a full snapshot without `prev_group`.
#[derive(Clone, Debug)]
pub struct NewStateGroup {
    pub id: i64,
    pub prev_group: Option<i64>,
    pub chain_length: i64,
    /// `(event_type, state_key, event_id)`.
    pub entries: Vec<(String, String, String)>,
}

/// One change to a room's current state: set `(event_type, state_key)` to an event, or remove it.
#[derive(Clone, Debug)]
pub struct CurrentStateChange {
    pub event_type: String,
    pub state_key: String,
    /// `None` removes the entry (state resolution can drop a key).
    pub event_id: Option<String>,
}

/// A user's new current membership in the room (mirrors an `m.room.member` current-state change).
#[derive(Clone, Debug)]
pub struct MembershipChange {
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
}

/// A room row to create (with the create event).
#[derive(Clone, Debug)]
pub struct NewRoom {
    pub room_version: String,
    pub creator: Option<String>,
    pub is_public: bool,
}

/// The client transaction that produced the event, for idempotent retries.
#[derive(Clone, Debug)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub txn_id: String,
}

/// Another stored event to rewrite in the same transaction: the target of a redaction.
#[derive(Clone, Debug)]
pub struct Redaction {
    pub target_event_id: String,
    /// The target's PDU after redaction, as canonical JSON.
    pub redacted_pdu: String,
}

/// The event's `m.relates_to` (`rel_type` and parent), for an accepted timeline event.
#[derive(Clone, Debug)]
pub struct NewRelation {
    pub relates_to_id: String,
    pub rel_type: String,
}

/// Everything written for one event.
#[derive(Clone, Debug, Default)]
pub struct PersistEvent {
    /// The events-stream position; the caller holds its guard until this function returns.
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU as canonical JSON.
    pub pdu: String,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    pub outlier: bool,
    pub rejected_reason: Option<String>,
    pub soft_failed: bool,
    /// The state group holding the room state before this event.
    pub state_group: Option<i64>,
    /// State groups to create first (the state after a state event, or a resolved state).
    pub new_state_groups: Vec<NewStateGroup>,
    pub current_state: Vec<CurrentStateChange>,
    pub memberships: Vec<MembershipChange>,
    /// The new value of `rooms.current_state_group`, when current state changed.
    pub current_state_group: Option<i64>,
    /// Whether the event joins the DAG's forward edge: its prev_events stop being extremities
    /// and it becomes one (unless a known event already points at it). False for outliers.
    pub update_extremities: bool,
    pub new_room: Option<NewRoom>,
    pub txn: Option<TxnKey>,
    pub redaction: Option<Redaction>,
    pub relation: Option<NewRelation>,
    /// What the push rules decided for local users (see [`crate::push`]).
    pub push_actions: Vec<crate::push::NewPushAction>,
    /// The event's searchable text, for accepted events of the searched types (see
    /// [`crate::search`]): one row in the full-text index.
    pub search_text: Option<String>,
}

impl Store {
    /// Persist one event and everything that follows from it, in one transaction.
    pub async fn persist_event(&self, event: &PersistEvent) -> Result<()> {
        self.persist_events(&[event]).await
    }

    /// Persist several events in one transaction, in order: one commit (and one sync to disk)
    /// for all of them.
    ///
    /// After the commit, the new events go into the event cache and the targets of the
    /// redactions among them leave it.
    pub async fn persist_events(&self, events: &[&PersistEvent]) -> Result<()> {
        let cache = self.event_cache();
        let generation = cache.generation();
        let backend = self.backend();
        let search_texts = search_texts(events);
        let batch = batch_of(backend, events, &search_texts);
        let unread = self.unread_cache().writing(events.iter().map(|event| event.room_id.as_str()));
        let _recorded = self.txn_filter().record(
            events
                .iter()
                .filter_map(|event| event.txn.as_ref())
                .map(|txn| (txn.user_id.as_str(), txn.device_id.as_str(), txn.txn_id.as_str())),
        );
        match &self.inner.writer {
            // A group of messages as one statement ([`Batch::into_message_writes`]), anything else
            // as one query from `BEGIN` to `COMMIT` ([`Batch::run_alone`]).
            Writer::Sqlite(writer) => {
                let mut writer = writer.lock().await;
                writer.start().await;
                let result = match batch.into_message_writes() {
                    Ok(statement) => bind_all(sqlx::query(sqlx::AssertSqlSafe(statement.sql)), statement.args)
                        .execute(&mut writer.conn)
                        .await
                        .map(drop)
                        .context(&statement.action),
                    Err(batch) => batch.run_alone(&mut writer.conn).await,
                };
                if let Err(error) = result {
                    writer.roll_back().await;
                    return Err(error);
                }
                writer.open = false;
            }
            Writer::Postgres { events: writer } => {
                match batch.into_one_statement(events) {
                    // One statement is a transaction of its own: no `BEGIN` and `COMMIT` round
                    // trips.
                    Ok(statement) => {
                        bind_all(sqlx::query(sqlx::AssertSqlSafe(statement.sql)), statement.args)
                            .execute(writer)
                            .await
                            .context(&statement.action)?;
                    }
                    Err(batch) => {
                        let mut txn = writer.begin().await.context("begin transaction")?;
                        batch.run(&mut txn, backend).await?;
                        txn.commit().await.context("commit transaction")?;
                    }
                }
            }
        }
        unread.events_committed(events);
        let stored: Vec<StoredEvent> = events.iter().map(|event| stored_form(event)).collect();
        cache.insert_read(generation, &stored);
        let redacted: Vec<&str> =
            events.iter().filter_map(|event| event.redaction.as_ref()).map(|r| r.target_event_id.as_str()).collect();
        if !redacted.is_empty() {
            cache.invalidate(redacted);
        }
        let members: Vec<String> =
            events.iter().flat_map(|event| event.memberships.iter().map(|change| change.user_id.clone())).collect();
        if !members.is_empty() {
            self.membership_cache().invalidate(members);
        }
        Ok(())
    }

    /// Mark a user's membership in a room as forgotten (or not).
    pub async fn set_room_forgotten(&self, room_id: &str, user_id: &str, forgotten: bool) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("UPDATE room_memberships SET forgotten = $1 WHERE room_id = $2 AND user_id = $3")
            .bind(i64::from(forgotten))
            .bind(room_id)
            .bind(user_id)
            .execute(&mut *txn)
            .await
            .context("forget room")?;
        txn.commit().await?;
        self.membership_cache().invalidate([user_id.to_owned()]);
        Ok(())
    }
}

/// The row an event's insert writes, as [`Store::get_event`] would read it back.
fn stored_form(event: &PersistEvent) -> StoredEvent {
    StoredEvent {
        stream_ordering: event.stream_ordering,
        event_id: event.event_id.clone(),
        room_id: event.room_id.clone(),
        sender: event.sender.clone(),
        event_type: event.event_type.clone(),
        state_key: event.state_key.clone(),
        depth: event.depth,
        origin_server_ts: event.origin_server_ts,
        pdu: event.pdu.clone(),
        outlier: event.outlier,
        rejected: event.rejected_reason.is_some(),
        soft_failed: event.soft_failed,
        redacted_by: None,
        state_group: event.state_group,
    }
}

/// [`Store::persist_event`] inside a caller's transaction on a `backend` database.
pub async fn persist_event(conn: &mut AnyConnection, backend: Backend, event: &PersistEvent) -> Result<()> {
    persist_events(conn, backend, &[event]).await
}

/// [`Store::persist_events`] inside a caller's transaction: the statements of all the events
/// go to the database together (on SQLite, as one query).
///
/// Rows that are only ever inserted (the events, their edges, transaction ids, relations,
/// push actions and search text) go in one multi-row insert per table for the whole group;
/// then the forward extremities of the whole group ([`push_extremities`]); then, event after
/// event, what depends on order: state, memberships, redactions. The outcome is that of
/// writing the events one by one: an extremity is added unless an event cites it, whenever
/// that event was written in the group. (An outlier citing an earlier event of its group would
/// change that, so events that do not join the forward edge are never grouped with events
/// that do.)
pub async fn persist_events(conn: &mut AnyConnection, backend: Backend, events: &[&PersistEvent]) -> Result<()> {
    let search_texts = search_texts(events);
    batch_of(backend, events, &search_texts).run(conn, backend).await
}

/// The full-text index's form of each event's searchable text.
fn search_texts(events: &[&PersistEvent]) -> Vec<Option<String>> {
    events.iter().map(|event| event.search_text.as_deref().map(crate::search::index_text)).collect()
}

/// The statements of [`persist_events`]: one group, or one per event when some of the events
/// join the forward edge and others do not.
fn batch_of<'a>(backend: Backend, events: &[&'a PersistEvent], search_texts: &'a [Option<String>]) -> Batch<'a> {
    let mut batch = Batch::default();
    if mixed(events) {
        for i in 0..events.len() {
            push_group(&mut batch, backend, &events[i..=i], &search_texts[i..=i]);
        }
    } else {
        push_group(&mut batch, backend, events, search_texts);
    }
    batch
}

/// Whether some of `events` join the forward edge and others do not (such events are never
/// written as one group; see [`persist_events`]).
fn mixed(events: &[&PersistEvent]) -> bool {
    events.windows(2).any(|pair| pair[0].update_extremities != pair[1].update_extremities)
}

/// The statements that write `events` as one group (see [`persist_events`]).
fn push_group<'a>(
    batch: &mut Batch<'a>,
    backend: Backend,
    events: &[&'a PersistEvent],
    search_texts: &'a [Option<String>],
) {
    for event in events {
        push_new_room(batch, event);
    }
    push_inserts(batch, backend, events, search_texts);
    push_extremities(batch, backend, events);
    for event in events {
        push_ordered(batch, backend, event);
    }
}

/// The forward extremities after a group of events that join the forward edge: the events the
/// group cites as prev events stop being extremities, and each event of the group that no
/// other event of the group cites becomes one, unless an event already stored cites it (one
/// that arrived before its parent, possible over federation; the check is part of the insert).
/// The outcome is that of updating the extremities event by event, in two statements for the
/// whole group; what the insert checks in the database is only what was there before the
/// group, so it may run beside the group's own inserts (see [`Batch::into_one_statement`]).
fn push_extremities<'a>(batch: &mut Batch<'a>, backend: Backend, events: &[&'a PersistEvent]) {
    if !events.first().is_some_and(|event| event.update_extremities) {
        return;
    }
    let mut cited: Vec<(&str, &str)> = events
        .iter()
        .flat_map(|event| event.prev_events.iter().map(|prev| (event.room_id.as_str(), prev.as_str())))
        .collect();
    cited.sort_unstable();
    cited.dedup();
    let mut removed = Rows::new("remove forward extremities", backend, REMOVE_EXTREMITIES);
    for (room_id, event_id) in &cited {
        removed.add([Arg::Text(room_id), Arg::Text(event_id)]);
    }
    removed.push_ordered_into(batch);
    let mut added = Rows::new("add forward extremities", backend, ADD_EXTREMITIES);
    for event in events {
        if cited.binary_search(&(event.room_id.as_str(), event.event_id.as_str())).is_err() {
            added.add([Arg::Text(&event.room_id), Arg::Text(&event.event_id)]);
        }
    }
    added.push_ordered_into(batch);
}

/// The room row created with a create event.
fn push_new_room<'a>(batch: &mut Batch<'a>, event: &'a PersistEvent) {
    if let Some(room) = &event.new_room {
        batch.push(
            "insert room",
            "INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public, current_state_group) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
            vec![
                Arg::Text(&event.room_id),
                Arg::Text(&room.room_version),
                Arg::OptText(room.creator.as_deref()),
                Arg::Int(event.origin_server_ts),
                Arg::Int(i64::from(room.is_public)),
            ],
        );
    }
}

/// The insert-only rows of all `events`, one multi-row insert per table.
fn push_inserts<'a>(
    batch: &mut Batch<'a>,
    backend: Backend,
    events: &[&'a PersistEvent],
    search_texts: &'a [Option<String>],
) {
    let mut rows_of_events = Rows::new("insert events", backend, EVENTS);
    let mut edges = Rows::new("insert event edges", backend, EVENT_EDGES);
    let mut auth = Rows::new("insert auth edges", backend, AUTH_EDGES);
    let mut txns = Rows::new("record transaction ids", backend, TXN_IDS);
    let mut relations = Rows::new("record relations", backend, RELATIONS);
    let mut push_actions = Rows::new("insert push actions", backend, PUSH_ACTIONS);
    let mut search = Rows::new("index event text", backend, crate::search::index_rows(backend));
    for (event, search_text) in events.iter().zip(search_texts) {
        rows_of_events.add([
            Arg::Int(event.stream_ordering),
            Arg::Text(&event.event_id),
            Arg::Text(&event.room_id),
            Arg::Text(&event.sender),
            Arg::Text(&event.event_type),
            Arg::OptText(event.state_key.as_deref()),
            Arg::Int(event.depth),
            Arg::Int(event.origin_server_ts),
            Arg::Text(&event.pdu),
            Arg::Int(i64::from(event.outlier)),
            Arg::OptText(event.rejected_reason.as_deref()),
            Arg::Int(i64::from(event.soft_failed)),
            Arg::OptInt(event.state_group),
        ]);
        for prev in &event.prev_events {
            edges.add([Arg::Text(&event.event_id), Arg::Text(prev)]);
        }
        for auth_event in &event.auth_events {
            auth.add([Arg::Text(&event.event_id), Arg::Text(auth_event)]);
        }
        if let Some(txn) = &event.txn {
            txns.add([
                Arg::Text(&txn.user_id),
                Arg::Text(&txn.device_id),
                Arg::Text(&txn.txn_id),
                Arg::Text(&event.event_id),
            ]);
        }
        if let Some(relation) = &event.relation {
            relations.add([
                Arg::Text(&event.event_id),
                Arg::Text(&relation.relates_to_id),
                Arg::Text(&relation.rel_type),
                Arg::Text(&event.room_id),
                Arg::Text(&event.sender),
                Arg::Text(&event.event_type),
                Arg::Int(event.stream_ordering),
            ]);
        }
        for action in &event.push_actions {
            push_actions.add([
                Arg::Text(&action.user_id),
                Arg::Text(&event.room_id),
                Arg::Text(&event.event_id),
                Arg::Int(event.stream_ordering),
                Arg::Text(&action.thread_id),
                Arg::Int(i64::from(action.notify)),
                Arg::Int(i64::from(action.highlight)),
                Arg::Text(&action.actions),
                Arg::Int(event.origin_server_ts),
            ]);
        }
        if let Some(text) = search_text {
            search.add([Arg::Int(event.stream_ordering), Arg::Text(text)]);
        }
    }
    for rows in [rows_of_events, edges, auth, txns, relations, push_actions, search] {
        rows.push_into(batch);
    }
}

/// The statements of `event` whose outcome depends on what was written before them.
fn push_ordered<'a>(batch: &mut Batch<'a>, backend: Backend, event: &'a PersistEvent) {
    for group in &event.new_state_groups {
        batch.push(
            "insert state group",
            "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES ($1, $2, $3, $4)",
            vec![
                Arg::Int(group.id),
                Arg::Text(&event.room_id),
                Arg::OptInt(group.prev_group),
                Arg::Int(group.chain_length),
            ],
        );
        // Snapshots of large rooms hold thousands of entries: they go in multi-row inserts.
        let mut entries = Rows::new("insert state group entries", backend, STATE_GROUP_ENTRIES);
        for (event_type, state_key, event_id) in &group.entries {
            entries.add([Arg::Int(group.id), Arg::Text(event_type), Arg::Text(state_key), Arg::Text(event_id)]);
        }
        entries.push_ordered_into(batch);
    }

    for change in &event.current_state {
        match &change.event_id {
            Some(event_id) => batch.push(
                "update current state",
                "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
                vec![
                    Arg::Text(&event.room_id),
                    Arg::Text(&change.event_type),
                    Arg::Text(&change.state_key),
                    Arg::Text(event_id),
                ],
            ),
            None => batch.push(
                "remove current state",
                "DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
                vec![Arg::Text(&event.room_id), Arg::Text(&change.event_type), Arg::Text(&change.state_key)],
            ),
        }
    }
    if let Some(group) = event.current_state_group {
        batch.push(
            "update current state group",
            "UPDATE rooms SET current_state_group = $1 WHERE room_id = $2",
            vec![Arg::Int(group), Arg::Text(&event.room_id)],
        );
    }

    for change in &event.memberships {
        batch.push(
            "update membership",
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, forgotten) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             membership = excluded.membership, event_id = excluded.event_id, \
             stream_ordering = excluded.stream_ordering, forgotten = 0",
            vec![
                Arg::Text(&event.room_id),
                Arg::Text(&change.user_id),
                Arg::Text(&change.membership),
                Arg::Text(&change.event_id),
                Arg::Int(event.stream_ordering),
            ],
        );
    }

    if let Some(redaction) = &event.redaction {
        batch.push(
            "redact event",
            "UPDATE events SET pdu = $1, redacted_by = $2 WHERE event_id = $3",
            vec![Arg::Text(&redaction.redacted_pdu), Arg::Text(&event.event_id), Arg::Text(&redaction.target_event_id)],
        );
        // Redaction strips `m.relates_to`: the redacted event relates to nothing any more.
        batch.push(
            "remove redacted relation",
            "DELETE FROM event_relations WHERE event_id = $1",
            vec![Arg::Text(&redaction.target_event_id)],
        );
        // A redacted event no longer notifies anyone.
        batch.push(
            "forget push actions of redacted event",
            "DELETE FROM event_push_actions \
             WHERE stream_ordering = (SELECT stream_ordering FROM events WHERE event_id = $1)",
            vec![Arg::Text(&redaction.target_event_id)],
        );
        batch.push(
            "remove redacted event from the search index",
            crate::search::unindex_statement(backend),
            vec![Arg::Text(&redaction.target_event_id)],
        );
    }
}

/// The most parameters one combined SQLite statement carries (SQLite allows 32766).
const SQLITE_BATCH_PARAMS: usize = 4000;

/// How the rows of one table are written, on each backend.
///
/// A single row is a `VALUES` row of bound values. Two or more go into one JSON array bound as
/// `$1`, which PostgreSQL's `json_to_recordset` ([`RowsSql::json`]) or SQLite's `json_each`
/// ([`sqlite_json_sql`]) turns back into rows. So there are two texts for each table whatever
/// the number of rows, and each connection prepares each of them once:
/// - with a text per row count, PostgreSQL parsed and planned each new group size afresh on
///   each connection, and the ten-user `send` spent much of a short run doing that;
/// - on SQLite, where a group's statements run as one text from `BEGIN` to `COMMIT`, each
///   group shape and each room size (the push outcomes are a row per member) was a text of
///   its own, and the writer kept up to a hundred of them prepared.
///
/// (A single row stays a `VALUES` row because its text never varies, and binding it directly
/// is cheaper than going through JSON: on PostgreSQL a one-user `send` was 8% slower with
/// JSON.)
pub(crate) struct RowsSql {
    /// The statement's text up to its rows (`INSERT INTO table (columns) VALUES`).
    pub head: &'static str,
    /// One row's values, numbered from `$1`.
    pub row: &'static str,
    /// What follows the rows (`ON CONFLICT …`, the rest of the statement), or nothing.
    pub tail: &'static str,
    /// PostgreSQL, two or more rows: the whole statement, reading its rows from
    /// `json_to_recordset($1::json) AS r(name type, …)`, one name for each placeholder of
    /// `row`, in the same order.
    pub json: &'static str,
}

const EVENTS: RowsSql = RowsSql {
    head: "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
           origin_server_ts, pdu, outlier, rejected_reason, soft_failed, redacted_by, state_group) VALUES",
    row: "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, $13)",
    tail: "",
    json: "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
           origin_server_ts, pdu, outlier, rejected_reason, soft_failed, state_group) \
           SELECT * FROM json_to_recordset($1::json) AS r(stream_ordering bigint, event_id text, room_id text, \
           sender text, event_type text, state_key text, depth bigint, origin_server_ts bigint, pdu text, \
           outlier bigint, rejected_reason text, soft_failed bigint, state_group bigint)",
};

const EVENT_EDGES: RowsSql = RowsSql {
    head: "INSERT INTO event_edges (event_id, prev_event_id) VALUES",
    row: "($1, $2)",
    tail: "ON CONFLICT DO NOTHING",
    json: "INSERT INTO event_edges (event_id, prev_event_id) \
           SELECT * FROM json_to_recordset($1::json) AS r(event_id text, prev_event_id text) ON CONFLICT DO NOTHING",
};

const AUTH_EDGES: RowsSql = RowsSql {
    head: "INSERT INTO event_auth (event_id, auth_event_id) VALUES",
    row: "($1, $2)",
    tail: "ON CONFLICT DO NOTHING",
    json: "INSERT INTO event_auth (event_id, auth_event_id) \
           SELECT * FROM json_to_recordset($1::json) AS r(event_id text, auth_event_id text) ON CONFLICT DO NOTHING",
};

/// A transaction already recorded keeps its first event: the room service answers retries
/// with that one, and a write that races a retry must not fail the events grouped with it.
const TXN_IDS: RowsSql = RowsSql {
    head: "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) VALUES",
    row: "($1, $2, $3, $4)",
    tail: "ON CONFLICT DO NOTHING",
    json: "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) \
           SELECT * FROM json_to_recordset($1::json) AS r(user_id text, device_id text, txn_id text, event_id text) \
           ON CONFLICT DO NOTHING",
};

const RELATIONS: RowsSql = RowsSql {
    head: "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, sender, event_type, \
           stream_ordering) VALUES",
    row: "($1, $2, $3, $4, $5, $6, $7)",
    tail: "ON CONFLICT DO NOTHING",
    json: "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, sender, event_type, \
           stream_ordering) \
           SELECT * FROM json_to_recordset($1::json) AS r(event_id text, relates_to_id text, rel_type text, \
           room_id text, sender text, event_type text, stream_ordering bigint) ON CONFLICT DO NOTHING",
};

const PUSH_ACTIONS: RowsSql = RowsSql {
    head: "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, thread_id, notify, \
           highlight, actions, ts) VALUES",
    row: "($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    tail: "ON CONFLICT DO NOTHING",
    json: "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, thread_id, notify, \
           highlight, actions, ts) \
           SELECT * FROM json_to_recordset($1::json) AS r(user_id text, room_id text, event_id text, \
           stream_ordering bigint, thread_id text, notify bigint, highlight bigint, actions text, ts bigint) \
           ON CONFLICT DO NOTHING",
};

const STATE_GROUP_ENTRIES: RowsSql = RowsSql {
    head: "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES",
    row: "($1, $2, $3, $4)",
    tail: "",
    json: "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) \
           SELECT * FROM json_to_recordset($1::json) AS r(state_group bigint, event_type text, state_key text, \
           event_id text)",
};

const REMOVE_EXTREMITIES: RowsSql = RowsSql {
    head: "DELETE FROM forward_extremities WHERE (room_id, event_id) IN (VALUES",
    row: "($1, $2)",
    tail: ")",
    json: "DELETE FROM forward_extremities WHERE (room_id, event_id) IN \
           (SELECT * FROM json_to_recordset($1::json) AS r(room_id text, event_id text))",
};

/// The check reads only what was stored before the statement (see [`push_extremities`]).
const ADD_EXTREMITIES: RowsSql = RowsSql {
    head: "INSERT INTO forward_extremities (room_id, event_id) SELECT v.column1, v.column2 FROM (VALUES",
    row: "($1, $2)",
    tail: ") AS v WHERE NOT EXISTS (SELECT 1 FROM event_edges WHERE prev_event_id = v.column2) \
           ON CONFLICT DO NOTHING",
    json: "INSERT INTO forward_extremities (room_id, event_id) SELECT r.room_id, r.event_id \
           FROM json_to_recordset($1::json) AS r(room_id text, event_id text) \
           WHERE NOT EXISTS (SELECT 1 FROM event_edges WHERE prev_event_id = r.event_id) ON CONFLICT DO NOTHING",
};

/// Rows of one table, written as [`RowsSql`] says.
struct Rows<'a> {
    action: &'static str,
    backend: Backend,
    sql: RowsSql,
    /// Values a row.
    width: usize,
    args: Vec<Arg<'a>>,
}

impl<'a> Rows<'a> {
    fn new(action: &'static str, backend: Backend, sql: RowsSql) -> Self {
        let width = sql.row.matches('$').count();
        Self { action, backend, sql, width, args: Vec::new() }
    }

    fn add<const N: usize>(&mut self, values: [Arg<'a>; N]) {
        debug_assert_eq!(N, self.width, "{}: one value per placeholder", self.action);
        self.args.extend(values);
    }

    /// Add the rows as plain inserts (see [`Statement::insert`]).
    fn push_into(self, batch: &mut Batch<'a>) {
        self.push_statements(batch, true);
    }

    /// Add the rows as statements whose outcome depends on what ran before them.
    fn push_ordered_into(self, batch: &mut Batch<'a>) {
        self.push_statements(batch, false);
    }

    fn push_statements(self, batch: &mut Batch<'a>, insert: bool) {
        if self.args.is_empty() {
            return;
        }
        if self.args.len() > self.width {
            match self.backend {
                Backend::Postgres => {
                    let rows = json_rows(&record_names(self.sql.json), &self.args);
                    batch.push_statement(self.action, self.sql.json, vec![Arg::Owned(rows)], insert);
                }
                Backend::Sqlite => {
                    let rows = json_arrays(self.width, &self.args);
                    batch.push_statement(self.action, sqlite_json_sql(&self.sql), vec![Arg::Owned(rows)], insert);
                }
            }
            batch.mark_rows(RowsOf { head: self.sql.head, width: self.width, json: true });
            return;
        }
        // One row.
        let mut sql = format!("{} ", self.sql.head);
        renumber(self.sql.row, 0, &mut sql);
        if !self.sql.tail.is_empty() {
            sql.push(' ');
            sql.push_str(self.sql.tail);
        }
        batch.push_statement(self.action, sql, self.args, insert);
        batch.mark_rows(RowsOf { head: self.sql.head, width: self.width, json: false });
    }
}

/// SQLite, two or more rows: `sql` reading its rows from `json_each($1)`, where `$1` is a JSON
/// array of one array of values per row ([`json_arrays`]). The `VALUES` list that ends
/// `sql.head` becomes a `SELECT` of the row's expressions, each `$n` read as `value->>(n-1)`
/// (a JSON string comes out as text, a number as an integer, `null` as NULL), named
/// `column1`, `column2`… as a `VALUES` list's columns are. An `INSERT … SELECT` gets
/// `WHERE true` before the tail, which SQLite needs to parse an `ON CONFLICT` after a `SELECT`.
fn sqlite_json_sql(sql: &RowsSql) -> String {
    let head = sql.head.strip_suffix("VALUES").unwrap_or(sql.head);
    let row = sql.row.trim().trim_start_matches('(').trim_end_matches(')');
    let mut select = String::from("SELECT ");
    for (i, value) in row.split(',').enumerate() {
        if i > 0 {
            select.push_str(", ");
        }
        let value = value.trim();
        match value.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => select.push_str(&format!("value->>{}", n - 1)),
            None => select.push_str(value),
        }
        select.push_str(&format!(" AS column{}", i + 1));
    }
    select.push_str(" FROM json_each($1)");
    if !head.trim_end().ends_with('(') {
        select.push_str(" WHERE true");
    }
    format!("{head}{select} {}", sql.tail)
}

/// The tables a group of messages writes, in the order [`push_group`] writes them: the
/// insert-only rows ([`push_inserts`]), then the forward extremities ([`push_extremities`]).
fn message_rows() -> [RowsSql; 9] {
    [
        EVENTS,
        EVENT_EDGES,
        AUTH_EDGES,
        TXN_IDS,
        RELATIONS,
        PUSH_ACTIONS,
        crate::search::index_rows(Backend::Sqlite),
        REMOVE_EXTREMITIES,
        ADD_EXTREMITIES,
    ]
}

/// SQLite: the temporary view `message_writes` of the writer connection and the trigger that
/// writes a group of messages when a row is inserted into it ([`Batch::into_message_writes`]).
/// Column `tN` is the JSON array of rows ([`json_arrays`]) of the `N`th table of
/// [`message_rows`]; the trigger runs that table's [`sqlite_json_sql`] statement on it, so
/// it writes exactly what the batch's own statements would.
pub(crate) fn sqlite_message_writes() -> String {
    let rows = message_rows();
    let columns: Vec<String> = (0..rows.len()).map(|i| format!("t{i}")).collect();
    let mut sql = format!(
        "CREATE TEMP VIEW message_writes ({}) AS SELECT {} WHERE 0;\n\
         CREATE TEMP TRIGGER message_writes_insert INSTEAD OF INSERT ON message_writes BEGIN\n",
        columns.join(", "),
        vec!["NULL"; rows.len()].join(", ")
    );
    for (rows, column) in rows.iter().zip(&columns) {
        sql.push_str(&sqlite_json_sql(rows).replace("json_each($1)", &format!("json_each(NEW.{column})")));
        sql.push_str(";\n");
    }
    sql.push_str("END;");
    sql
}

/// `args`, `width` values a row, as a JSON array of one array per row.
fn json_arrays(width: usize, args: &[Arg<'_>]) -> String {
    let rows: Vec<&[Arg<'_>]> = args.chunks(width.max(1)).collect();
    // Strings and integers always serialise.
    serde_json::to_string(&rows).unwrap_or_default()
}

/// The names of the record that `json_to_recordset($1::json) AS r(name type, …)` in `sql`
/// declares, in order.
fn record_names(sql: &'static str) -> Vec<&'static str> {
    let Some((_, record)) = sql.split_once("AS r(") else { return Vec::new() };
    let record = record.split_once(')').map_or(record, |(inside, _)| inside);
    record.split(',').filter_map(|column| column.split_whitespace().next()).collect()
}

/// `args`, `names.len()` values a row, as a JSON array of one object per row keyed by `names`.
fn json_rows(names: &[&str], args: &[Arg<'_>]) -> String {
    // Strings and integers always serialise; an empty text would fail the statement, not
    // write nothing.
    serde_json::to_string(&JsonRows { names, args }).unwrap_or_default()
}

/// See [`json_rows`].
struct JsonRows<'s, 'a> {
    names: &'s [&'s str],
    args: &'s [Arg<'a>],
}

impl serde::Serialize for JsonRows<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let width = self.names.len().max(1);
        let mut rows = serializer.serialize_seq(Some(self.args.len() / width))?;
        for row in self.args.chunks(width) {
            rows.serialize_element(&JsonRow { names: self.names, values: row })?;
        }
        rows.end()
    }
}

/// One row of [`JsonRows`]: an object of `names` and `values`.
struct JsonRow<'s, 'a> {
    names: &'s [&'s str],
    values: &'s [Arg<'a>],
}

impl serde::Serialize for JsonRow<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut row = serializer.serialize_map(Some(self.values.len()))?;
        for (name, value) in self.names.iter().zip(self.values) {
            row.serialize_entry(name, value)?;
        }
        row.end()
    }
}

impl serde::Serialize for Arg<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Arg::Text(text) => serializer.serialize_str(text),
            Arg::OptText(text) => serde::Serialize::serialize(text, serializer),
            Arg::Int(n) => serializer.serialize_i64(*n),
            Arg::OptInt(n) => serde::Serialize::serialize(n, serializer),
            Arg::Owned(text) => serializer.serialize_str(text),
        }
    }
}

/// A value bound to a batched statement.
#[derive(Clone, Debug)]
enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    /// A text made for the statement (the JSON rows of [`RowsSql::json`]).
    Owned(String),
}

/// One statement of a batch: what it does (for errors), its SQL with `$1..$n`, and its values.
struct Statement<'a> {
    action: Cow<'static, str>,
    sql: Cow<'static, str>,
    args: Vec<Arg<'a>>,
    /// A plain insert of new rows, whose outcome does not depend on the statements around it
    /// (so it may run in one statement with its neighbours of the same kind).
    insert: bool,
    /// The table rows this statement writes, when it is one of [`Rows`].
    rows: Option<RowsOf>,
}

/// What a statement of [`Rows`] writes: which table's rows ([`RowsSql::head`]), how many values
/// a row has, and whether its one value is already their JSON array (SQLite, two or more rows)
/// rather than a single row's values.
#[derive(Clone, Copy)]
struct RowsOf {
    head: &'static str,
    width: usize,
    json: bool,
}

/// The statements of one write, none of which returns rows.
///
/// The profile of `send` showed most of the server's time going into handing each statement
/// to the database and waking the request's task again afterwards, not into running it. So
/// statements are sent together:
/// - SQLite runs several `;`-separated statements of one query in turn, binding bare `?`
///   parameters to the values of the whole query in order. There a batch is sent as one query
///   with its placeholders made positional ([`positional`]), in chunks of at most
///   [`SQLITE_BATCH_PARAMS`] values; [`Batch::run_alone`] also puts the transaction's `BEGIN`
///   and `COMMIT` into it.
/// - PostgreSQL accepts only one statement per query with bound values. There consecutive
///   plain inserts (the multi-row inserts of [`Rows`]) become one statement, each of them but
///   the last a data-modifying `WITH` clause ([`postgres_statements`]); the statements whose
///   outcome depends on what came before them run one after another.
#[derive(Default)]
struct Batch<'a> {
    statements: Vec<Statement<'a>>,
}

impl<'a> Batch<'a> {
    fn push(&mut self, action: &'static str, sql: impl Into<Cow<'static, str>>, args: Vec<Arg<'a>>) {
        self.push_statement(action, sql, args, false);
    }

    /// Add a statement, a plain insert of new rows or not (see [`Statement::insert`]).
    fn push_statement(
        &mut self,
        action: &'static str,
        sql: impl Into<Cow<'static, str>>,
        args: Vec<Arg<'a>>,
        insert: bool,
    ) {
        self.statements.push(Statement { action: action.into(), sql: sql.into(), args, insert, rows: None });
    }

    /// Record what the statement added last writes (see [`Statement::rows`]).
    fn mark_rows(&mut self, rows: RowsOf) {
        if let Some(statement) = self.statements.last_mut() {
            statement.rows = Some(rows);
        }
    }

    /// SQLite: the batch of a group of messages as one insert into the writer connection's
    /// `message_writes` view, whose trigger runs the same statements in the same order with the
    /// same rows ([`sqlite_message_writes`]); else the batch back.
    ///
    /// That is the batch when it is nothing but rows of the tables of [`message_rows`], each
    /// table at most once and in that order: what a group of messages writes (events, edges,
    /// transaction ids, relations, push actions, search text, extremities), and nothing that
    /// creates a room, changes state or membership, or redacts.
    ///
    /// One statement outside `BEGIN` and `COMMIT` is a transaction of its own, its triggers
    /// included, and sqlx's SQLite thread hands back one result instead of one per statement:
    /// each result woke the request's runtime thread, which found the write unfinished and went
    /// back to sleep, five or six times a send.
    fn into_message_writes(self) -> std::result::Result<Statement<'a>, Self> {
        let heads = message_rows().map(|rows| rows.head);
        let mut slots: Vec<(usize, RowsOf)> = Vec::with_capacity(self.statements.len());
        for statement in &self.statements {
            let slot = statement.rows.and_then(|rows| Some((heads.iter().position(|head| *head == rows.head)?, rows)));
            match slot {
                Some(slot) if slots.last().is_none_or(|last| last.0 < slot.0) => slots.push(slot),
                _ => return Err(self),
            }
        }
        if slots.is_empty() {
            return Err(self);
        }
        let mut values = vec![String::from("[]"); heads.len()];
        let mut actions = Vec::with_capacity(slots.len());
        for (mut statement, (slot, rows)) in self.statements.into_iter().zip(slots) {
            values[slot] = match (rows.json, statement.args.as_mut_slice()) {
                (true, [Arg::Owned(json)]) => std::mem::take(json),
                (_, args) => json_arrays(rows.width, args),
            };
            actions.push(statement.action);
        }
        let placeholders = vec!["?"; values.len()].join(", ");
        Ok(Statement {
            action: actions.join(", ").into(),
            sql: format!("INSERT INTO message_writes VALUES ({placeholders})").into(),
            args: values.into_iter().map(Arg::Owned).collect(),
            insert: true,
            rows: None,
        })
    }

    /// PostgreSQL: the whole write of `events` as one statement of data-modifying `WITH`
    /// clauses, when that gives the same outcome as the statements one after another; else the
    /// batch back.
    ///
    /// Every clause of one statement runs against the same snapshot, so none may depend on what
    /// another writes, and no two may write the same row. That holds for the write of a single
    /// event that neither creates its room (the room's row would be inserted and updated) nor
    /// redacts, and for a group of events that change no state (messages): the plain inserts
    /// add new rows; the forward extremities lose the cited prev events and gain the group's
    /// uncited events, rows apart, with a check that reads only what was stored before
    /// ([`push_extremities`]); a single event's state group, changes of current state (one per
    /// key) and membership change are rows no other clause writes.
    fn into_one_statement(self, events: &[&PersistEvent]) -> std::result::Result<Statement<'a>, Self> {
        let single = matches!(events, [event] if event.new_room.is_none() && event.redaction.is_none());
        let messages = events.iter().all(|event| {
            event.new_room.is_none()
                && event.redaction.is_none()
                && event.new_state_groups.is_empty()
                && event.current_state.is_empty()
                && event.memberships.is_empty()
                && event.current_state_group.is_none()
        });
        let values: usize = self.statements.iter().map(|statement| statement.args.len()).sum();
        if !(single || messages && !mixed(events)) || values > POSTGRES_BATCH_PARAMS || self.statements.is_empty() {
            return Err(self);
        }
        combined(self.statements).ok_or_else(Batch::default)
    }

    /// Run the statements in a transaction the caller holds open on `conn`.
    async fn run(self, conn: &mut AnyConnection, backend: Backend) -> Result<()> {
        match backend {
            Backend::Postgres => {
                for statement in postgres_statements(self.statements) {
                    bind_all(sqlx::query(sqlx::AssertSqlSafe(statement.sql)), statement.args)
                        .execute(&mut *conn)
                        .await
                        .context(&statement.action)?;
                }
                Ok(())
            }
            Backend::Sqlite => self.run_sqlite(conn, false).await,
        }
    }

    /// SQLite only: run the statements as a transaction of their own on `conn`, which has none
    /// open, with `BEGIN IMMEDIATE` at the start of the first query and `COMMIT` at the end of
    /// the last: for the usual write of one query, one hand-off to SQLite's connection thread
    /// instead of three. When it fails, a transaction may be left open on `conn` for the caller
    /// to roll back.
    async fn run_alone(self, conn: &mut AnyConnection) -> Result<()> {
        self.run_sqlite(conn, true).await
    }

    async fn run_sqlite(self, conn: &mut AnyConnection, alone: bool) -> Result<()> {
        let chunks = sqlite_chunks(&self.statements);
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut sql = String::new();
            if alone && i == 0 {
                sql.push_str("BEGIN IMMEDIATE;\n");
            }
            let mut args = Vec::new();
            for statement in chunk {
                positional(&statement.sql, &statement.args, &mut sql, &mut args);
                sql.push_str(";\n");
            }
            if alone && i == last {
                sql.push_str("COMMIT;\n");
            }
            let result = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(&mut *conn).await;
            if let Err(error) = result {
                let mut actions: Vec<&str> = chunk.iter().map(|statement| &*statement.action).collect();
                if alone && i == last {
                    actions.push("commit");
                }
                return Err(error).context(&actions.join(", "));
            }
        }
        Ok(())
    }
}

/// The most values one combined PostgreSQL statement carries (PostgreSQL allows 65535).
const POSTGRES_BATCH_PARAMS: usize = 8000;

/// `statements` with each run of consecutive plain inserts (up to [`POSTGRES_BATCH_PARAMS`]
/// values) made into one statement: `WITH s1 AS (insert), s2 AS (insert) insert`.
/// PostgreSQL runs every data-modifying `WITH` clause exactly once, whether or not the rest of
/// the statement reads it, and all of them against the same snapshot: that is why only plain
/// inserts of new rows, which read nothing written by the others, are combined.
fn postgres_statements<'a>(statements: Vec<Statement<'a>>) -> Vec<Statement<'a>> {
    let mut out = Vec::with_capacity(statements.len());
    let mut run = Vec::new();
    for statement in statements {
        let fits = run.iter().map(|s: &Statement<'a>| s.args.len()).sum::<usize>() + statement.args.len()
            <= POSTGRES_BATCH_PARAMS;
        if !statement.insert || !fits {
            out.extend(combined(std::mem::take(&mut run)));
        }
        if statement.insert {
            run.push(statement);
        } else {
            out.push(statement);
        }
    }
    out.extend(combined(run));
    out
}

/// `run` as one statement (see [`postgres_statements`]), `None` when it is empty.
fn combined<'a>(mut run: Vec<Statement<'a>>) -> Option<Statement<'a>> {
    if run.len() <= 1 {
        return run.pop();
    }
    let n = run.len();
    let (mut sql, mut args) = (String::from("WITH "), Vec::new());
    let mut actions: Vec<Cow<'static, str>> = Vec::with_capacity(n);
    for (i, statement) in run.into_iter().enumerate() {
        if i + 1 < n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("s{i} AS ("));
            renumber(&statement.sql, args.len(), &mut sql);
            sql.push_str(")\n");
        } else {
            renumber(&statement.sql, args.len(), &mut sql);
        }
        args.extend(statement.args);
        actions.push(statement.action);
    }
    Some(Statement { action: actions.join(", ").into(), sql: sql.into(), args, insert: true, rows: None })
}

/// Consecutive runs of statements with at most [`SQLITE_BATCH_PARAMS`] values together (a
/// single larger statement makes a run of its own).
fn sqlite_chunks<'s, 'a>(statements: &'s [Statement<'a>]) -> Vec<&'s [Statement<'a>]> {
    let mut chunks = Vec::new();
    let (mut start, mut params) = (0, 0);
    for (i, statement) in statements.iter().enumerate() {
        if i > start && params + statement.args.len() > SQLITE_BATCH_PARAMS {
            chunks.push(&statements[start..i]);
            (start, params) = (i, 0);
        }
        params += statement.args.len();
    }
    if start < statements.len() {
        chunks.push(&statements[start..]);
    }
    chunks
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: Vec<Arg<'_>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(value) => query.bind(value.to_owned()),
            Arg::OptText(value) => query.bind(value.map(str::to_owned)),
            Arg::Int(value) => query.bind(value),
            Arg::OptInt(value) => query.bind(value),
            Arg::Owned(value) => query.bind(value),
        };
    }
    query
}

/// Appends `sql` to `out` with every placeholder `$N` replaced by a bare `?`, and to `out_args`
/// the value each `?` takes, in order (a value used twice is bound twice).
///
/// SQLite keeps a statement's named parameters (`$N` is one) in a list that
/// `sqlite3_bind_parameter_name` walks from the start for every parameter it is asked
/// about, and sqlx asks about each one while binding: binding a statement of n named values
/// costs n²/2 steps (the push outcomes of a message in a room of ten are 90 values, in a room
/// of a hundred 900). Bare `?` parameters are not in that list; with them, a group write in
/// a room of ten took 0.27 ms instead of 0.36 ms.
fn positional<'a>(sql: &str, args: &[Arg<'a>], out: &mut String, out_args: &mut Vec<Arg<'a>>) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let Some(arg) = rest[at + 1..at + 1 + digits].parse::<usize>().ok().and_then(|n| args.get(n.wrapping_sub(1)))
        else {
            out.push_str(&rest[..at + 1 + digits]);
            rest = &rest[at + 1 + digits..];
            continue;
        };
        out.push_str(&rest[..at]);
        out.push('?');
        out_args.push(arg.clone());
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
}

/// Appends `sql` to `out` with every placeholder `$N` shifted to `$(N + offset)`. The SQL of
/// this module has no `$` other than in placeholders (values are always bound).
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records_name_every_placeholder() {
        let all = [
            ("events", EVENTS),
            ("edges", EVENT_EDGES),
            ("auth", AUTH_EDGES),
            ("txns", TXN_IDS),
            ("relations", RELATIONS),
            ("push actions", PUSH_ACTIONS),
            ("state group entries", STATE_GROUP_ENTRIES),
            ("remove extremities", REMOVE_EXTREMITIES),
            ("add extremities", ADD_EXTREMITIES),
            ("search", crate::search::index_rows(Backend::Sqlite)),
            ("search", crate::search::index_rows(Backend::Postgres)),
        ];
        for (name, sql) in all {
            let names = record_names(sql.json);
            assert_eq!(names.len(), sql.row.matches('$').count(), "{name}: {names:?}");
            assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')), "{name}: {names:?}");
            assert_eq!(sql.json.matches('$').count(), 1, "{name}: all rows are one value");
        }
        assert_eq!(record_names(PUSH_ACTIONS.json)[3], "stream_ordering");
    }

    #[test]
    fn rows_become_json_objects() {
        let args = [
            Arg::Text("a\"b\\c\n"),
            Arg::OptText(None),
            Arg::Int(-7),
            Arg::Text("é"),
            Arg::OptText(Some("x")),
            Arg::OptInt(Some(i64::MAX)),
        ];
        let json = json_rows(&["t", "o", "n"], &args);
        assert_eq!(json, r#"[{"t":"a\"b\\c\n","o":null,"n":-7},{"t":"é","o":"x","n":9223372036854775807}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["t"], "a\"b\\c\n");
    }

    #[test]
    fn rows_are_one_text_whatever_their_number() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let texts = |n: usize| {
                let mut batch = Batch::default();
                let mut rows = Rows::new("edges", backend, EVENT_EDGES);
                for _ in 0..n {
                    rows.add([Arg::Text("$e"), Arg::Text("$p")]);
                }
                rows.push_into(&mut batch);
                batch.statements.iter().map(|s| (s.sql.to_string(), s.args.len())).collect::<Vec<_>>()
            };
            assert_eq!(texts(2), texts(700), "{backend:?}: one text and one value for 2 rows and for 700");
            assert_eq!(texts(2).len(), 1);
            assert_eq!(texts(2)[0].1, 1);
            assert_eq!(texts(1), [(format!("{} {}", EVENT_EDGES.head, "($1, $2) ON CONFLICT DO NOTHING"), 2)]);
            assert!(texts(0).is_empty());
        }
    }

    #[test]
    fn sqlite_rows_come_from_json_arrays() {
        assert_eq!(
            sqlite_json_sql(&EVENT_EDGES),
            "INSERT INTO event_edges (event_id, prev_event_id) SELECT value->>0 AS column1, value->>1 AS column2 \
             FROM json_each($1) WHERE true ON CONFLICT DO NOTHING"
        );
        // A constant of the row stays; a `VALUES` list inside parentheses gets no `WHERE`.
        assert!(sqlite_json_sql(&EVENTS).contains("value->>11 AS column12, NULL AS column13, value->>12 AS column14"));
        assert_eq!(
            sqlite_json_sql(&REMOVE_EXTREMITIES),
            "DELETE FROM forward_extremities WHERE (room_id, event_id) IN \
             (SELECT value->>0 AS column1, value->>1 AS column2 FROM json_each($1) )"
        );
        assert!(sqlite_json_sql(&ADD_EXTREMITIES).contains(
            "FROM (SELECT value->>0 AS column1, value->>1 AS column2 FROM json_each($1) ) AS v WHERE NOT EXISTS"
        ));
        let args = [Arg::Text("a\"b"), Arg::OptText(None), Arg::Int(-7), Arg::OptInt(Some(i64::MAX))];
        assert_eq!(json_arrays(2, &args), r#"[["a\"b",null],[-7,9223372036854775807]]"#);
    }

    #[test]
    fn placeholders_are_shifted() {
        let mut out = String::new();
        renumber("INSERT INTO t VALUES ($1, $2), ($1, $10)", 5, &mut out);
        assert_eq!(out, "INSERT INTO t VALUES ($6, $7), ($6, $15)");
        out.clear();
        renumber("SELECT 1 WHERE a = $1", 0, &mut out);
        assert_eq!(out, "SELECT 1 WHERE a = $1");
    }

    #[test]
    fn placeholders_become_positional() {
        let (mut out, mut args) = (String::new(), Vec::new());
        let values = [Arg::Int(1), Arg::Text("b"), Arg::Int(3)];
        positional("INSERT INTO t VALUES ($1, $2), ($3, $1)", &values, &mut out, &mut args);
        positional("; SELECT $2", &values, &mut out, &mut args);
        assert_eq!(out, "INSERT INTO t VALUES (?, ?), (?, ?); SELECT ?");
        let bound: Vec<String> = args.iter().map(|arg| format!("{arg:?}")).collect();
        assert_eq!(bound, ["Int(1)", "Text(\"b\")", "Int(3)", "Int(1)", "Text(\"b\")"]);
    }

    fn message(stream: i64) -> PersistEvent {
        PersistEvent {
            stream_ordering: stream,
            event_id: format!("$e{stream}"),
            room_id: "!r:test".to_owned(),
            event_type: "m.room.message".to_owned(),
            pdu: "{}".to_owned(),
            prev_events: vec![format!("$e{}", stream - 1)],
            auth_events: vec!["$create".to_owned()],
            update_extremities: true,
            txn: Some(TxnKey {
                user_id: "@a:test".to_owned(),
                device_id: "D".to_owned(),
                txn_id: format!("t{stream}"),
            }),
            search_text: Some(format!("text {stream}")),
            ..PersistEvent::default()
        }
    }

    #[test]
    fn message_groups_become_one_insert_into_the_view() {
        let (one, two) = (message(1), message(2));
        let texts = search_texts(&[&one, &two]);
        let statement = batch_of(Backend::Sqlite, &[&one, &two], &texts)
            .into_message_writes()
            .unwrap_or_else(|_| panic!("a group of messages is one statement"));
        assert_eq!(statement.sql, "INSERT INTO message_writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let values: Vec<String> = statement
            .args
            .iter()
            .map(|arg| if let Arg::Owned(json) = arg { json.clone() } else { String::new() })
            .collect();
        assert_eq!(values[1], r#"[["$e1","$e0"],["$e2","$e1"]]"#, "edges");
        assert_eq!(values[3], r#"[["@a:test","D","t1","$e1"],["@a:test","D","t2","$e2"]]"#, "transaction ids");
        assert_eq!(values[4], "[]", "no relations");
        assert_eq!(values[6], r#"[[1,"text 1"],[2,"text 2"]]"#, "search text");
        assert_eq!(values[7], r#"[["!r:test","$e0"],["!r:test","$e1"]]"#, "cited extremities go");
        assert_eq!(values[8], r#"[["!r:test","$e2"]]"#, "the uncited one is added");

        // One event's rows are single-row statements; they go in the same way.
        let texts = search_texts(&[&one]);
        let statement = batch_of(Backend::Sqlite, &[&one], &texts)
            .into_message_writes()
            .unwrap_or_else(|_| panic!("one message is one statement"));
        assert!(matches!(&statement.args[0], Arg::Owned(json) if json.starts_with("[[1,\"$e1\",\"!r:test\"")));

        // Anything that changes state, creates a room or redacts keeps its own statements.
        let state = PersistEvent { current_state_group: Some(3), ..message(3) };
        let texts = search_texts(&[&state]);
        assert!(batch_of(Backend::Sqlite, &[&state], &texts).into_message_writes().is_err());
        let redaction = PersistEvent {
            redaction: Some(Redaction { target_event_id: "$e1".to_owned(), redacted_pdu: "{}".to_owned() }),
            ..message(4)
        };
        let texts = search_texts(&[&redaction]);
        assert!(batch_of(Backend::Sqlite, &[&redaction], &texts).into_message_writes().is_err());
        // So do groups of outliers and other events, whose tables repeat.
        let outlier = PersistEvent { update_extremities: false, ..message(5) };
        let texts = search_texts(&[&one, &outlier]);
        assert!(batch_of(Backend::Sqlite, &[&one, &outlier], &texts).into_message_writes().is_err());
    }

    #[test]
    fn the_message_trigger_runs_each_tables_statement_on_its_column() {
        let sql = sqlite_message_writes();
        assert!(!sql.contains("$1"), "{sql}");
        for (i, rows) in message_rows().iter().enumerate() {
            let statement = sqlite_json_sql(rows).replace("json_each($1)", &format!("json_each(NEW.t{i})"));
            assert!(sql.contains(&statement), "table {i}: {statement}");
        }
    }

    /// A statement that is not a plain insert, with `n` values.
    fn ordered_statement(action: &'static str, sql: &'static str, n: usize) -> Statement<'static> {
        Statement { action: action.into(), sql: sql.into(), args: vec![Arg::Int(0); n], insert: false, rows: None }
    }

    #[test]
    fn chunks_respect_the_parameter_limit() {
        let statement = |n: usize| ordered_statement("t", "x", n);
        let statements = vec![statement(3000), statement(900), statement(200), statement(5000), statement(1)];
        let sizes: Vec<usize> = sqlite_chunks(&statements).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [2, 1, 1, 1], "3000+900 fit, +200 does not; 5000 stands alone");
        assert!(sqlite_chunks(&[]).is_empty());
    }

    #[test]
    fn postgres_combines_consecutive_inserts() {
        let insert = |table: &'static str, n: usize| Statement {
            action: table.into(),
            sql: format!(
                "INSERT INTO {table} VALUES ({})",
                (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            )
            .into(),
            args: (0..n).map(|i| Arg::Int(i64::try_from(i).unwrap_or_default())).collect(),
            insert: true,
            rows: None,
        };
        let ordered = |n: usize| ordered_statement("ordered", "DELETE FROM x WHERE a = $1", n);
        let statements = vec![insert("a", 2), insert("b", 1), insert("c", 2), ordered(1), insert("d", 1), ordered(1)];
        let out = postgres_statements(statements);
        let sql: Vec<&str> = out.iter().map(|statement| &*statement.sql).collect();
        assert_eq!(
            sql,
            [
                "WITH s0 AS (INSERT INTO a VALUES ($1, $2))\n, s1 AS (INSERT INTO b VALUES ($3))\n\
                 INSERT INTO c VALUES ($4, $5)",
                "DELETE FROM x WHERE a = $1",
                "INSERT INTO d VALUES ($1)",
                "DELETE FROM x WHERE a = $1",
            ]
        );
        assert_eq!(out[0].args.len(), 5, "the values of all three, in order");
        assert_eq!(out[0].action, "a, b, c");

        // A run stops before the statement that would take it past the limit.
        let big = POSTGRES_BATCH_PARAMS / 2 + 1;
        let sizes: Vec<usize> = postgres_statements(vec![insert("a", big), insert("b", big), insert("c", 1)])
            .iter()
            .map(|s| s.args.len())
            .collect();
        assert_eq!(sizes, [big, big + 1]);
    }
}
