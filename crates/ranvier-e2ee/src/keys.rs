//! `/keys/upload`, `/keys/query` and `/keys/claim`: device identity keys, one-time keys and
//! fallback keys.

use std::collections::BTreeMap;

use ranvier_core::{Error, Result};
use ranvier_store::e2ee::{
    cross_signing::CrossSigningKeyType,
    keys::{NewKey, UploadKeys, UploadOutcome},
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId,
    OwnedUserId, UInt, UserId,
    api::client::keys::{claim_keys, get_keys},
    encryption::{CrossSigningKey, DeviceKeys, OneTimeKey},
    serde::Raw,
};
use serde_json::{Value, value::to_raw_value};

use crate::{
    E2ee, invalid_signature,
    signing::{
        add_signatures, canonical_object, canonical_text, object_field, signed_part, str_field, verify_signature,
    },
};

/// The one-time key algorithm every count includes, at zero if need be: clients decide from
/// it whether to upload more.
pub const SIGNED_CURVE25519: &str = "signed_curve25519";

impl E2ee {
    /// `/keys/upload`: store a device's identity keys (which must be the caller's device's,
    /// self-signed with its ed25519 key), one-time keys and fallback keys, and return the
    /// device's one-time key counts.
    pub async fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        device_keys: Option<&Raw<DeviceKeys>>,
        one_time_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
        fallback_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let mut device_keys = device_keys.map(|keys| checked_device_keys(user_id, device_id, keys)).transpose()?;
        if let Some(keys) = &device_keys {
            // The same keys again (perhaps with other signatures attached) are no change: the
            // signatures others made of them stay valid, and nobody needs to hear of it.
            let stored = self.store().device_keys(user_id.as_str(), &[device_id.to_string()]).await?;
            if let Some(stored) = stored.first()
                && serde_json::from_str::<CanonicalJsonObject>(&stored.key_json)
                    .is_ok_and(|stored| signed_part(&stored) == signed_part(keys))
            {
                device_keys = None;
            }
        }
        let upload = UploadKeys {
            device_keys: device_keys.as_ref().map(canonical_text),
            one_time_keys: new_keys(one_time_keys)?,
            fallback_keys: new_keys(fallback_keys)?,
        };
        match self.store().upload_keys(user_id.as_str(), device_id.as_str(), &upload).await? {
            UploadOutcome::Stored { .. } => {}
            UploadOutcome::OneTimeKeyConflict { key_id, existing } => {
                return Err(Error::invalid_param(format!(
                    "One time key {key_id} already exists. Old key: {existing}; new key: {}",
                    upload
                        .one_time_keys
                        .iter()
                        .find(|key| format!("{}:{}", key.algorithm, key.key_id) == key_id)
                        .map_or("", |key| key.key_json.as_str())
                )));
            }
        }
        self.one_time_key_counts(user_id, device_id).await
    }

    /// The unclaimed one-time keys of a device per algorithm (always with `signed_curve25519`).
    pub async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::from(SIGNED_CURVE25519), UInt::MIN)]);
        for (algorithm, count) in self.store().one_time_key_counts(user_id.as_str(), device_id.as_str()).await? {
            counts.insert(OneTimeKeyAlgorithm::from(algorithm.as_str()), UInt::try_from(count).unwrap_or_default());
        }
        Ok(counts)
    }

    /// `/keys/query`: the device keys of the requested users (all their devices, or the listed
    /// ones) with the signatures uploaded since, plus their master and self-signing keys, and
    /// the requester's own user-signing key. Every requested local user gets an entry, even
    /// without devices; remote users we hold nothing for are left out.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        device_keys: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<get_keys::v3::Response> {
        let mut response = get_keys::v3::Response::new();
        for (user_id, device_ids) in device_keys {
            let wanted: Vec<String> = device_ids.iter().map(ToString::to_string).collect();
            let mut stored = self.store().device_keys(user_id.as_str(), &wanted).await?;
            if self.is_local(user_id) {
                // Keys outliving their device (a deletion that did not reach us) are not shown.
                stored.retain(|keys| keys.device_exists);
            }
            let key_ids: Vec<String> = stored.iter().map(|keys| keys.device_id.clone()).collect();
            let signatures = self.store().signatures_of(user_id.as_str(), &key_ids).await?;
            let mut devices = BTreeMap::new();
            for keys in stored {
                let Some(mut object) = parse_stored(&keys.key_json, "device keys") else { continue };
                add_signatures(
                    &mut object,
                    signatures
                        .iter()
                        .filter(|s| s.target_key_id == keys.device_id)
                        .filter(|s| s.signer_user_id == user_id.as_str() || s.signer_user_id == requester.as_str())
                        .map(|s| (s.signer_user_id.as_str(), s.signer_key_id.as_str(), s.signature.as_str())),
                );
                if let Some(name) = keys.display_name {
                    let unsigned =
                        BTreeMap::from([("device_display_name".to_owned(), CanonicalJsonValue::String(name))]);
                    object.insert("unsigned".to_owned(), CanonicalJsonValue::Object(unsigned));
                }
                devices.insert(OwnedDeviceId::from(keys.device_id), to_raw::<DeviceKeys>(&object)?);
            }
            if !devices.is_empty() || self.is_local(user_id) {
                response.device_keys.insert(user_id.clone(), devices);
            }

            for key in self.store().cross_signing_keys(user_id.as_str()).await? {
                let Some(mut object) = parse_stored(&key.key_json, "cross-signing key") else { continue };
                if key.key_type == CrossSigningKeyType::Master {
                    let signatures =
                        self.store().signatures_of(user_id.as_str(), std::slice::from_ref(&key.public_key)).await?;
                    add_signatures(
                        &mut object,
                        signatures
                            .iter()
                            .filter(|s| s.signer_user_id == user_id.as_str() || s.signer_user_id == requester.as_str())
                            .map(|s| (s.signer_user_id.as_str(), s.signer_key_id.as_str(), s.signature.as_str())),
                    );
                }
                let raw = to_raw::<CrossSigningKey>(&object)?;
                match key.key_type {
                    CrossSigningKeyType::Master => {
                        response.master_keys.insert(user_id.clone(), raw);
                    }
                    CrossSigningKeyType::SelfSigning => {
                        response.self_signing_keys.insert(user_id.clone(), raw);
                    }
                    CrossSigningKeyType::UserSigning if user_id == requester => {
                        response.user_signing_keys.insert(user_id.clone(), raw);
                    }
                    CrossSigningKeyType::UserSigning => {}
                }
            }
        }
        Ok(response)
    }

    /// `/keys/claim`: one key per requested device and algorithm — a one-time key if one is
    /// left (it is then gone), else the fallback key (then marked used). Devices with neither
    /// are left out.
    pub async fn claim_keys(
        &self,
        one_time_keys: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<claim_keys::v3::Response> {
        let requests: Vec<(String, String, String)> = one_time_keys
            .iter()
            .flat_map(|(user_id, devices)| {
                devices.iter().map(move |(device_id, algorithm)| {
                    (user_id.to_string(), device_id.to_string(), algorithm.as_str().to_owned())
                })
            })
            .collect();
        let mut claimed: BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys> = BTreeMap::new();
        for key in self.store().claim_keys(&requests).await? {
            let (Ok(user_id), Ok(key_id)) =
                (OwnedUserId::try_from(key.user_id.as_str()), OwnedOneTimeKeyId::try_from(key.full_key_id.as_str()))
            else {
                continue;
            };
            let Ok(json) = serde_json::value::RawValue::from_string(key.key_json) else {
                return Err(Error::internal("stored one-time key is not JSON"));
            };
            claimed
                .entry(user_id)
                .or_default()
                .entry(OwnedDeviceId::from(key.device_id))
                .or_default()
                .insert(key_id, Raw::from_json(json));
        }
        Ok(claim_keys::v3::Response::new(claimed))
    }
}

