//! Server-side search, content reports and mutual rooms over raw HTTP, and messages sent and
//! reported through `matrix-sdk`: ordering by rank and recency, highlights, context, groups,
//! pagination, filters, history visibility, redaction, reports with the admin listings, and
//! mutual rooms with their pages.

use std::collections::HashSet;

use matrix_sdk::ruma::{OwnedEventId, events::room::message::RoomMessageEventContent};
use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode};
use serde_json::{Value, json};

use crate::start;

const SEARCH: &str = "/_matrix/client/v3/search";

/// `POST /search` with `criteria` as the `room_events` category; returns status and body.
async fn search_raw(server: &TestServer, token: &str, criteria: &Value, next_batch: Option<&str>) -> (u16, Value) {
    let path = match next_batch {
        Some(token) => format!("{SEARCH}?next_batch={}", encode(token)),
        None => SEARCH.to_owned(),
    };
    server
        .request(Method::POST, &path, Some(&json!({ "search_categories": { "room_events": criteria } })), Some(token))
        .await
}

/// The `room_events` results of a successful search.
async fn search(server: &TestServer, user: &User, criteria: Value) -> Value {
    search_page(server, &user.access_token, &criteria, None).await
}

async fn search_page(server: &TestServer, token: &str, criteria: &Value, next_batch: Option<&str>) -> Value {
    let (status, body) = search_raw(server, token, criteria, next_batch).await;
    assert_eq!(status, 200, "search {criteria} answered {body}\n{}", server.log_report());
    body["search_categories"]["room_events"].clone()
}

/// The event ids of the results, in order.
fn result_ids(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {room_events}"))
        .iter()
        .map(|result| {
            result["result"]["event_id"].as_str().unwrap_or_else(|| panic!("event id in {result}")).to_owned()
        })
        .collect()
}

fn assert_error(status: u16, body: &Value, expected_status: u16, errcode: &str, what: &str) {
    assert_eq!((status, body["errcode"].as_str()), (expected_status, Some(errcode)), "{what}: {body}");
}

/// A room of alice's with `preset` and `history_visibility`.
async fn room_with(server: &TestServer, alice: &User, preset: &str, visibility: &str) -> String {
    let room = server.create_room(alice, json!({ "preset": preset })).await;
    server.set_state(alice, &room, "m.room.history_visibility", "", &json!({ "history_visibility": visibility })).await;
    room
}

/// Rank puts the better match first and recent the newer; results are whole client events with
/// a rank, `count` and `highlights` (the query's words and their forms found); no `context`
/// unless asked for.
async fn rank_and_recent_orders(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat", "name": "Orchard" })).await;
    let strong = server.send_text(&alice, &room, "apple apple apple").await;
    let weak = server
        .send_text(&alice, &room, "a long story about trains, boats, weather and, once, Apples from the market")
        .await;
    server.send_text(&alice, &room, "nothing to see here").await;

    let ranked = search(&server, &alice, json!({ "search_term": "apple" })).await;
    assert_eq!(result_ids(&ranked), [strong.clone(), weak.clone()], "rank is the default order: {ranked}");
    let ranks: Vec<f64> =
        ranked["results"].as_array().into_iter().flatten().filter_map(|r| r["rank"].as_f64()).collect();
    assert!(ranks.len() == 2 && ranks[0] > ranks[1], "{ranks:?}");
    assert_eq!(ranked["count"], 2);
    assert_eq!(ranked["highlights"], json!(["apple", "apples"]), "the term and the form found in the results");
    let first = &ranked["results"][0];
    assert_eq!(first["result"]["room_id"], room.as_str());
    assert_eq!(first["result"]["type"], "m.room.message");
    assert_eq!(first["result"]["sender"], alice.user_id.as_str());
    assert_eq!(first["result"]["content"]["body"], "apple apple apple");
    assert_eq!(first["context"], json!({}), "no context unless asked for");
    assert!(ranked.get("next_batch").is_none(), "{ranked}");

    let explicit = search(&server, &alice, json!({ "search_term": "apple", "order_by": "rank" })).await;
    assert_eq!(result_ids(&explicit), [strong.clone(), weak.clone()]);
    let recent = search(&server, &alice, json!({ "search_term": "apple", "order_by": "recent" })).await;
    assert_eq!(result_ids(&recent), [weak, strong]);

    let none = search(&server, &alice, json!({ "search_term": "pineapple" })).await;
    assert_eq!((none["results"].clone(), none["count"].clone()), (json!([]), json!(0)), "{none}");
    assert_eq!(none["highlights"], json!(["pineapple"]));
    // The room name is searched too (`content.name`), and only the keys asked for.
    let named = search(&server, &alice, json!({ "search_term": "orchard" })).await;
    assert_eq!(named["results"][0]["result"]["type"], "m.room.name", "{named}");
    let bodies_only = search(&server, &alice, json!({ "search_term": "orchard", "keys": ["content.body"] })).await;
    assert_eq!(bodies_only["count"], 0, "{bodies_only}");
}

