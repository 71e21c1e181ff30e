//! `ranvier admin …`: operator commands that work on the database directly, with the same
//! configuration as the server (the file given with `--config` and the `RANVIER_*`
//! overrides). They are safe to run while the server runs: every change is one transaction.

mod media;

use std::io::Write;

use clap::Subcommand;
use ranvier_client::auth::{Auth, new_user_id};
use ranvier_core::{Config, util::now_ms};
use ranvier_store::{
    Store,
    registration_tokens::{RegistrationTokenRow, is_valid_token_string},
};

/// The `admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage registration tokens (`registration.require_token`).
    #[command(subcommand)]
    RegistrationToken(TokenCommand),
    /// Create an account that can log in with a password.
    CreateUser {
        /// The localpart (`alice`) or the full user id (`@alice:example.org`).
        user: String,
        /// The account's password.
        #[arg(long)]
        password: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Quarantine or delete media, and delete old media.
    #[command(subcommand)]
    Media(media::MediaCommand),
}

/// The `admin registration-token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it.
    Create {
        /// The token itself (1 to 64 of `A-Z a-z 0-9 . _ ~ -`); random when omitted.
        #[arg(long)]
        token: Option<String>,
        /// How many accounts it may register; unlimited when omitted.
        #[arg(long)]
        uses: Option<u32>,
        /// Seconds until it expires; never when omitted.
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
    },
    /// List every token with its uses and expiry.
    List,
    /// Delete a token. Registrations already past the token stage may still complete.
    Delete {
        /// The token to delete.
        token: String,
    },
}

/// Run an admin command against the configured database, writing its output to `out`.
pub async fn run(config: &Config, store: &Store, command: AdminCommand, out: &mut impl Write) -> Result<(), String> {
    match command {
        AdminCommand::RegistrationToken(TokenCommand::Create { token, uses, expires_in }) => {
            let token = match token {
                Some(token) if !is_valid_token_string(&token) => {
                    return Err(format!(
                        "`{token}` is not a valid token: use 1 to 64 of the characters A-Z a-z 0-9 . _ ~ -"
                    ));
                }
                Some(token) => token,
                None => ranvier_core::util::random_string(16),
            };
            let expiry_ts = match expires_in {
                Some(seconds) => {
                    let millis = i64::try_from(seconds).ok().and_then(|s| s.checked_mul(1000));
                    Some(millis.and_then(|ms| now_ms().checked_add(ms)).ok_or("--expires-in is too large")?)
                }
                None => None,
            };
            let created =
                store.create_registration_token(&token, uses.map(i64::from), expiry_ts).await.map_err(fail)?;
            if !created {
                return Err(format!("registration token `{token}` already exists"));
            }
            writeln!(out, "{token}").map_err(fail)
        }
        AdminCommand::RegistrationToken(TokenCommand::List) => {
            // Release the uses held by abandoned registrations, so the counts are current.
            store.expire_uia_sessions().await.map_err(fail)?;
            let tokens = store.list_registration_tokens().await.map_err(fail)?;
            write_token_table(out, &tokens, now_ms()).map_err(fail)
        }
        AdminCommand::RegistrationToken(TokenCommand::Delete { token }) => {
            if !store.delete_registration_token(&token).await.map_err(fail)? {
                return Err(format!("no registration token `{token}`"));
            }
            writeln!(out, "deleted registration token {token}").map_err(fail)
        }
        AdminCommand::CreateUser { user, password, admin } => {
            let server_name: ruma::OwnedServerName =
                config.server_name.as_str().try_into().map_err(|_| "server_name is not a valid server name")?;
            let localpart = match user.strip_prefix('@') {
                Some(full) => {
                    let (localpart, server) = full.split_once(':').ok_or("a full user id looks like @alice:server")?;
                    if server != server_name.as_str() {
                        return Err(format!("{user} does not belong to this server ({server_name})"));
                    }
                    localpart.to_owned()
                }
                None => user.clone(),
            };
            let user_id = new_user_id(&server_name, &localpart.to_lowercase()).map_err(|e| e.to_string())?;
            if password.is_empty() {
                return Err("the password may not be empty".to_owned());
            }
            let hash = Auth::default().hash_password(password).await.map_err(fail)?;
            if !store.create_user(user_id.as_str(), Some(&hash), admin).await.map_err(fail)? {
                return Err(format!("{user_id} already exists"));
            }
            let role = if admin { "administrator" } else { "user" };
            writeln!(out, "created {role} {user_id}").map_err(fail)
        }
        AdminCommand::Media(command) => media::run(config, store, command, out).await,
    }
}

