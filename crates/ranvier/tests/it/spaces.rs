//! Spaces, ignored users, direct chats and server notices, over raw HTTP for the exact wire
//! shapes: the space hierarchy (order, pagination, depth, suggested rooms, visibility, loops),
//! restricted joins through space membership, ignored users' events and invites left out of
//! what the ignoring user reads, `is_direct` and `m.direct` across upgrades, and server notices
//! that arrive in a room the user cannot write in. The same areas through `matrix-sdk` are in
//! [`sdk`].

mod sdk;

use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode, txn_id};
use serde_json::{Value, json};

use crate::{builder, start};

/// A space (`m.space` room) created by `user` with `body`'s other settings.
async fn create_space(server: &TestServer, user: &User, name: &str, mut body: Value) -> String {
    body["name"] = json!(name);
    body["creation_content"] = json!({ "type": "m.space" });
    server.create_room(user, body).await
}

/// Make `child` a child of `space` with `extra` content next to `via`.
async fn add_child(server: &TestServer, user: &User, space: &str, child: &str, extra: Value) {
    let mut content = json!({ "via": [server.server_name()] });
    if let (Value::Object(content), Value::Object(extra)) = (&mut content, extra) {
        content.extend(extra);
    }
    server.set_state(user, space, "m.space.child", child, &content).await;
}

/// `GET /hierarchy` with `query` (already encoded), returning status and body.
async fn hierarchy(server: &TestServer, user: &User, room: &str, query: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", encode(room));
    server.request(Method::GET, &path, None, Some(&user.access_token)).await
}

/// The room ids of a hierarchy page, in order.
fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("no rooms in {page}"))
        .iter()
        .map(|room| room["room_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Room ids as [`room_ids`] gives them.
fn ids(rooms: &[&String]) -> Vec<String> {
    rooms.iter().map(|room| (*room).clone()).collect()
}

/// `GET /hierarchy` that must succeed.
async fn page(server: &TestServer, user: &User, room: &str, query: &str) -> Value {
    let (status, body) = hierarchy(server, user, room, query).await;
    assert_eq!(status, 200, "{query}: {body}\n{}", server.log_report());
    body
}

/// A space tree:
///
/// ```text
/// space (public)
/// ├── sub (space, order "a")
/// │   └── leaf
/// ├── first (order "b", suggested)
/// ├── second (no order)
/// └── removed (no via: not a child)
/// ```
struct Tree {
    space: String,
    sub: String,
    leaf: String,
    first: String,
    second: String,
    removed: String,
}

async fn tree(server: &TestServer, alice: &User) -> Tree {
    let public = json!({ "preset": "public_chat" });
    let space = create_space(server, alice, "Space", json!({ "preset": "public_chat", "topic": "All of it" })).await;
    let sub = create_space(server, alice, "Sub", public.clone()).await;
    let leaf = server.create_room(alice, json!({ "preset": "public_chat", "name": "Leaf" })).await;
    let first = server.create_room(alice, json!({ "preset": "public_chat", "name": "First" })).await;
    let second = server.create_room(alice, json!({ "preset": "public_chat", "name": "Second" })).await;
    let removed = server.create_room(alice, json!({ "preset": "public_chat", "name": "Removed" })).await;
    add_child(server, alice, &space, &second, json!({})).await;
    add_child(server, alice, &space, &first, json!({ "order": "b", "suggested": true })).await;
    add_child(server, alice, &space, &sub, json!({ "order": "a" })).await;
    server.set_state(alice, &space, "m.space.child", &removed, &json!({})).await;
    add_child(server, alice, &sub, &leaf, json!({})).await;
    Tree { space, sub, leaf, first, second, removed }
}

/// The walk is depth first in the spec's order, each room with its summary, and a space's
/// `children_state` lists its valid children as stripped events with their timestamps.
async fn hierarchy_walks_depth_first_in_order(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let tree = tree(&server, &alice).await;

    let body = page(&server, &alice, &tree.space, "").await;
    assert_eq!(room_ids(&body), ids(&[&tree.space, &tree.sub, &tree.leaf, &tree.first, &tree.second]), "{body}");
    assert!(body.get("next_batch").is_none(), "one page holds everything: {body}");
    assert!(!room_ids(&body).contains(&tree.removed));

    let space = &body["rooms"][0];
    let mut keys: Vec<&str> = space.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "children_state",
            "guest_can_join",
            "join_rule",
            "name",
            "num_joined_members",
            "room_id",
            "room_type",
            "room_version",
            "topic",
            "world_readable",
        ],
        "{space}"
    );
    assert_eq!(space["name"], "Space");
    assert_eq!(space["topic"], "All of it");
    assert_eq!(space["room_type"], "m.space");
    assert_eq!(space["join_rule"], "public");
    assert_eq!(space["num_joined_members"], 1);
    assert_eq!(space["world_readable"], false);
    assert_eq!(space["guest_can_join"], false);

    let children = space["children_state"].as_array().unwrap();
    let keys: Vec<&str> = children.iter().map(|child| child["state_key"].as_str().unwrap()).collect();
    assert_eq!(keys, [&tree.sub, &tree.first, &tree.second], "ordered like the walk: {space}");
    for child in children {
        assert_eq!(child["type"], "m.space.child");
        assert_eq!(child["sender"], alice.user_id.as_str());
        assert!(child["origin_server_ts"].as_i64().is_some_and(|ts| ts > 0), "{child}");
        assert_eq!(child["content"]["via"], json!([server.server_name()]));
        assert!(child.get("event_id").is_none(), "stripped: {child}");
    }
    // A room that is not a space has no children to show.
    let first = body["rooms"].as_array().unwrap().iter().find(|room| room["room_id"] == tree.first.as_str()).unwrap();
    assert_eq!(first["children_state"], json!([]));
    assert!(first.get("room_type").is_none(), "{first}");
}

