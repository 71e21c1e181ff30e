//! The benchmark scenarios. Each prepares what it needs (untimed), then measures one or
//! more cases and prints one JSON line per case through [`Bench::case`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::Barrier;

use crate::api::{User, next_batch};
use crate::bench::{Bench, SETUP_CONCURRENCY, bounded};
use crate::stats::{add_latency, median, round3, round4};

/// Every scenario name, in the order they run by default.
pub const ALL: &[&str] = &["register", "login", "create_rooms", "send", "fanout", "initial_sync", "join_large"];

/// Concurrency of the request-rate scenarios (register, login, create_rooms).
const RATE_CONCURRENCY: usize = 10;

pub async fn run(bench: &Bench, name: &str) {
    match name {
        "register" => register(bench).await,
        "login" => login(bench).await,
        "create_rooms" => create_rooms(bench).await,
        "send" => send(bench).await,
        "fanout" => fanout(bench).await,
        "initial_sync" => initial_sync(bench).await,
        "join_large" => join_large(bench).await,
        other => bench.emit(other, "-", json!({}), Err(format!("unknown scenario; known: {}", ALL.join(",")))),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Figures shared by the request-rate scenarios.
fn rate_figures(count: usize, elapsed: Duration, latencies_ms: &[f64], unit: &str) -> Map<String, Value> {
    let mut f = Map::new();
    let secs = elapsed.as_secs_f64();
    f.insert("count".into(), json!(count));
    f.insert("secs".into(), json!(round3(secs)));
    f.insert(format!("{unit}_per_sec"), json!(round3(count as f64 / secs)));
    add_latency(&mut f, "", latencies_ms);
    f
}

/// Adds the server's CPU milliseconds per unit of work (an event sent, an event delivered),
/// the figure the CPU-per-event goal is stated in, when the probe measured CPU time.
fn per_unit_cpu(figures: &mut Map<String, Value>, name: &str, units: usize) {
    if let Some(cpu) = figures.get("server_cpu_secs").and_then(Value::as_f64)
        && units > 0
    {
        figures.insert(name.into(), json!(round3(cpu * 1000.0 / units as f64)));
    }
}

async fn register(bench: &Bench) {
    let n = bench.scaled(50);
    let params = json!({"users": n, "concurrency": RATE_CONCURRENCY});
    bench
        .case("register", "-", params, async {
            let names: Vec<String> = (0..n).map(|_| bench.unique("bench")).collect();
            let api = bench.api.clone();
            let probe = bench.probe();
            let start = Instant::now();
            let done = bounded(RATE_CONCURRENCY, names, move |name| {
                let api = api.clone();
                async move {
                    let t = Instant::now();
                    let user = api.register(&name, &format!("pw-{name}")).await?;
                    Ok::<_, crate::api::ApiError>((user, ms(t.elapsed())))
                }
            })
            .await
            .map_err(|e| e.to_string())?;
            let elapsed = start.elapsed();
            let lat: Vec<f64> = done.iter().map(|(_, l)| *l).collect();
            let mut f = rate_figures(n, elapsed, &lat, "registrations");
            probe.finish(&mut f);
            bench.add_to_pool(done.into_iter().map(|(u, _)| u).collect()).await;
            Ok(f)
        })
        .await;
}

async fn login(bench: &Bench) {
    let n = bench.scaled(50);
    let params = json!({"logins": n, "concurrency": RATE_CONCURRENCY});
    bench
        .case("login", "-", params, async {
            let users = bench.pool(n).await?;
            let api = bench.api.clone();
            let probe = bench.probe();
            let start = Instant::now();
            let lat = bounded(RATE_CONCURRENCY, users, move |user| {
                let api = api.clone();
                async move {
                    let t = Instant::now();
                    api.login(&user.localpart, &user.password).await?;
                    Ok::<_, crate::api::ApiError>(ms(t.elapsed()))
                }
            })
            .await
            .map_err(|e| e.to_string())?;
            let mut f = rate_figures(n, start.elapsed(), &lat, "logins");
            probe.finish(&mut f);
            Ok(f)
        })
        .await;
}

async fn create_rooms(bench: &Bench) {
    let n = bench.scaled(50);
    let creators = RATE_CONCURRENCY;
    let params = json!({"rooms": n, "creators": creators, "concurrency": RATE_CONCURRENCY});
    bench
        .case("create_rooms", "-", params, async {
            let users = bench.pool(creators).await?;
            let jobs: Vec<(User, String)> =
                (0..n).map(|i| (users[i % creators].clone(), format!("bench room {i}"))).collect();
            let api = bench.api.clone();
            let probe = bench.probe();
            let start = Instant::now();
            let lat = bounded(RATE_CONCURRENCY, jobs, move |(user, name)| {
                let api = api.clone();
                async move {
                    let body = json!({"preset": "private_chat", "name": name});
                    let t = Instant::now();
                    api.create_room(&user, &body).await?;
                    Ok::<_, crate::api::ApiError>(ms(t.elapsed()))
                }
            })
            .await
            .map_err(|e| e.to_string())?;
            let mut f = rate_figures(n, start.elapsed(), &lat, "rooms");
            probe.finish(&mut f);
            Ok(f)
        })
        .await;
}

async fn send(bench: &Bench) {
    let total = bench.scaled(200);
    for senders in [1usize, 10] {
        let per_sender = total.div_ceil(senders);
        let case = if senders == 1 { "1_user".to_owned() } else { format!("{senders}_users") };
        let params = json!({"senders": senders, "messages_per_sender": per_sender});
        bench
            .case("send", &case, params, async {
                let users = bench.pool(senders).await?;
                let room = bench.public_room(&users[0], "bench send").await.map_err(|e| format!("setup: {e}"))?;
                bench.join_all(users[1..].to_vec(), &room).await.map_err(|e| format!("setup: {e}"))?;
                let jobs: Vec<(User, Vec<String>)> =
                    users.into_iter().map(|u| (u, (0..per_sender).map(|_| bench.unique("t")).collect())).collect();
                let api = bench.api.clone();
                let probe = bench.probe();
                let start = Instant::now();
                let per_task = bounded(senders, jobs, move |(user, txns)| {
                    let api = api.clone();
                    let room = room.clone();
                    async move {
                        let mut lat = Vec::with_capacity(txns.len());
                        for (i, txn) in txns.iter().enumerate() {
                            let t = Instant::now();
                            api.send_text(&user, &room, txn, &format!("bench message {i}")).await?;
                            lat.push(ms(t.elapsed()));
                        }
                        Ok::<_, crate::api::ApiError>(lat)
                    }
                })
                .await
                .map_err(|e| e.to_string())?;
                let lat: Vec<f64> = per_task.into_iter().flatten().collect();
                let mut f = rate_figures(lat.len(), start.elapsed(), &lat, "events");
                probe.finish(&mut f);
                per_unit_cpu(&mut f, "server_cpu_ms_per_event", lat.len());
                Ok(f)
            })
            .await;
    }
}

/// Incremental sync filter of the fanout receivers: room for a burst of messages.
const FANOUT_FILTER: &str = r#"{"room":{"timeline":{"limit":50}}}"#;

/// What one fanout receiver saw: the instant each event ID first arrived, and whether
/// any of its syncs came back with a gapped (limited) timeline.
struct Seen {
    arrivals: HashMap<String, Instant>,
    limited: bool,
    error: Option<String>,
}

async fn fanout(bench: &Bench) {
    let messages = bench.scaled(30);
    let interval = Duration::from_millis(100);
    for receivers in [10usize, 100] {
        let case = format!("{receivers}_receivers");
        let params = json!({
            "receivers": receivers,
            "messages": messages,
            "interval_ms": interval.as_millis() as u64,
            "sync_timeout_ms": 30000,
        });
        bench.case("fanout", &case, params, fanout_case(bench, receivers, messages, interval)).await;
    }
}

async fn fanout_case(
    bench: &Bench,
    receivers: usize,
    messages: usize,
    interval: Duration,
) -> Result<Map<String, Value>, String> {
    let users = bench.pool(receivers + 1).await?;
    let sender = users[0].clone();
    let readers = users[1..].to_vec();
    let room = bench.public_room(&sender, "bench fanout").await.map_err(|e| format!("setup: {e}"))?;
    bench.join_all(readers.clone(), &room).await.map_err(|e| format!("setup: {e}"))?;
    // Each receiver starts from its own incremental position, taken after joining.
    let sinces = {
        let b = bench.api.clone();
        bounded(SETUP_CONCURRENCY, readers.clone(), move |u| {
            let api = b.clone();
            async move {
                let filter = r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#;
                let resp = api.sync(&u, None, Some(filter), 0).await?;
                next_batch(&resp)
            }
        })
        .await
        .map_err(|e| format!("setup: initial sync: {e}"))?
    };

    let send_window = interval * messages as u32;
    let deadline = tokio::time::Instant::now() + send_window + Duration::from_secs(45);
    let barrier = Arc::new(Barrier::new(receivers + 1));
    let probe = bench.probe();
    let mut tasks = tokio::task::JoinSet::new();
    for (user, since) in readers.into_iter().zip(sinces) {
        let api = bench.api.clone();
        let room = room.clone();
        let barrier = barrier.clone();
        let sender_id = sender.user_id.clone();
        tasks.spawn(async move {
            let mut seen = Seen { arrivals: HashMap::new(), limited: false, error: None };
            let mut since = since;
            barrier.wait().await;
            while seen.arrivals.len() < messages {
                let poll = api.sync(&user, Some(&since), Some(FANOUT_FILTER), 30000);
                let resp = match tokio::time::timeout_at(deadline, poll).await {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        seen.error = Some(e.to_string());
                        break;
                    }
                    Ok(Ok(r)) => r,
                };
                let now = Instant::now();
                let timeline = &resp.body["rooms"]["join"][room.as_str()]["timeline"];
                if timeline["limited"].as_bool() == Some(true) {
                    seen.limited = true;
                }
                for ev in timeline["events"].as_array().into_iter().flatten() {
                    if ev["type"] == "m.room.message"
                        && ev["sender"] == sender_id.as_str()
                        && let Some(id) = ev["event_id"].as_str()
                    {
                        seen.arrivals.entry(id.to_owned()).or_insert(now);
                    }
                }
                match next_batch(&resp) {
                    Ok(next) => since = next,
                    Err(e) => {
                        seen.error = Some(e.to_string());
                        break;
                    }
                }
            }
            seen
        });
    }

    // Let every receiver get its long-poll in before the first message.
    barrier.wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(messages);
    let mut send_lat = Vec::with_capacity(messages);
    let mut send_error = None;
    let start = tokio::time::Instant::now();
    for i in 0..messages {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let txn = bench.unique("f");
        let t = Instant::now();
        match bench.api.send_text(&sender, &room, &txn, &format!("fanout {i}")).await {
            Ok(id) => {
                let done = Instant::now();
                send_lat.push(ms(done - t));
                sent.push((id, done));
            }
            Err(e) => {
                send_error = Some(e.to_string());
                break;
            }
        }
    }

    let mut latencies = Vec::new();
    let mut early = 0usize;
    let mut limited = 0usize;
    let mut receiver_errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let seen = joined.map_err(|e| format!("receiver task failed: {e}"))?;
        if seen.limited {
            limited += 1;
        }
        if let Some(e) = seen.error {
            receiver_errors.push(e);
        }
        for (id, sent_at) in &sent {
            if let Some(arrived) = seen.arrivals.get(id) {
                if arrived < sent_at {
                    early += 1;
                }
                latencies.push(ms(arrived.saturating_duration_since(*sent_at)));
            }
        }
    }
    let mut f = Map::new();
    probe.finish(&mut f);
    if let Some(e) = send_error {
        return Err(format!("sending: {e}"));
    }
    if let Some(e) = receiver_errors.first() {
        return Err(format!("{} receivers failed, first: {e}", receiver_errors.len()));
    }
    let expected = sent.len() * receivers;
    f.insert("deliveries_expected".into(), json!(expected));
    f.insert("deliveries_seen".into(), json!(latencies.len()));
    f.insert("deliveries_before_send_returned".into(), json!(early));
    f.insert("receivers_with_gaps".into(), json!(limited));
    add_latency(&mut f, "delivery_", &latencies);
    add_latency(&mut f, "send_", &send_lat);
    per_unit_cpu(&mut f, "server_cpu_ms_per_delivery", latencies.len());
    Ok(f)
}

