//! The social layer driven by `matrix-sdk` clients, as a real application uses it: profiles
//! and the member list, typing, receipts, read markers and unread counts, presence, account
//! data and tags, aliases and the room directories, knocking, restricted joins and upgrades.
//!
//! `matrix-sdk` brings its own `ruma` (a different version from the server's); its types are
//! used only through the SDK here. Raw HTTP, with the SDK's own access token, checks exact
//! shapes where the SDK hides them.

use std::time::Duration;

use matrix_sdk::{
    Client, RoomMemberships, RoomState,
    config::SyncSettings,
    room::Receipts,
    ruma::{
        OwnedRoomAliasId, OwnedRoomId, OwnedRoomOrAliasId, OwnedUserId, RoomVersionId,
        api::client::{
            directory::{
                get_public_rooms_filtered::v3::Request as PublicRoomsFilteredRequest,
                set_room_visibility::v3::Request as SetVisibilityRequest,
            },
            receipt::create_receipt::v3::ReceiptType,
            room::{
                Visibility, create_room::v3::Request as CreateRoomRequest, create_room::v3::RoomPreset,
                upgrade_room::v3::Request as UpgradeRoomRequest,
            },
        },
        directory::PublicRoomsChunk,
        events::{
            receipt::ReceiptThread,
            room::message::RoomMessageEventContent,
            tag::{TagInfo, TagName},
        },
        mxc_uri,
        presence::PresenceState,
        profile::ProfileFieldName,
    },
    sync::SyncResponse,
};
use ranvier_test::{Backend, Method, TestServer, backend_tests, encode, password_for};
use serde_json::{Value, json};

use crate::start;

/// How long one `sync_once` may take before the test gives up on the server.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Register `name` over raw HTTP, then log in with a fresh `matrix-sdk` client.
async fn login(server: &TestServer, name: &str) -> Client {
    server.register(name).await;
    crate::e2ee::login(server, name).await
}

/// One sync pass with `settings` (no waiting unless they say so).
async fn sync_with(client: &Client, server: &TestServer, settings: SyncSettings) -> SyncResponse {
    match tokio::time::timeout(SYNC_TIMEOUT, client.sync_once(settings)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("sync_once: {e}\n{}", server.log_report()),
        Err(_) => panic!("sync_once took longer than {SYNC_TIMEOUT:?}\n{}", server.log_report()),
    }
}

/// One sync pass without waiting.
async fn sync(client: &Client, server: &TestServer) -> SyncResponse {
    sync_with(client, server, SyncSettings::default().timeout(Duration::ZERO)).await
}

fn user_id(client: &Client) -> OwnedUserId {
    client.user_id().unwrap_or_else(|| panic!("the client is logged in")).to_owned()
}

fn token(client: &Client) -> String {
    client.access_token().unwrap_or_else(|| panic!("the client has an access token"))
}

/// Raw JSON of any SDK `Raw<T>`.
fn json_of<T>(raw: &matrix_sdk::ruma::serde::Raw<T>) -> Value {
    serde_json::from_str(raw.json().get()).unwrap_or_else(|e| panic!("an event is not JSON: {e}"))
}

/// Alice creates a private room (with `request`'s settings), invites bob, and bob joins; both
/// clients have synced the result.
async fn shared_room(server: &TestServer, alice: &Client, bob: &Client, request: CreateRoomRequest) -> OwnedRoomId {
    sync(alice, server).await;
    let room = alice.create_room(request).await.unwrap_or_else(|e| panic!("create room: {e}\n{}", server.log_report()));
    room.invite_user_by_id(&user_id(bob)).await.unwrap_or_else(|e| panic!("invite: {e}\n{}", server.log_report()));
    sync(bob, server).await;
    bob.join_room_by_id(room.room_id()).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    sync(bob, server).await;
    sync(alice, server).await;
    room.room_id().to_owned()
}

/// The ephemeral events of `room_id` in an SDK sync response, as JSON.
fn ephemeral(response: &SyncResponse, room_id: &OwnedRoomId) -> Vec<Value> {
    response.rooms.joined.get(room_id).map(|update| update.ephemeral.iter().map(json_of).collect()).unwrap_or_default()
}

