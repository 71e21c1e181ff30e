//! Server-side key backup, end to end: alice's device backs up the keys of an encrypted
//! conversation and stores its secrets (cross-signing keys and the backup key) in secret
//! storage; a device she logs in later recovers them with the recovery key alone, downloads
//! the room keys from the backup and decrypts the history it was never sent keys for.

use std::time::Duration;

use matrix_sdk::{
    Client, deserialized_responses::TimelineEventKind, encryption::recovery::RecoveryState, ruma::OwnedEventId,
};
use ranvier_test::{Backend, TestServer, User, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

use super::{assert_decrypts, login, send_encrypted, shared_encrypted_room, sync, sync_until};
use crate::start;

/// How long the client may take to upload its room keys.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The current backup version as the server reports it to `user`.
async fn current_backup(server: &TestServer, user: &User) -> Value {
    let (status, info) =
        server.request(Method::GET, "/_matrix/client/v3/room_keys/version", None, Some(&user.access_token)).await;
    assert_eq!(status, 200, "{info}");
    info
}

/// Wait until `client` has uploaded every room key it holds to the backup.
async fn wait_for_backup(client: &Client, server: &TestServer) {
    let backups = client.encryption().backups();
    match tokio::time::timeout(BACKUP_TIMEOUT, backups.wait_for_steady_state()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("back up room keys: {e}\n{}", server.log_report()),
        Err(_) => panic!("room keys were not backed up within {BACKUP_TIMEOUT:?}\n{}", server.log_report()),
    }
}

/// Alice's first device backs up; her second device restores and decrypts old messages.
async fn new_device_restores_history_from_backup(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    let first = login(&server, "alice").await;
    let bob = login(&server, "bob").await;
    sync(&first, &server).await;
    sync(&bob, &server).await;
    first
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .unwrap_or_else(|e| panic!("set up cross-signing: {e}\n{}", server.log_report()));

    // A conversation before the backup exists...
    let room_id = shared_encrypted_room(&first, &bob, &server).await;
    let mut history: Vec<(OwnedEventId, &str)> = Vec::new();
    history.push((
        send_encrypted(&bob, &room_id, "before the backup, from bob", &server).await,
        "before the backup, from bob",
    ));
    history.push((
        send_encrypted(&first, &room_id, "before the backup, from alice", &server).await,
        "before the backup, from alice",
    ));
    sync(&first, &server).await;
    assert_decrypts(&first, &room_id, &history[0].0, history[0].1, &server).await;

    // ...then recovery: a new backup version, secret storage, and every key uploaded.
    let recovery_key = first
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .unwrap_or_else(|e| panic!("enable recovery: {e}\n{}", server.log_report()));
    assert_eq!(first.encryption().recovery().state(), RecoveryState::Enabled);
    let info = current_backup(&server, &alice).await;
    assert_eq!(info["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2", "{info}");
    assert!(info["auth_data"]["public_key"].is_string(), "{info}");
    let version = info["version"].as_str().expect("a version string").to_owned();

    // ...and more messages afterwards, whose keys the client backs up as it goes.
    history.push((
        send_encrypted(&bob, &room_id, "after the backup, from bob", &server).await,
        "after the backup, from bob",
    ));
    history.push((
        send_encrypted(&first, &room_id, "after the backup, from alice", &server).await,
        "after the backup, from alice",
    ));
    sync(&first, &server).await;
    assert_decrypts(&first, &room_id, &history[2].0, history[2].1, &server).await;
    wait_for_backup(&first, &server).await;
    let info = current_backup(&server, &alice).await;
    assert_eq!(info["version"], version.as_str(), "still the same backup: {info}");
    let sessions = info["count"].as_u64().expect("a key count");

    // Every session the history was encrypted with is in the backup, as ciphertext the server
    // cannot read.
    let path = format!("/_matrix/client/v3/room_keys/keys?version={version}");
    let (status, keys) = server.request(Method::GET, &path, None, Some(&alice.access_token)).await;
    assert_eq!(status, 200, "{keys}");
    let room_sessions = keys["rooms"][room_id.as_str()]["sessions"].as_object().expect("the room's sessions");
    assert_eq!(room_sessions.len() as u64, sessions, "the count is the number of keys: {keys}");
    for (event_id, _) in &history {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}");
        let (status, event) = server.request(Method::GET, &path, None, Some(&alice.access_token)).await;
        assert_eq!(status, 200, "{event}");
        let session_id = event["content"]["session_id"].as_str().expect("a megolm session id");
        assert!(room_sessions.contains_key(session_id), "{session_id} is backed up: {keys}");
    }
    for data in room_sessions.values() {
        assert!(data["session_data"]["ciphertext"].is_string(), "encrypted session data: {data}");
        assert!(data["session_data"].get("session_key").is_none(), "no plaintext key: {data}");
    }

    // A new device, which was sent none of these keys. The first device stays offline from
    // here on, so nothing can reach the new one by key forwarding.
    let second = login(&server, "alice").await;
    sync(&second, &server).await;
    let room = second.get_room(&room_id).expect("the new device knows the room");
    let before = room.event(&history[0].0, None).await.unwrap_or_else(|e| panic!("fetch: {e}"));
    assert!(
        matches!(before.kind, TimelineEventKind::UnableToDecrypt { .. }),
        "the new device cannot decrypt before recovery: {:?}",
        before.kind
    );

    // Recovery with the key alone: secrets from account data, room keys from the backup.
    second
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .unwrap_or_else(|e| panic!("recover: {e}\n{}", server.log_report()));
    sync_until(&[&second], &server, "recovery to be complete", async || {
        second.encryption().recovery().state() == RecoveryState::Enabled
    })
    .await;
    assert!(second.encryption().backups().are_enabled().await, "the new device uses the backup");
    let status = second.encryption().cross_signing_status().await.expect("cross-signing status");
    assert!(status.is_complete(), "the cross-signing keys came from secret storage: {status:?}");
    second
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .unwrap_or_else(|e| panic!("download room keys: {e}\n{}", server.log_report()));
    for (event_id, body) in &history {
        assert_decrypts(&second, &room_id, event_id, body, &server).await;
    }

    // Recovering signed the new device with the self-signing key it recovered.
    let body = json!({"device_keys": {alice.user_id.as_str(): []}});
    let (status, keys) =
        server.request(Method::POST, "/_matrix/client/v3/keys/query", Some(&body), Some(&alice.access_token)).await;
    assert_eq!(status, 200, "{keys}");
    let self_signing = keys["self_signing_keys"][alice.user_id.as_str()]["keys"]
        .as_object()
        .and_then(|keys| keys.keys().next().cloned())
        .expect("a self-signing key");
    let second_id = second.device_id().expect("logged in").as_str();
    let second_keys = &keys["device_keys"][alice.user_id.as_str()][second_id];
    assert!(second_keys["signatures"][alice.user_id.as_str()][&self_signing].is_string(), "{second_keys}");
}

backend_tests!(new_device_restores_history_from_backup);