/// Pages follow each other without overlap, a token gives the same page every time it is
/// used, and the parameters of the walk cannot change in between.
async fn hierarchy_paginates_with_stable_tokens(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let tree = tree(&server, &alice).await;

    let first = page(&server, &alice, &tree.space, "limit=2").await;
    assert_eq!(room_ids(&first), ids(&[&tree.space, &tree.sub]));
    let token = first["next_batch"].as_str().unwrap_or_else(|| panic!("next_batch in {first}")).to_owned();
    let second = page(&server, &alice, &tree.space, &format!("limit=2&from={}", encode(&token))).await;
    assert_eq!(room_ids(&second), ids(&[&tree.leaf, &tree.first]));
    let again = page(&server, &alice, &tree.space, &format!("limit=2&from={}", encode(&token))).await;
    assert_eq!(again, second, "a token is stable");
    let token = second["next_batch"].as_str().unwrap_or_else(|| panic!("next_batch in {second}")).to_owned();
    let last = page(&server, &alice, &tree.space, &format!("limit=2&from={}", encode(&token))).await;
    assert_eq!(room_ids(&last), ids(&[&tree.second]));
    assert!(last.get("next_batch").is_none(), "{last}");

    // An exact fit has no next page either.
    let all = page(&server, &alice, &tree.space, "limit=5").await;
    assert_eq!(room_ids(&all).len(), 5);
    assert!(all.get("next_batch").is_none(), "{all}");

    let invalid = |(status, body): (u16, Value)| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
    };
    let from = encode(&token);
    invalid(hierarchy(&server, &alice, &tree.space, &format!("limit=2&from={from}&max_depth=1")).await);
    invalid(hierarchy(&server, &alice, &tree.space, &format!("limit=2&from={from}&suggested_only=true")).await);
    invalid(hierarchy(&server, &alice, &tree.sub, &format!("limit=2&from={from}")).await);
    invalid(hierarchy(&server, &alice, &tree.space, "from=nonsense").await);
    invalid(hierarchy(&server, &alice, &tree.space, "limit=0").await);
    invalid(hierarchy(&server, &alice, &tree.space, "limit=-1").await);
    invalid(hierarchy(&server, &alice, &tree.space, "max_depth=-1").await);
}