/// Display name and avatar set through the SDK come back from the profile endpoints and reach
/// the other member's member list.
async fn profiles_reach_the_member_list(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let room_id = shared_room(&server, &alice, &bob, CreateRoomRequest::new()).await;

    let avatar = mxc_uri!("mxc://example.org/alicesface");
    alice.account().set_display_name(Some("Alice Liddell")).await.unwrap_or_else(|e| panic!("set name: {e}"));
    alice.account().set_avatar_url(Some(avatar)).await.unwrap_or_else(|e| panic!("set avatar: {e}"));

    let own = alice.account().fetch_user_profile().await.unwrap_or_else(|e| panic!("own profile: {e}"));
    assert_eq!(own.get("displayname").map(|v| v.to_string()), Some("\"Alice Liddell\"".to_owned()));
    let seen = bob.account().fetch_user_profile_of(&user_id(&alice)).await.unwrap_or_else(|e| panic!("profile: {e}"));
    assert_eq!(seen.get("avatar_url").map(|v| v.to_string()), Some(format!("\"{avatar}\"")));
    assert_eq!(alice.account().get_display_name().await.unwrap_or_default().as_deref(), Some("Alice Liddell"));

    // The change is a new membership event in every joined room, so bob's client learns it.
    sync(&bob, &server).await;
    let room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));
    let member = room
        .get_member_no_sync(&user_id(&alice))
        .await
        .unwrap_or_else(|e| panic!("member: {e}"))
        .unwrap_or_else(|| panic!("alice is a member in bob's store"));
    assert_eq!(member.display_name(), Some("Alice Liddell"));
    assert_eq!(member.avatar_url(), Some(avatar));
    let members = room.members(RoomMemberships::JOIN).await.unwrap_or_else(|e| panic!("members: {e}"));
    assert!(members.iter().any(|m| m.display_name() == Some("Alice Liddell")), "the member list has the new name");

    // Clearing the name removes it from the profile. The server speaks the v1.16+ profile
    // API, where an absent field is `M_MISSING_PARAM` and clearing is `DELETE`.
    alice
        .account()
        .delete_profile_field(ProfileFieldName::DisplayName)
        .await
        .unwrap_or_else(|e| panic!("clear name: {e}\n{}", server.log_report()));
    let own = alice.account().fetch_user_profile().await.unwrap_or_else(|e| panic!("own profile: {e}"));
    assert!(own.get("displayname").is_none(), "the name is gone: {own:?}");
}

/// Typing and read receipts reach the other client's sync; the fully-read marker lands in room
/// account data; the SDK's unread counts drop to zero once the messages are read.
async fn typing_receipts_and_unread_counts(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let room_id = shared_room(&server, &alice, &bob, CreateRoomRequest::new()).await;
    let alice_room = alice.get_room(&room_id).unwrap_or_else(|| panic!("alice has the room"));
    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));

    alice_room.typing_notice(true).await.unwrap_or_else(|e| panic!("typing: {e}\n{}", server.log_report()));
    let response = sync(&bob, &server).await;
    let events = ephemeral(&response, &room_id);
    let typing = events.iter().find(|e| e["type"] == "m.typing").unwrap_or_else(|| panic!("m.typing in {events:?}"));
    assert_eq!(typing["content"]["user_ids"], json!([user_id(&alice)]));
    alice_room.typing_notice(false).await.unwrap_or_else(|e| panic!("stop typing: {e}"));
    let response = sync(&bob, &server).await;
    let events = ephemeral(&response, &room_id);
    let typing = events.iter().find(|e| e["type"] == "m.typing").unwrap_or_else(|| panic!("m.typing in {events:?}"));
    assert_eq!(typing["content"]["user_ids"], json!([]), "stopping is news too");

    alice_room.send(RoomMessageEventContent::text_plain("one")).await.unwrap_or_else(|e| panic!("send: {e}"));
    let last = alice_room
        .send(RoomMessageEventContent::text_plain("two"))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"))
        .response
        .event_id;
    sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 2, "two unread messages");

    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, last.clone())
        .await
        .unwrap_or_else(|e| panic!("receipt: {e}\n{}", server.log_report()));
    sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 0, "read, nothing unread");

    let response = sync(&alice, &server).await;
    let events = ephemeral(&response, &room_id);
    let receipt = events.iter().find(|e| e["type"] == "m.receipt").unwrap_or_else(|| panic!("m.receipt in {events:?}"));
    assert!(receipt["content"][last.as_str()]["m.read"][user_id(&bob).as_str()]["ts"].is_u64(), "{receipt}");

    // A third message, then the read marker and receipt together.
    let third = alice_room
        .send(RoomMessageEventContent::text_plain("three"))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"))
        .response
        .event_id;
    sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 1);
    bob_room
        .send_multiple_receipts(Receipts::new().fully_read_marker(third.clone()).public_read_receipt(third.clone()))
        .await
        .unwrap_or_else(|e| panic!("read markers: {e}\n{}", server.log_report()));
    sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 0);
    let path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
        encode(user_id(&bob).as_str()),
        encode(room_id.as_str())
    );
    let marker = server.expect_ok(Method::GET, &path, None, Some(&token(&bob))).await;
    assert_eq!(marker["event_id"], third.as_str(), "the fully-read marker: {marker}");
    let response = sync(&alice, &server).await;
    let events = ephemeral(&response, &room_id);
    let receipt = events.iter().find(|e| e["type"] == "m.receipt").unwrap_or_else(|| panic!("m.receipt in {events:?}"));
    assert!(receipt["content"][third.as_str()]["m.read"][user_id(&bob).as_str()]["ts"].is_u64(), "{receipt}");
}

