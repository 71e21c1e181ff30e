//! Spaces, ignored users and server notices through `matrix-sdk`, as an application meets
//! them: a space and its child made with the SDK and walked with its hierarchy request (so
//! the SDK's own types parse the response), `Account::ignore_user` hiding a user's messages
//! from the SDK's sync, and the server notices room arriving as a tagged invite.

use std::time::Duration;

use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    ruma::{
        OwnedRoomId, UserId,
        api::client::{room::create_room::v3::Request as CreateRoomRequest, space::get_hierarchy},
        events::room::message::RoomMessageEventContent,
        room::RoomType,
        serde::Raw,
    },
    sync::SyncResponse,
};
use ranvier_test::{Backend, TestServer, backend_tests};
use serde_json::{Value, json};

use super::{admin, notices_server, send_notice};
use crate::start;

/// One sync pass without waiting.
async fn sync(client: &Client, server: &TestServer) -> SyncResponse {
    let settings = SyncSettings::default().timeout(Duration::ZERO);
    match tokio::time::timeout(Duration::from_secs(30), client.sync_once(settings)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("sync_once: {e}\n{}", server.log_report()),
        Err(_) => panic!("sync_once hung\n{}", server.log_report()),
    }
}

/// The bodies of the timeline messages of `room` in an SDK sync response.
fn bodies(response: &SyncResponse, room: &OwnedRoomId) -> Vec<String> {
    let Some(update) = response.rooms.joined.get(room) else { return Vec::new() };
    update
        .timeline
        .events
        .iter()
        .filter_map(|event| {
            let json: Value = serde_json::from_str(event.raw().json().get()).ok()?;
            json["content"]["body"].as_str().map(str::to_owned)
        })
        .collect()
}

/// A space and a child room made with the SDK; the SDK's hierarchy request parses the walk.
async fn sdk_walks_a_space(backend: Backend) {
    let server = start(backend).await;
    server.register("alice").await;
    let alice = crate::e2ee::login(&server, "alice").await;
    sync(&alice, &server).await;

    let mut request = CreateRoomRequest::new();
    request.name = Some("Our space".into());
    let creation = serde_json::value::to_raw_value(&json!({ "type": "m.space" })).unwrap();
    request.creation_content = Some(Raw::from_json(creation));
    let space =
        alice.create_room(request).await.unwrap_or_else(|e| panic!("create space: {e}\n{}", server.log_report()));
    let mut request = CreateRoomRequest::new();
    request.name = Some("Chat".into());
    let child = alice.create_room(request).await.unwrap_or_else(|e| panic!("create child: {e}"));
    space
        .send_state_event_raw(
            "m.space.child",
            child.room_id().as_str(),
            json!({ "via": [server.server_name()], "suggested": true }),
        )
        .await
        .unwrap_or_else(|e| panic!("add child: {e}\n{}", server.log_report()));

    let response = alice
        .send(get_hierarchy::v1::Request::new(space.room_id().to_owned()))
        .await
        .unwrap_or_else(|e| panic!("hierarchy: {e}\n{}", server.log_report()));
    assert_eq!(response.rooms.len(), 2);
    assert!(response.next_batch.is_none());
    let top = &response.rooms[0];
    assert_eq!(top.summary.room_id, space.room_id());
    assert_eq!(top.summary.room_type, Some(RoomType::Space));
    assert_eq!(top.summary.name.as_deref(), Some("Our space"));
    assert_eq!(top.children_state.len(), 1);
    let child_event = top.children_state[0].deserialize().unwrap_or_else(|e| panic!("child event: {e}"));
    assert_eq!(child_event.state_key, child.room_id());
    assert!(child_event.content.suggested);
    assert_eq!(response.rooms[1].summary.room_id, child.room_id());
    assert_eq!(response.rooms[1].summary.name.as_deref(), Some("Chat"));
    assert_eq!(u64::from(response.rooms[1].summary.num_joined_members), 1);
}

/// `Account::ignore_user` hides the user's messages from the SDK's next sync, and
/// `unignore_user` lets new ones through.
async fn sdk_ignores_a_user(backend: Backend) {
    let server = start(backend).await;
    let alice_http = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice_http, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    let room_id: OwnedRoomId = room.as_str().try_into().unwrap();

    let alice = crate::e2ee::login(&server, "alice").await;
    sync(&alice, &server).await;
    let bob_id = UserId::parse(bob.user_id.as_str()).unwrap();
    alice.account().ignore_user(&bob_id).await.unwrap_or_else(|e| panic!("ignore: {e}\n{}", server.log_report()));
    server.send_text(&bob, &room, "from bob").await;
    server.send_text(&carol, &room, "from carol").await;
    let response = sync(&alice, &server).await;
    assert_eq!(bodies(&response, &room_id), ["from carol"]);

    alice.account().unignore_user(&bob_id).await.unwrap_or_else(|e| panic!("unignore: {e}"));
    server.send_text(&bob, &room, "bob again").await;
    let response = sync(&alice, &server).await;
    assert_eq!(bodies(&response, &room_id), ["bob again"]);
}

/// The SDK sees the notices room as an invite, joins it, finds it tagged `m.server_notice` and
/// cannot write in it.
async fn sdk_sees_the_server_notice_room(backend: Backend) {
    let server = notices_server(backend).await;
    let root = admin(&server, "root").await;
    let alice_http = server.register("alice").await;
    let alice = crate::e2ee::login(&server, "alice").await;
    sync(&alice, &server).await;

    send_notice(&server, &root, &alice_http, "Hello from the server").await;
    let response = sync(&alice, &server).await;
    let room_id = response.rooms.invited.keys().next().unwrap_or_else(|| panic!("an invite")).clone();
    let room = alice.get_room(&room_id).unwrap_or_else(|| panic!("the SDK knows the room"));
    assert_eq!(room.state(), RoomState::Invited);
    room.join().await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    sync(&alice, &server).await;
    let room = alice.get_room(&room_id).unwrap();
    assert_eq!(room.state(), RoomState::Joined);
    let tags = room.tags().await.unwrap_or_else(|e| panic!("tags: {e}")).unwrap_or_default();
    assert!(tags.keys().any(|tag| tag.as_ref() == "m.server_notice"), "{tags:?}");
    assert_eq!(room.name().as_deref(), Some("Notices"));
    let refused = room.send(RoomMessageEventContent::text_plain("thanks")).await;
    assert!(refused.is_err(), "the user cannot write in the notices room");
}

backend_tests!(sdk_walks_a_space, sdk_ignores_a_user, sdk_sees_the_server_notice_room);