/// The sync filters compared by `initial_sync` and `join_large`. The nonce is a harmless
/// `not_types` entry that keeps servers from answering a repeat from a response cache.
fn sync_filter(lazy: bool, nonce: &str) -> String {
    json!({
        "room": {
            "state": {"lazy_load_members": lazy},
            "timeline": {"limit": 10, "not_types": [nonce]},
        }
    })
    .to_string()
}

async fn initial_sync(bench: &Bench) {
    let rooms = bench.scaled(20);
    let members = bench.scaled(20).max(2);
    let history = 20usize;
    let params = json!({"rooms": rooms, "members_per_room": members, "messages_per_room": history, "repeats": 3});
    let setup = async {
        let syncer = bench.fresh_user().await.map_err(|e| format!("setup: {e}"))?;
        let others = bench.pool(members - 1).await?;
        let api = bench.api.clone();
        // The rooms are created one after another: every one has the same creator, and a
        // server may derive room IDs from the create event, so simultaneous creates by one
        // user are a separate concern from what this scenario measures.
        let mut room_ids = Vec::with_capacity(rooms);
        for r in 0..rooms {
            let body = json!({"preset": "public_chat", "name": format!("bench sync {r}")});
            room_ids.push(api.create_room(&syncer, &body).await.map_err(|e| format!("setup: {e}"))?);
        }
        let jobs: Vec<(String, User, Vec<User>, Vec<String>)> = room_ids
            .into_iter()
            .map(|room| {
                let txns = (0..history).map(|_| bench.unique("h")).collect();
                (room, syncer.clone(), others.clone(), txns)
            })
            .collect();
        bounded(SETUP_CONCURRENCY, jobs, move |(room, owner, others, txns)| {
            let api = api.clone();
            async move {
                for u in &others {
                    api.join(u, &room).await?;
                }
                for (i, txn) in txns.iter().enumerate() {
                    let author = if others.is_empty() { &owner } else { &others[i % others.len()] };
                    api.send_text(author, &room, txn, &format!("history {i}")).await?;
                }
                Ok::<_, crate::api::ApiError>(())
            }
        })
        .await
        .map_err(|e| format!("setup: {e}"))?;
        Ok::<_, String>(syncer)
    };
    let syncer = match tokio::time::timeout(bench.case_timeout, setup).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            for case in ["lazy_members", "full_members"] {
                bench.emit("initial_sync", case, params.clone(), Err(e.clone()));
            }
            return;
        }
        Err(_) => {
            for case in ["lazy_members", "full_members"] {
                bench.emit("initial_sync", case, params.clone(), Err("setup timed out".into()));
            }
            return;
        }
    };
    for (case, lazy) in [("lazy_members", true), ("full_members", false)] {
        bench
            .case("initial_sync", case, params.clone(), async {
                let probe = bench.probe();
                let mut secs = Vec::new();
                let mut bytes = 0;
                let mut joined = 0;
                for _ in 0..3 {
                    let filter = sync_filter(lazy, &bench.unique("org.ranvier.bench.nonce."));
                    let t = Instant::now();
                    let resp = bench.api.sync(&syncer, None, Some(&filter), 0).await.map_err(|e| e.to_string())?;
                    secs.push(t.elapsed().as_secs_f64());
                    bytes = resp.bytes;
                    joined = resp.body["rooms"]["join"].as_object().map_or(0, Map::len);
                }
                let mut f = Map::new();
                f.insert("secs".into(), json!(round4(median(&secs))));
                f.insert("first_secs".into(), json!(round4(secs[0])));
                f.insert("bytes".into(), json!(bytes));
                f.insert("rooms_in_response".into(), json!(joined));
                probe.finish(&mut f);
                Ok(f)
            })
            .await;
    }
}