/// The presence a client syncs with reaches the other member's sync, and changes with it.
async fn presence_through_sync(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    shared_room(&server, &alice, &bob, CreateRoomRequest::new()).await;
    let alice_id = user_id(&alice);
    let presence_of = |response: &SyncResponse| {
        response.presence.iter().map(json_of).rfind(|event| event["sender"] == alice_id.as_str())
    };

    sync_with(&alice, &server, SyncSettings::default().timeout(Duration::ZERO).set_presence(PresenceState::Online))
        .await;
    let fresh = Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("build a client: {e}"));
    fresh
        .matrix_auth()
        .login_username("bob", &password_for("bob"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("log bob in again: {e}"));
    let response = sync(&fresh, &server).await;
    let event = presence_of(&response).unwrap_or_else(|| panic!("alice's presence: {:?}", response.presence));
    assert_eq!(event["content"]["presence"], "online", "{event}");

    sync(&bob, &server).await;
    sync_with(
        &alice,
        &server,
        SyncSettings::default().timeout(Duration::ZERO).set_presence(PresenceState::Unavailable),
    )
    .await;
    let response = sync(&bob, &server).await;
    let event = presence_of(&response).unwrap_or_else(|| panic!("alice's new presence: {:?}", response.presence));
    assert_eq!(event["content"]["presence"], "unavailable", "{event}");

    // The presence endpoint agrees.
    let path = format!("/_matrix/client/v3/presence/{}/status", encode(alice_id.as_str()));
    let status = server.expect_ok(Method::GET, &path, None, Some(&token(&bob))).await;
    assert_eq!(status["presence"], "unavailable", "{status}");
}