/// Context around each result (with profiles when asked), groups by room and sender, and the
/// state of the rooms in the results.
async fn context_groups_and_state(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id));
    server.expect_ok(Method::PUT, &path, Some(&json!({ "displayname": "Alice A." })), Some(&alice.access_token)).await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "topic": "Birds of the valley" })).await;
    server.join(&bob, &room).await;
    let before = server.send_text(&bob, &room, "good morning").await;
    let hit = server.send_text(&alice, &room, "a heron by the river").await;
    let after = server.send_text(&bob, &room, "lovely").await;
    let after2 = server.send_text(&alice, &room, "indeed").await;
    let other = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &other).await;
    let other_hit = server.send_text(&bob, &other, "another heron, at the lake").await;

    let criteria = json!({
        "search_term": "heron",
        "order_by": "recent",
        "event_context": { "before_limit": 1, "after_limit": 2, "include_profile": true },
        "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        "include_state": true,
    });
    let found = search(&server, &alice, criteria).await;
    assert_eq!(result_ids(&found), [other_hit.clone(), hit.clone()], "{found}");
    let context = &found["results"][1]["context"];
    let ids = |events: &Value| -> Vec<String> {
        events.as_array().into_iter().flatten().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(ids(&context["events_before"]), [before], "{context}");
    assert_eq!(ids(&context["events_after"]), [after, after2], "{context}");
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice A.", "{context}");
    assert!(context["profile_info"].get(&bob.user_id).is_some(), "every sender in the context: {context}");
    // The context's tokens page on with /messages.
    let messages = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1&from={}",
        encode(&room),
        encode(context["end"].as_str().unwrap_or_default())
    );
    let next = server.expect_ok(Method::GET, &messages, None, Some(&alice.access_token)).await;
    assert!(next["chunk"].as_array().is_some_and(|chunk| chunk.is_empty()), "nothing after the context: {next}");

    let by_room = &found["groups"]["room_id"];
    assert_eq!(by_room[&other]["results"], json!([other_hit]), "{by_room}");
    assert_eq!(by_room[&room]["results"], json!([hit]), "{by_room}");
    assert_eq!((by_room[&other]["order"].as_u64(), by_room[&room]["order"].as_u64()), (Some(1), Some(2)));
    let by_sender = &found["groups"]["sender"];
    assert_eq!(by_sender[&alice.user_id]["results"], json!([hit]), "{by_sender}");
    assert_eq!(by_sender[&bob.user_id]["results"], json!([other_hit]), "{by_sender}");

    let state = found["state"][&room].as_array().unwrap_or_else(|| panic!("state of {room}: {found}"));
    let topic = state.iter().find(|event| event["type"] == "m.room.topic").unwrap_or_else(|| panic!("{state:?}"));
    assert_eq!(topic["content"]["topic"], "Birds of the valley");
    assert!(found["state"][&other].is_array());

    // Without the options, none of it.
    let plain = search(&server, &alice, json!({ "search_term": "heron" })).await;
    assert!(plain.get("groups").is_none() && plain.get("state").is_none(), "{plain}");
    // Context without profiles.
    let criteria = json!({ "search_term": "heron", "event_context": {} });
    let found = search(&server, &alice, criteria).await;
    let context = &found["results"][0]["context"];
    assert!(context.get("profile_info").is_none() && context["events_before"].is_array(), "{context}");
}