async fn join_large(bench: &Bench) {
    for base in [50usize, 500] {
        let members = bench.scaled(base).max(2);
        let case = format!("{members}_members");
        let params = json!({"members": members});
        bench
            .case("join_large", &case, params, async {
                let users = bench.pool(members).await?;
                let room = bench.public_room(&users[0], "bench large").await.map_err(|e| format!("setup: {e}"))?;
                bench.join_all(users[1..].to_vec(), &room).await.map_err(|e| format!("setup: {e}"))?;
                let joiner = bench.fresh_user().await.map_err(|e| format!("setup: {e}"))?;
                let since = bench.since_token(&joiner).await.map_err(|e| format!("setup: {e}"))?;

                let probe = bench.probe();
                let t = Instant::now();
                bench.api.join(&joiner, &room).await.map_err(|e| e.to_string())?;
                let join_secs = t.elapsed().as_secs_f64();
                let mut f = Map::new();
                f.insert("join_secs".into(), json!(round4(join_secs)));
                for (name, lazy) in [("lazy", true), ("full", false)] {
                    let filter = sync_filter(lazy, &bench.unique("org.ranvier.bench.nonce."));
                    let t = Instant::now();
                    let resp =
                        bench.api.sync(&joiner, Some(&since), Some(&filter), 10000).await.map_err(|e| e.to_string())?;
                    let secs = t.elapsed().as_secs_f64();
                    let has_room = resp.body["rooms"]["join"].get(room.as_str()).is_some();
                    f.insert(format!("first_sync_{name}_secs"), json!(round4(secs)));
                    f.insert(format!("first_sync_{name}_bytes"), json!(resp.bytes));
                    f.insert(format!("first_sync_{name}_has_room"), json!(has_room));
                }
                probe.finish(&mut f);
                Ok(f)
            })
            .await;
    }
}
