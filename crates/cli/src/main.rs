//! `carekeep`: the command line over carekeep-core (like `bw` for Bitwarden), for IT staff
//! provisioning workstations and for scripts. Every command works on one profile directory;
//! every error is the core's, in words a person can act on, with an exit code per kind
//! (see [`exit_code`]).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod progress;

use carekeep_core::account::{Account, HomeReading, SignIn};
use carekeep_core::error::{CacheError, ConnectionError};
use carekeep_core::net::ServerUrl;
use carekeep_core::session::State;
use carekeep_core::store::{CodeFilter, ResourceQuery, SetAsideKind};
use carekeep_core::{Clock, Error, Keychain, NextStep, Password, Profile, SystemClock};
use carekeep_protocol::pins::{Pin, PinSet};
use clap::{Parser, Subcommand};

/// Carekeep on the command line: sign in, download, show, lock, sign out.
#[derive(Parser)]
#[command(name = "carekeep", version, about)]
struct Cli {
    /// The profile directory (the encrypted cache and its session facts).
    #[arg(long, global = true, default_value = "carekeep-profile")]
    profile: PathBuf,
    /// Read the password from the first line of standard input when one is needed.
    #[arg(long, global = true)]
    password_stdin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in with password and authenticator code; creates the cache on first use.
    Login {
        /// The server, https:// only.
        #[arg(long)]
        server: String,
        /// A pin (base64 SPKI SHA-256); give at least two: the live key and the backup.
        #[arg(long = "pin", required = true)]
        pins: Vec<String>,
        /// The last day the pins are current (default: 90 days from today).
        #[arg(long)]
        pins_expire: Option<String>,
        /// The account name.
        #[arg(long)]
        user: String,
        /// The authenticator's current code.
        #[arg(long)]
        totp: String,
        /// The name this device shows in the account's device list.
        #[arg(long, default_value = "carekeep cli")]
        device_name: String,
    },
    /// Sync with the server: upload the access log and queued writes, then download what
    /// changed (resumes where an interrupted sync stopped).
    Sync,
    /// Queue a home reading for upload at the next sync.
    Reading {
        /// Blood pressure as systolic/diastolic in mmHg, e.g. 120/80.
        #[arg(long, conflicts_with = "glucose", required_unless_present = "glucose")]
        bp: Option<String>,
        /// Blood glucose in mmol/L, e.g. 5.4.
        #[arg(long)]
        glucose: Option<f64>,
        /// The patient (default: the only patient this device keeps).
        #[arg(long)]
        patient: Option<String>,
    },
    /// Writes waiting for upload, and those the server refused or found in conflict.
    Pending,
    /// The session state, last full sign-in, server, and writes waiting for upload.
    Status,
    /// Print cached resources of one type, one JSON per line.
    Show {
        /// The resource type, e.g. Observation.
        resource_type: String,
        /// Only this patient's (`Patient/<id>` or `<id>`).
        #[arg(long)]
        patient: Option<String>,
        /// Only resources with this code (`system|code` or `code`).
        #[arg(long)]
        code: Option<String>,
    },
    /// Lock: the next unlock needs the password.
    Lock,
    /// Unlock with the password (standard input), which lets the keychain unlock again.
    Unlock,
    /// Sign out: the server revokes this device; keychain items are removed.
    Logout,
    /// Erase this device's copy of the records, its keys and keychain items.
    Wipe,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("carekeep: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carekeep: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Exit codes: 0 done; 1 anything else; 2 wrong usage; 3 sign-in or unlock needed (or
/// refused); 4 the connection is not trusted (pins, TLS, `http://`); 5 the server cannot be
/// reached; 6 this device's copy was erased. 4 and 5 say what went wrong with the
/// connection; 3 and 6 what the person does next, from the core's [`NextStep`].
fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Connection(ConnectionError::ServerUnreachable) => 5,
        Error::Connection(connection) if connection.is_untrusted() => 4,
        _ => match error.next_step() {
            NextStep::SignIn
            | NextStep::ReenterCredentials
            | NextStep::UnlockWithPassword
            | NextStep::Unlock
            | NextStep::Wait { .. } => 3,
            NextStep::SignInAfterWipe => 6,
            _ => 1,
        },
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let profile = Profile::new(&cli.profile);
    let keychain = Keychain::os();
    let clock = Arc::new(SystemClock);
    match cli.command {
        Command::Login { server, pins, pins_expire, user, totp, device_name } => {
            let url = ServerUrl::parse(&server)?;
            let pins = pin_set(&pins, pins_expire.as_deref())?;
            let password = read_password(cli.password_stdin)?;
            let request =
                SignIn { url, pins, username: &user, password: &password, code: &totp, device_name: &device_name };
            let mut account = Account::sign_in(&profile, keychain, clock, request).await?;
            print_status(&mut account);
        }
        Command::Sync => {
            let mut account = unlocked(&profile, keychain, cli.password_stdin)?;
            let mut bar = progress::Bar::new();
            let done = account.sync(&mut |p| bar.show(p)).await;
            bar.finish();
            let done = done?;
            println!(
                "sent: {}\nconflicts: {}\nrejected: {}\npatients: {}\nresources: {}\nremoved: {}\naudit records: {}",
                done.writes_sent,
                done.conflicts,
                done.rejected,
                done.patients,
                done.resources_pulled,
                done.resources_removed + done.patients_removed,
                done.audit_uploaded
            );
            if done.patients_over_limit > 0 {
                eprintln!(
                    "carekeep: {} more patients are on your list than this device may keep; open them on demand.",
                    done.patients_over_limit
                );
            }
        }
        Command::Reading { bp, glucose, patient } => {
            let mut account = unlocked(&profile, keychain, cli.password_stdin)?;
            queue_reading(&mut account, bp.as_deref(), glucose, patient)?;
        }
        Command::Pending => print_pending(&mut unlocked(&profile, keychain, cli.password_stdin)?)?,
        Command::Status => {
            let mut account = Account::open(&profile, keychain, clock)?;
            // Unlocked if presence and the keychain allow (for the outbox count); status works
            // locked too.
            let _ = account.unlock_with_device_key(carekeep_core::presence::for_this_os().as_ref());
            print_status(&mut account);
        }
        Command::Show { resource_type, patient, code } => {
            let mut account = unlocked(&profile, keychain, cli.password_stdin)?;
            let query = ResourceQuery {
                patient: patient.as_deref().map(carekeep_core::store::patient_reference),
                resource_type,
                code: code.as_deref().map(CodeFilter::parse).transpose()?,
                ..ResourceQuery::default()
            };
            for resource in account.read_records(&query)? {
                println!("{}", resource.json);
            }
        }
        Command::Lock => {
            Account::open(&profile, keychain, clock)?.lock()?;
            eprintln!("carekeep: locked; unlock with your password.");
        }
        Command::Unlock => {
            let mut account = Account::open(&profile, keychain, clock)?;
            account.unlock_with_password(&read_password(true)?)?;
            print_status(&mut account);
        }
        Command::Logout => {
            let out = Account::open(&profile, keychain, clock)?.logout().await?;
            if !out.revoked_at_server {
                eprintln!(
                    "carekeep: signed out here, but the server could not be reached to end the session; it ends at the server's idle limit."
                );
            }
            eprintln!("carekeep: signed out{}.", if out.cache_wiped { " and the cache erased" } else { "" });
        }
        Command::Wipe => {
            let report = match Account::open(&profile, keychain.clone(), clock) {
                Ok(account) => account.wipe()?,
                // No one signed in: the vault (if any) is erased all the same.
                Err(Error::Cache(CacheError::NoVault)) if profile.has_vault() => {
                    carekeep_core::Vault::open(&profile, keychain)?.wipe()?
                }
                Err(e) => return Err(e),
            };
            eprintln!("carekeep: erased; nothing of this profile remains readable.");
            if !report.keychain_cleared {
                eprintln!("carekeep: the keychain could not be reached; its item wraps nothing any more.");
            }
        }
    }
    Ok(())
}

/// Queues a home reading from `--bp` or `--glucose`.
fn queue_reading(
    account: &mut Account,
    bp: Option<&str>,
    glucose: Option<f64>,
    patient: Option<String>,
) -> Result<(), Error> {
    let reading = match (bp, glucose) {
        (Some(bp), _) => {
            let (systolic, diastolic) = bp
                .split_once('/')
                .and_then(|(s, d)| Some((s.trim().parse().ok()?, d.trim().parse().ok()?)))
                .ok_or(Error::InvalidArgument { what: "--bp", problem: "expected systolic/diastolic, e.g. 120/80" })?;
            HomeReading::BloodPressure { systolic, diastolic }
        }
        (None, Some(mmol_per_l)) => HomeReading::Glucose { mmol_per_l },
        (None, None) => return Err(Error::InvalidArgument { what: "reading", problem: "give --bp or --glucose" }),
    };
    let patient = match patient {
        Some(p) => p,
        None => only_patient(account)?,
    };
    let queued = account.record_reading(&patient, reading, SystemClock.now_unix())?;
    eprintln!("carekeep: reading queued (pending #{}); it is sent at the next sync.", queued.seq);
    Ok(())
}

/// Lists writes waiting for upload, then those set aside with the server's reason.
fn print_pending(account: &mut Account) -> Result<(), Error> {
    for write in account.pending_writes()? {
        println!("pending #{}: {} {}", write.seq, write.resource_type, write.method.as_str());
    }
    for aside in account.set_aside_writes()? {
        let kind = match aside.kind {
            SetAsideKind::Conflict => "conflict",
            SetAsideKind::Rejected => "rejected",
        };
        println!("{kind} #{}: {} — {}", aside.seq, aside.write.resource_type, aside.reason);
    }
    Ok(())
}

/// The one patient this device keeps (a patient's own record), for commands that need one.
fn only_patient(account: &mut Account) -> Result<String, Error> {
    let kept = account.store()?.sync_patients()?;
    match kept.as_slice() {
        [one] => Ok(one.patient.clone()),
        _ => Err(Error::InvalidArgument {
            what: "--patient",
            problem: "this device keeps several patients (or none yet): name one",
        }),
    }
}

/// The account, unlocked by the keychain's device key when the session allows it and the
/// system's presence check (polkit on Linux) confirms the person, else by the password from
/// standard input (`--password-stdin`).
fn unlocked(profile: &Profile, keychain: Keychain, password_stdin: bool) -> Result<Account, Error> {
    let mut account = Account::open(profile, keychain, Arc::new(SystemClock))?;
    match account.unlock_with_device_key(carekeep_core::presence::for_this_os().as_ref()) {
        Ok(()) => Ok(account),
        // The device key cannot unlock now: the password can, or (offline, inside the grace
        // since the last full sign-in) it is the first half of the sign-in asked for.
        Err(e) if password_stdin && matches!(e.next_step(), NextStep::UnlockWithPassword | NextStep::SignIn) => {
            account.unlock_with_password(&read_password(true)?)?;
            Ok(account)
        }
        Err(e) => Err(e),
    }
}

fn read_password(from_stdin: bool) -> Result<Password, Error> {
    if !from_stdin {
        return Err(Error::InvalidArgument {
            what: "password",
            problem: "pass --password-stdin and give the password on standard input",
        });
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|_| Error::InvalidArgument { what: "password", problem: "standard input could not be read" })?;
    // Trimmed in place and moved into the Password, which wipes it: no copy is left behind.
    let len = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(len);
    if line.is_empty() {
        return Err(Error::InvalidArgument { what: "password", problem: "standard input was empty" });
    }
    Ok(Password::new(line))
}

fn pin_set(pins: &[String], expires: Option<&str>) -> Result<PinSet, Error> {
    let bad = |problem| Error::InvalidArgument { what: "pins", problem };
    let pins = pins.iter().map(|p| Pin::parse(p)).collect::<Result<Vec<_>, _>>().map_err(|_| {
        bad("each --pin is the base64 SHA-256 of a public key (44 characters), as `carekeep-server pins` prints")
    })?;
    let expires = match expires {
        Some(date) => time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| bad("--pins-expire is a date, YYYY-MM-DD"))?,
        None => (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date(),
    };
    PinSet::new(pins, expires).map_err(|_| bad("give at least two different pins: the live key and the backup key"))
}

fn print_status(account: &mut Account) {
    let status = account.status();
    let state = match status.state {
        State::SignedOut => "signed out",
        State::Unlocked => "unlocked",
        State::Locked => "locked",
        State::ReauthRequired => "sign-in required",
        State::Wiped => "wiped",
    };
    let last = time::OffsetDateTime::from_unix_timestamp(status.last_full_auth_unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    println!("state: {state}");
    println!("server: {}", status.server);
    println!("tenant: {}", status.tenant);
    println!("user: {}", status.user_id);
    println!("role: {}", status.role.as_str());
    println!("last full sign-in: {last}");
    println!("pins: {}", if status.pins_expired { "expired (still enforced)" } else { "current" });
    match status.pending_writes {
        Some(n) => println!("pending writes: {n}"),
        None => println!("pending writes: unknown while locked"),
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;
    use carekeep_core::Error;
    use carekeep_core::error::{CacheError, ConnectionError, ServerError, UnlockError};

    #[test]
    fn exit_codes_follow_the_connection_then_the_next_step() {
        let cases = [
            (Error::Connection(ConnectionError::PinMismatch), 4),
            (Error::Connection(ConnectionError::InsecureUrl), 4),
            (Error::Connection(ConnectionError::CertificateExpired), 4),
            (Error::Connection(ConnectionError::ServerUnreachable), 5),
            (Error::Unlock(UnlockError::ReauthRequired), 3),
            (Error::Cache(CacheError::NoVault), 3),
            (Error::Unlock(UnlockError::Locked), 3),
            (Error::Unlock(UnlockError::PasswordRequired), 3),
            (Error::Unlock(UnlockError::PresenceUnavailable), 3),
            (Error::Unlock(UnlockError::KeychainUnavailable), 3),
            (Error::Unlock(UnlockError::WrongPassword { attempts_left: 2 }), 3),
            (Error::Server(ServerError::BadCode), 3),
            (Error::Server(ServerError::CodeAlreadyUsed), 3),
            (Error::Server(ServerError::SignInThrottled { retry_after_secs: 9 }), 3),
            (Error::Server(ServerError::RateLimited { retry_after_secs: 9 }), 3),
            (Error::Server(ServerError::RemoteWipe), 6),
            (Error::Unlock(UnlockError::WipedAfterFailedAttempts), 6),
            (Error::Server(ServerError::StepUpRequired), 1),
            (Error::Cache(CacheError::OtherAccount), 1),
            (Error::Cache(CacheError::CorruptCache), 1),
            (Error::Server(ServerError::PolicyInvalid), 1),
            (Error::Connection(ConnectionError::ServerTimeout), 1),
            (Error::Cache(CacheError::DiskFull), 1),
        ];
        for (error, code) in cases {
            assert_eq!(exit_code(&error), code, "{error:?}");
        }
    }
}
