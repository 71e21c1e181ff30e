//! Interactive emoji (SAS) verification, driven by `matrix-sdk` clients through the server,
//! and what it unlocks:
//! - between two devices of one user, over to-device messages: the older device cross-signs
//!   the newer one, the server shows that signature to everyone, the newer device receives
//!   the private cross-signing keys by secret sharing, and the key of a message sent before
//!   it existed by key forwarding;
//! - between two users, in their direct chat: each signs the other's master key with their
//!   user-signing key, and the server shows such a signature to its maker only.
//!
//! Before that, the older device sets up cross-signing: the first upload needs no
//! user-interactive auth (spec v1.11), replacing the keys needs the account password.

use matrix_sdk::{
    Client,
    deserialized_responses::TimelineEventKind,
    encryption::{
        CrossSigningResetAuthType,
        verification::{SasVerification, VerificationRequest},
    },
    ruma::{
        OwnedDeviceId, OwnedUserId,
        api::client::{
            room::create_room::v3::Request as CreateRoomRequest,
            uiaa::{AuthData, AuthType, MatrixUserIdentifier, Password, UserIdentifier},
        },
    },
};
use ranvier_test::{Backend, TestServer, User, backend_tests, password_for};
use reqwest::Method;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::verify_json,
};
use serde_json::{Value, json};

use super::{assert_decrypts, login, send_encrypted, sync, sync_until};
use crate::start;

/// A device of alice's as the SDK and the server name it.
fn ids(client: &Client) -> (OwnedUserId, OwnedDeviceId) {
    (client.user_id().expect("logged in").to_owned(), client.device_id().expect("logged in").to_owned())
}

/// `/keys/query` for one user, as that user, over raw HTTP.
async fn query_keys(server: &TestServer, user: &User) -> Value {
    let body = json!({"device_keys": {user.user_id.as_str(): []}});
    let (status, keys) =
        server.request(Method::POST, "/_matrix/client/v3/keys/query", Some(&body), Some(&user.access_token)).await;
    assert_eq!(status, 200, "{keys}");
    keys
}

/// The only key of a cross-signing key object: `(key id, unpadded base64 public key)`.
fn only_key(key: &Value) -> (String, String) {
    let keys = key["keys"].as_object().unwrap_or_else(|| panic!("a cross-signing key has keys: {key}"));
    assert_eq!(keys.len(), 1, "one key: {key}");
    let (id, public) = keys.iter().next().expect("one key");
    (id.clone(), public.as_str().expect("a public key is a string").to_owned())
}

/// Check, with the public key itself, that `object` carries `signer`'s valid signature by
/// `key_id`.
fn assert_signed_by(object: &Value, signer: &str, key_id: &str, public_key: &str) {
    let signature = &object["signatures"][signer][key_id];
    assert!(signature.is_string(), "{key_id} of {signer} signed it: {object}");
    let mut only = object.clone();
    only["signatures"] = json!({ signer: { key_id: signature } });
    only.as_object_mut().expect("an object").remove("unsigned");
    let canonical: CanonicalJsonObject = serde_json::from_value(only).expect("canonical JSON");
    let public = Base64::<Standard>::parse(public_key).expect("a base64 public key");
    let keys = [(signer.to_owned(), [(key_id.to_owned(), public)].into())].into();
    verify_json(&keys, &canonical).unwrap_or_else(|e| panic!("{key_id}'s signature verifies: {e}\n{object}"));
}