/// Global account data and room tags set through the SDK come back in its sync.
async fn account_data_and_tags(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let room_id = shared_room(&server, &alice, &bob, CreateRoomRequest::new()).await;

    let content = json!({"theme": "dark", "sizes": [1, 2, 3]});
    alice
        .account()
        .set_account_data_raw(
            "org.example.settings".into(),
            matrix_sdk::ruma::serde::Raw::new(&content).unwrap_or_else(|e| panic!("raw content: {e}")).cast_unchecked(),
        )
        .await
        .unwrap_or_else(|e| panic!("set account data: {e}\n{}", server.log_report()));
    // A fresh device sees it in its first sync.
    let second = Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("build a client: {e}"));
    second
        .matrix_auth()
        .login_username("alice", &password_for("alice"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("log alice in again: {e}"));
    let response = sync(&second, &server).await;
    let data: Vec<Value> = response.account_data.iter().map(json_of).collect();
    let settings = data
        .iter()
        .find(|event| event["type"] == "org.example.settings")
        .unwrap_or_else(|| panic!("the account data in {data:?}"));
    assert_eq!(settings["content"], content);
    let fetched = second
        .account()
        .fetch_account_data("org.example.settings".into())
        .await
        .unwrap_or_else(|e| panic!("fetch account data: {e}"))
        .unwrap_or_else(|| panic!("the account data is stored"));
    assert_eq!(json_of(&fetched), content);

    let room = alice.get_room(&room_id).unwrap_or_else(|| panic!("alice has the room"));
    let mut info = TagInfo::new();
    info.order = Some(0.25);
    room.set_tag(TagName::Favorite, info).await.unwrap_or_else(|e| panic!("set tag: {e}\n{}", server.log_report()));
    room.set_tag(TagName::User("u.work".parse().unwrap_or_else(|e| panic!("tag name: {e:?}"))), TagInfo::new())
        .await
        .unwrap_or_else(|e| panic!("set tag: {e}"));
    sync(&alice, &server).await;
    let tags = room.tags().await.unwrap_or_else(|e| panic!("tags: {e}")).unwrap_or_else(|| panic!("the room has tags"));
    assert_eq!(tags.get(&TagName::Favorite).and_then(|info| info.order), Some(0.25), "{tags:?}");
    assert!(tags.keys().any(|tag| tag.as_ref() == "u.work"), "{tags:?}");
    assert!(room.is_favourite(), "the SDK sees the favourite tag");

    room.remove_tag(TagName::Favorite).await.unwrap_or_else(|e| panic!("remove tag: {e}"));
    sync(&alice, &server).await;
    let tags = room.tags().await.unwrap_or_else(|e| panic!("tags: {e}")).unwrap_or_default();
    assert!(!tags.contains_key(&TagName::Favorite), "the favourite tag is gone: {tags:?}");
    assert!(tags.keys().any(|tag| tag.as_ref() == "u.work"), "the other tag stays: {tags:?}");
    assert!(!room.is_favourite());

    // Tags are private: bob's copy of the room has none.
    sync(&bob, &server).await;
    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));
    assert!(bob_room.tags().await.unwrap_or_else(|e| panic!("tags: {e}")).unwrap_or_default().is_empty());
}

/// Ask the public room directory for rooms matching `term`, as the SDK does.
async fn search_directory(client: &Client, server: &TestServer, term: &str) -> Vec<PublicRoomsChunk> {
    let mut request = PublicRoomsFilteredRequest::new();
    request.filter.generic_search_term = Some(term.to_owned());
    client
        .public_rooms_filtered(request)
        .await
        .unwrap_or_else(|e| panic!("search the directory for {term}: {e}\n{}", server.log_report()))
        .chunk
}

