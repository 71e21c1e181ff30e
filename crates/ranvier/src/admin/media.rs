//! `ranvier admin media …`: quarantine or delete one file by its `mxc://` URI, and delete old
//! media (retention), by upload time or by last access. They work on the database and the
//! media storage directly and take effect on a running server at once: it reads both on every
//! request. (A running server writes the downloads it notes every `retention.access_flush_ms`;
//! downloads newer than that are not yet counted by `--not-accessed-for-days`.)

use std::io::Write;

use clap::Subcommand;
use ranvier_core::{Config, util::now_ms};
use ranvier_media::Media;
use ranvier_store::Store;
use ruma::{MxcUri, OwnedServerName};

/// The `admin media` subcommands.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Stop serving a file and its thumbnails; the bytes are kept for inspection.
    Quarantine {
        /// The file's `mxc://server/media_id` URI.
        mxc: String,
    },
    /// Delete a file, its thumbnails and the stored bytes no other upload shares.
    Delete {
        /// The file's `mxc://server/media_id` URI.
        mxc: String,
    },
    /// Delete every local file uploaded more than DAYS days ago, or (with
    /// --not-accessed-for-days) not downloaded for DAYS days.
    Purge {
        /// The age, in days, beyond which files are deleted (0 deletes everything).
        #[arg(long, value_name = "DAYS", required_unless_present = "not_accessed_for_days")]
        older_than_days: Option<u64>,
        /// Delete files not downloaded (nor thumbnailed) for DAYS days; quarantined files are
        /// kept.
        #[arg(long, value_name = "DAYS", conflicts_with = "older_than_days")]
        not_accessed_for_days: Option<u64>,
        /// With --not-accessed-for-days: purge cached media of other servers instead of local
        /// media.
        #[arg(long, requires = "not_accessed_for_days")]
        remote: bool,
    },
}

/// Run a media command, writing its output to `out`.
pub async fn run(config: &Config, store: &Store, command: MediaCommand, out: &mut impl Write) -> Result<(), String> {
    let server_name: OwnedServerName =
        config.server_name.as_str().try_into().map_err(|_| "server_name is not a valid server name")?;
    let media = Media::new(store.clone(), server_name, config).map_err(|e| e.to_string())?;
    match command {
        MediaCommand::Quarantine { mxc } => {
            let (origin, media_id) = parse_mxc(&mxc)?;
            if !media.quarantine(&origin, &media_id, "ranvier admin").await.map_err(|e| e.to_string())? {
                return Err(format!("no media {mxc}"));
            }
            writeln!(out, "quarantined {mxc}").map_err(|e| e.to_string())
        }
        MediaCommand::Delete { mxc } => {
            let (origin, media_id) = parse_mxc(&mxc)?;
            if !media.delete(&origin, &media_id).await.map_err(|e| e.to_string())? {
                return Err(format!("no media {mxc}"));
            }
            writeln!(out, "deleted {mxc}").map_err(|e| e.to_string())
        }
        MediaCommand::Purge { older_than_days, not_accessed_for_days, remote } => {
            let before = |days: u64| {
                let age_ms = days.checked_mul(86_400_000).and_then(|ms| i64::try_from(ms).ok());
                age_ms.map_or(i64::MIN, |age| now_ms().saturating_sub(age))
            };
            if let Some(days) = not_accessed_for_days {
                let deleted =
                    media.purge_not_accessed_since(!remote, before(days)).await.map_err(|e| e.to_string())?.len();
                let which = if remote { "remote" } else { "local" };
                return writeln!(out, "deleted {deleted} {which} files not accessed for {days} days")
                    .map_err(|e| e.to_string());
            }
            let days = older_than_days.unwrap_or(0);
            let deleted = media.purge_uploaded_before(before(days)).await.map_err(|e| e.to_string())?;
            writeln!(out, "deleted {deleted} files uploaded more than {days} days ago").map_err(|e| e.to_string())
        }
    }
}

/// The server name and media id of an `mxc://` URI.
fn parse_mxc(uri: &str) -> Result<(OwnedServerName, String), String> {
    let (server_name, media_id) =
        <&MxcUri>::from(uri).parts().map_err(|_| format!("`{uri}` is not an mxc://server/media_id URI"))?;
    Ok((server_name.to_owned(), media_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxc_uris_are_parsed() {
        let (server, id) = parse_mxc("mxc://example.org/abc_DEF-1").unwrap();
        assert_eq!((server.as_str(), id.as_str()), ("example.org", "abc_DEF-1"));
        for bad in ["example.org/abc", "mxc://example.org", "mxc:///abc", "https://example.org/abc"] {
            assert!(parse_mxc(bad).is_err(), "{bad}");
        }
    }
}
