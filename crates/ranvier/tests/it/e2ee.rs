//! End-to-end encryption with real clients: `matrix-sdk` clients (with their Olm/Megolm
//! machinery) share encrypted rooms, verify each other, back up and restore keys, and the
//! server's to-device and key-count plumbing is checked over raw HTTP. The server only stores
//! and relays keys and ciphertext; these check that it does so exactly enough for a real
//! client's cryptography to work end to end.
//!
//! # Layout
//! - this file: the shared client helpers; two users decrypting each other's messages; an
//!   encrypted conversation going on across a `kill -9`.
//! - [`verification`]: emoji (SAS) verification between two devices of one user, then
//!   cross-signing and secret sharing.
//! - [`backup`]: server-side key backup with recovery; a new device decrypts old history.
//! - [`to_device`]: to-device delivery (exactly once, across `kill -9`), key counts and
//!   device-list changes in raw `/sync` responses.
//!
//! `matrix-sdk` brings its own `ruma` (a different version from the server's); its types are
//! only used with the SDK, and the raw-HTTP checks read plain JSON.

mod backup;
mod to_device;
mod verification;

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client,
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, api::client::room::create_room::v3::Request as CreateRoomRequest,
        events::room::message::RoomMessageEventContent,
    },
};
use ranvier_test::{Backend, TestServer, backend_tests, password_for};
use reqwest::Method;
use serde_json::Value;

use crate::start;

/// How long one `sync_once` may take before the test gives up on the server.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How many rounds of syncs [`sync_until`] runs before it gives up.
const MAX_SYNC_ROUNDS: usize = 20;
/// How long [`sync_until`] may take in all.
const SYNC_UNTIL_TIMEOUT: Duration = Duration::from_secs(60);

/// Log `name` in with a fresh `matrix-sdk` client (its own new device, in-memory stores).
pub(crate) async fn login(server: &TestServer, name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(server.base_url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("build a matrix-sdk client: {e}\n{}", server.log_report()));
    client
        .matrix_auth()
        .login_username(name, &password_for(name))
        .send()
        .await
        .unwrap_or_else(|e| panic!("log {name} in: {e}\n{}", server.log_report()));
    client
}

/// One sync pass; `matrix-sdk` sends its pending key uploads, queries, claims and to-device
/// messages around it.
async fn sync(client: &Client, server: &TestServer) {
    let pass = client.sync_once(SyncSettings::default().timeout(Duration::ZERO));
    match tokio::time::timeout(SYNC_TIMEOUT, pass).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("sync_once: {e}\n{}", server.log_report()),
        Err(_) => panic!("sync_once took longer than {SYNC_TIMEOUT:?}\n{}", server.log_report()),
    }
}

/// Sync every client in turn until `done` holds: checked before each round and after the
/// last. Panics, naming `what`, after [`MAX_SYNC_ROUNDS`] rounds or [`SYNC_UNTIL_TIMEOUT`].
async fn sync_until(clients: &[&Client], server: &TestServer, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + SYNC_UNTIL_TIMEOUT;
    for _ in 0..MAX_SYNC_ROUNDS {
        if done().await {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        for client in clients {
            sync(client, server).await;
        }
    }
    if !done().await {
        panic!("gave up waiting for {what} after {MAX_SYNC_ROUNDS} sync rounds\n{}", server.log_report());
    }
}

/// `owner` creates an encrypted room and invites `guest`, who joins; both then sync, so
/// each knows the other is in it.
async fn shared_encrypted_room(owner: &Client, guest: &Client, server: &TestServer) -> OwnedRoomId {
    let guest_id: OwnedUserId = guest.user_id().expect("the guest is logged in").to_owned();
    let mut request = CreateRoomRequest::new();
    request.invite = vec![guest_id];
    let room =
        owner.create_room(request).await.unwrap_or_else(|e| panic!("create a room: {e}\n{}", server.log_report()));
    room.enable_encryption().await.unwrap_or_else(|e| panic!("enable encryption: {e}\n{}", server.log_report()));
    let room_id = room.room_id().to_owned();
    sync(guest, server).await;
    guest.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    sync(owner, server).await;
    sync(guest, server).await;
    room_id
}

/// Send `body` encrypted from `sender` into `room_id`; return the event id.
async fn send_encrypted(sender: &Client, room_id: &OwnedRoomId, body: &str, server: &TestServer) -> OwnedEventId {
    let room = sender.get_room(room_id).unwrap_or_else(|| panic!("the sender knows room {room_id}"));
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap_or_else(|e| panic!("send an encrypted message: {e}\n{}", server.log_report()))
        .response
        .event_id
}

/// Fetch `event_id` as `receiver` and check that it was encrypted and decrypts to `body`.
async fn assert_decrypts(
    receiver: &Client,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
    body: &str,
    server: &TestServer,
) {
    let room = receiver.get_room(room_id).unwrap_or_else(|| panic!("the receiver knows room {room_id}"));
    let event =
        room.event(event_id, None).await.unwrap_or_else(|e| panic!("fetch {event_id}: {e}\n{}", server.log_report()));
    match &event.kind {
        TimelineEventKind::Decrypted(_) => {}
        TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
            panic!("{event_id} could not be decrypted: {utd_info:?}\n{}", server.log_report())
        }
        TimelineEventKind::PlainText { .. } => panic!("{event_id} was sent in the clear"),
    }
    let decrypted: Value = serde_json::from_str(event.raw().json().get()).expect("decrypted event JSON");
    assert_eq!(decrypted["type"], "m.room.message", "decrypted: {decrypted}");
    assert_eq!(decrypted["content"]["body"], body, "decrypted: {decrypted}");
}