/// `next_batch` pages through results without repeats or gaps, in both orders, and a room
/// group's token stays in its room; tokens this server did not give are refused.
async fn pagination_with_next_batch(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let side = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        sent.push(server.send_text(&alice, &room, &format!("pear number {i}")).await);
    }
    let side_hits = [
        server.send_text(&alice, &side, "pear on the side").await,
        server.send_text(&alice, &side, "another side pear").await,
    ];
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();

    for order in ["recent", "rank"] {
        let criteria = json!({ "search_term": "pear", "order_by": order, "filter": { "limit": 10, "rooms": [room] } });
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = search_page(&server, &alice.access_token, &criteria, token.as_deref()).await;
            assert_eq!(page["count"], 23, "{page}");
            seen.extend(result_ids(&page));
            pages += 1;
            match page["next_batch"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
            assert!(pages < 5, "{order}: too many pages");
        }
        assert_eq!(pages, 3, "{order}: 10 + 10 + 3");
        if order == "recent" {
            assert_eq!(seen, newest_first, "newest first, without gaps or repeats");
        } else {
            let distinct: HashSet<&String> = seen.iter().collect();
            assert_eq!((seen.len(), distinct.len()), (23, 23), "{order}: every match once");
        }
    }

    // A room group's token continues in its room only.
    let criteria = json!({
        "search_term": "pear",
        "order_by": "recent",
        "filter": { "limit": 3 },
        "groupings": { "group_by": [{ "key": "room_id" }] },
    });
    let first = search(&server, &alice, criteria.clone()).await;
    assert_eq!(result_ids(&first), [side_hits[1].clone(), side_hits[0].clone(), newest_first[0].clone()]);
    let room_token = first["groups"]["room_id"][&room]["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("a group token: {first}"))
        .to_owned();
    let in_room = search_page(&server, &alice.access_token, &criteria, Some(&room_token)).await;
    assert_eq!(result_ids(&in_room), newest_first[1..4].to_vec(), "{in_room}");
    assert_eq!(in_room["count"], 23, "counted in the group's room");
    let side_token = first["groups"]["room_id"][&side]["next_batch"].as_str().unwrap_or_default().to_owned();
    let in_side = search_page(&server, &alice.access_token, &criteria, Some(&side_token)).await;
    assert_eq!(result_ids(&in_side), Vec::<String>::new(), "the side room has no more: {in_side}");

    // A rank token does not continue a recent search, nor garbage anything.
    let ranked = search(&server, &alice, json!({ "search_term": "pear", "filter": { "limit": 2 } })).await;
    let rank_token = ranked["next_batch"].as_str().unwrap_or_else(|| panic!("{ranked}")).to_owned();
    let recent = json!({ "search_term": "pear", "order_by": "recent" });
    for token in [rank_token.as_str(), "garbage", "cmVjZW50Cng"] {
        let (status, body) = search_raw(&server, &alice.access_token, &recent, Some(token)).await;
        assert_error(status, &body, 400, "M_UNKNOWN", &format!("next_batch {token}"));
    }
}

