//! `GET /sync`.
//!
//! The body is built by [`ranvier_sync::SyncResponse`] (every section present, as clients
//! expect) rather than by ruma's response type.

use axum::{Json, extract::State};
use ranvier_http::{Authed, ErrorResponse, route};
use ranvier_sync::{SyncRequest, SyncResponse, SyncService, effective_timeout};
use ruma::api::client::{filter::FilterDefinition, sync::sync_events::v3};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<v3::Request, _, _, _>(router, sync)
}

async fn sync(State(state): State<AppState>, req: Authed<v3::Request>) -> Result<Json<SyncResponse>, ErrorResponse> {
    // A waiting sync holds its future's whole state, and a future has room for the largest
    // state of everything it awaits inline: the request is resolved in a block of its own (the
    // parsed body is dropped before the wait) by boxed futures.
    let (request, _presence) = {
        let body = req.body;
        let user_id = req.identity.user_id.as_str().to_owned();
        let filter = match body.filter {
            None => FilterDefinition::default(),
            Some(v3::Filter::FilterDefinition(definition)) => {
                ranvier_sync::filter::validate(&definition)?;
                definition
            }
            Some(v3::Filter::FilterId(id)) => Box::pin(state.sync.stored_or_inline_filter(&user_id, &id)).await?,
            Some(_) => FilterDefinition::default(),
        };
        let since = body.since.as_deref().map(SyncService::parse_token).transpose()?;
        // The user counts as syncing (and so present) until the response is built.
        let presence =
            Box::pin(state.social.set_presence_from_sync(&req.identity.user_id, Some(&body.set_presence))).await?;
        let request = SyncRequest {
            user_id,
            device_id: req.identity.device_id.as_str().to_owned(),
            filter: Box::new(filter),
            since,
            full_state: body.full_state,
            timeout: effective_timeout(body.timeout, state.config.limits.max_sync_timeout_ms),
        };
        (request, presence)
    };
    Ok(Json(state.sync.sync(request).await?))
}

#[cfg(test)]
mod tests {
    //! End to end through the router, with the real write path: rooms created, joined and
    //! written to over HTTP, then read back with `/sync`, `/messages` and `/context`.

    use std::sync::Arc;

    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use ranvier_core::Config;
    use ranvier_store::Store;
    use ranvier_sync::fixtures::on_each_backend;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::{AppState, Services, auth::Auth};

    struct Client {
        app: axum::Router,
        token: String,
        user_id: String,
    }

    async fn app(store: Store) -> axum::Router {
        let mut config = Config { server_name: "test".into(), ..Default::default() };
        config.rate_limits.enabled = false;
        let der = ruma::signatures::Ed25519KeyPair::generate();
        let key = ruma::signatures::Ed25519KeyPair::from_der(&der, "t".into()).expect("key");
        let mut services = Services::new(config, store, key).expect("services");
        services.auth = Auth::with_fast_hashing();
        crate::router(AppState(Arc::new(services)))
    }

    async fn user(app: &axum::Router, store: &Store, localpart: &str) -> Client {
        let user_id = format!("@{localpart}:test");
        store.create_user(&user_id, None, false).await.expect("create user");
        let token = format!("token_{localpart}");
        store.create_device_with_token(&user_id, "DEV", None, &token).await.expect("device");
        Client { app: app.clone(), token, user_id }
    }

    impl Client {
        async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            let request = Request::builder()
                .method(method)
                .uri(format!("/_matrix/client{path}"))
                .header("Authorization", format!("Bearer {}", self.token))
                .header("Content-Type", "application/json")
                .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
                .expect("request");
            let response = self.app.clone().oneshot(request).await.expect("response");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }

        async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
            let (status, value) = self.call(method, path, body).await;
            assert_eq!(status, StatusCode::OK, "{path}: {value}");
            value
        }

        async fn send(&self, room: &str, body: &str) -> String {
            let txn = ranvier_core::util::random_string(8);
            let path = format!("/v3/rooms/{room}/send/m.room.message/{txn}");
            let value = self.ok(Method::PUT, &path, Some(json!({"msgtype": "m.text", "body": body}))).await;
            value["event_id"].as_str().expect("event id").to_owned()
        }

        async fn sync(&self, query: &str) -> Value {
            self.ok(Method::GET, &format!("/v3/sync{query}"), None).await
        }
    }

    fn bodies(events: &Value) -> Vec<String> {
        events
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn sync_messages_and_context_over_http() {
        on_each_backend(|store| async move {
            let app = app(store.clone()).await;
            let alice = user(&app, &store, "alice").await;
            let bob = user(&app, &store, "bob").await;
            let created =
                alice.ok(Method::POST, "/v3/createRoom", Some(json!({"name": "Room", "preset": "public_chat"}))).await;
            let room = created["room_id"].as_str().expect("room id").to_owned();
            for i in 0..25 {
                alice.send(&room, &format!("m{i}")).await;
            }

            // Initial sync with an inline filter.
            let filter = encode(&json!({"room": {"timeline": {"limit": 5}}}).to_string());
            let initial = alice.sync(&format!("?filter={filter}")).await;
            let joined = &initial["rooms"]["join"][&room];
            assert_eq!(bodies(&joined["timeline"]["events"]), ["m20", "m21", "m22", "m23", "m24"]);
            assert_eq!(joined["timeline"]["limited"], json!(true));
            let state_types: Vec<&str> = joined["state"]["events"]
                .as_array()
                .expect("state")
                .iter()
                .filter_map(|e| e["type"].as_str())
                .collect();
            for wanted in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"] {
                assert!(state_types.contains(&wanted), "{wanted} missing from {state_types:?}");
            }
            let txn_seen = joined["timeline"]["events"][0]["unsigned"]["transaction_id"].is_string();
            assert!(txn_seen, "the sender's device sees its transaction ids");

            // Paginate the rest of the history from prev_batch, exactly once each.
            let mut from = joined["timeline"]["prev_batch"].as_str().expect("prev_batch").to_owned();
            let mut older = Vec::new();
            loop {
                let page =
                    alice.ok(Method::GET, &format!("/v3/rooms/{room}/messages?dir=b&limit=6&from={from}"), None).await;
                older.extend(bodies(&page["chunk"]));
                match page["end"].as_str() {
                    Some(end) => from = end.to_owned(),
                    None => break,
                }
            }
            let expected: Vec<String> = (0..20).rev().map(|i| format!("m{i}")).collect();
            assert_eq!(older, expected);

            // Bob joins; Alice's long-poll wakes for it.
            let since = initial["next_batch"].as_str().expect("next_batch").to_owned();
            let waiting = {
                let alice =
                    Client { app: alice.app.clone(), token: alice.token.clone(), user_id: alice.user_id.clone() };
                let since = since.clone();
                tokio::spawn(async move { alice.sync(&format!("?since={since}&timeout=20000")).await })
            };
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            bob.ok(Method::POST, &format!("/v3/join/{room}"), Some(json!({}))).await;
            let woken = waiting.await.expect("join");
            let events = &woken["rooms"]["join"][&room]["timeline"]["events"];
            assert_eq!(events[0]["type"], json!("m.room.member"));
            assert_eq!(events[0]["state_key"], json!(bob.user_id));
            assert_eq!(woken["rooms"]["join"][&room]["summary"]["m.joined_member_count"], json!(2));

            // Bob's first sync shows the room whole; his stored lazy-loading filter works.
            let (status, filter) = bob
                .call(
                    Method::POST,
                    &format!("/v3/user/{}/filter", bob.user_id),
                    Some(json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 1}}})),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            let filter_id = filter["filter_id"].as_str().expect("filter id").to_owned();
            let (status, _) =
                alice.call(Method::GET, &format!("/v3/user/{}/filter/{filter_id}", bob.user_id), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            let bob_initial = bob.sync(&format!("?filter={filter_id}")).await;
            let room_view = &bob_initial["rooms"]["join"][&room];
            let members: Vec<&str> = room_view["state"]["events"]
                .as_array()
                .expect("state")
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .filter_map(|e| e["state_key"].as_str())
                .collect();
            // The timeline is Bob's join alone: Alice's member event is left out, and Bob's is
            // in the timeline rather than the state.
            assert!(members.is_empty(), "{members:?}");
            assert_eq!(room_view["timeline"]["events"][0]["state_key"], json!(bob.user_id));

            // /context around a message.
            let middle = alice.send(&room, "middle").await;
            alice.send(&room, "after").await;
            let context =
                alice.ok(Method::GET, &format!("/v3/rooms/{room}/context/{}?limit=2", encode(&middle)), None).await;
            assert_eq!(context["event"]["content"]["body"], json!("middle"));
            assert_eq!(bodies(&context["events_after"]), ["after"]);
            assert_eq!(context["events_before"].as_array().map(Vec::len), Some(1));

            // timestamp_to_event finds the message sent at or after a time.
            let ts = context["event"]["origin_server_ts"].as_i64().expect("ts");
            let found =
                alice.ok(Method::GET, &format!("/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"), None).await;
            assert_eq!(found["origin_server_ts"].as_i64(), Some(ts));
            let (status, _) = alice
                .call(Method::GET, &format!("/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f", ts + 3_600_000), None)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND);

            // Errors.
            let (status, error) = alice.call(Method::GET, "/v3/sync?since=garbage", None).await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")));
            let (status, error) = alice.call(Method::GET, "/v3/sync?filter=12345", None).await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
            let (status, error) =
                alice.call(Method::GET, &format!("/v3/sync?filter={}", encode("{\"room\":")), None).await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_NOT_JSON")));
            let (status, error) = alice
                .call(
                    Method::POST,
                    &format!("/v3/user/{}/filter", alice.user_id),
                    Some(json!({"room": {"timeline": {"limit": "ten"}}})),
                )
                .await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")));
            let (status, error) = alice
                .call(Method::POST, &format!("/v3/user/{}/filter", alice.user_id), Some(json!({"event_format": "xml"})))
                .await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")));
            let (status, error) =
                alice.call(Method::POST, &format!("/v3/user/{}/filter", bob.user_id), Some(json!({}))).await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
            let (status, error) = alice.call(Method::GET, &format!("/v3/user/{}/filter/77", alice.user_id), None).await;
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
            let carol = user(&app, &store, "carol").await;
            let (status, error) = carol.call(Method::GET, &format!("/v3/rooms/{room}/messages?dir=b"), None).await;
            // Shared history is for members: a stranger is refused.
            assert_eq!((status, error["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
        })
        .await;
    }
}