fn fail(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// The token list as an aligned table.
fn write_token_table(out: &mut impl Write, tokens: &[RegistrationTokenRow], now: i64) -> std::io::Result<()> {
    if tokens.is_empty() {
        return writeln!(out, "no registration tokens");
    }
    let width = tokens.iter().map(|row| row.token.len()).max().unwrap_or(0).max("TOKEN".len());
    writeln!(out, "{:width$}  {:>9}  {:>7}  {:>9}  {:23}  VALID", "TOKEN", "USES", "PENDING", "COMPLETED", "EXPIRES")?;
    for row in tokens {
        let uses = row.uses_allowed.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let expires = row.expiry_ts.map_or_else(|| "never".to_owned(), format_utc);
        let valid = if row.is_valid(now) { "yes" } else { "no" };
        writeln!(
            out,
            "{:width$}  {uses:>9}  {:>7}  {:>9}  {expires:23}  {valid}",
            row.token, row.pending, row.completed
        )?;
    }
    Ok(())
}

/// A millisecond timestamp as `YYYY-MM-DD hh:mm:ss UTC`.
fn format_utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar), computed by
    // counting 400-year eras of 146,097 days from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn setup() -> (tempfile::TempDir, Config, Store) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { server_name: "example.org".into(), data_dir: dir.path().to_owned(), ..Config::default() };
        let store = Store::open(&config.database_url(), 2).await.unwrap();
        (dir, config, store)
    }

    async fn run_ok(config: &Config, store: &Store, command: AdminCommand) -> String {
        let mut out = Vec::new();
        run(config, store, command, &mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    fn create(token: Option<&str>, uses: Option<u32>, expires_in: Option<u64>) -> AdminCommand {
        let token = token.map(str::to_owned);
        AdminCommand::RegistrationToken(TokenCommand::Create { token, uses, expires_in })
    }

    #[tokio::test]
    async fn registration_tokens_are_created_listed_and_deleted() {
        let (_dir, config, store) = setup().await;
        assert_eq!(run_ok(&config, &store, create(Some("friends"), Some(3), None)).await, "friends\n");
        let random = run_ok(&config, &store, create(None, None, Some(3600))).await;
        let random = random.trim();
        assert_eq!(random.len(), 16);

        let friends = store.get_registration_token("friends").await.unwrap().unwrap();
        assert_eq!((friends.uses_allowed, friends.expiry_ts), (Some(3), None));
        let timed = store.get_registration_token(random).await.unwrap().unwrap();
        let expiry = timed.expiry_ts.unwrap();
        assert!((now_ms() + 3_590_000..=now_ms() + 3_600_000).contains(&expiry), "{expiry}");

        let list = run_ok(&config, &store, AdminCommand::RegistrationToken(TokenCommand::List)).await;
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3, "{list}");
        assert!(lines[0].starts_with("TOKEN"));
        let friends_line = lines.iter().find(|line| line.starts_with("friends")).unwrap();
        assert_eq!(friends_line.split_whitespace().collect::<Vec<_>>(), ["friends", "3", "0", "0", "never", "yes"]);
        let timed_line = lines.iter().find(|line| line.starts_with(random)).unwrap();
        assert!(timed_line.contains("unlimited") && timed_line.contains("UTC"), "{timed_line}");

        let mut out = Vec::new();
        let duplicate = run(&config, &store, create(Some("friends"), None, None), &mut out).await;
        assert!(duplicate.unwrap_err().contains("already exists"));
        let invalid = run(&config, &store, create(Some("no spaces"), None, None), &mut out).await;
        assert!(invalid.unwrap_err().contains("not a valid token"));

        let delete = AdminCommand::RegistrationToken(TokenCommand::Delete { token: "friends".into() });
        assert_eq!(run_ok(&config, &store, delete).await, "deleted registration token friends\n");
        assert!(store.get_registration_token("friends").await.unwrap().is_none());
        let again = AdminCommand::RegistrationToken(TokenCommand::Delete { token: "friends".into() });
        assert!(run(&config, &store, again, &mut out).await.unwrap_err().contains("no registration token"));
    }

    #[tokio::test]
    async fn create_user_makes_an_account_that_logs_in() {
        let (_dir, config, store) = setup().await;
        let command = AdminCommand::CreateUser { user: "Alice".into(), password: "pw".into(), admin: true };
        assert_eq!(run_ok(&config, &store, command).await, "created administrator @alice:example.org\n");
        let user = store.get_user("@alice:example.org").await.unwrap().unwrap();
        assert!(user.admin);
        let verified = Auth::default().verify_password("pw".into(), user.password_hash.unwrap()).await.unwrap();
        assert!(verified);

        let full = AdminCommand::CreateUser { user: "@bob:example.org".into(), password: "pw".into(), admin: false };
        assert_eq!(run_ok(&config, &store, full).await, "created user @bob:example.org\n");
        assert!(!store.get_user("@bob:example.org").await.unwrap().unwrap().admin);

        let mut out = Vec::new();
        let cases = [
            ("alice", "pw", "already exists"),
            ("@carol:elsewhere.org", "pw", "does not belong"),
            ("car ol", "pw", "M_INVALID_USERNAME"),
            ("carol", "", "may not be empty"),
        ];
        for (user, password, message) in cases {
            let command = AdminCommand::CreateUser { user: user.into(), password: password.into(), admin: false };
            let error = run(&config, &store, command, &mut out).await.unwrap_err();
            assert!(error.contains(message), "{user}: {error}");
        }
    }

    #[test]
    fn timestamps_format_as_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
        assert_eq!(format_utc(-1000), "1969-12-31 23:59:59 UTC");
    }
}
