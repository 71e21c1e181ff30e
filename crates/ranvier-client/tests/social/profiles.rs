//! Profiles: the whole profile and its fields, their checks, and their way into member events; NUL
//! in every social endpoint.

use http::StatusCode;
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::*,
    support::{Backend, Session, TestApi},
};

both_backends!(profiles, profile_errors, nul_characters);

async fn profiles(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let (a, b) = (alice.user_id.as_str(), bob.user_id.as_str());

    // A new account is known by its localpart; its profile is public.
    let profile = api.get(&profile_path(a, ""), None).await;
    profile.assert_status(StatusCode::OK);
    assert_eq!(profile.body, json!({ "displayname": "alice" }));
    let name = api.get(&profile_path(a, "displayname"), None).await;
    assert_eq!((name.status, &name.body), (StatusCode::OK, &json!({ "displayname": "alice" })));
    api.get(&profile_path(a, "avatar_url"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@nobody:example.org", ""), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@nobody:example.org", "displayname"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@alice:elsewhere.org", ""), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Member events carry the profile: the creator's join, and an invite the invitee's.
    let room = create_room(&api, &alice, json!({ "invite": [b] })).await;
    assert_eq!(member_content(&api, &alice, &room, a).await["displayname"], "alice");
    let invite = member_content(&api, &alice, &room, b).await;
    assert_eq!((invite["membership"].as_str(), invite["displayname"].as_str()), (Some("invite"), Some("bob")));
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    assert_eq!(member_content(&api, &alice, &room, b).await["displayname"], "bob");

    // A new display name and avatar reach the member event of every joined room.
    let put = api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "Alice W." })).await;
    put.assert_status(StatusCode::OK);
    assert_eq!(put.body, json!({}));
    let avatar = json!({ "avatar_url": "mxc://example.org/abc" });
    api.put(&profile_path(a, "avatar_url"), alice.token(), avatar).await.assert_status(StatusCode::OK);
    let member = member_content(&api, &bob, &room, a).await;
    assert_eq!(
        (member["membership"].as_str(), member["displayname"].as_str(), member["avatar_url"].as_str()),
        (Some("join"), Some("Alice W."), Some("mxc://example.org/abc"))
    );
    // Setting the same value again sends nothing new.
    let member_ids = || async {
        let members = api.get(&format!("{V3}/rooms/{}/members", enc(&room)), alice.token()).await.body;
        members["chunk"].as_array().expect("chunk").iter().map(|event| event["event_id"].clone()).collect::<Vec<_>>()
    };
    let before = member_ids().await;
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "Alice W." }))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(before, member_ids().await);

    // Extended fields.
    let tz = json!({ "m.tz": "Europe/Paris" });
    api.put(&profile_path(a, "m.tz"), alice.token(), tz.clone()).await.assert_status(StatusCode::OK);
    let pronouns = json!({ "org.example.pronouns": { "en": ["she", "her"] } });
    api.put(&profile_path(a, "org.example.pronouns"), alice.token(), pronouns.clone())
        .await
        .assert_status(StatusCode::OK);
    let field = api.get(&profile_path(a, "org.example.pronouns"), None).await;
    assert_eq!((field.status, &field.body), (StatusCode::OK, &pronouns));
    assert_eq!(api.get(&profile_path(a, "m.tz"), None).await.body, tz);
    let profile = api.get(&profile_path(a, ""), bob.token()).await;
    assert_eq!(
        profile.body,
        json!({
            "displayname": "Alice W.",
            "avatar_url": "mxc://example.org/abc",
            "m.tz": "Europe/Paris",
            "org.example.pronouns": { "en": ["she", "her"] },
        })
    );

    // Deleting: the field goes, deleting again is fine, and the member event loses the name.
    let delete = |field: &str, who: &Session| {
        let path = profile_path(a, field);
        let token = who.access_token.clone();
        let api = &api;
        async move { api.send("DELETE", &path, Some(&token), None, None).await }
    };
    delete("org.example.pronouns", &alice).await.assert_status(StatusCode::OK);
    api.get(&profile_path(a, "org.example.pronouns"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    delete("org.example.pronouns", &alice).await.assert_status(StatusCode::OK);
    delete("displayname", &alice).await.assert_status(StatusCode::OK);
    let member = member_content(&api, &bob, &room, a).await;
    assert_eq!(member.get("displayname"), None, "{member}");
    assert_eq!(member["avatar_url"], "mxc://example.org/abc");
    // An empty avatar URL clears it, as clients send.
    api.put(&profile_path(a, "avatar_url"), alice.token(), json!({ "avatar_url": "" }))
        .await
        .assert_status(StatusCode::OK);
    api.get(&profile_path(a, "avatar_url"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(member_content(&api, &bob, &room, a).await, json!({ "membership": "join" }));
}

async fn profile_errors(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let a = alice.user_id.as_str();

    // Only one's own profile.
    let put = api.put(&profile_path(a, "displayname"), bob.token(), json!({ "displayname": "Mallory" })).await;
    put.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let custom = json!({ "org.example.x": 1 });
    api.put(&profile_path(a, "org.example.x"), bob.token(), custom)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.send("DELETE", &profile_path(a, "displayname"), bob.token(), None, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(api.get(&profile_path(a, "displayname"), None).await.body["displayname"], "alice");
    // Writing needs a token.
    api.put(&profile_path(a, "displayname"), None, json!({ "displayname": "x" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // Field names: the spec's grammar and length.
    api.put(&profile_path(a, "Custom"), alice.token(), json!({ "Custom": 1 }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&profile_path(a, "nodots"), alice.token(), json!({ "nodots": 1 }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let long = format!("org.{}", "a".repeat(260));
    let mut body = serde_json::Map::new();
    body.insert(long.clone(), json!(1));
    api.put(&profile_path(a, &long), alice.token(), Value::Object(body))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_KEY_TOO_LARGE");

    // Values: display names are strings of a sane length, avatars are mxc URIs, and the whole
    // profile stays under 64 KiB.
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": 42 }))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "x".repeat(300) }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.put(&profile_path(a, "avatar_url"), alice.token(), json!({ "avatar_url": "https://example.org/a.png" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "other": "x" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    api.put(&profile_path(a, "org.example.x"), alice.token(), json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    api.send_raw("PUT", &profile_path(a, "displayname"), alice.token(), Some("[1]".to_owned()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.send_raw("PUT", &profile_path(a, "displayname"), alice.token(), Some("{".to_owned()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_NOT_JSON");
    api.put(&profile_path(a, "displayname"), Some("nonsense"), json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let big = json!({ "org.example.big": "x".repeat(40_000) });
    api.put(&profile_path(a, "org.example.big"), alice.token(), big).await.assert_status(StatusCode::OK);
    let bigger = json!({ "org.example.bigger": "y".repeat(30_000) });
    api.put(&profile_path(a, "org.example.bigger"), alice.token(), bigger)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE");
    api.get(&profile_path(a, "org.example.bigger"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

/// NUL characters are valid JSON and percent-encoding but not PostgreSQL text: every social
/// endpoint answers them with a client error, never a 500.
async fn nul_characters(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let event = send_text(&api, &alice, &room, "hi").await;
    let (a, r) = (enc(&alice.user_id), enc(&room));
    let cases = [
        ("PUT", format!("{V3}/profile/{a}/displayname"), json!({ "displayname": "a\u{0}b" })),
        ("PUT", format!("{V3}/profile/{a}/org.example.x"), json!({ "org.example.x": "a\u{0}b" })),
        ("PUT", format!("{V3}/profile/{a}/org.exa%00mple"), json!({ "org.exa\u{0}mple": 1 })),
        ("GET", format!("{V3}/profile/{a}/org.exa%00mple"), Value::Null),
        ("GET", format!("{V3}/profile/%40a%00b%3Aexample.org"), Value::Null),
        ("PUT", format!("{V3}/presence/{a}/status"), json!({ "presence": "online", "status_msg": "a\u{0}b" })),
        ("PUT", format!("{V3}/user/{a}/rooms/{r}/tags/u.a%00b"), json!({})),
        ("DELETE", format!("{V3}/user/{a}/rooms/{r}/tags/u.a%00b"), Value::Null),
        ("POST", format!("{V3}/rooms/{r}/receipt/m.read/%24a%00b"), json!({})),
        ("POST", format!("{V3}/rooms/{r}/receipt/m.read/{}", enc(&event)), json!({ "thread_id": "$a\u{0}b" })),
        ("POST", format!("{V3}/rooms/{r}/read_markers"), json!({ "m.fully_read": "$a\u{0}b" })),
        ("PUT", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), json!({ "room_id": room })),
        ("GET", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), Value::Null),
        ("DELETE", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), Value::Null),
        ("POST", format!("{V3}/createRoom"), json!({ "room_alias_name": "a\u{0}b" })),
        ("POST", format!("{V3}/join/%23a%00b%3Aexample.org"), json!({})),
        ("POST", format!("{V3}/knock/%23a%00b%3Aexample.org"), json!({})),
        ("GET", format!("{V3}/directory/list/room/%21a%00b%3Aexample.org"), Value::Null),
        ("GET", format!("{V3}/publicRooms?since=o%00"), Value::Null),
        ("POST", format!("{V3}/publicRooms"), json!({ "filter": { "generic_search_term": "a\u{0}b" } })),
        ("POST", format!("{V3}/user_directory/search"), json!({ "search_term": "a\u{0}b" })),
        ("PUT", format!("{V3}/rooms/%21a%00b%3Aexample.org/typing/{a}"), json!({ "typing": true, "timeout": 100 })),
        ("GET", format!("{V3}/rooms/{r}/aliases"), Value::Null),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then(|| body.to_string());
        let response = api.send_raw(method, &path, alice.token(), body.clone(), None).await;
        assert!(
            response.status.is_success() || response.status.is_client_error(),
            "{method} {path} {body:?}: {}",
            response.body
        );
    }
}