/// Set up cross-signing on `client`'s device: the first upload without auth, then a reset,
/// which the server only accepts with the account's password. Returns the master key id.
async fn set_up_cross_signing(server: &TestServer, client: &Client, alice: &User) -> String {
    client
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .unwrap_or_else(|e| panic!("the first cross-signing keys need no UIA: {e}\n{}", server.log_report()));
    let first_master = only_key(&query_keys(server, alice).await["master_keys"][alice.user_id.as_str()]).0;

    // Replacing the keys is challenged.
    let handle = client
        .encryption()
        .reset_cross_signing()
        .await
        .unwrap_or_else(|e| panic!("start a cross-signing reset: {e}\n{}", server.log_report()))
        .expect("replacing cross-signing keys needs user-interactive auth");
    let CrossSigningResetAuthType::Uiaa(info) = handle.auth_type() else {
        panic!("a password account gets a UIA challenge, not {:?}", handle.auth_type())
    };
    assert!(info.flows.iter().any(|flow| flow.stages == [AuthType::Password]), "flows: {:?}", info.flows);
    let password = |secret: String| {
        let localpart = alice.user_id.trim_start_matches('@').split(':').next().expect("a localpart").to_owned();
        let mut password = Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new(localpart)), secret);
        password.session = info.session.clone();
        AuthData::Password(password)
    };
    let wrong = handle.auth(Some(password("not the password".to_owned()))).await;
    assert!(wrong.is_err(), "a wrong password does not replace the keys");
    let unchanged = only_key(&query_keys(server, alice).await["master_keys"][alice.user_id.as_str()]).0;
    assert_eq!(unchanged, first_master, "a refused reset leaves the keys alone");
    handle
        .auth(Some(password(password_for("alice"))))
        .await
        .unwrap_or_else(|e| panic!("the password completes the reset: {e}\n{}", server.log_report()));

    let keys = query_keys(server, alice).await;
    let user = alice.user_id.as_str();
    let (master_id, master_public) = only_key(&keys["master_keys"][user]);
    assert_ne!(master_id, first_master, "the reset replaced the master key");
    let self_signing = &keys["self_signing_keys"][user];
    assert_signed_by(self_signing, user, &master_id, &master_public);
    assert!(keys["user_signing_keys"][user].is_object(), "the owner sees their user-signing key: {keys}");
    master_id
}

/// Both sides' emoji, once both can present them.
fn emoji_of(sas: &SasVerification) -> Vec<(&'static str, &'static str)> {
    sas.emoji().expect("emoji are offered").iter().map(|emoji| (emoji.symbol, emoji.description)).collect()
}

/// Carry a verification `request` that `requester` sent through to the end: `responder`
/// receives and accepts it, the requester starts SAS, the responder accepts that, both show
/// the same emoji and both confirm. Every step travels through the server.
async fn complete_sas(server: &TestServer, requester: &Client, request: VerificationRequest, responder: &Client) {
    let requester_id = requester.user_id().expect("logged in").to_owned();
    let flow_id = request.flow_id().to_owned();
    let mut incoming: Option<VerificationRequest> = None;
    sync_until(&[responder], server, "the verification request to arrive", async || {
        incoming = responder.encryption().get_verification_request(&requester_id, &flow_id).await;
        incoming.is_some()
    })
    .await;
    let incoming = incoming.expect("the request arrived");
    incoming.accept().await.unwrap_or_else(|e| panic!("accept the request: {e}\n{}", server.log_report()));
    sync_until(&[requester], server, "the request to be accepted", async || request.is_ready()).await;

    // The requester starts emoji verification; the responder accepts it.
    let started = request
        .start_sas()
        .await
        .unwrap_or_else(|e| panic!("start SAS: {e}\n{}", server.log_report()))
        .expect("both devices support SAS");
    let mut answered: Option<SasVerification> = None;
    sync_until(&[responder], server, "the SAS start to arrive", async || {
        answered = responder.encryption().get_verification(&requester_id, &flow_id).await.and_then(|v| v.sas());
        answered.is_some()
    })
    .await;
    let answered = answered.expect("the SAS started");
    answered.accept().await.unwrap_or_else(|e| panic!("accept SAS: {e}\n{}", server.log_report()));
    sync_until(&[requester, responder], server, "both devices to show emoji", async || {
        answered.can_be_presented() && started.can_be_presented()
    })
    .await;

    // The users compare the emoji: the same seven on both screens.
    let (shown, seen) = (emoji_of(&started), emoji_of(&answered));
    assert_eq!(shown.len(), 7);
    assert_eq!(shown, seen, "both devices show the same emoji");
    assert_eq!(started.decimals(), answered.decimals(), "and the same numbers");
    started.confirm().await.unwrap_or_else(|e| panic!("confirm: {e}\n{}", server.log_report()));
    answered.confirm().await.unwrap_or_else(|e| panic!("confirm: {e}\n{}", server.log_report()));
    sync_until(&[requester, responder], server, "both verifications to finish", async || {
        started.is_done() && answered.is_done()
    })
    .await;
    assert!(!started.is_cancelled() && !answered.is_cancelled());
}

