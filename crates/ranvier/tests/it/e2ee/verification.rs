//! Interactive emoji (SAS) verification between two devices of one user, over to-device
//! messages, and what follows it: the older device cross-signs the newer one, the server
//! shows that signature to everyone, and the newer device receives the private cross-signing
//! keys by secret sharing.
//!
//! Before that, the older device sets up cross-signing: the first upload needs no
//! user-interactive auth (spec v1.11), replacing the keys needs the account password.

use matrix_sdk::{
    Client,
    encryption::{
        CrossSigningResetAuthType,
        verification::{SasVerification, VerificationRequest},
    },
    ruma::{
        OwnedDeviceId, OwnedUserId,
        api::client::uiaa::{AuthData, AuthType, MatrixUserIdentifier, Password, UserIdentifier},
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

use super::{login, sync, sync_until};
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

/// Alice's new device B verifies her older device A by comparing emoji; A then cross-signs B,
/// and B receives the private cross-signing keys from A.
async fn sas_verification_then_cross_signing(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let device_a = login(&server, "alice").await;
    sync(&device_a, &server).await;
    let master_id = set_up_cross_signing(&server, &device_a, &alice).await;

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

    // B asks A to verify; the request travels as a to-device message.
    let b_request = a_seen_by_b
        .request_verification()
        .await
        .unwrap_or_else(|e| panic!("request verification: {e}\n{}", server.log_report()));
    let flow_id = b_request.flow_id().to_owned();
    let mut a_request: Option<VerificationRequest> = None;
    sync_until(&[&device_a], &server, "A to receive the verification request", async || {
        a_request = device_a.encryption().get_verification_request(&user_id, &flow_id).await;
        a_request.is_some()
    })
    .await;
    let a_request = a_request.expect("the request arrived");
    a_request.accept().await.unwrap_or_else(|e| panic!("A accepts: {e}\n{}", server.log_report()));
    sync_until(&[&device_b], &server, "B to see the request accepted", async || b_request.is_ready()).await;

    // B starts emoji verification; A accepts it.
    let b_sas = b_request
        .start_sas()
        .await
        .unwrap_or_else(|e| panic!("start SAS: {e}\n{}", server.log_report()))
        .expect("both devices support SAS");
    let mut a_sas: Option<SasVerification> = None;
    sync_until(&[&device_a], &server, "A to receive the SAS start", async || {
        a_sas = device_a.encryption().get_verification(&user_id, &flow_id).await.and_then(|v| v.sas());
        a_sas.is_some()
    })
    .await;
    let a_sas = a_sas.expect("the SAS started");
    a_sas.accept().await.unwrap_or_else(|e| panic!("A accepts SAS: {e}\n{}", server.log_report()));
    sync_until(&[&device_b, &device_a], &server, "both devices to show emoji", async || {
        a_sas.can_be_presented() && b_sas.can_be_presented()
    })
    .await;

    // The users compare the emoji: the same seven on both screens.
    let (a_emoji, b_emoji) = (emoji_of(&a_sas), emoji_of(&b_sas));
    assert_eq!(a_emoji.len(), 7);
    assert_eq!(a_emoji, b_emoji, "both devices show the same emoji");
    assert_eq!(a_sas.decimals(), b_sas.decimals(), "and the same numbers");
    b_sas.confirm().await.unwrap_or_else(|e| panic!("B confirms: {e}\n{}", server.log_report()));
    a_sas.confirm().await.unwrap_or_else(|e| panic!("A confirms: {e}\n{}", server.log_report()));
    sync_until(&[&device_b, &device_a], &server, "both verifications to finish", async || {
        a_sas.is_done() && b_sas.is_done()
    })
    .await;
    assert!(!a_sas.is_cancelled() && !b_sas.is_cancelled());

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
}

backend_tests!(sas_verification_then_cross_signing);
