//! The server's ed25519 signing key: a PKCS#8 DER file, generated on first start.

use std::path::Path;

use ranvier_core::{Error, Result, error::Context};
use ruma::signatures::Ed25519KeyPair;

/// The key version in `ed25519:<version>` key ids.
const KEY_VERSION: &str = "a_1";

/// Load the signing key at `path`, generating and saving a new one if the file is absent.
pub fn load_or_generate(path: &Path) -> Result<Ed25519KeyPair> {
    let der = match std::fs::read(path) {
        Ok(der) => der,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let der = Ed25519KeyPair::generate();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).context("create signing key directory")?;
            }
            write_private(path, &der)?;
            tracing::info!(path = %path.display(), "generated a new signing key");
            der.to_vec()
        }
        Err(e) => {
            return Err(Error::internal(format!("read signing key {}: {e}", path.display())));
        }
    };
    Ed25519KeyPair::from_der(&der, KEY_VERSION.to_owned())
        .map_err(|e| Error::internal(format!("parse signing key {}: {e}", path.display())))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).context("create signing key file")?;
    file.write_all(bytes).context("write signing key")?;
    file.sync_all().context("sync signing key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_reloaded() {
        let dir = std::env::temp_dir().join(format!("ranvier-key-test-{}", ranvier_core::util::random_string(8)));
        let path = dir.join("signing.key");
        let first = load_or_generate(&path).unwrap();
        let second = load_or_generate(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        std::fs::remove_dir_all(dir).ok();
    }
}