/// Alice's new device B verifies her older device A by comparing emoji; A then cross-signs B,
/// and B receives the private cross-signing keys from A.
async fn sas_verification_then_cross_signing(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let device_a = login(&server, "alice").await;
    sync(&device_a, &server).await;
    let master_id = set_up_cross_signing(&server, &device_a, &alice).await;

    // Something A says in an encrypted room before B exists: B was sent no key for it.
    let room = device_a
        .create_room(CreateRoomRequest::new())
        .await
        .unwrap_or_else(|e| panic!("create a room: {e}\n{}", server.log_report()));
    room.enable_encryption().await.unwrap_or_else(|e| panic!("enable encryption: {e}\n{}", server.log_report()));
    let room_id = room.room_id().to_owned();
    let before_b = send_encrypted(&device_a, &room_id, "said before B existed", &server).await;

    // A second device logs in later; each learns of the other through device-list changes.
    let device_b = login(&server, "alice").await;
    let (user_id, a_id) = ids(&device_a);
    let (_, b_id) = ids(&device_b);
    sync_until(&[&device_b, &device_a], &server, "both devices to know each other", async || {
        device_b.encryption().get_device(&user_id, &a_id).await.ok().flatten().is_some()
            && device_a.encryption().get_device(&user_id, &b_id).await.ok().flatten().is_some()
    })
    .await;
    let a_seen_by_b = device_b.encryption().get_device(&user_id, &a_id).await.expect("crypto store").expect("A");
    assert!(a_seen_by_b.is_cross_signed_by_owner(), "A's device is signed by the new self-signing key");
    assert!(!a_seen_by_b.is_verified(), "B does not trust A before verifying it");
    let b_seen_by_a = device_a.encryption().get_device(&user_id, &b_id).await.expect("crypto store").expect("B");
    assert!(!b_seen_by_a.is_verified(), "A does not trust B yet");
    let old_room = device_b.get_room(&room_id).expect("B knows alice's room");
    let first_try = old_room.event(&before_b, None).await.unwrap_or_else(|e| panic!("fetch: {e}"));
    assert!(
        matches!(first_try.kind, TimelineEventKind::UnableToDecrypt { .. }),
        "B cannot read the old message yet: {:?}",
        first_try.kind
    );

    // B asks A to verify; the flow travels as to-device messages.
    let b_request = a_seen_by_b
        .request_verification()
        .await
        .unwrap_or_else(|e| panic!("request verification: {e}\n{}", server.log_report()));
    complete_sas(&server, &device_b, b_request, &device_a).await;

    // A signed B with its self-signing key; A sees that after the server reports the change.
    sync_until(&[&device_a], &server, "A to see B cross-signed", async || {
        device_a
            .encryption()
            .get_device(&user_id, &b_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|device| device.is_cross_signed_by_owner() && device.is_verified())
    })
    .await;
    let keys = query_keys(&server, &alice).await;
    let user = alice.user_id.as_str();
    let (self_signing_id, self_signing_public) = only_key(&keys["self_signing_keys"][user]);
    let b_keys = &keys["device_keys"][user][b_id.as_str()];
    assert_signed_by(b_keys, user, &self_signing_id, &self_signing_public);
    assert_signed_by(
        b_keys,
        user,
        &format!("ed25519:{b_id}"),
        b_keys["keys"][format!("ed25519:{b_id}")].as_str().expect("B's ed25519 key"),
    );

    // B asked for the private cross-signing keys once it trusted A; A sent them over Olm.
    sync_until(&[&device_b, &device_a], &server, "B to receive the cross-signing keys", async || {
        device_b.encryption().cross_signing_status().await.is_some_and(|status| status.is_complete())
    })
    .await;
    let a_after = device_b.encryption().get_device(&user_id, &a_id).await.expect("crypto store").expect("A");
    assert!(a_after.is_verified(), "B trusts A after verifying it");
    let own = device_b.encryption().get_user_identity(&user_id).await.expect("crypto store").expect("B knows alice");
    assert!(own.is_verified(), "B trusts alice's identity");
    assert_eq!(format!("ed25519:{}", own.master_key().get_first_key().expect("a master key").to_base64()), master_id);

    // B asked its own devices for the key of the old message; A, which trusts B now, forwards
    // it over Olm, and B decrypts.
    sync_until(&[&device_b, &device_a], &server, "A to forward the room key to B", async || {
        old_room.event(&before_b, None).await.is_ok_and(|event| matches!(event.kind, TimelineEventKind::Decrypted(_)))
    })
    .await;
    assert_decrypts(&device_b, &room_id, &before_b, "said before B existed", &server).await;
}

