//! Knocking, restricted joins and room upgrades.

use http::StatusCode;
use serde_json::json;

use crate::{
    both_backends,
    common::*,
    support::{Backend, TestApi},
};

both_backends!(knocking, restricted_joins, room_upgrades);

async fn knocking(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let knock_rule = json!([{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }]);
    let room = create_room(
        &api,
        &alice,
        json!({ "room_version": "10", "initial_state": knock_rule, "room_alias_name": "door" }),
    )
    .await;
    let closed = create_room(&api, &alice, json!({ "room_version": "10" })).await;
    let knock = |room: &str| format!("{V3}/knock/{}", enc(room));

    let knocked = api.post(&knock(&room), bob.token(), json!({ "reason": "let me in" })).await;
    assert_eq!((knocked.status, &knocked.body), (StatusCode::OK, &json!({ "room_id": room })));
    assert_eq!(membership(&api, &room, &bob).await.as_deref(), Some("knock"));
    let event = member_content(&api, &alice, &room, &bob.user_id).await;
    assert_eq!(event, json!({ "membership": "knock", "reason": "let me in", "displayname": "bob" }));
    // A knock cannot become a join by itself; an invite lets bob in.
    join(&api, &bob, &room).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&format!("{V3}/rooms/{}/invite", enc(&room)), alice.token(), json!({ "user_id": bob.user_id }))
        .await
        .assert_status(StatusCode::OK);
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);

    // Knocking by alias; a knock can be withdrawn by leaving.
    let by_alias = api.post(&knock("#door:example.org"), carol.token(), json!({})).await;
    assert_eq!((by_alias.status, &by_alias.body), (StatusCode::OK, &json!({ "room_id": room })));
    api.post(&format!("{V3}/rooms/{}/leave", enc(&room)), carol.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(membership(&api, &room, &carol).await.as_deref(), Some("leave"));

    // Not where the join rule does not allow it, not when already in, not into the unknown.
    api.post(&knock(&closed), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&knock(&room), alice.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&knock("!nowhere:example.org"), carol.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.post(&knock("#nowhere:example.org"), carol.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Room version 6 has no knocking.
    let old = create_room(&api, &alice, json!({ "room_version": "6", "preset": "public_chat" })).await;
    api.put(
        &format!("{V3}/rooms/{}/state/m.room.join_rules", enc(&old)),
        alice.token(),
        json!({ "join_rule": "knock" }),
    )
    .await
    .assert_status(StatusCode::OK);
    api.post(&knock(&old), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn restricted_joins(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let space = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let rule = |join_rule: &str| {
        json!([{ "type": "m.room.join_rules", "content": {
            "join_rule": join_rule, "allow": [{ "type": "m.room_membership", "room_id": space }],
        } }])
    };
    let restricted =
        create_room(&api, &alice, json!({ "room_version": "10", "initial_state": rule("restricted") })).await;
    let knockable =
        create_room(&api, &alice, json!({ "room_version": "10", "initial_state": rule("knock_restricted") })).await;

    // Outside the allowed room: no.
    join(&api, &bob, &restricted).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    join(&api, &bob, &knockable).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A member of it: yes, authorised by a local member who may invite.
    join(&api, &bob, &space).await.assert_status(StatusCode::OK);
    join(&api, &bob, &restricted).await.assert_status(StatusCode::OK);
    let joined = member_content(&api, &alice, &restricted, &bob.user_id).await;
    assert_eq!(joined["join_authorised_via_users_server"], json!(alice.user_id));
    assert_eq!(joined["membership"], "join");
    join(&api, &bob, &knockable).await.assert_status(StatusCode::OK);
    // knock_restricted also lets others knock.
    api.post(&format!("{V3}/knock/{}", enc(&knockable)), carol.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(membership(&api, &knockable, &carol).await.as_deref(), Some("knock"));
    // An invited user joins without an authoriser.
    let invite = format!("{V3}/rooms/{}/invite", enc(&restricted));
    api.post(&invite, alice.token(), json!({ "user_id": carol.user_id })).await.assert_status(StatusCode::OK);
    join(&api, &carol, &restricted).await.assert_status(StatusCode::OK);
    assert!(
        member_content(&api, &alice, &restricted, &carol.user_id)
            .await
            .get("join_authorised_via_users_server")
            .is_none()
    );

    // Nobody here may invite: the join cannot be granted.
    let body = json!({
        "room_version": "10",
        "initial_state": rule("restricted"),
        "power_level_content_override": { "invite": 1000 },
    });
    let locked = create_room(&api, &alice, body).await;
    join(&api, &bob, &locked).await.assert_error(StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN");
}

async fn room_upgrades(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let dave = api.register("dave", "pw").await;
    let old = create_room(
        &api,
        &alice,
        json!({
            "room_version": "10", "visibility": "public", "name": "Old", "topic": "Topic",
            "room_alias_name": "up", "preset": "public_chat",
        }),
    )
    .await;
    join(&api, &bob, &old).await.assert_status(StatusCode::OK);
    join(&api, &carol, &old).await.assert_status(StatusCode::OK);
    api.post(&format!("{V3}/rooms/{}/ban", enc(&old)), alice.token(), json!({ "user_id": carol.user_id }))
        .await
        .assert_status(StatusCode::OK);
    let upgrade = format!("{V3}/rooms/{}/upgrade", enc(&old));

    api.post(&upgrade, bob.token(), json!({ "new_version": "12" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&upgrade, dave.token(), json!({ "new_version": "12" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&upgrade, alice.token(), json!({ "new_version": "99" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    api.post(
        &format!("{V3}/rooms/{}/upgrade", enc("!nowhere:example.org")),
        alice.token(),
        json!({ "new_version": "12" }),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let upgraded = api.post(&upgrade, alice.token(), json!({ "new_version": "12" })).await;
    upgraded.assert_status(StatusCode::OK);
    let new = upgraded.body["replacement_room"].as_str().expect("replacement_room").to_owned();
    assert_ne!(new, old);

    // The old room: tombstoned, closed to messages and invites from ordinary members.
    let tombstone = state_content(&api, &alice, &old, "m.room.tombstone").await.body;
    assert_eq!(tombstone["replacement_room"], json!(new));
    let levels = state_content(&api, &alice, &old, "m.room.power_levels").await.body;
    assert_eq!((levels["events_default"].as_i64(), levels["invite"].as_i64()), (Some(50), Some(50)));
    let send = format!("{V3}/rooms/{}/send/m.room.message/late", enc(&old));
    api.put(&send, bob.token(), json!({ "msgtype": "m.text", "body": "late" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // The new room: the predecessor, the carried state, the ban, the alias and the listing.
    let create = state_content(&api, &alice, &new, "m.room.create").await.body;
    assert_eq!(
        (create["room_version"].as_str(), create["predecessor"]["room_id"].as_str()),
        (Some("12"), Some(old.as_str()))
    );
    assert!(create["predecessor"]["event_id"].as_str().is_some_and(|id| id.starts_with('$')));
    assert_eq!(state_content(&api, &alice, &new, "m.room.name").await.body, json!({ "name": "Old" }));
    assert_eq!(state_content(&api, &alice, &new, "m.room.topic").await.body["topic"], "Topic");
    assert_eq!(state_content(&api, &alice, &new, "m.room.join_rules").await.body, json!({ "join_rule": "public" }));
    let new_levels = state_content(&api, &alice, &new, "m.room.power_levels").await.body;
    assert!(
        new_levels["users"].get(&alice.user_id).is_none(),
        "creators of version 12 rooms are not listed: {new_levels}"
    );
    assert_eq!(membership(&api, &new, &carol).await.as_deref(), Some("ban"));
    assert_eq!(api.get(&alias_path("#up:example.org"), None).await.body["room_id"], json!(new));
    assert_eq!(
        state_content(&api, &alice, &new, "m.room.canonical_alias").await.body,
        json!({ "alias": "#up:example.org" })
    );
    assert_eq!(state_content(&api, &alice, &old, "m.room.canonical_alias").await.body, json!({}));
    let list = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));
    assert_eq!(api.get(&list(&old), None).await.body, json!({ "visibility": "private" }));
    assert_eq!(api.get(&list(&new), None).await.body, json!({ "visibility": "public" }));
    // Members follow by joining the replacement.
    join(&api, &bob, &new).await.assert_status(StatusCode::OK);
    join(&api, &carol, &new).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // To a version without privileged creators, the upgrader keeps power in the new room.
    let small = create_room(&api, &alice, json!({ "room_version": "10" })).await;
    let upgraded =
        api.post(&format!("{V3}/rooms/{}/upgrade", enc(&small)), alice.token(), json!({ "new_version": "11" })).await;
    upgraded.assert_status(StatusCode::OK);
    let next = upgraded.body["replacement_room"].as_str().expect("replacement_room").to_owned();
    let levels = state_content(&api, &alice, &next, "m.room.power_levels").await.body;
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    assert_eq!(state_content(&api, &alice, &next, "m.room.create").await.body["predecessor"]["room_id"], json!(small));
}
