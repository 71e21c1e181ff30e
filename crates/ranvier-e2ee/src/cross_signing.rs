//! Cross-signing: `/keys/device_signing/upload` and `/keys/signatures/upload`.
//!
//! Uploaded keys are checked before they are stored: each names the uploader, has the right
//! usage and exactly one ed25519 key whose id is the key itself, and the self-signing and
//! user-signing keys are signed by the master key (the one uploaded with them, or the stored
//! one). Uploaded signatures are verified against the signer's stored keys, and the signed
//! object must be the stored key apart from its signatures.

use std::collections::BTreeMap;

use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_store::e2ee::cross_signing::{CrossSigningKeyRow, CrossSigningKeyType, NewSignature};
use ruma::{
    CanonicalJsonObject, OwnedUserId, UserId,
    api::client::keys::upload_signatures::v3::{Failure, SignedKeys},
    encryption::CrossSigningKey,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    E2ee, invalid_signature,
    signing::{
        SignatureError, canonical_object, canonical_text, object_field, signed_part, signing_key_ids, str_field,
        verify_signature,
    },
};

/// The keys of one `/keys/device_signing/upload`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SigningKeysUpload<'a> {
    pub master_key: Option<&'a Raw<CrossSigningKey>>,
    pub self_signing_key: Option<&'a Raw<CrossSigningKey>>,
    pub user_signing_key: Option<&'a Raw<CrossSigningKey>>,
}

impl<'a> SigningKeysUpload<'a> {
    fn keys(&self) -> impl Iterator<Item = (CrossSigningKeyType, &'a Raw<CrossSigningKey>)> {
        [
            (CrossSigningKeyType::Master, self.master_key),
            (CrossSigningKeyType::SelfSigning, self.self_signing_key),
            (CrossSigningKeyType::UserSigning, self.user_signing_key),
        ]
        .into_iter()
        .filter_map(|(kind, key)| key.map(|key| (kind, key)))
    }
}

/// A checked cross-signing key.
struct CheckedKey {
    key_type: CrossSigningKeyType,
    public_key: String,
    object: CanonicalJsonObject,
}

