//! Room tags, room aliases and canonical alias checks, the public room directory and the user
//! directory.

use http::StatusCode;
use ranvier_store::StreamKind;
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::*,
    support::{Backend, TestApi},
};

both_backends!(tags, aliases, canonical_alias_and_create_with_alias, public_room_directory, user_directory);

async fn tags(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let room = create_room(&api, &alice, json!({})).await;
    let tags_path = format!("{V3}/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let tag_path = |tag: &str| format!("{tags_path}/{tag}");

    let empty = api.get(&tags_path, alice.token()).await;
    assert_eq!((empty.status, &empty.body), (StatusCode::OK, &json!({ "tags": {} })));
    let before = token(&api);
    let put = api.put(&tag_path("m.favourite"), alice.token(), json!({ "order": 0.5 })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    api.put(&tag_path("u.work"), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(
        api.get(&tags_path, alice.token()).await.body,
        json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
    );
    // Stored as the m.tag room account data, in the account-data stream that /sync reads.
    assert!(token(&api).get(StreamKind::AccountData) > before.get(StreamKind::AccountData));
    let changes = api
        .store()
        .account_data_changes(
            &alice.user_id,
            before.get(StreamKind::AccountData),
            token(&api).get(StreamKind::AccountData),
        )
        .await
        .expect("account data changes");
    let (changed_room, data_type, content) = changes.last().expect("a change");
    assert_eq!((changed_room.as_str(), data_type.as_str()), (room.as_str(), "m.tag"));
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
    );
    let data_path = format!("{V3}/user/{}/rooms/{}/account_data/m.tag", enc(&alice.user_id), enc(&room));
    assert_eq!(api.get(&data_path, alice.token()).await.body["tags"]["u.work"], json!({}));

    api.send("DELETE", &tag_path("m.favourite"), alice.token(), None, None).await.assert_status(StatusCode::OK);
    api.send("DELETE", &tag_path("m.favourite"), alice.token(), None, None).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&tags_path, alice.token()).await.body, json!({ "tags": { "u.work": {} } }));

    // Concurrent changes do not lose one another.
    let body = json!({ "order": 0.1 });
    let paths: Vec<String> = (0..4).map(|i| tag_path(&format!("u.t{i}"))).collect();
    let (a, b, c, d) = tokio::join!(
        api.put(&paths[0], alice.token(), body.clone()),
        api.put(&paths[1], alice.token(), body.clone()),
        api.put(&paths[2], alice.token(), body.clone()),
        api.put(&paths[3], alice.token(), body.clone()),
    );
    for response in [a, b, c, d] {
        response.assert_status(StatusCode::OK);
    }
    let tags = api.get(&tags_path, alice.token()).await.body;
    assert_eq!(tags["tags"].as_object().map(|tags| tags.len()), Some(5), "{tags}");

    // Only one's own tags.
    api.get(&tags_path, bob.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&tag_path("u.x"), bob.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.send("DELETE", &tag_path("u.work"), bob.token(), None, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&tag_path("u.bad"), alice.token(), json!({ "order": "high" })).await.assert_status(StatusCode::BAD_REQUEST);
}

async fn aliases(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let alias = "#lounge:example.org";

    let put = api.put(&alias_path(alias), alice.token(), json!({ "room_id": room })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    let get = api.get(&alias_path(alias), None).await;
    assert_eq!((get.status, &get.body), (StatusCode::OK, &json!({ "room_id": room, "servers": ["example.org"] })));

    // Taken, foreign, malformed, for an unknown room, or by a non-member.
    api.put(&alias_path(alias), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::CONFLICT, "M_UNKNOWN");
    api.put(&alias_path("#lounge:other.org"), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&alias_path("lounge"), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&alias_path("#x:example.org"), alice.token(), json!({ "room_id": "!nowhere:example.org" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(&alias_path("#x:example.org"), bob.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&alias_path("#x:example.org"), None, json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.get(&alias_path("#missing:example.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&alias_path("#lounge:other.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&alias_path("lounge"), None).await.assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Joining by alias.
    let joined = join(&api, &bob, alias).await;
    assert_eq!((joined.status, &joined.body["room_id"]), (StatusCode::OK, &json!(room)));
    join(&api, &bob, "#missing:example.org").await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The room's aliases, for members only (the room's history is not world readable).
    let aliases_path = format!("{V3}/rooms/{}/aliases", enc(&room));
    let listed = api.get(&aliases_path, bob.token()).await;
    assert_eq!((listed.status, &listed.body), (StatusCode::OK, &json!({ "aliases": [alias] })));
    api.get(&aliases_path, carol.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Deleting: bob (power 0) may delete his own alias but not alice's; alice, with the power to
    // change the canonical alias, may delete bob's.
    let bobs = "#bobs:example.org";
    api.put(&alias_path(bobs), bob.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    api.delete(&alias_path(alias), bob.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.delete(&alias_path(alias), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let deleted = api.delete(&alias_path(bobs), alice.token(), json!({})).await;
    assert_eq!((deleted.status, &deleted.body), (StatusCode::OK, &json!({})));
    api.get(&alias_path(bobs), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.delete(&alias_path(bobs), alice.token(), json!({})).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(&alias_path(bobs), bob.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    api.delete(&alias_path(bobs), bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&aliases_path, bob.token()).await.body, json!({ "aliases": [alias] }));
}

async fn canonical_alias_and_create_with_alias(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let room = create_room(&api, &alice, json!({ "room_alias_name": "fancy", "preset": "public_chat" })).await;
    let fancy = "#fancy:example.org";
    assert_eq!(api.get(&alias_path(fancy), None).await.body["room_id"], json!(room));
    let canonical = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&room));
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alias": fancy }));

    // A taken or malformed alias name fails before any room is made.
    let create = format!("{V3}/createRoom");
    api.post(&create, alice.token(), json!({ "room_alias_name": "fancy" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    api.post(&create, alice.token(), json!({ "room_alias_name": "two words" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.post(&create, alice.token(), json!({ "room_alias_name": "a:b" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Canonical aliases must point at the room.
    let other = create_room(&api, &alice, json!({ "room_alias_name": "other" })).await;
    let second = "#second:example.org";
    api.put(&alias_path(second), alice.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    let both = json!({ "alias": fancy, "alt_aliases": [second] });
    api.put(&canonical, alice.token(), both.clone()).await.assert_status(StatusCode::OK);
    api.put(&canonical, alice.token(), json!({ "alias": "#other:example.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": fancy, "alt_aliases": [second, "#none:example.org"] }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": "#remote:other.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": "not an alias" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&canonical, alice.token(), json!({ "alt_aliases": "#fancy:example.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Permission comes first: a member without the power gets 403 whatever the alias.
    let bob = api.register("bob", "pw").await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    api.put(&canonical, bob.token(), json!({ "alias": "#none:example.org" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Initial state is checked too: an alias of another room cannot be named.
    let initial = json!({ "initial_state": [{ "type": "m.room.canonical_alias", "content": { "alias": fancy } }] });
    api.post(&create, alice.token(), initial).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    assert_eq!(api.get(&canonical, alice.token()).await.body, both);

    // Deleting an alias takes it out of the canonical alias event.
    api.delete(&alias_path(second), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alias": fancy, "alt_aliases": [] }));
    api.delete(&alias_path(fancy), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alt_aliases": [] }));
    let other_canonical = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&other));
    assert_eq!(api.get(&other_canonical, alice.token()).await.body, json!({ "alias": "#other:example.org" }));
}

async fn public_room_directory(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let rust = create_room(
        &api,
        &alice,
        json!({ "visibility": "public", "name": "Rust", "topic": "All about ownership", "room_alias_name": "rust" }),
    )
    .await;
    let cooking = create_room(&api, &alice, json!({ "visibility": "public", "name": "Cooking" })).await;
    let chess = create_room(&api, &alice, json!({ "visibility": "public", "name": "Chess" })).await;
    let private = create_room(&api, &alice, json!({ "name": "Private" })).await;
    join(&api, &bob, &cooking).await.assert_status(StatusCode::OK);
    let list_path = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));

    assert_eq!(api.get(&list_path(&rust), None).await.body, json!({ "visibility": "public" }));
    assert_eq!(api.get(&list_path(&private), None).await.body, json!({ "visibility": "private" }));
    api.get(&list_path("!nowhere:example.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The list: most members first, then by room id; the whole summary of each room.
    let listed = api.get(&format!("{V3}/publicRooms"), None).await;
    listed.assert_status(StatusCode::OK);
    let chunk = listed.body["chunk"].as_array().expect("chunk").clone();
    let ids: Vec<&str> = chunk.iter().map(|room| room["room_id"].as_str().unwrap_or_default()).collect();
    let mut rest = vec![rust.as_str(), chess.as_str()];
    rest.sort();
    assert_eq!(ids, [vec![cooking.as_str()], rest].concat());
    assert_eq!(listed.body["total_room_count_estimate"], 3);
    let entry = chunk.iter().find(|room| room["room_id"] == json!(rust)).expect("rust listed");
    assert_eq!(entry["name"], "Rust");
    assert_eq!(entry["topic"], "All about ownership");
    assert_eq!(entry["canonical_alias"], "#rust:example.org");
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!((entry["world_readable"].as_bool(), entry["guest_can_join"].as_bool()), (Some(false), Some(false)));
    assert_eq!(chunk[0]["num_joined_members"], 2);

    // Pages.
    let first = api.get(&format!("{V3}/publicRooms?limit=2"), None).await.body;
    assert_eq!(first["chunk"].as_array().map(Vec::len), Some(2));
    assert!(first.get("prev_batch").is_none());
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = api.get(&format!("{V3}/publicRooms?limit=2&since={next}"), None).await.body;
    assert_eq!(second["chunk"].as_array().map(Vec::len), Some(1));
    assert!(second.get("next_batch").is_none());
    let prev = second["prev_batch"].as_str().expect("prev_batch");
    let back = api.get(&format!("{V3}/publicRooms?limit=2&since={prev}"), None).await.body;
    assert_eq!(back["chunk"], first["chunk"]);
    api.get(&format!("{V3}/publicRooms?since=garbage"), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.get(&format!("{V3}/publicRooms?server=other.org"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The filtered list needs a token and searches names, topics and aliases.
    let search = |term: &str| json!({ "filter": { "generic_search_term": term } });
    api.post(&format!("{V3}/publicRooms"), None, search("rust"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let found = api.post(&format!("{V3}/publicRooms"), bob.token(), search("OWNERSHIP")).await;
    found.assert_status(StatusCode::OK);
    assert_eq!(found.body["chunk"].as_array().map(Vec::len), Some(1));
    assert_eq!(found.body["chunk"][0]["room_id"], json!(rust));
    let by_alias = api.post(&format!("{V3}/publicRooms"), bob.token(), search("#rust:")).await.body;
    assert_eq!(by_alias["chunk"][0]["room_id"], json!(rust));
    let none = api.post(&format!("{V3}/publicRooms"), bob.token(), search("python")).await.body;
    assert_eq!(none["chunk"], json!([]));
    let spaces = api
        .post(&format!("{V3}/publicRooms"), bob.token(), json!({ "filter": { "room_types": ["m.space"] } }))
        .await
        .body;
    assert_eq!(spaces["chunk"], json!([]));

    // Publishing needs the power to change the canonical alias; an invite-only room is not
    // listed even when published.
    api.put(&list_path(&chess), bob.token(), json!({ "visibility": "private" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&list_path(&cooking), bob.token(), json!({ "visibility": "private" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&list_path("!nowhere:example.org"), alice.token(), json!({ "visibility": "public" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unpublish = api.put(&list_path(&chess), alice.token(), json!({ "visibility": "private" })).await;
    assert_eq!((unpublish.status, &unpublish.body), (StatusCode::OK, &json!({})));
    api.put(&list_path(&private), alice.token(), json!({ "visibility": "public" })).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&list_path(&private), None).await.body, json!({ "visibility": "public" }));
    let listed = api.get(&format!("{V3}/publicRooms"), None).await.body;
    let ids: Vec<&str> =
        listed["chunk"].as_array().expect("chunk").iter().filter_map(|room| room["room_id"].as_str()).collect();
    assert_eq!(ids, vec![cooking.as_str(), rust.as_str()]);
}

async fn user_directory(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let dave = api.register("dave", "pw").await;
    let search_path = format!("{V3}/user_directory/search");
    let search = |term: &str, limit: Option<u64>| {
        let mut body = json!({ "search_term": term });
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        body
    };
    let found = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|user| user["user_id"].as_str().map(str::to_owned))
            .collect()
    };

    // alice and bob share a private room; carol sits in a public room; dave is alone.
    let private = create_room(&api, &alice, json!({ "invite": [bob.user_id] })).await;
    join(&api, &bob, &private).await.assert_status(StatusCode::OK);
    create_room(&api, &carol, json!({ "preset": "public_chat" })).await;
    create_room(&api, &dave, json!({})).await;

    let bob_found = api.post(&search_path, alice.token(), search("bo", None)).await;
    bob_found.assert_status(StatusCode::OK);
    assert_eq!(
        bob_found.body,
        json!({ "results": [{ "user_id": bob.user_id, "display_name": "bob" }], "limited": false })
    );
    assert_eq!(
        found(&api.post(&search_path, alice.token(), search("CAR", None)).await.body),
        vec![carol.user_id.clone()]
    );
    assert!(found(&api.post(&search_path, alice.token(), search("dave", None)).await.body).is_empty());
    assert!(found(&api.post(&search_path, alice.token(), search("alice", None)).await.body).is_empty(), "not oneself");
    assert!(found(&api.post(&search_path, carol.token(), search("bob", None)).await.body).is_empty());

    // Display names are searched word by word, and results show the new name and avatar.
    let profile = format!("{V3}/profile/{}", enc(&bob.user_id));
    api.put(&format!("{profile}/displayname"), bob.token(), json!({ "displayname": "Robert Builder" }))
        .await
        .assert_status(StatusCode::OK);
    api.put(&format!("{profile}/avatar_url"), bob.token(), json!({ "avatar_url": "mxc://example.org/bob" }))
        .await
        .assert_status(StatusCode::OK);
    let by_name = api.post(&search_path, alice.token(), search("build rob", None)).await.body;
    assert_eq!(
        by_name["results"],
        json!([{ "user_id": bob.user_id, "display_name": "Robert Builder", "avatar_url": "mxc://example.org/bob" }])
    );
    assert!(found(&api.post(&search_path, alice.token(), search("uilder", None)).await.body).is_empty());
    assert_eq!(
        found(&api.post(&search_path, alice.token(), search("@bob:exa", None)).await.body),
        vec![bob.user_id.clone()]
    );

    // Limits: the rest is reported as `limited`; users sharing a room come first.
    let public = create_room(&api, &carol, json!({ "preset": "public_chat", "name": "square" })).await;
    for name in ["bo1", "bo2", "bo3"] {
        let user = api.register(name, "pw").await;
        join(&api, &user, &public).await.assert_status(StatusCode::OK);
    }
    let limited = api.post(&search_path, alice.token(), search("bo", Some(2))).await.body;
    assert_eq!(limited["limited"], true);
    let ids = found(&limited);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], bob.user_id, "the shared-room user first");
    let all = api.post(&search_path, alice.token(), search("bo", None)).await.body;
    assert_eq!((found(&all).len(), all["limited"].as_bool()), (4, Some(false)));
    // Deactivated accounts are not found.
    api.store().deactivate_user("@bo3:example.org").await.expect("deactivate");
    assert_eq!(found(&api.post(&search_path, alice.token(), search("bo", None)).await.body).len(), 3);
    // Edge cases.
    let blank = api.post(&search_path, alice.token(), search("   ", None)).await;
    assert_eq!((blank.status, &blank.body), (StatusCode::OK, &json!({ "results": [], "limited": false })));
    let wild = api.post(&search_path, alice.token(), search("%", None)).await;
    assert_eq!((wild.status, &wild.body["results"]), (StatusCode::OK, &json!([])));
    api.post(&search_path, None, search("bo", None)).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.post(&search_path, alice.token(), json!({})).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
}