/// Alice and Bob, each on a fresh device, share an encrypted room; each decrypts the other.
async fn encrypted_room_round_trip(backend: Backend) {
    let server = start(backend).await;
    let alice_account = server.register("alice").await;
    let bob_account = server.register("bob").await;
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    // The first syncs upload each device's identity and one-time keys.
    sync(&alice, &server).await;
    sync(&bob, &server).await;

    let room_id = shared_encrypted_room(&alice, &bob, &server).await;

    // Alice to Bob: the room key travels to Bob's device as an Olm-encrypted to-device message.
    let from_alice = send_encrypted(&alice, &room_id, "the eagle lands at noon", &server).await;
    sync(&bob, &server).await;
    assert_decrypts(&bob, &room_id, &from_alice, "the eagle lands at noon", &server).await;

    // Bob to Alice, over a session Bob creates.
    let from_bob = send_encrypted(&bob, &room_id, "understood", &server).await;
    sync(&alice, &server).await;
    assert_decrypts(&alice, &room_id, &from_bob, "understood", &server).await;

    // The server itself only ever held ciphertext.
    for (event_id, reader) in [(&from_alice, &bob_account), (&from_bob, &alice_account)] {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}");
        let (status, stored) = server.request(Method::GET, &path, None, Some(&reader.access_token)).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["type"], "m.room.encrypted", "stored: {stored}");
        assert!(stored["content"].get("body").is_none(), "no plaintext on the server: {stored}");
    }
}

/// An encrypted conversation goes on across a `kill -9`: a room key sent (as a to-device
/// message) to a member who had not synced yet reaches them after the restart, the clients'
/// sync tokens from before the crash stay good, and new messages decrypt on every side.
async fn encrypted_conversation_survives_kill(backend: Backend) {
    let mut server = start(backend).await;
    for name in ["alice", "bob", "carol"] {
        server.register(name).await;
    }
    let alice = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    let carol = login(&server, "carol").await;
    for client in [&alice, &bob, &carol] {
        sync(client, &server).await;
    }
    let room_id = shared_encrypted_room(&alice, &bob, &server).await;
    let before = send_encrypted(&alice, &room_id, "before the crash", &server).await;
    sync(&bob, &server).await;
    assert_decrypts(&bob, &room_id, &before, "before the crash", &server).await;

    // Carol joins; alice's next message shares the room key with her over Olm. The server
    // dies before carol or bob sync again.
    let carol_id: OwnedUserId = carol.user_id().expect("logged in").to_owned();
    alice
        .get_room(&room_id)
        .expect("alice's room")
        .invite_user_by_id(&carol_id)
        .await
        .unwrap_or_else(|e| panic!("invite carol: {e}\n{}", server.log_report()));
    sync(&carol, &server).await;
    carol.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("carol joins: {e}\n{}", server.log_report()));
    sync(&alice, &server).await;
    let unseen = send_encrypted(&alice, &room_id, "sent just before the crash", &server).await;
    server.kill_9();
    server.restart().await;

    for client in [&carol, &bob] {
        sync(client, &server).await;
        assert_decrypts(client, &room_id, &unseen, "sent just before the crash", &server).await;
    }
    let after = send_encrypted(&bob, &room_id, "after the restart", &server).await;
    for client in [&alice, &carol] {
        sync(client, &server).await;
        assert_decrypts(client, &room_id, &after, "after the restart", &server).await;
    }
}

backend_tests!(encrypted_room_round_trip, encrypted_conversation_survives_kill);