/// `max_depth` stops the walk; `suggested_only` keeps only suggested children, in the walk and
/// in `children_state`.
async fn hierarchy_max_depth_and_suggested_only(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let tree = tree(&server, &alice).await;

    assert_eq!(room_ids(&page(&server, &alice, &tree.space, "max_depth=0").await), ids(&[&tree.space]));
    let shallow = page(&server, &alice, &tree.space, "max_depth=1").await;
    assert_eq!(room_ids(&shallow), ids(&[&tree.space, &tree.sub, &tree.first, &tree.second]));

    let suggested = page(&server, &alice, &tree.space, "suggested_only=true").await;
    assert_eq!(room_ids(&suggested), ids(&[&tree.space, &tree.first]));
    let children: Vec<&str> = suggested["rooms"][0]["children_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(children, [tree.first.as_str()], "{suggested}");
}

/// Only rooms the requester may see are listed (and walked): joined, public, world-readable,
/// or restricted to a room they are in. A loop of spaces ends; rooms of other servers are
/// skipped; a root the requester cannot see is `403`.
async fn hierarchy_visibility_and_loops(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let space = create_space(&server, &alice, "Space", json!({ "preset": "public_chat" })).await;
    let private = server.create_room(&alice, json!({ "preset": "private_chat", "name": "Private" })).await;
    let restricted = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "name": "Restricted",
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
                }],
            }),
        )
        .await;
    let readable = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "name": "Readable",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "world_readable" },
                }],
            }),
        )
        .await;
    let inner = create_space(&server, &alice, "Inner", json!({ "preset": "public_chat" })).await;
    for child in [&private, &restricted, &readable, &inner] {
        add_child(&server, &alice, &space, child, json!({})).await;
    }
    add_child(&server, &alice, &space, "!elsewhere:remote.example", json!({})).await;
    // A loop: inner names the space as its child.
    add_child(&server, &alice, &inner, &space, json!({})).await;

    let all = page(&server, &alice, &space, "").await;
    assert_eq!(room_ids(&all), ids(&[&space, &private, &restricted, &readable, &inner]), "alice sees everything");
    let restricted_chunk = &all["rooms"][2];
    assert_eq!(restricted_chunk["join_rule"], "restricted");
    assert_eq!(restricted_chunk["allowed_room_ids"], json!([space]), "{restricted_chunk}");
    assert_eq!(all["rooms"][3]["world_readable"], true);
    assert_eq!(all["rooms"][4]["children_state"][0]["state_key"], space.as_str(), "the loop is listed, not walked");

    let outside = page(&server, &bob, &space, "").await;
    assert_eq!(room_ids(&outside), ids(&[&space, &readable, &inner]), "bob is in no room yet");
    server.join(&bob, &space).await;
    let member = page(&server, &bob, &space, "").await;
    assert_eq!(room_ids(&member), ids(&[&space, &restricted, &readable, &inner]), "the space admits bob to restricted");

    let forbidden = |(status, body): (u16, Value)| {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    };
    forbidden(hierarchy(&server, &bob, &private, "").await);
    forbidden(hierarchy(&server, &bob, &format!("!unknown:{}", server.server_name()), "").await);
    // Starting inside the loop works too.
    assert_eq!(room_ids(&page(&server, &alice, &inner, "").await)[..2], [inner.clone(), space.clone()]);
}

/// A member of a space joins a room restricted to the space's members; anyone else is
/// refused with `403 M_FORBIDDEN`.
async fn restricted_child_admits_space_members(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = create_space(&server, &alice, "Space", json!({ "preset": "public_chat" })).await;
    let child = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
                }],
            }),
        )
        .await;
    add_child(&server, &alice, &space, &child, json!({})).await;
    server
        .set_state(
            &alice,
            &child,
            "m.space.parent",
            &space,
            &json!({ "via": [server.server_name()], "canonical": true }),
        )
        .await;

    server.join(&bob, &space).await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", encode(&child));
    server.expect_ok(Method::POST, &join, Some(&json!({})), Some(&bob.access_token)).await;
    let member = server.get_state(&bob, &child, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str(), "{member}");

    let (status, body) = server.request(Method::POST, &join, Some(&json!({})), Some(&carol.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
}

/// The `m.ignored_user_list` path of a user.
fn ignore_path(user: &User) -> String {
    format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&user.user_id))
}

/// The timeline events of a room in a sync response.
fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| events.iter().collect())
        .unwrap_or_default()
}