/// Check uploaded device keys: they must parse, name the caller's user and device, carry the
/// device's ed25519 key, and be signed by it. Returns them in canonical form, without
/// `unsigned` (the server fills that in when the keys are queried).
pub(crate) fn checked_device_keys(
    user_id: &UserId,
    device_id: &DeviceId,
    keys: &Raw<DeviceKeys>,
) -> Result<CanonicalJsonObject> {
    keys.deserialize().map_err(|e| Error::bad_json(format!("Invalid device keys: {e}")))?;
    let value: Value =
        serde_json::from_str(keys.json().get()).map_err(|e| Error::bad_json(format!("Invalid device keys: {e}")))?;
    let mut object = canonical_object(&value, "device_keys")?;
    object.remove("unsigned");
    if str_field(&object, "user_id") != Some(user_id.as_str()) {
        return Err(Error::invalid_param("device_keys.user_id does not match the authenticated user"));
    }
    if str_field(&object, "device_id") != Some(device_id.as_str()) {
        return Err(Error::invalid_param("device_keys.device_id does not match the authenticated device"));
    }
    let key_id = format!("ed25519:{device_id}");
    let public_key = object_field(&object, "keys")
        .and_then(|keys| str_field(keys, &key_id))
        .ok_or_else(|| Error::invalid_param(format!("device_keys.keys lacks {key_id}")))?
        .to_owned();
    verify_signature(&object, user_id.as_str(), &key_id, &public_key)
        .map_err(|e| invalid_signature(format!("Device keys are not self-signed: {e}")))?;
    Ok(object)
}

/// One-time or fallback keys in stored form.
pub(crate) fn new_keys(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>) -> Result<Vec<NewKey>> {
    keys.iter()
        .map(|(key_id, key)| {
            key.deserialize().map_err(|e| Error::bad_json(format!("Invalid key {key_id}: {e}")))?;
            let value: Value = serde_json::from_str(key.json().get())
                .map_err(|e| Error::bad_json(format!("Invalid key {key_id}: {e}")))?;
            let key_json = match ruma::canonical_json::to_canonical_value(&value) {
                Ok(canonical) => serde_json::to_string(&canonical).map_err(|e| Error::internal(e.to_string()))?,
                Err(e) => return Err(Error::bad_json(format!("Key {key_id} is not canonical JSON: {e}"))),
            };
            Ok(NewKey {
                algorithm: key_id.algorithm().as_str().to_owned(),
                key_id: key_id.key_name().to_string(),
                key_json,
            })
        })
        .collect()
}

/// A stored key object, or `None` (logged) if the row is corrupt.
fn parse_stored(json: &str, what: &str) -> Option<CanonicalJsonObject> {
    match serde_json::from_str::<CanonicalJsonObject>(json) {
        Ok(object) => Some(object),
        Err(e) => {
            tracing::error!(error = %e, "stored {what} are not a JSON object");
            None
        }
    }
}

/// A canonical object as a ruma `Raw`.
pub(crate) fn to_raw<T>(object: &CanonicalJsonObject) -> Result<Raw<T>> {
    to_raw_value(object).map(Raw::from_json).map_err(|e| Error::internal(format!("serialise keys: {e}")))
}