/// The filter narrows the rooms, senders and types searched, and limits the page.
async fn filters_narrow_results(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let one = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Kiwi club" })).await;
    let two = server.create_room(&alice, json!({ "preset": "public_chat", "topic": "All about kiwi" })).await;
    server.join(&bob, &one).await;
    server.join(&bob, &two).await;
    let a1 = server.send_text(&alice, &one, "kiwi from alice").await;
    let b1 = server.send_text(&bob, &one, "kiwi from bob").await;
    let a2 = server.send_text(&alice, &two, "kiwi in room two").await;
    let notice =
        server.send_event(&bob, &two, "m.room.message", &json!({ "msgtype": "m.notice", "body": "kiwi notice" })).await;

    let ids = |filter: Value, keys: Value| {
        let server = &server;
        let alice = &alice;
        async move {
            let mut criteria = json!({ "search_term": "kiwi", "order_by": "recent", "filter": filter });
            if !keys.is_null() {
                criteria["keys"] = keys;
            }
            result_ids(&search(server, alice, criteria).await)
        }
    };
    let body = json!(["content.body"]);
    assert_eq!(ids(json!({}), body.clone()).await, [notice.clone(), a2.clone(), b1.clone(), a1.clone()]);
    assert_eq!(ids(json!({ "rooms": [one] }), body.clone()).await, [b1.clone(), a1.clone()]);
    assert_eq!(ids(json!({ "not_rooms": [one] }), body.clone()).await, [notice.clone(), a2.clone()]);
    assert_eq!(ids(json!({ "senders": [bob.user_id] }), body.clone()).await, [notice.clone(), b1.clone()]);
    assert_eq!(ids(json!({ "not_senders": [bob.user_id] }), body.clone()).await, [a2.clone(), a1.clone()]);
    assert_eq!(ids(json!({ "limit": 1 }), body.clone()).await, [notice.as_str()]);
    // Names and topics are state: the types filter and the keys pick them.
    let all = ids(json!({ "types": ["m.room.name", "m.room.topic"] }), Value::Null).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let names = ids(json!({}), json!(["content.name"])).await;
    let topics = ids(json!({}), json!(["content.topic"])).await;
    assert_eq!((names.len(), topics.len()), (1, 1));
    assert!(all.contains(&names[0]) && all.contains(&topics[0]));
    assert_eq!(ids(json!({ "not_types": ["m.room.*"] }), Value::Null).await, Vec::<String>::new());
}

/// Only events the user may see: a user who joined after `joined`-visibility history does not
/// find what was said before, one who left finds nothing said after, one never in the room
/// finds nothing; `shared` history is found by later members.
async fn visibility_is_applied(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let closed = room_with(&server, &alice, "public_chat", "joined").await;
    server.send_text(&alice, &closed, "secret before bob").await;
    server.join(&bob, &closed).await;
    let seen = server.send_text(&alice, &closed, "secret while bob is here").await;
    server.leave(&bob, &closed).await;
    server.send_text(&alice, &closed, "secret after bob left").await;

    let criteria = json!({ "search_term": "secret", "order_by": "recent" });
    let alice_sees = search(&server, &alice, criteria.clone()).await;
    assert_eq!(result_ids(&alice_sees).len(), 3, "{alice_sees}");
    let bob_sees = search(&server, &bob, criteria.clone()).await;
    assert_eq!(result_ids(&bob_sees), [seen.as_str()], "{bob_sees}");
    assert!(bob_sees["count"].as_u64().is_some_and(|count| count < 3), "the count leaves out what came after bob left");
    let with_context = json!({ "search_term": "secret", "event_context": { "before_limit": 5, "after_limit": 5 } });
    let bob_context = search(&server, &bob, with_context).await;
    let context = &bob_context["results"][0]["context"];
    let texts: Vec<&str> = context["events_before"]
        .as_array()
        .into_iter()
        .chain(context["events_after"].as_array())
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert!(!texts.iter().any(|text| text.contains("before bob") || text.contains("after bob")), "{context}");
    let carol_sees = search(&server, &carol, criteria.clone()).await;
    assert_eq!((result_ids(&carol_sees).len(), carol_sees["count"].clone()), (0, json!(0)), "{carol_sees}");

    let open = room_with(&server, &alice, "public_chat", "shared").await;
    let early = server.send_text(&alice, &open, "shared secret").await;
    server.join(&carol, &open).await;
    let carol_sees = search(&server, &carol, criteria).await;
    assert_eq!(result_ids(&carol_sees), [early], "shared history opens to later members: {carol_sees}");
}

/// A redacted event leaves the results.
async fn redaction_removes_the_hit(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let oops = server.send_text(&alice, &room, "my password is swordfish").await;
    let criteria = json!({ "search_term": "swordfish" });
    assert_eq!(result_ids(&search(&server, &alice, criteria.clone()).await), [oops.as_str()]);
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/t1", encode(&room), encode(&oops));
    server.expect_ok(Method::PUT, &path, Some(&json!({ "reason": "oops" })), Some(&alice.access_token)).await;
    let after = search(&server, &alice, criteria).await;
    assert_eq!((result_ids(&after).len(), after["count"].clone()), (0, json!(0)), "{after}");
}