impl E2ee {
    /// Whether a signing-key upload needs user-interactive authentication. It does not when
    /// the user has no master key yet, nor when every uploaded key is already stored exactly
    /// so (a retried request).
    pub async fn signing_keys_upload_needs_auth(
        &self,
        user_id: &UserId,
        upload: &SigningKeysUpload<'_>,
    ) -> Result<bool> {
        let stored = self.store().cross_signing_keys(user_id.as_str()).await?;
        if !stored.iter().any(|key| key.key_type == CrossSigningKeyType::Master) {
            return Ok(false);
        }
        if upload.master_key.is_none() {
            return Ok(true);
        }
        for (key_type, key) in upload.keys() {
            let identical = match raw_object(key) {
                Ok(object) => stored.iter().any(|s| s.key_type == key_type && s.key_json == canonical_text(&object)),
                Err(_) => false,
            };
            if !identical {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `/keys/device_signing/upload` once authorised: check and store the keys.
    pub async fn upload_signing_keys(&self, user_id: &UserId, upload: &SigningKeysUpload<'_>) -> Result<()> {
        let mut checked = Vec::new();
        for (key_type, key) in upload.keys() {
            checked.push(check_cross_signing_key(user_id, key_type, key)?);
        }
        if checked.is_empty() {
            return Ok(());
        }
        // The keys' ids must not collide with the user's device ids (a verification treats a
        // master key as a device named by its public key).
        let devices = self.store().list_devices(user_id.as_str()).await?;
        if let Some(key) = checked.iter().find(|key| devices.iter().any(|d| d.device_id == key.public_key)) {
            return Err(Error::forbidden(format!("Key ID {} is in use as a device ID", key.public_key)));
        }
        let master_public = match checked.iter().find(|key| key.key_type == CrossSigningKeyType::Master) {
            Some(master) => Some(master.public_key.clone()),
            None => self
                .store()
                .cross_signing_keys(user_id.as_str())
                .await?
                .into_iter()
                .find(|key| key.key_type == CrossSigningKeyType::Master)
                .map(|key| key.public_key),
        };
        for key in checked.iter().filter(|key| key.key_type != CrossSigningKeyType::Master) {
            let Some(master_public) = &master_public else {
                return Err(Error::missing_param("No master signing key is available"));
            };
            verify_signature(&key.object, user_id.as_str(), &format!("ed25519:{master_public}"), master_public)
                .map_err(|e| {
                    invalid_signature(format!("The {} key is not signed by the master key: {e}", key.key_type.as_str()))
                })?;
        }
        let rows: Vec<CrossSigningKeyRow> = checked
            .into_iter()
            .map(|key| CrossSigningKeyRow {
                key_type: key.key_type,
                public_key: key.public_key,
                key_json: canonical_text(&key.object),
            })
            .collect();
        self.store().set_cross_signing_keys(user_id.as_str(), &rows).await?;
        Ok(())
    }

    /// `/keys/signatures/upload`: verify and store signatures by `user_id` — of their own
    /// devices by their self-signing key, of their own master key by their devices, and of
    /// other users' master keys by their user-signing key. Returns the failures, per user and
    /// key id.
    pub async fn upload_signatures(
        &self,
        user_id: &UserId,
        signed_keys: &BTreeMap<OwnedUserId, SignedKeys>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, Failure>>> {
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Failure>> = BTreeMap::new();
        let mut accepted = Vec::new();
        let own_keys = self.store().cross_signing_keys(user_id.as_str()).await?;
        let own_key = |kind| own_keys.iter().find(|key| key.key_type == kind);
        for (target_user, keys) in signed_keys {
            for (key_id, json) in keys.iter() {
                let outcome = match serde_json::from_str::<Value>(json.get())
                    .map_err(|e| e.to_string())
                    .and_then(|value| canonical_object(&value, "signed key").map_err(|e| e.to_string()))
                {
                    Err(message) => Err(SignatureFailure::BadJson(message)),
                    Ok(object) if target_user == user_id => {
                        match own_key(CrossSigningKeyType::Master).filter(|master| master.public_key == key_id) {
                            Some(master) => self.master_signed_by_devices(user_id, master, &object).await?,
                            None => {
                                let ssk = own_key(CrossSigningKeyType::SelfSigning);
                                self.device_signed_by_self_signing_key(user_id, key_id, ssk, &object).await?
                            }
                        }
                    }
                    Ok(object) => {
                        let usk = own_key(CrossSigningKeyType::UserSigning);
                        self.master_signed_by_user_signing_key(user_id, target_user, key_id, usk, &object).await?
                    }
                };
                match outcome {
                    Ok(signatures) => accepted.extend(signatures),
                    Err(failure) => {
                        failures
                            .entry(target_user.clone())
                            .or_default()
                            .insert(key_id.to_owned(), failure.into_failure());
                    }
                }
            }
        }
        self.store().add_signatures(user_id.as_str(), &accepted).await?;
        Ok(failures)
    }

    /// The user's devices' signatures of their own master key.
    async fn master_signed_by_devices(
        &self,
        user_id: &UserId,
        master: &CrossSigningKeyRow,
        object: &CanonicalJsonObject,
    ) -> Result<Result<Vec<NewSignature>, SignatureFailure>> {
        if !same_key(&master.key_json, object) {
            return Ok(Err(SignatureFailure::Mismatch));
        }
        let master_key_id = format!("ed25519:{}", master.public_key);
        let mut signatures = Vec::new();
        for signer_key_id in signing_key_ids(object, user_id.as_str()) {
            if signer_key_id == master_key_id {
                continue;
            }
            // Signatures by keys we do not know (a device deleted since, another algorithm)
            // come along from earlier queries; they are not stored, and not an error.
            let Some(device_id) = signer_key_id.strip_prefix("ed25519:") else { continue };
            let Some(public_key) = self.device_ed25519_key(user_id, device_id).await? else { continue };
            if let Err(e) = verify_signature(object, user_id.as_str(), &signer_key_id, &public_key) {
                return Ok(Err(SignatureFailure::Invalid(e)));
            }
            signatures.push(new_signature(
                user_id.as_str(),
                &master.public_key,
                &signer_key_id,
                object,
                user_id.as_str(),
            ));
        }
        if signatures.is_empty() {
            return Ok(Err(SignatureFailure::Invalid(SignatureError::Missing)));
        }
        Ok(Ok(signatures))
    }

    /// The user's self-signing key's signature of one of their devices.
    async fn device_signed_by_self_signing_key(
        &self,
        user_id: &UserId,
        device_id: &str,
        self_signing: Option<&CrossSigningKeyRow>,
        object: &CanonicalJsonObject,
    ) -> Result<Result<Vec<NewSignature>, SignatureFailure>> {
        let stored = self.store().device_keys(user_id.as_str(), &[device_id.to_owned()]).await?;
        let Some(device) = stored.first() else {
            return Ok(Err(SignatureFailure::UnknownKey));
        };
        if !same_key(&device.key_json, object) {
            return Ok(Err(SignatureFailure::Mismatch));
        }
        let Some(self_signing) = self_signing else {
            return Ok(Err(SignatureFailure::NoSigningKey("self-signing")));
        };
        let signer_key_id = format!("ed25519:{}", self_signing.public_key);
        if let Err(e) = verify_signature(object, user_id.as_str(), &signer_key_id, &self_signing.public_key) {
            return Ok(Err(SignatureFailure::Invalid(e)));
        }
        Ok(Ok(vec![new_signature(user_id.as_str(), device_id, &signer_key_id, object, user_id.as_str())]))
    }

    /// The user's user-signing key's signature of another user's master key.
    async fn master_signed_by_user_signing_key(
        &self,
        user_id: &UserId,
        target_user: &UserId,
        key_id: &str,
        user_signing: Option<&CrossSigningKeyRow>,
        object: &CanonicalJsonObject,
    ) -> Result<Result<Vec<NewSignature>, SignatureFailure>> {
        let target_keys = self.store().cross_signing_keys(target_user.as_str()).await?;
        let Some(master) =
            target_keys.iter().find(|key| key.key_type == CrossSigningKeyType::Master && key.public_key == key_id)
        else {
            return Ok(Err(SignatureFailure::UnknownKey));
        };
        if !same_key(&master.key_json, object) {
            return Ok(Err(SignatureFailure::Mismatch));
        }
        let Some(user_signing) = user_signing else {
            return Ok(Err(SignatureFailure::NoSigningKey("user-signing")));
        };
        let signer_key_id = format!("ed25519:{}", user_signing.public_key);
        if let Err(e) = verify_signature(object, user_id.as_str(), &signer_key_id, &user_signing.public_key) {
            return Ok(Err(SignatureFailure::Invalid(e)));
        }
        Ok(Ok(vec![new_signature(target_user.as_str(), key_id, &signer_key_id, object, user_id.as_str())]))
    }

    /// The ed25519 key of one of a user's devices, from its stored identity keys.
    async fn device_ed25519_key(&self, user_id: &UserId, device_id: &str) -> Result<Option<String>> {
        let stored = self.store().device_keys(user_id.as_str(), &[device_id.to_owned()]).await?;
        let Some(device) = stored.first() else { return Ok(None) };
        let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(&device.key_json) else { return Ok(None) };
        Ok(object_field(&object, "keys")
            .and_then(|keys| str_field(keys, &format!("ed25519:{device_id}")))
            .map(String::from))
    }
}

/// Why one uploaded signature was refused.
#[derive(Debug)]
enum SignatureFailure {
    BadJson(String),
    /// No such device or key.
    UnknownKey,
    /// The signed object is not the stored key.
    Mismatch,
    /// The uploader has no key of this kind to sign with.
    NoSigningKey(&'static str),
    Invalid(SignatureError),
}

impl SignatureFailure {
    fn into_failure(self) -> Failure {
        let (errcode, error) = match self {
            Self::BadJson(message) => ("M_BAD_JSON", message),
            Self::UnknownKey => ("M_NOT_FOUND", "Unknown key".to_owned()),
            Self::Mismatch => ("M_INVALID_PARAM", "The signed object does not match the stored key".to_owned()),
            Self::NoSigningKey(kind) => ("M_NOT_FOUND", format!("No {kind} key is stored")),
            Self::Invalid(e) => ("M_INVALID_SIGNATURE", format!("Invalid signature: {e}")),
        };
        failure(errcode, &error)
    }
}

/// A `Failure` entry. ruma keeps its fields private, so it is built from its JSON form, which
/// (two strings, made here) always deserialises.
fn failure(errcode: &str, error: &str) -> Failure {
    serde_json::from_value(json!({ "errcode": errcode, "error": error }))
        .expect("a signature upload failure deserialises from two strings")
}

/// The signature to store: `signer`'s key `signer_key_id` signed `target_user`'s key `target_key_id`.
fn new_signature(
    target_user: &str,
    target_key_id: &str,
    signer_key_id: &str,
    object: &CanonicalJsonObject,
    signer: &str,
) -> NewSignature {
    NewSignature {
        target_user_id: target_user.to_owned(),
        target_key_id: target_key_id.to_owned(),
        signer_key_id: signer_key_id.to_owned(),
        signature: crate::signing::signature_of(object, signer, signer_key_id).unwrap_or_default().to_owned(),
    }
}

/// Whether an uploaded object is the stored key apart from signatures and `unsigned`.
fn same_key(stored_json: &str, object: &CanonicalJsonObject) -> bool {
    serde_json::from_str::<CanonicalJsonObject>(stored_json)
        .is_ok_and(|stored| signed_part(&stored) == signed_part(object))
}

/// A raw key as a canonical object.
fn raw_object<T>(raw: &Raw<T>) -> Result<CanonicalJsonObject> {
    let value: Value = serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    canonical_object(&value, "key")
}

/// Check one uploaded cross-signing key of `key_type` (see the module docs).
fn check_cross_signing_key(
    user_id: &UserId,
    key_type: CrossSigningKeyType,
    raw: &Raw<CrossSigningKey>,
) -> Result<CheckedKey> {
    let kind = key_type.as_str();
    let invalid = |why: &str| Error::matrix(ErrorKind::InvalidParam, format!("Invalid {kind} key: {why}"));
    let parsed = raw.deserialize().map_err(|e| Error::bad_json(format!("Invalid {kind} key: {e}")))?;
    let object = raw_object(raw)?;
    if parsed.user_id != user_id {
        return Err(invalid("it names another user"));
    }
    if !parsed.usage.iter().any(|usage| usage.as_str() == kind) {
        return Err(invalid("its usage does not include it"));
    }
    let mut keys = parsed.keys.iter();
    let (Some((key_id, public_key)), None) = (keys.next(), keys.next()) else {
        return Err(invalid("it must have exactly one key"));
    };
    if key_id.algorithm().as_str() != "ed25519" || key_id.key_name().as_str() != public_key {
        return Err(invalid("its key id must be ed25519:<the public key>"));
    }
    Ok(CheckedKey { key_type, public_key: public_key.clone(), object })
}