/// `/keys/query` for `target`'s keys as `requester`.
async fn query_keys_of(server: &TestServer, requester: &User, target: &User) -> Value {
    let body = json!({"device_keys": {target.user_id.as_str(): []}});
    let (status, keys) =
        server.request(Method::POST, "/_matrix/client/v3/keys/query", Some(&body), Some(&requester.access_token)).await;
    assert_eq!(status, 200, "{keys}");
    keys
}

/// Alice verifies bob (another user) in their direct chat, as Element does: afterwards each has
/// signed the other's master key with their user-signing key, each sees the other as
/// verified, and the server shows such a signature to its maker only.
async fn user_verification_in_a_direct_chat(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let charlie = server.register("charlie").await;
    let alice_client = login(&server, "alice").await;
    let bob_client = login(&server, "bob").await;
    for client in [&alice_client, &bob_client] {
        sync(client, &server).await;
        client
            .encryption()
            .bootstrap_cross_signing(None)
            .await
            .unwrap_or_else(|e| panic!("set up cross-signing: {e}\n{}", server.log_report()));
    }
    let (alice_id, _) = ids(&alice_client);
    let (bob_id, _) = ids(&bob_client);

    // They have a direct chat (the SDK records it in `m.direct` account data)...
    let direct = alice_client
        .create_dm(&bob_id)
        .await
        .unwrap_or_else(|e| panic!("create a direct chat: {e}\n{}", server.log_report()));
    let room_id = direct.room_id().to_owned();
    sync_until(&[&bob_client], &server, "bob to be invited to the direct chat", async || {
        bob_client.get_room(&room_id).is_some()
    })
    .await;
    bob_client.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    sync_until(&[&alice_client, &bob_client], &server, "each to know the other's devices", async || {
        let alice_knows =
            alice_client.encryption().get_user_devices(&bob_id).await.is_ok_and(|d| d.devices().count() > 0);
        let bob_knows =
            bob_client.encryption().get_user_devices(&alice_id).await.is_ok_and(|d| d.devices().count() > 0);
        alice_knows && bob_knows && alice_client.get_dm_room(&bob_id).is_some()
    })
    .await;

    // ...where alice asks to verify bob.
    let bob_identity = alice_client
        .encryption()
        .get_user_identity(&bob_id)
        .await
        .unwrap_or_else(|e| panic!("bob's identity: {e}"))
        .expect("bob has cross-signing keys");
    assert!(!bob_identity.is_verified());
    let request = bob_identity
        .request_verification()
        .await
        .unwrap_or_else(|e| panic!("request verification: {e}\n{}", server.log_report()));
    assert_eq!(request.room_id(), Some(room_id.as_ref()), "the request went into the direct chat");
    complete_sas(&server, &alice_client, request, &bob_client).await;

    // Each signed the other's master key; each sees the other verified once the server
    // reports the signature (to its maker alone) as a device-list change.
    sync_until(&[&alice_client, &bob_client], &server, "each to see the other verified", async || {
        let alice_sees_bob = alice_client.encryption().get_user_identity(&bob_id).await.ok().flatten();
        let bob_sees_alice = bob_client.encryption().get_user_identity(&alice_id).await.ok().flatten();
        alice_sees_bob.is_some_and(|identity| identity.is_verified())
            && bob_sees_alice.is_some_and(|identity| identity.is_verified())
    })
    .await;

    let alice_keys = query_keys(&server, &alice).await;
    let (alice_usk_id, alice_usk) = only_key(&alice_keys["user_signing_keys"][alice.user_id.as_str()]);
    let bob_as_alice_sees = query_keys_of(&server, &alice, &bob).await;
    let bob_master = &bob_as_alice_sees["master_keys"][bob.user_id.as_str()];
    assert_signed_by(bob_master, &alice.user_id, &alice_usk_id, &alice_usk);
    assert!(
        bob_as_alice_sees["user_signing_keys"].get(bob.user_id.as_str()).is_none(),
        "nobody but bob sees bob's user-signing key: {bob_as_alice_sees}"
    );
    let bob_as_charlie_sees = query_keys_of(&server, &charlie, &bob).await;
    let master_for_charlie = &bob_as_charlie_sees["master_keys"][bob.user_id.as_str()];
    assert_eq!(master_for_charlie["keys"], bob_master["keys"], "the same master key");
    assert!(
        master_for_charlie["signatures"].get(alice.user_id.as_str()).is_none(),
        "alice's signature is hers to see: {master_for_charlie}"
    );
}

backend_tests!(sas_verification_then_cross_signing, user_verification_in_a_direct_chat);