/// An alias made with the room resolves and joins; published rooms are listed and searchable;
/// the user directory finds people by name.
async fn aliases_and_directories(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    sync(&alice, &server).await;

    let mut request = CreateRoomRequest::new();
    request.room_alias_name = Some("lounge".to_owned());
    request.name = Some("The Lounge".to_owned());
    request.topic = Some("Sofas and chatter".to_owned());
    request.visibility = Visibility::Public;
    let lounge = alice.create_room(request).await.unwrap_or_else(|e| panic!("create: {e}\n{}", server.log_report()));
    let alias = OwnedRoomAliasId::try_from(format!("#lounge:{}", server.server_name()))
        .unwrap_or_else(|e| panic!("alias: {e}"));

    let resolved =
        bob.resolve_room_alias(&alias).await.unwrap_or_else(|e| panic!("resolve: {e}\n{}", server.log_report()));
    assert_eq!(resolved.room_id, lounge.room_id());
    assert!(resolved.servers.iter().any(|name| name.as_str() == server.server_name()), "{:?}", resolved.servers);
    let missing = OwnedRoomAliasId::try_from(format!("#nowhere:{}", server.server_name()))
        .unwrap_or_else(|e| panic!("alias: {e}"));
    let error = bob.resolve_room_alias(&missing).await.expect_err("an unknown alias does not resolve");
    assert_eq!(error.as_client_api_error().map(|e| e.status_code.as_u16()), Some(404), "{error}");

    let joined = bob
        .join_room_by_id_or_alias(&OwnedRoomOrAliasId::from(alias.clone()), &[])
        .await
        .unwrap_or_else(|e| panic!("join by alias: {e}\n{}", server.log_report()));
    assert_eq!(joined.room_id(), lounge.room_id());
    assert_eq!(joined.state(), RoomState::Joined);
    sync(&bob, &server).await;
    let bob_lounge = bob.get_room(lounge.room_id()).unwrap_or_else(|| panic!("bob has the lounge"));
    assert_eq!(bob_lounge.canonical_alias().as_ref(), Some(&alias), "the alias is canonical");

    // The public room is listed, with its members counted.
    let listed = bob.public_rooms(Some(10), None, None).await.unwrap_or_else(|e| panic!("public rooms: {e}"));
    let entry = listed
        .chunk
        .iter()
        .find(|room| room.room_id == lounge.room_id())
        .unwrap_or_else(|| panic!("the lounge is listed: {:?}", listed.chunk));
    assert_eq!(entry.name.as_deref(), Some("The Lounge"));
    assert_eq!(entry.topic.as_deref(), Some("Sofas and chatter"));
    assert_eq!(entry.canonical_alias.as_ref(), Some(&alias));
    assert_eq!(u64::from(entry.num_joined_members), 2);

    // A room open to all is not listed until it is published.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Hidden Garden".to_owned());
    request.preset = Some(RoomPreset::PublicChat);
    let garden = alice.create_room(request).await.unwrap_or_else(|e| panic!("create: {e}"));
    assert!(search_directory(&bob, &server, "garden").await.is_empty(), "an unpublished room is not listed");
    alice
        .send(SetVisibilityRequest::new(garden.room_id().to_owned(), Visibility::Public))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", server.log_report()));
    let found = search_directory(&bob, &server, "garden").await;
    let ids: Vec<&str> = found.iter().map(|room| room.room_id.as_str()).collect();
    assert_eq!(ids, [garden.room_id().as_str()], "the search finds just the garden");
    // A published room that only invitees may join stays out of the list.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Secret Garden".to_owned());
    let secret = alice.create_room(request).await.unwrap_or_else(|e| panic!("create: {e}"));
    alice
        .send(SetVisibilityRequest::new(secret.room_id().to_owned(), Visibility::Public))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", server.log_report()));
    let found = search_directory(&bob, &server, "garden").await;
    let ids: Vec<&str> = found.iter().map(|room| room.room_id.as_str()).collect();
    assert_eq!(ids, [garden.room_id().as_str()], "an invite-only room is not listed");
    let found = search_directory(&bob, &server, "SOFAS").await;
    let ids: Vec<&str> = found.iter().map(|room| room.room_id.as_str()).collect();
    assert_eq!(ids, [lounge.room_id().as_str()], "the search matches topics, ignoring case");

    // The user directory finds bob by display name and by user id.
    bob.account().set_display_name(Some("Bobby Tables")).await.unwrap_or_else(|e| panic!("set name: {e}"));
    let results = alice.search_users("bobby", 10).await.unwrap_or_else(|e| panic!("search users: {e}"));
    let hit = results
        .results
        .iter()
        .find(|user| user.user_id == user_id(&bob))
        .unwrap_or_else(|| panic!("bob is found by name: {:?}", results.results));
    assert_eq!(hit.display_name.as_deref(), Some("Bobby Tables"));
    assert!(results.results.iter().all(|user| user.user_id != user_id(&alice)), "{:?}", results.results);
    let results = alice.search_users("bob", 10).await.unwrap_or_else(|e| panic!("search users: {e}"));
    assert!(results.results.iter().any(|user| user.user_id == user_id(&bob)), "{:?}", results.results);
    let results = alice.search_users("zebedee", 10).await.unwrap_or_else(|e| panic!("search users: {e}"));
    assert!(results.results.is_empty(), "nobody matches: {:?}", results.results);
}

/// The path of one state event of `room_id`.
fn state_path(room_id: &str, event_type: &str, state_key: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/state/{}/{}", encode(room_id), encode(event_type), encode(state_key))
}

/// Set `room_id`'s join rules over raw HTTP with `client`'s token.
async fn set_join_rules(server: &TestServer, client: &Client, room_id: &OwnedRoomId, content: Value) {
    let path = state_path(room_id.as_str(), "m.room.join_rules", "");
    server.expect_ok(Method::PUT, &path, Some(&content), Some(&token(client))).await;
}