/// Malformed searches get the errors Synapse gives, never a 5xx.
async fn bad_searches_are_refused(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let (status, body) = server.request(Method::POST, SEARCH, Some(&json!({})), Some(token)).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "no search_categories");
    let (status, body) =
        server.request(Method::POST, SEARCH, Some(&json!({ "search_categories": {} })), Some(token)).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "no room_events");
    let cases = [
        (json!({}), "M_BAD_JSON", "no search_term"),
        (json!({ "search_term": 5 }), "M_BAD_JSON", "search_term not a string"),
        (json!({ "search_term": "x", "order_by": "sideways" }), "M_INVALID_PARAM", "order_by"),
        (json!({ "search_term": "x", "keys": ["content.sender"] }), "M_INVALID_PARAM", "keys"),
        (
            json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } }),
            "M_INVALID_PARAM",
            "group key",
        ),
        (json!({ "search_term": "x", "filter": { "limit": "ten" } }), "M_BAD_JSON", "filter"),
        (json!({ "search_term": "x", "event_context": { "before_limit": -1 } }), "M_BAD_JSON", "before_limit"),
    ];
    for (criteria, errcode, what) in cases {
        let (status, body) = search_raw(&server, token, &criteria, None).await;
        assert_error(status, &body, 400, errcode, what);
    }
    let (status, body) = server.request(Method::POST, SEARCH, Some(&json!({ "search_categories": {} })), None).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN", "anonymous");
    let (status, body) = server
        .request_raw(Method::POST, SEARCH, Some(b"{not json".to_vec()), Some("application/json"), Some(token))
        .await;
    assert_error(status, &body, 400, "M_NOT_JSON", "not JSON");
    // Punctuation of either backend's query language is only punctuation.
    for term in [r#"" * ( ) : ! & | NEAR "#, "'", "-", "\\", "ab*", "a:b"] {
        let (status, body) = search_raw(&server, token, &json!({ "search_term": term }), None).await;
        assert_eq!(status, 200, "{term:?}: {body}");
    }
}

