//! The main flows driven by the `matrix-sdk` client, as a real application would: register
//! through user-interactive auth, log in, create a room, invite, join, send, sync and paginate.
//!
//! `matrix-sdk` brings its own `ruma` (a different version from the server's); its types are
//! used only through the SDK here, and events are read as plain JSON.

use std::{collections::HashSet, time::Duration};

use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, UInt,
        api::client::{
            account::register::v3::Request as RegistrationRequest,
            room::create_room::v3::Request as CreateRoomRequest,
            uiaa::{AuthData, AuthType, Dummy},
        },
        events::room::message::RoomMessageEventContent,
    },
};
use ranvier_test::{Backend, TestServer, backend_tests, password_for};
use serde_json::Value;

use crate::start;

/// A fresh SDK client (in-memory stores) for `server`.
async fn client(server: &TestServer) -> Client {
    Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("build a matrix-sdk client: {e}\n{}", server.log_report()))
}

/// Register `name` the way a client does: ask, get the UIA challenge, complete the dummy stage
/// in the session the server gave.
async fn register(server: &TestServer, name: &str) -> Client {
    let client = client(server).await;
    let mut request = RegistrationRequest::new();
    request.username = Some(name.to_owned());
    request.password = Some(password_for(name));
    request.initial_device_display_name = Some(format!("{name}'s test device"));

    let challenge = match client.matrix_auth().register(request.clone()).await {
        Ok(response) => panic!("registration without auth must be challenged, got {response:?}"),
        Err(e) => e,
    };
    let info = challenge.as_uiaa_response().unwrap_or_else(|| panic!("expected a UIA challenge, got {challenge}"));
    assert!(
        info.flows.iter().any(|flow| flow.stages == [AuthType::Dummy]),
        "the server offers the dummy stage: {:?}",
        info.flows
    );
    let mut dummy = Dummy::new();
    dummy.session = info.session.clone();
    request.auth = Some(AuthData::Dummy(dummy));
    let response = client
        .matrix_auth()
        .register(request)
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}\n{}", server.log_report()));
    assert_eq!(response.user_id.as_str(), server.user_id(name));
    assert_eq!(
        client.user_id().map(|id| id.as_str().to_owned()),
        Some(server.user_id(name)),
        "the client is logged in"
    );
    client
}

/// Sync once without waiting.
async fn sync(client: &Client, server: &TestServer) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .unwrap_or_else(|e| panic!("sync_once: {e}\n{}", server.log_report()))
}

/// An SDK timeline event as plain JSON.
fn event_json(raw: &matrix_sdk::deserialized_responses::TimelineEvent) -> Value {
    serde_json::from_str(raw.raw().json().get()).unwrap_or_else(|e| panic!("timeline event is not JSON: {e}"))
}

fn body_of(event: &Value) -> Option<String> {
    (event["type"] == "m.room.message").then(|| event["content"]["body"].as_str().map(str::to_owned)).flatten()
}