/// A knock reaches the room's members, and an invite answers it; a restricted room admits the
/// members of the room it names and nobody else.
async fn knocking_and_restricted_joins(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let carol = login(&server, "carol").await;
    sync(&alice, &server).await;

    let knockable = alice.create_room(CreateRoomRequest::new()).await.unwrap_or_else(|e| panic!("create: {e}"));
    let room_id = knockable.room_id().to_owned();
    set_join_rules(&server, &alice, &room_id, json!({"join_rule": "knock"})).await;

    let error = bob.join_room_by_id(&room_id).await.expect_err("a knock room is not open");
    assert_eq!(error.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403), "{error}");
    let knocked = bob
        .knock(OwnedRoomOrAliasId::from(room_id.clone()), Some("let me in".to_owned()), vec![])
        .await
        .unwrap_or_else(|e| panic!("knock: {e}\n{}", server.log_report()));
    assert_eq!(knocked.state(), RoomState::Knocked);

    sync(&alice, &server).await;
    let member = knockable
        .get_member_no_sync(&user_id(&bob))
        .await
        .unwrap_or_else(|e| panic!("member: {e}"))
        .unwrap_or_else(|| panic!("alice's client knows bob's knock"));
    assert_eq!(member.membership().as_str(), "knock");
    assert_eq!(member.event().reason(), Some("let me in"));

    knockable.invite_user_by_id(&user_id(&bob)).await.unwrap_or_else(|e| panic!("invite: {e}"));
    sync(&bob, &server).await;
    assert_eq!(bob.get_room(&room_id).map(|room| room.state()), Some(RoomState::Invited));
    let joined = bob.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    assert_eq!(joined.state(), RoomState::Joined);

    // The restricted room admits members of the knock room (bob) but not carol.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Members only".to_owned());
    let restricted = alice.create_room(request).await.unwrap_or_else(|e| panic!("create: {e}"));
    let restricted_id = restricted.room_id().to_owned();
    set_join_rules(
        &server,
        &alice,
        &restricted_id,
        json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": room_id}]}),
    )
    .await;
    let error = carol.join_room_by_id(&restricted_id).await.expect_err("carol is in no allowed room");
    assert_eq!(error.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403), "{error}");
    let joined = bob
        .join_room_by_id(&restricted_id)
        .await
        .unwrap_or_else(|e| panic!("restricted join: {e}\n{}", server.log_report()));
    assert_eq!(joined.state(), RoomState::Joined);
    let path = state_path(restricted_id.as_str(), "m.room.member", user_id(&bob).as_str());
    let membership = server.expect_ok(Method::GET, &path, None, Some(&token(&bob))).await;
    assert_eq!(membership["membership"], "join");
    assert_eq!(
        membership["join_authorised_via_users_server"],
        user_id(&alice).as_str(),
        "a restricted join names the member who authorised it: {membership}"
    );
}

/// Upgrading a room tombstones it; the SDK sees the successor in the old room and the
/// predecessor in the new one, and the other member can follow.
async fn upgrade_seen_by_the_sdk(backend: Backend) {
    let server = start(backend).await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let mut request = CreateRoomRequest::new();
    request.name = Some("Old house".to_owned());
    // Open to all, so that the members may follow to the new room without a new invite.
    request.preset = Some(RoomPreset::PublicChat);
    let old_id = shared_room(&server, &alice, &bob, request).await;

    let response = alice
        .send(UpgradeRoomRequest::new(old_id.clone(), RoomVersionId::V12))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", server.log_report()));
    let new_id = response.replacement_room;
    assert_ne!(new_id, old_id);

    sync(&bob, &server).await;
    let old_room = bob.get_room(&old_id).unwrap_or_else(|| panic!("bob has the old room"));
    let successor = old_room.successor_room().unwrap_or_else(|| panic!("the old room has a tombstone"));
    assert_eq!(successor.room_id, new_id);
    assert!(old_room.is_tombstoned());

    let new_room = bob
        .join_room_by_id(&new_id)
        .await
        .unwrap_or_else(|e| panic!("follow the upgrade: {e}\n{}", server.log_report()));
    sync(&bob, &server).await;
    let predecessor = new_room.predecessor_room().unwrap_or_else(|| panic!("the new room names its predecessor"));
    assert_eq!(predecessor.room_id, old_id);
    assert_eq!(new_room.name().as_deref(), Some("Old house"), "the name carries over");

    // Only those with power to do so may upgrade.
    let error =
        bob.send(UpgradeRoomRequest::new(new_id.clone(), RoomVersionId::V12)).await.expect_err("bob may not upgrade");
    assert_eq!(error.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403), "{error}");
}

backend_tests!(
    profiles_reach_the_member_list,
    typing_receipts_and_unread_counts,
    presence_through_sync,
    account_data_and_tags,
    aliases_and_directories,
    knocking_and_restricted_joins,
    upgrade_seen_by_the_sdk
);