/// Events are reported by joined members who can see them, rooms by anyone, users by anyone;
/// the spec's errors otherwise; administrators list what was reported.
async fn reports_and_admin_listings(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let admin = server.register("admin").await;
    server.execute_sql(&format!("UPDATE users SET admin = 1 WHERE user_id = '{}'", admin.user_id)).await;
    let room = room_with(&server, &alice, "public_chat", "joined").await;
    let hidden = server.send_text(&alice, &room, "said before bob came").await;
    server.join(&bob, &room).await;
    let spam = server.send_text(&alice, &room, "buy cheap watches").await;
    let redacted = server.send_text(&alice, &room, "deleted soon").await;
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", encode(&room), encode(&redacted));
    server.expect_ok(Method::PUT, &path, Some(&json!({})), Some(&alice.access_token)).await;

    let report_event = |user: &User, event_id: &str, body: Value| {
        let path = format!("/_matrix/client/v3/rooms/{}/report/{}", encode(&room), encode(event_id));
        let token = user.access_token.clone();
        let server = &server;
        async move { server.request(Method::POST, &path, Some(&body), Some(&token)).await }
    };
    let (status, body) = report_event(&bob, &spam, json!({ "reason": "spam", "score": -100 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({}));
    let (status, _) = report_event(&bob, &spam, json!({})).await;
    assert_eq!(status, 200, "reason and score are optional");
    let (status, body) = report_event(&bob, &spam, json!({ "score": "high" })).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "score not an integer");
    let (status, body) = report_event(&bob, &spam, json!({ "score": 1.5 })).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "score not an integer");
    let (status, body) = report_event(&bob, &spam, json!({ "reason": 5 })).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "reason not a string");
    let missing = "$doesnotexist";
    for (user, event_id, what) in [
        (&bob, missing, "unknown event"),
        (&bob, hidden.as_str(), "not visible to the reporter"),
        (&bob, redacted.as_str(), "redacted"),
        (&carol, spam.as_str(), "reporter not in the room"),
    ] {
        let (status, body) = report_event(user, event_id, json!({ "reason": "x" })).await;
        assert_error(status, &body, 404, "M_NOT_FOUND", what);
    }

    let report_room = |user: &User, room_id: &str, body: Value| {
        let path = format!("/_matrix/client/v3/rooms/{}/report", encode(room_id));
        let token = user.access_token.clone();
        let server = &server;
        async move { server.request(Method::POST, &path, Some(&body), Some(&token)).await }
    };
    let (status, body) = report_room(&carol, &room, json!({ "reason": "a bad room" })).await;
    assert_eq!((status, body), (200, json!({})), "no need to be joined to report a room");
    let unknown_room = format!("!nowhere:{}", server.server_name());
    let (status, body) = report_room(&carol, &unknown_room, json!({ "reason": "?" })).await;
    assert_error(status, &body, 404, "M_NOT_FOUND", "unknown room");

    let report_user = |user_id: &str, body: Value| {
        let path = format!("/_matrix/client/v3/users/{}/report", encode(user_id));
        let token = carol.access_token.clone();
        let server = &server;
        async move { server.request(Method::POST, &path, Some(&body), Some(&token)).await }
    };
    assert_eq!(report_user(&alice.user_id, json!({ "reason": "rude" })).await, (200, json!({})));
    let nobody = format!("@nobody:{}", server.server_name());
    assert_eq!(report_user(&nobody, json!({ "reason": "?" })).await.0, 200, "unknown users are not revealed");
    assert_eq!(report_user("@someone:elsewhere.example", json!({ "reason": "?" })).await.0, 200);
    let (status, body) = report_user(&alice.user_id, json!({ "reason": "x".repeat(1001) })).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "reason too long");
    let (status, body) = report_user(&alice.user_id, json!({})).await;
    assert_error(status, &body, 400, "M_BAD_JSON", "reason is required");

    // The admin listings.
    let (status, body) = server.request(Method::GET, "/_synapse/admin/v1/event_reports", None, None).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN", "anonymous listing");
    let (status, body) =
        server.request(Method::GET, "/_synapse/admin/v1/event_reports", None, Some(&bob.access_token)).await;
    assert_error(status, &body, 403, "M_FORBIDDEN", "listing by a non-admin");
    let list = |path: &'static str| {
        let server = &server;
        let token = admin.access_token.clone();
        async move { server.expect_ok(Method::GET, path, None, Some(&token)).await }
    };
    let events = list("/_synapse/admin/v1/event_reports").await;
    assert_eq!(events["total"], 2, "{events}");
    let oldest = &events["event_reports"][1];
    assert_eq!(oldest["event_id"], spam.as_str(), "{events}");
    assert_eq!(oldest["room_id"], room.as_str());
    assert_eq!(oldest["user_id"], bob.user_id.as_str());
    assert_eq!(oldest["sender"], alice.user_id.as_str());
    assert_eq!((oldest["reason"].clone(), oldest["score"].clone()), (json!("spam"), json!(-100)), "{events}");
    assert_eq!(events["event_reports"][0]["reason"], Value::Null, "newest first");
    let page = list("/_synapse/admin/v1/event_reports?limit=1").await;
    assert_eq!((page["event_reports"].as_array().map(Vec::len), page["next_token"].clone()), (Some(1), json!(1)));
    let page = list("/_synapse/admin/v1/event_reports?limit=1&from=1").await;
    assert_eq!(page["event_reports"][0]["reason"], "spam");
    assert!(page.get("next_token").is_none(), "{page}");
    let rooms = list("/_synapse/admin/v1/room_reports").await;
    assert_eq!(rooms["total"], 1, "{rooms}");
    assert_eq!(
        (rooms["room_reports"][0]["room_id"].clone(), rooms["room_reports"][0]["user_id"].clone()),
        (json!(room), json!(carol.user_id))
    );
    let users = list("/_synapse/admin/v1/user_reports").await;
    assert_eq!(users["total"], 1, "only the existing local user's report is kept: {users}");
    assert_eq!(users["user_reports"][0]["target_user_id"], alice.user_id.as_str());
    assert_eq!(users["user_reports"][0]["reason"], "rude");
    let (status, body) =
        server.request(Method::GET, "/_synapse/admin/v1/event_reports?limit=-1", None, Some(&admin.access_token)).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM", "negative limit");
}