/// Events of ignored users (but not their state events) disappear from `/sync`, `/messages`
/// and `/context`, their invites are not delivered, and un-ignoring brings new events back.
async fn ignored_users_disappear(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;

    // Bad lists are refused.
    let refused = [
        (json!({ "ignored_users": { alice.user_id.clone(): {} } }), "M_INVALID_PARAM"),
        (json!({ "ignored_users": { "not a user": {} } }), "M_INVALID_PARAM"),
        (json!({ "ignored_users": [bob.user_id.clone()] }), "M_BAD_JSON"),
        (json!({}), "M_BAD_JSON"),
    ];
    for (content, errcode) in refused {
        let (status, body) =
            server.request(Method::PUT, &ignore_path(&alice), Some(&content), Some(&alice.access_token)).await;
        assert_eq!((status, body["errcode"].as_str()), (400, Some(errcode)), "{content}: {body}");
    }

    let since = server.sync(&alice, None, None).await["next_batch"].as_str().unwrap().to_owned();
    let list = json!({ "ignored_users": { bob.user_id.clone(): {} } });
    server.expect_ok(Method::PUT, &ignore_path(&alice), Some(&list), Some(&alice.access_token)).await;
    let from_bob = server.send_text(&bob, &room, "from bob").await;
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob.user_id));
    server.expect_ok(Method::PUT, &profile, Some(&json!({ "displayname": "Bobby" })), Some(&bob.access_token)).await;
    let from_carol = server.send_text(&carol, &room, "from carol").await;

    let sync = server.sync(&alice, Some(&since), None).await;
    let events = timeline(&sync, &room);
    let ids: Vec<&str> = events.iter().filter_map(|event| event["event_id"].as_str()).collect();
    assert!(ids.contains(&from_carol.as_str()), "{sync}");
    assert!(!ids.contains(&from_bob.as_str()), "bob's message is hidden: {sync}");
    assert!(
        events.iter().any(|event| event["type"] == "m.room.member" && event["sender"] == bob.user_id.as_str()),
        "bob's state events still arrive: {sync}"
    );
    let ignored_list =
        sync["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "m.ignored_user_list");
    assert!(ignored_list, "the list itself is account data: {sync}");
    let initial = server.sync(&alice, None, None).await;
    assert!(!timeline(&initial, &room).iter().any(|event| event["event_id"] == from_bob.as_str()), "{initial}");

    let history = server.messages(&alice, &room, &ranvier_test::MessagesQuery::backward(None, 50)).await;
    let chunk = history["chunk"].as_array().unwrap();
    assert!(chunk.iter().any(|event| event["event_id"] == from_carol.as_str()));
    assert!(!chunk.iter().any(|event| event["event_id"] == from_bob.as_str()), "{history}");
    let context =
        |event: &str| format!("/_matrix/client/v3/rooms/{}/context/{}?limit=10", encode(&room), encode(event));
    let around = server.expect_ok(Method::GET, &context(&from_carol), None, Some(&alice.access_token)).await;
    assert!(!around.to_string().contains(&from_bob), "{around}");
    let (status, body) = server.request(Method::GET, &context(&from_bob), None, Some(&alice.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    // Carol ignores nobody and sees everything.
    let carols = server.messages(&carol, &room, &ranvier_test::MessagesQuery::backward(None, 50)).await;
    assert!(carols["chunk"].as_array().unwrap().iter().any(|event| event["event_id"] == from_bob.as_str()));

    // Bob's invites do not reach alice; carol's do.
    let since = server.sync(&alice, None, None).await["next_batch"].as_str().unwrap().to_owned();
    let bobs = server.create_room(&bob, json!({ "invite": [alice.user_id.clone()] })).await;
    let carols_room = server.create_room(&carol, json!({ "invite": [alice.user_id.clone()] })).await;
    let sync = server.sync(&alice, Some(&since), None).await;
    assert!(sync["rooms"]["invite"].get(&bobs).is_none(), "{sync}");
    assert!(sync["rooms"]["invite"].get(&carols_room).is_some(), "{sync}");
    let initial = server.sync(&alice, None, None).await;
    assert!(initial["rooms"]["invite"].get(&bobs).is_none(), "{initial}");

    // Un-ignoring: bob's new messages come through again.
    let since = initial["next_batch"].as_str().unwrap().to_owned();
    server
        .expect_ok(Method::PUT, &ignore_path(&alice), Some(&json!({ "ignored_users": {} })), Some(&alice.access_token))
        .await;
    let again = server.send_text(&bob, &room, "heard again").await;
    let sync = server.sync(&alice, Some(&since), None).await;
    assert!(timeline(&sync, &room).iter().any(|event| event["event_id"] == again.as_str()), "{sync}");
}

/// `is_direct` of `/createRoom` reaches the invitee's member event and invite state; an
/// upgrade adds the new room beside the old one in each local member's `m.direct` and copies
/// their tags.
async fn direct_chats_and_upgrades(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = server.sync(&bob, None, None).await["next_batch"].as_str().unwrap().to_owned();
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id.clone()] }),
        )
        .await;
    let sync = server.sync(&bob, Some(&since), None).await;
    let invite_state =
        sync["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap_or_else(|| panic!("{sync}"));
    let own = invite_state
        .iter()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("bob's member event in {sync}"));
    assert_eq!(own["content"]["is_direct"], true, "{own}");
    assert_eq!(own["content"]["membership"], "invite");
    server.join(&bob, &room).await;
    let member = server.get_state(&alice, &room, "m.room.member", &bob.user_id).await;
    assert!(member.get("is_direct").is_none(), "bob's join does not carry the flag: {member}");

    let direct = |user: &User| format!("/_matrix/client/v3/user/{}/account_data/m.direct", encode(&user.user_id));
    let other = format!("!other:{}", server.server_name());
    let alices = json!({ bob.user_id.clone(): [other, room] });
    server.expect_ok(Method::PUT, &direct(&alice), Some(&alices), Some(&alice.access_token)).await;
    let bobs = json!({ alice.user_id.clone(): [room] });
    server.expect_ok(Method::PUT, &direct(&bob), Some(&bobs), Some(&bob.access_token)).await;
    let tag = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", encode(&alice.user_id), encode(&room));
    server.expect_ok(Method::PUT, &tag, Some(&json!({ "order": 0.25 })), Some(&alice.access_token)).await;

    let upgrade = format!("/_matrix/client/v3/rooms/{}/upgrade", encode(&room));
    let upgraded = server
        .expect_ok(Method::POST, &upgrade, Some(&json!({ "new_version": "12" })), Some(&alice.access_token))
        .await;
    let new_room = upgraded["replacement_room"].as_str().unwrap().to_owned();

    let alices = server.expect_ok(Method::GET, &direct(&alice), None, Some(&alice.access_token)).await;
    assert_eq!(alices, json!({ bob.user_id.clone(): [other, room, new_room] }));
    let bobs = server.expect_ok(Method::GET, &direct(&bob), None, Some(&bob.access_token)).await;
    assert_eq!(bobs, json!({ alice.user_id.clone(): [room, new_room] }));
    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", encode(&alice.user_id), encode(&new_room));
    let tags = server.expect_ok(Method::GET, &tags, None, Some(&alice.access_token)).await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.25, "{tags}");
}