/// Register, log in, create a room, invite, join, send and receive through `sync_once`.
async fn main_flows(backend: Backend) {
    let server = start(backend).await;
    let alice = register(&server, "alice").await;
    register(&server, "bob").await;

    let bob = client(&server).await;
    bob.matrix_auth()
        .login_username("bob", &password_for("bob"))
        .initial_device_display_name("bob's second device")
        .send()
        .await
        .unwrap_or_else(|e| panic!("log in as bob: {e}\n{}", server.log_report()));
    let bob_id = bob.user_id().unwrap_or_else(|| panic!("bob is logged in")).to_owned();

    sync(&alice, &server).await;
    let mut request = CreateRoomRequest::new();
    request.name = Some("Made with the SDK".to_owned());
    let room = alice.create_room(request).await.unwrap_or_else(|e| panic!("create room: {e}\n{}", server.log_report()));
    let room_id: OwnedRoomId = room.room_id().to_owned();
    room.invite_user_by_id(&bob_id).await.unwrap_or_else(|e| panic!("invite bob: {e}\n{}", server.log_report()));

    let response = sync(&bob, &server).await;
    assert!(response.rooms.invited.contains_key(&room_id), "bob's sync carries the invite");
    let invited = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob knows the room after the invite"));
    assert_eq!(invited.state(), RoomState::Invited);

    let joined =
        bob.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("bob joins: {e}\n{}", server.log_report()));
    assert_eq!(joined.state(), RoomState::Joined);
    sync(&bob, &server).await;

    sync(&alice, &server).await;
    let sent = room
        .send(RoomMessageEventContent::text_plain("hello from the SDK"))
        .await
        .unwrap_or_else(|e| panic!("send: {e}\n{}", server.log_report()));

    let response = sync(&bob, &server).await;
    let update = response.rooms.joined.get(&room_id).unwrap_or_else(|| panic!("bob's sync has the room"));
    let events: Vec<Value> = update.timeline.events.iter().map(event_json).collect();
    let message = events
        .iter()
        .find(|event| event["event_id"] == sent.response.event_id.as_str())
        .unwrap_or_else(|| panic!("bob receives the message: {events:?}"));
    assert_eq!(body_of(message).as_deref(), Some("hello from the SDK"));
    assert_eq!(message["sender"], alice.user_id().map(|id| id.as_str()).unwrap_or_default());

    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));
    assert_eq!(bob_room.state(), RoomState::Joined);
    assert_eq!(bob_room.name().as_deref(), Some("Made with the SDK"), "the room name reaches bob's client");
    let members = bob_room.members(matrix_sdk::RoomMemberships::JOIN).await.unwrap_or_else(|e| panic!("members: {e}"));
    let names: HashSet<String> = members.iter().map(|member| member.user_id().as_str().to_owned()).collect();
    assert_eq!(names, HashSet::from([server.user_id("alice"), server.user_id("bob")]));
}

/// Hundreds of messages sent with the SDK all come back through `room.messages`, in order,
/// exactly once.
async fn paginate_hundreds(backend: Backend) {
    const COUNT: usize = 250;
    let server = start(backend).await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    sync(&alice, &server).await;
    let room = alice.create_room(CreateRoomRequest::new()).await.unwrap_or_else(|e| panic!("create room: {e}"));
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(bob.user_id().unwrap_or_else(|| panic!("bob is logged in")))
        .await
        .unwrap_or_else(|e| panic!("invite: {e}"));
    sync(&bob, &server).await;
    bob.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));

    let sent: Vec<String> = (0..COUNT).map(|i| format!("message number {i}")).collect();
    for text in &sent {
        room.send(RoomMessageEventContent::text_plain(text)).await.unwrap_or_else(|e| panic!("send {text}: {e}"));
    }

    sync(&bob, &server).await;
    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));
    let mut from: Option<String> = None;
    let mut events = Vec::new();
    let mut pages = 0;
    loop {
        let mut options = MessagesOptions::backward();
        options.limit = UInt::from(50u32);
        options.from = from.take();
        let page =
            bob_room.messages(options).await.unwrap_or_else(|e| panic!("messages: {e}\n{}", server.log_report()));
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        assert!(page.chunk.len() <= 50, "a page holds at most the limit");
        let done = page.chunk.is_empty() || page.end.is_none();
        events.extend(page.chunk.iter().map(event_json));
        match page.end {
            Some(end) if !done => from = Some(end),
            _ => break,
        }
    }
    let ids: Vec<&str> = events.iter().filter_map(|event| event["event_id"].as_str()).collect();
    let unique: HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event comes twice");
    let mut bodies: Vec<String> = events.iter().filter_map(body_of).collect();
    bodies.reverse();
    assert_eq!(bodies, sent, "every message arrives, in order");
    assert!(pages >= COUNT / 50, "the history came in pages, not at once");
}

backend_tests!(main_flows, paginate_hundreds);