/// The rooms two users share, on both paths, paged; with the spec's errors; and advertised in
/// `/versions`.
async fn mutual_rooms_are_listed(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut shared = Vec::new();
    for _ in 0..3 {
        let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
        server.join(&bob, &room).await;
        shared.push(room);
    }
    server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let invited = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    server.invite(&alice, &invited, &bob.user_id).await;
    let left = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &left).await;
    server.leave(&bob, &left).await;
    shared.sort();

    let v1 = |user_id: &str, extra: &str| format!("/_matrix/client/v1/mutual_rooms?user_id={}{extra}", encode(user_id));
    let unstable = |user_id: &str| {
        format!("/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id={}", encode(user_id))
    };
    let body = server.expect_ok(Method::GET, &v1(&bob.user_id, ""), None, Some(&alice.access_token)).await;
    let mut joined: Vec<String> = serde_json::from_value(body["joined"].clone()).unwrap_or_default();
    joined.sort();
    assert_eq!(joined, shared, "{body}");
    assert_eq!(body["count"], 3);
    assert!(body.get("next_batch").is_none(), "{body}");
    let body = server.expect_ok(Method::GET, &unstable(&alice.user_id), None, Some(&bob.access_token)).await;
    let mut joined: Vec<String> = serde_json::from_value(body["joined"].clone()).unwrap_or_default();
    joined.sort();
    assert_eq!(joined, shared, "{body}");
    let nobody = format!("@nobody:{}", server.server_name());
    let body = server.expect_ok(Method::GET, &v1(&nobody, ""), None, Some(&alice.access_token)).await;
    assert_eq!((body["joined"].clone(), body["count"].clone()), (json!([]), json!(0)), "{body}");

    let errors = [
        (v1(&alice.user_id, ""), "own user id"),
        ("/_matrix/client/v1/mutual_rooms".to_owned(), "no user_id"),
        ("/_matrix/client/v1/mutual_rooms?user_id=notauser".to_owned(), "invalid user_id"),
        (v1(&bob.user_id, "&from=garbage"), "invalid from"),
    ];
    for (path, what) in errors {
        let (status, body) = server.request(Method::GET, &path, None, Some(&alice.access_token)).await;
        assert_error(status, &body, 400, "M_INVALID_PARAM", what);
    }
    let (status, body) = server.request(Method::GET, &v1(&bob.user_id, ""), None, None).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN", "anonymous");

    let versions = server.expect_ok(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(versions["unstable_features"]["uk.half-shot.msc2666.query_mutual_rooms"], true, "{versions}");
    assert_eq!(versions["unstable_features"]["uk.half-shot.msc2666.query_mutual_rooms.stable"], true);
}

/// More mutual rooms than fit a page come in pages, each continuing where the last stopped.
async fn mutual_rooms_page(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let total = ranvier_client::search::MUTUAL_ROOMS_PAGE + 3;
    let mut shared = Vec::new();
    for _ in 0..total {
        let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
        server.join(&bob, &room).await;
        shared.push(room);
    }
    shared.sort();
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for page in 0.. {
        assert!(page < 3, "too many pages");
        let extra = from.as_deref().map(|from| format!("&from={}", encode(from))).unwrap_or_default();
        let path = format!("/_matrix/client/v1/mutual_rooms?user_id={}{extra}", encode(&bob.user_id));
        let body = server.expect_ok(Method::GET, &path, None, Some(&alice.access_token)).await;
        assert_eq!(body["count"], total as u64, "the count covers every page");
        let joined: Vec<String> = serde_json::from_value(body["joined"].clone()).unwrap_or_default();
        seen.extend(joined);
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, shared);
}