/// A server with notices enabled.
async fn notices_server(backend: Backend) -> TestServer {
    builder(backend)
        .env("RANVIER_SERVER_NOTICES__ENABLED", "true")
        .env("RANVIER_SERVER_NOTICES__SYSTEM_USER_DISPLAY_NAME", "The Management")
        .env("RANVIER_SERVER_NOTICES__ROOM_NAME", "Notices")
        .start()
        .await
}

/// Register `localpart` and make it a server administrator.
async fn admin(server: &TestServer, localpart: &str) -> User {
    let user = server.register(localpart).await;
    server.execute_sql(&format!("UPDATE users SET admin = 1 WHERE user_id = '{}'", user.user_id)).await;
    user
}

const NOTICE_PATH: &str = "/_synapse/admin/v1/send_server_notice";

/// Send a notice as `admin`, returning the event id.
async fn send_notice(server: &TestServer, admin: &User, user: &User, body: &str) -> String {
    let request = json!({ "user_id": user.user_id, "content": { "msgtype": "m.server_notice", "body": body, "server_notice_type": "m.server_notice.usage_limit_reached", "limit_type": "monthly_active_user" } });
    let response = server.expect_ok(Method::POST, NOTICE_PATH, Some(&request), Some(&admin.access_token)).await;
    response["event_id"].as_str().unwrap_or_else(|| panic!("event_id in {response}")).to_owned()
}