/// Messages sent through `matrix-sdk` are found by search (raw HTTP with the SDK's token), and
/// reported through the SDK's `report_content` and `report_room`.
async fn sdk_messages_are_searchable_and_reportable(backend: Backend) {
    use matrix_sdk::ruma::api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset};

    let server = start(backend).await;
    server.register("alice").await;
    server.register("bob").await;
    let admin = server.register("admin").await;
    server.execute_sql(&format!("UPDATE users SET admin = 1 WHERE user_id = '{}'", admin.user_id)).await;
    let alice = crate::e2ee::login(&server, "alice").await;
    let bob = crate::e2ee::login(&server, "bob").await;
    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PublicChat);
    let room = alice.create_room(request).await.unwrap_or_else(|e| panic!("create room: {e}\n{}", server.log_report()));
    let mut sent: Vec<OwnedEventId> = Vec::new();
    for text in ["the quick brown fox", "jumps over the lazy dog", "foxes are quick"] {
        let response = room
            .send(RoomMessageEventContent::text_plain(text))
            .await
            .unwrap_or_else(|e| panic!("send: {e}\n{}", server.log_report()));
        sent.push(response.response.event_id);
    }
    let token = alice.access_token().unwrap_or_else(|| panic!("alice has a token"));
    let found = search_page(&server, &token, &json!({ "search_term": "fox", "order_by": "recent" }), None).await;
    assert_eq!(result_ids(&found), [sent[2].to_string(), sent[0].to_string()], "{found}");
    assert!(found["highlights"].as_array().is_some_and(|h| h.contains(&json!("foxes"))), "{found}");

    let bob_room =
        bob.join_room_by_id(room.room_id()).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    bob_room
        .report_content(sent[1].clone(), Some("rude to dogs".to_owned()))
        .await
        .unwrap_or_else(|e| panic!("report content: {e}\n{}", server.log_report()));
    bob_room
        .report_room("the whole room".to_owned())
        .await
        .unwrap_or_else(|e| panic!("report room: {e}\n{}", server.log_report()));
    let events =
        server.expect_ok(Method::GET, "/_synapse/admin/v1/event_reports", None, Some(&admin.access_token)).await;
    assert_eq!(events["event_reports"][0]["event_id"], sent[1].as_str(), "{events}");
    assert_eq!(events["event_reports"][0]["reason"], "rude to dogs");
    let rooms = server.expect_ok(Method::GET, "/_synapse/admin/v1/room_reports", None, Some(&admin.access_token)).await;
    assert_eq!(rooms["room_reports"][0]["reason"], "the whole room", "{rooms}");
}

/// Messages from a user the searcher ignores are neither results nor context; their state
/// events still are (a room name they set is found).
async fn ignored_senders_are_not_found(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = room_with(&server, &alice, "public_chat", "shared").await;
    server.join(&bob, &room).await;
    let from_alice = server.send_text(&alice, &room, "pineapple from alice").await;
    server.send_text(&bob, &room, "pineapple from bob").await;
    let after = server.send_text(&alice, &room, "after").await;
    let power = json!({ "users": { bob.user_id.clone(): 50 }, "state_default": 50 });
    server.set_state(&alice, &room, "m.room.power_levels", "", &power).await;
    let name = server.set_state(&bob, &room, "m.room.name", "", &json!({ "name": "Pineapple room" })).await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&alice.user_id));
    let list = json!({ "ignored_users": { bob.user_id.clone(): {} } });
    server.expect_ok(Method::PUT, &path, Some(&list), Some(&alice.access_token)).await;

    let found = search(&server, &alice, json!({ "search_term": "pineapple", "order_by": "recent" })).await;
    let ids = result_ids(&found);
    assert!(ids.contains(&from_alice), "{found}");
    assert_eq!(ids.len(), 2, "alice's message and bob's room name, not bob's message: {found}");
    assert!(ids.contains(&name), "{found}");
    let criteria = json!({
        "search_term": "pineapple",
        "keys": ["content.body"],
        "event_context": { "before_limit": 3, "after_limit": 3 },
    });
    let found = search(&server, &alice, criteria).await;
    assert_eq!(result_ids(&found), std::slice::from_ref(&from_alice), "{found}");
    let context = &found["results"][0]["context"];
    let after_ids: Vec<&str> =
        context["events_after"].as_array().into_iter().flatten().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(after_ids.first().copied(), Some(after.as_str()), "bob's message is skipped: {context}");
    assert!(!context.to_string().contains("pineapple from bob"), "{context}");
}

backend_tests!(
    ignored_senders_are_not_found,
    rank_and_recent_orders,
    context_groups_and_state,
    pagination_with_next_batch,
    filters_narrow_results,
    visibility_is_applied,
    redaction_removes_the_hit,
    bad_searches_are_refused,
    reports_and_admin_listings,
    mutual_rooms_are_listed,
    mutual_rooms_page,
    sdk_messages_are_searchable_and_reportable,
);