/// A notice invites the user to a tagged room of the system user; the invite cannot be
/// rejected, the user can join but not write, and later notices use the same room.
async fn server_notices_arrive_and_cannot_be_answered(backend: Backend) {
    let server = notices_server(backend).await;
    let root = admin(&server, "root").await;
    let alice = server.register("alice").await;
    let system = server.user_id("notices");
    let since = server.sync(&alice, None, None).await["next_batch"].as_str().unwrap().to_owned();

    let first = send_notice(&server, &root, &alice, "Maintenance tonight").await;
    let sync = server.sync(&alice, Some(&since), None).await;
    let invites = sync["rooms"]["invite"].as_object().unwrap_or_else(|| panic!("{sync}"));
    assert_eq!(invites.len(), 1, "{sync}");
    let (room, invite) = invites.iter().next().unwrap();
    let state = invite["invite_state"]["events"].as_array().unwrap();
    let name = state.iter().find(|event| event["type"] == "m.room.name").unwrap_or_else(|| panic!("{invite}"));
    assert_eq!(name["content"]["name"], "Notices");
    let own = state.iter().find(|event| event["state_key"] == alice.user_id.as_str()).unwrap();
    assert_eq!(own["sender"], system.as_str());

    let leave = format!("/_matrix/client/v3/rooms/{}/leave", encode(room));
    let (status, body) = server.request(Method::POST, &leave, Some(&json!({})), Some(&alice.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")), "{body}");

    server.join(&alice, room).await;
    let sync = server.sync(&alice, None, None).await;
    let events = timeline(&sync, room);
    let notice = events.iter().find(|event| event["event_id"] == first.as_str()).unwrap_or_else(|| panic!("{sync}"));
    assert_eq!(notice["content"]["msgtype"], "m.server_notice");
    assert_eq!(notice["sender"], system.as_str());
    let tags = sync["rooms"]["join"][room]["account_data"]["events"].as_array().unwrap();
    let tag = tags.iter().find(|event| event["type"] == "m.tag").unwrap_or_else(|| panic!("m.tag in {sync}"));
    assert!(tag["content"]["tags"].get("m.server_notice").is_some(), "{tag}");
    let profile = format!("/_matrix/client/v3/profile/{}", encode(&system));
    let profile = server.expect_ok(Method::GET, &profile, None, Some(&alice.access_token)).await;
    assert_eq!(profile["displayname"], "The Management");

    let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room), txn_id());
    let (status, body) = server
        .request(Method::PUT, &send, Some(&json!({ "msgtype": "m.text", "body": "no" })), Some(&alice.access_token))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // The next notice goes to the same room; after leaving, alice is invited back to it.
    let second = send_notice(&server, &root, &alice, "Done").await;
    let history = server.messages(&alice, room, &ranvier_test::MessagesQuery::backward(None, 50)).await;
    assert!(history["chunk"].as_array().unwrap().iter().any(|event| event["event_id"] == second.as_str()));
    server.leave(&alice, room).await;
    send_notice(&server, &root, &alice, "Back").await;
    let sync = server.sync(&alice, None, None).await;
    let invites: Vec<&String> = sync["rooms"]["invite"].as_object().unwrap().keys().collect();
    assert_eq!(invites, [room], "{sync}");
}

/// The notice endpoint is for administrators, for local known users, and only when notices
/// are enabled.
async fn server_notice_endpoint_checks(backend: Backend) {
    let server = notices_server(backend).await;
    let root = admin(&server, "root").await;
    let alice = server.register("alice").await;
    let request = |user_id: &str| json!({ "user_id": user_id, "content": { "msgtype": "m.text", "body": "hi" } });

    let (status, body) = server.request(Method::POST, NOTICE_PATH, Some(&request(&alice.user_id)), None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{body}");
    let (status, body) =
        server.request(Method::POST, NOTICE_PATH, Some(&request(&alice.user_id)), Some(&alice.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let remote = request("@someone:elsewhere.example");
    let (status, body) = server.request(Method::POST, NOTICE_PATH, Some(&remote), Some(&root.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let unknown = request(&server.user_id("nobody"));
    let (status, body) = server.request(Method::POST, NOTICE_PATH, Some(&unknown), Some(&root.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = server
        .request(Method::POST, NOTICE_PATH, Some(&json!({ "user_id": alice.user_id })), Some(&root.access_token))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");

    let disabled = start(server.backend()).await;
    let root = admin(&disabled, "root").await;
    let (status, body) =
        disabled.request(Method::POST, NOTICE_PATH, Some(&request(&root.user_id)), Some(&root.access_token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|error| error.contains("not enabled")), "{body}");
}

backend_tests!(
    hierarchy_walks_depth_first_in_order,
    hierarchy_paginates_with_stable_tokens,
    hierarchy_max_depth_and_suggested_only,
    hierarchy_visibility_and_loops,
    restricted_child_admits_space_members,
    ignored_users_disappear,
    direct_chats_and_upgrades,
    server_notices_arrive_and_cannot_be_answered,
    server_notice_endpoint_checks,
);
