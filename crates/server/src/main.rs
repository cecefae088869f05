//! `carekeep-server`: set up and run the Carekeep reference backend.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use carekeep_protocol::auth::Role;
use carekeep_server::{DataDir, ServerError, admin, backup, now};
use clap::{Parser, Subcommand, ValueEnum};

/// The Carekeep reference server: HTTPS only.
#[derive(Parser)]
#[command(name = "carekeep-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: master key, signing key, TLS key and certificate, and an
    /// offline backup key. Prints the pin set clients must hold.
    Init {
        /// The directory to create.
        #[arg(long)]
        data: PathBuf,
        /// The name clients reach the server by (also valid: localhost, 127.0.0.1).
        #[arg(long, default_value = "localhost")]
        hostname: String,
        /// Also create or upgrade the schema in this PostgreSQL database, connecting as the
        /// role that will own the tables (see docs/server-api.md).
        #[command(flatten)]
        database: OwnerDatabase,
    },
    /// Create or upgrade the schema of a PostgreSQL database (before starting servers of a
    /// newer release), connecting as the role that owns the tables.
    Migrate {
        #[command(flatten)]
        database: OwnerDatabase,
    },
    /// Print the SPKI SHA-256 pins (base64, RFC 7469): live key first, backup key second.
    Pins {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Rotate the TLS key: the backup key goes live in a new certificate and a new backup
    /// key is made. Prints the new pins (live, backup). Restart `serve` afterwards.
    RotateTls {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The name clients reach the server by (also valid: localhost, 127.0.0.1).
        #[arg(long)]
        hostname: String,
    },
    /// Manage tenants (clinics).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check or search the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Add the demo tenant: the synthetic carebundle patients and one user per role. Prints
    /// each user's name, role, password and TOTP secret (base32). Synthetic data only.
    SeedDemo {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Seed this PostgreSQL database instead (the servers' role, as `tenant add`).
        #[command(flatten)]
        database: Database,
    },
    /// Import a clinic's records into a tenant: transaction, batch or collection Bundles
    /// (.json) and FHIR Bulk Data files (Type.ndjson), or folders of them. Every resource is
    /// checked as the API checks it; references resolve across all the files; running the
    /// same import again (or finishing one that was stopped) stores nothing twice. Prints
    /// what was stored and refused (where, and the rule broken); exits non-zero if anything
    /// was refused.
    Import {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The tenant the records belong to.
        #[arg(long)]
        tenant: String,
        /// A clinician or nurse whose care team the imported patients join; without it they
        /// are reachable only by break-glass until linked.
        #[arg(long)]
        care_team: Option<String>,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write an encrypted backup of the data directory, while the server may be serving:
    /// a consistent snapshot of the store and its audit trail, with the keys a new machine
    /// needs, sealed to the backup key (`backup key`). `backup verify` checks one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Backup {
        /// The data directory.
        #[arg(long, required = true)]
        data: Option<PathBuf>,
        /// The backup file to write (never replaces one).
        #[arg(long, required = true)]
        out: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<BackupCommand>,
    },
    /// Restore a backup into a new data directory, then prove it: the store opens, holds what
    /// the backup counted, and its audit trail verifies up to the backup's signed head.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The backup key file (`backup key` wrote it).
        #[arg(long)]
        key: PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long)]
        data: PathBuf,
    },
    /// Serve the API over HTTPS (there is no plaintext listener).
    Serve {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Connections one client address (IPv6: one /64) may hold at once. Clinics whose
        /// devices share one NAT address may need more; the default is 128 (less when the
        /// open-file limit is low).
        #[arg(long)]
        connections_per_address: Option<usize>,
        /// The largest transaction or batch Bundle a signed-in caller may POST to /fhir, in
        /// MiB (default 32; at most half of the server's 64 MiB body budget). Larger loads
        /// go through `import`.
        #[arg(long)]
        max_bundle_mib: Option<usize>,
        /// Keep everything in PostgreSQL instead, shared with the other nodes (the data
        /// directory, a copy of the one every node has, gives the keys and the certificate).
        #[command(flatten)]
        database: Database,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Add a tenant.
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Short id: letters, digits and '-'.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        database: Database,
    },
    /// Set how long a device of one role may stay unused before its user signs in again
    /// (default 15 minutes).
    Idle {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The role it applies to.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Minutes, 1 to 720.
        #[arg(long)]
        minutes: u32,
        #[command(flatten)]
        database: Database,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Make the backup key: its private half, with the server it belongs to, goes to
    /// KEYFILE (keep it offline; it alone opens the backups); the data directory keeps the
    /// public half. Later backups are sealed to the new key; keep old keys for old backups.
    Key {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Where to write the private half (a new file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a backup as a restore would (in a temporary directory it removes): refuses one
    /// that was altered, cut short, or is of another server.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// The backup key file.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole chain — sealed archives, then the live trail — and its signed
    /// checkpoints; exits non-zero naming the first record that cannot be trusted.
    Verify {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// A record hash kept outside the server (`audit checkpoint` printed it): the trail
        /// must still hold it. May be given more than once.
        #[arg(long)]
        anchor: Vec<String>,
        /// Verify the trail in this PostgreSQL database instead: every tenant's chain.
        #[command(flatten)]
        database: Database,
    },
    /// Print the trail's newest record as a signed checkpoint (one JSON line), to keep
    /// outside the server — printed, or sent to a second party. `audit verify --anchor HASH`
    /// later proves the trail still holds it.
    Checkpoint {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Seal every month that ended more than --keep-months months ago into a signed archive
    /// (DIR/audit-archive/), checked first, and remove its records from the live trail. Keep
    /// the archives six years; `audit verify` checks them with the live trail.
    Archive {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Whole months kept live besides the current one (what patients see of who opened
        /// their record, and the admins' audit search, covers the live trail).
        #[arg(long, default_value_t = 12)]
        keep_months: u32,
    },
    /// Who accessed a patient's record between two times (RFC 3339), one JSON record a line.
    Query {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The patient id.
        #[arg(long)]
        patient: String,
        /// From (inclusive), e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        from: String,
        /// To (inclusive).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input. Prints the user id and the
    /// TOTP secret (base32 and otpauth URI) for their authenticator app.
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The tenant the user belongs to.
        #[arg(long)]
        tenant: String,
        /// The sign-in name.
        #[arg(long)]
        username: String,
        /// The role.
        #[arg(long, value_enum)]
        role: RoleArg,
        #[command(flatten)]
        database: Database,
    },
    /// Disable a user and sign out all their devices.
    Disable {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The user.
        #[arg(long)]
        username: String,
        #[command(flatten)]
        database: Database,
    },
    /// Link a user to a patient: `self` (the patient's own account), `proxy` (a parent or
    /// carer), or `care-team` (a clinician or nurse treating them).
    Link {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The user.
        #[arg(long)]
        username: String,
        /// The patient id.
        #[arg(long)]
        patient: String,
        /// How they are linked.
        #[arg(long = "as", value_parser = ["self", "proxy", "care-team"])]
        relation: String,
        #[command(flatten)]
        database: Database,
    },
    /// Name a clinician's or nurse's own Practitioner record: `import` then puts the patients
    /// whose generalPractitioner it is on that user's care team.
    Practitioner {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The user.
        #[arg(long)]
        username: String,
        /// The Practitioner id (in the user's tenant).
        #[arg(long)]
        practitioner: String,
    },
    /// Give a user a new TOTP secret (lost authenticator) and sign out all their devices.
    ResetMfa {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The user.
        #[arg(long)]
        username: String,
        #[command(flatten)]
        database: Database,
    },
}

/// Where a command's accounts and tenants live: the data directory's own store, or a
/// PostgreSQL database shared by several servers.
#[derive(clap::Args)]
struct Database {
    /// Use this PostgreSQL database (a libpq connection string or URI) instead of the data
    /// directory's store; the data directory still holds the keys. Read from
    /// CAREKEEP_DATABASE when not given, so a password need not appear on a command line.
    #[arg(long = "database", env = "CAREKEEP_DATABASE", hide_env_values = true)]
    url: Option<String>,
}

/// The database whose schema `init` or `migrate` makes, as the role that owns the tables:
/// not the servers' (`CAREKEEP_DATABASE`), so a node's environment never migrates.
#[derive(clap::Args)]
struct OwnerDatabase {
    /// The PostgreSQL database (a libpq connection string or URI), connecting as the role
    /// that owns (or will own) the tables. Read from CAREKEEP_OWNER_DATABASE when not given,
    /// so a password need not appear on a command line.
    #[arg(long = "database", env = "CAREKEEP_OWNER_DATABASE", hide_env_values = true)]
    url: Option<String>,
}

/// Migrates the schema at `url`; returns the version found.
fn migrate(url: &str) -> Result<i64, ServerError> {
    let found = on_postgres(async {
        carekeep_server::pg::schema::migrate(&mut carekeep_server::pg::connect(url).await?).await
    })?;
    eprintln!(
        "PostgreSQL schema at version {} (found {found}). The servers connect as a member of {}.",
        carekeep_server::pg::schema::VERSION,
        carekeep_server::pg::schema::APP_ROLE
    );
    Ok(found)
}

/// Runs `work` on a runtime of its own: the PostgreSQL commands are async.
fn on_postgres<T>(work: impl std::future::Future<Output = Result<T, ServerError>>) -> Result<T, ServerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Store(format!("cannot start a runtime: {e}")))?
        .block_on(work)
}

/// `seed-demo --database`: the demo tenant, its records and users, in PostgreSQL.
fn seed_postgres(
    dir: &DataDir,
    keys: &carekeep_server::keys::MasterKeys,
    url: &str,
) -> Result<Vec<carekeep_server::seed::DemoUser>, ServerError> {
    use carekeep_server::seed::{DEMO_NAME, DEMO_TENANT, already_seeded, seed_tenant};
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| ServerError::Store(format!("cannot start a runtime: {e}")))?;
    let (pg, accounts) = runtime.block_on(async {
        let accounts = carekeep_server::auth::PgAccounts::connect(url, 4, keys).await?;
        dir.mark_postgres()?;
        let pg = carekeep_server::pg::records::PgRecords::new(accounts.pool().clone(), keys, dir.signing_key()?);
        pg.add_tenant(DEMO_TENANT, DEMO_NAME).await.map_err(|_| already_seeded())?;
        Ok::<_, ServerError>((pg, accounts))
    })?;
    let records = carekeep_server::records::Records::postgres(pg, runtime.handle().clone());
    let now = now();
    seed_tenant(&records, |username, role, password| {
        runtime.block_on(accounts.add_user(DEMO_TENANT, username, role, password, now))
    })
}

/// `audit verify --database`: every chain in the database (one per tenant, and `-` for
/// callers not known), each checked whole with its signed checkpoints; every anchor must be
/// in one of them.
async fn verify_postgres(
    data: &std::path::Path,
    url: &str,
    key: &ed25519_dalek::VerifyingKey,
    anchors: &[carekeep_protocol::audit::ChainHash],
) -> Result<(), ServerError> {
    use carekeep_server::pg;
    drop(pg_accounts(data, url).await?);
    let mut client = pg::connect(url).await?;
    pg::check_app_role(&client).await?;
    let (mut records, mut found) = (0, 0);
    let chains = pg::audit::chains(&client).await?;
    for tenant in &chains {
        let chain = pg::audit::verify(&mut client, key, tenant)
            .await
            .map_err(|e| ServerError::AuditBroken(format!("the chain of tenant {tenant}: {e}")))?;
        records += chain.len();
        found += anchors.iter().filter(|a| chain.iter().any(|r| r.hash == **a)).count();
    }
    if found < anchors.len() {
        return Err(ServerError::AuditBroken(format!(
            "{} of the {} anchored hashes are in no chain: the trail was cut or rewritten since",
            anchors.len() - found,
            anchors.len()
        )));
    }
    println!("audit trail intact: {records} records in {} chains, each with its signed checkpoints", chains.len());
    if !anchors.is_empty() {
        println!("anchored hashes found: {found}");
    }
    Ok(())
}

/// Connections a node keeps to PostgreSQL: enough for both cores and the requests waiting
/// on the network, few enough that a dozen nodes stay within the database's default 100.
const NODE_CONNECTIONS: usize = 8;

/// The sign-in state of a PostgreSQL deployment, with the data directory's keys.
async fn pg_accounts(data: &std::path::Path, url: &str) -> Result<carekeep_server::auth::PgAccounts, ServerError> {
    let dir = DataDir::open(data)?;
    let accounts = carekeep_server::auth::PgAccounts::connect(url, 1, &dir.master_keys()?).await?;
    dir.mark_postgres()?;
    Ok(accounts)
}

/// Roles as the command line spells them.
#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Patient,
    Clinician,
    Nurse,
    Billing,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Patient => Role::Patient,
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Nurse => Role::Nurse,
            RoleArg::Billing => Role::Billing,
            RoleArg::Admin => Role::Admin,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carekeep-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_tenant(command: TenantCommand) -> Result<(), ServerError> {
    match command {
        TenantCommand::Add { data, id, name, database } => {
            match database.url {
                None => admin::add_tenant(&DataDir::open(&data)?.open_store()?, &id, &name, now())?,
                Some(url) => on_postgres(async {
                    // The role and the data directory's keys checked first, as for every command.
                    drop(pg_accounts(&data, &url).await?);
                    let dir = DataDir::open(&data)?;
                    let pool = carekeep_server::pg::app_pool(&url, 1).await?;
                    carekeep_server::pg::records::PgRecords::new(pool, &dir.master_keys()?, dir.signing_key()?)
                        .add_tenant(&id, &name)
                        .await
                })?,
            }
            eprintln!("Added tenant {id}.");
        }
        TenantCommand::Idle { data, tenant, role, minutes, database } => {
            match database.url {
                None => admin::set_idle_limit(&DataDir::open(&data)?.open_store()?, &tenant, role.into(), minutes)?,
                Some(url) => on_postgres(async {
                    pg_accounts(&data, &url)
                        .await?
                        .set_idle_limit(&tenant, role.into(), minutes)
                        .await
                })?,
            }
            eprintln!(
                "Devices of {tenant}'s {} users now sign out after {minutes} idle minutes.",
                Role::from(role).as_str()
            );
        }
    }
    Ok(())
}

fn run_import(
    data: &std::path::Path,
    tenant: &str,
    care_team: Option<&str>,
    paths: &[PathBuf],
) -> Result<(), ServerError> {
    let dir = DataDir::open(data)?;
    let store = std::sync::Arc::new(dir.open_store()?);
    let keys = dir.master_keys()?;
    let records = carekeep_server::records::Records::new(store, zeroize::Zeroizing::new(*keys.documents));
    let mut bar = ProgressBar::new();
    let summary =
        carekeep_server::import::run(&records, tenant, paths, care_team, &mut |done, all| bar.show(done, all))?;
    print!("{}", carekeep_server::import::report(&summary));
    if summary.refused_any() {
        return Err(ServerError::Invalid(format!(
            "{} resources were refused (listed above); fix them and run the same import again",
            summary.refused.len()
        )));
    }
    Ok(())
}

fn run_user(command: UserCommand) -> Result<(), ServerError> {
    match command {
        UserCommand::Add { data, tenant, username, role, database } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| ServerError::Invalid(format!("cannot read the password from standard input: {e}")))?;
            let password = zeroize::Zeroizing::new(password.trim_end_matches(['\r', '\n']).to_owned());
            let user = match database.url {
                None => admin::add_user(
                    &DataDir::open(&data)?.open_store()?,
                    &tenant,
                    &username,
                    role.into(),
                    &password,
                    now(),
                )?,
                Some(url) => on_postgres(async {
                    pg_accounts(&data, &url)
                        .await?
                        .add_user(&tenant, &username, role.into(), &password, now())
                        .await
                })?,
            };
            println!("user_id: {}\ntotp_secret: {}\notpauth_uri: {}", user.id, user.totp_base32, user.otpauth_uri);
            Ok(())
        }
        UserCommand::Link { data, username, patient, relation, database } => {
            match database.url {
                None => admin::link_user(&DataDir::open(&data)?.open_store()?, &username, &patient, &relation)?,
                Some(url) => on_postgres(async {
                    let accounts = pg_accounts(&data, &url).await?;
                    let refused =
                        || ServerError::Invalid(format!("no user {username} with that patient in their tenant"));
                    let (user, tenant) = accounts.find_user(&username).await?.ok_or_else(refused)?;
                    let dir = DataDir::open(&data)?;
                    let records = carekeep_server::pg::records::PgRecords::new(
                        accounts.pool().clone(),
                        &dir.master_keys()?,
                        dir.signing_key()?,
                    );
                    let as_server_error = |e: carekeep_server::records::RecordError| ServerError::Store(e.to_string());
                    records
                        .read(&tenant, "Patient", &patient)
                        .await
                        .map_err(as_server_error)?
                        .ok_or_else(refused)?;
                    records.link(&tenant, &user, &patient, &relation).await.map_err(as_server_error)
                })?,
            }
            eprintln!("Linked {username} to the patient as {relation}.");
            Ok(())
        }
        UserCommand::Disable { data, username, database } => {
            match database.url {
                None => admin::disable_user(&DataDir::open(&data)?.open_store()?, &username)?,
                Some(url) => on_postgres(async { pg_accounts(&data, &url).await?.disable_user(&username).await })?,
            }
            eprintln!("Disabled {username} and signed out their devices.");
            Ok(())
        }
        UserCommand::Practitioner { data, username, practitioner } => {
            admin::set_practitioner(&DataDir::open(&data)?.open_store()?, &username, &practitioner)?;
            eprintln!("{username}'s own Practitioner record is set; imports link their patients to them.");
            Ok(())
        }
        UserCommand::ResetMfa { data, username, database } => {
            let user = match database.url {
                None => admin::reset_mfa(&DataDir::open(&data)?.open_store()?, &username)?,
                Some(url) => on_postgres(async { pg_accounts(&data, &url).await?.reset_mfa(&username).await })?,
            };
            println!("user_id: {}\ntotp_secret: {}\notpauth_uri: {}", user.id, user.totp_base32, user.otpauth_uri);
            Ok(())
        }
    }
}

fn run_audit(command: AuditCommand) -> Result<(), ServerError> {
    match command {
        AuditCommand::Verify { data, anchor, database } => {
            let dir = DataDir::open(&data)?;
            let key = dir.signing_key()?.verifying_key();
            let anchors = anchor
                .iter()
                .map(|hash| {
                    serde_json::from_value(serde_json::Value::String(hash.trim().to_owned())).map_err(|_| {
                        ServerError::Invalid(format!(
                            "--anchor {hash}: expected the 64 hex digits `audit checkpoint` printed"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(url) = &database.url {
                return on_postgres(verify_postgres(&data, url, &key, &anchors));
            }
            let verified = carekeep_server::audit::verify(&dir.open_store()?, &key, &dir.archive_path(), &anchors)
                .map_err(|e| ServerError::AuditBroken(e.to_string()))?;
            println!(
                "audit trail intact: {} records, {} signed checkpoints, {} sealed archives",
                verified.records, verified.checkpoints, verified.archives
            );
            if !anchors.is_empty() {
                println!("anchored hashes found: {}", anchors.len());
            }
        }
        AuditCommand::Checkpoint { data } => {
            let dir = DataDir::open(&data)?;
            let checkpoint = carekeep_server::audit::checkpoint(&dir.open_store()?, &dir.signing_key()?)?;
            println!("{}", serde_json::to_string(&checkpoint).unwrap_or_default());
            eprintln!(
                "Keep this line outside the server. `audit verify --anchor {}` proves the trail still holds it.",
                checkpoint.hash
            );
        }
        AuditCommand::Archive { data, keep_months } => {
            let dir = DataDir::open(&data)?;
            let seals = carekeep_server::audit::archive::archive(
                &dir.open_store()?,
                &dir.signing_key()?,
                &dir.archive_path(),
                keep_months,
                time::OffsetDateTime::now_utc(),
            )?;
            for seal in &seals {
                println!("sealed {}: records #{} to #{}", seal.month, seal.first_seq, seal.last_seq);
            }
            eprintln!("{} months sealed into {}.", seals.len(), dir.archive_path().display());
        }
        AuditCommand::Query { data, patient, from, to } => {
            let time = |text: &str, flag: &str| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| {
                    ServerError::Invalid(format!("{flag} {text}: expected an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"))
                })
            };
            let (from, to) = (time(&from, "--from")?, time(&to, "--to")?);
            let dir = DataDir::open(&data)?;
            let found = carekeep_server::audit::archive::who_accessed(
                &dir.open_store()?,
                &dir.archive_path(),
                &patient,
                from,
                to,
            )?;
            let mut out = std::io::stdout().lock();
            for record in found {
                // A reader that closed the pipe (`| head`) has what it wanted.
                if writeln!(out, "{}", serde_json::to_string(&record).unwrap_or_default()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn run_backup(data: Option<PathBuf>, out: Option<PathBuf>, command: Option<BackupCommand>) -> Result<(), ServerError> {
    match (command, data, out) {
        (Some(BackupCommand::Key { data, out }), ..) => {
            backup::create_key(&DataDir::open(&data)?, &out)?;
            eprintln!(
                "Wrote the backup key to {}. Move it offline now: only it opens this server's backups.",
                out.display()
            );
        }
        (Some(BackupCommand::Verify { file, key }), ..) => {
            let manifest = backup::verify(&file, &backup::BackupKey::read(&key)?)?;
            eprintln!("{} is intact and restores.", file.display());
            print_manifest(&manifest);
        }
        (None, Some(data), Some(out)) => {
            let manifest = backup::create(&DataDir::open(&data)?, &out)?;
            eprintln!("Wrote {}.", out.display());
            print_manifest(&manifest);
        }
        (None, ..) => return Err(ServerError::Invalid("backup needs --data DIR and --out FILE".into())),
    }
    Ok(())
}

/// What a backup holds, one `name: value` a line (no PHI: counts and hashes).
fn print_manifest(manifest: &backup::Manifest) {
    let c = &manifest.counts;
    println!("created_at: {}", manifest.created_at);
    println!("tenants: {}\nusers: {}\ndevices: {}", c.tenants, c.users, c.devices);
    println!("resources: {}\ndocuments: {}\naudit_records: {}", c.resources, c.documents, c.audit_records);
    if let Some(head) = &manifest.audit_head {
        println!("audit_head: {} {}", head.seq, head.hash);
    }
}

fn run(command: Command) -> Result<(), ServerError> {
    match command {
        Command::Init { data, hostname, database } => {
            // The schema first: it may be run again, a data directory may not.
            if let Some(url) = &database.url {
                migrate(url)?;
            }
            let (dir, pins) = DataDir::init(&data, &hostname)?;
            if database.url.is_some() {
                dir.mark_postgres()?;
            }
            eprintln!("Initialised {}. Clients pin these keys (live, then backup):", data.display());
            println!("{}\n{}", pins.live, pins.backup);
            eprintln!("Move {} offline: it is the backup key.", data.join("tls").join("backup-key.pem").display());
            Ok(())
        }
        Command::Pins { data } => {
            let pins = DataDir::open(&data)?.pins()?;
            println!("{}\n{}", pins.live, pins.backup);
            Ok(())
        }
        Command::RotateTls { data, hostname } => {
            let pins = DataDir::open(&data)?.rotate_tls(&hostname)?;
            eprintln!("The backup key is now live. Restart serve, and move the new tls/backup-key.pem offline.");
            println!("{}\n{}", pins.live, pins.backup);
            Ok(())
        }
        Command::Migrate { database } => {
            let url = database.url.ok_or_else(|| {
                ServerError::Invalid("give the owner's connection string: --database or CAREKEEP_OWNER_DATABASE".into())
            })?;
            migrate(&url).map(|_| ())
        }
        Command::Tenant { command } => run_tenant(command),
        Command::User { command } => run_user(command),
        Command::SeedDemo { data, database } => {
            let dir = DataDir::open(&data)?;
            let keys = dir.master_keys()?;
            let users = match database.url {
                None => {
                    let store = std::sync::Arc::new(dir.open_store()?);
                    let records =
                        carekeep_server::records::Records::new(store.clone(), zeroize::Zeroizing::new(*keys.documents));
                    carekeep_server::seed::seed_demo(&store, &records, now())?
                }
                Some(url) => seed_postgres(&dir, &keys, &url)?,
            };
            eprintln!(
                "Seeded tenant `{}` with synthetic patients. Users (username role password totp_secret):",
                carekeep_server::seed::DEMO_TENANT
            );
            for user in users {
                println!("{} {} {} {}", user.username, user.role.as_str(), user.password, user.totp_base32);
            }
            Ok(())
        }
        Command::Backup { data, out, command } => run_backup(data, out, command),
        Command::Restore { from, key, data } => {
            let manifest = backup::restore(&from, &backup::BackupKey::read(&key)?, &data)?;
            eprintln!("Restored {} into {} and verified it.", from.display(), data.display());
            print_manifest(&manifest);
            eprintln!("master.key is in {}: move it to your secret store if you keep it apart.", data.display());
            Ok(())
        }
        Command::Import { data, tenant, care_team, paths } => run_import(&data, &tenant, care_team.as_deref(), &paths),
        Command::Audit { command } => run_audit(command),
        Command::Serve { data, listen, connections_per_address, max_bundle_mib, database } => {
            let dir = DataDir::open(&data)?;
            let mut limits = carekeep_server::http::Limits::default();
            if let Some(n) = connections_per_address {
                limits.per_address = n.clamp(1, limits.total);
            }
            if let Some(mib) = max_bundle_mib {
                limits.bundle_bytes = mib.saturating_mul(1024 * 1024);
            }
            let runtime = tokio::runtime::Runtime::new().map_err(|e| ServerError::Tls(e.to_string()))?;
            runtime.block_on(async {
                let state = match &database.url {
                    None => carekeep_server::http::AppState::new(&dir)?,
                    Some(url) => carekeep_server::http::AppState::postgres(&dir, url, NODE_CONNECTIONS).await?,
                };
                carekeep_server::http::serve_state(
                    &dir,
                    state,
                    listen,
                    limits,
                    |addr| tracing::info!(%addr, "listening (HTTPS only)"),
                    async {
                        let _ = tokio::signal::ctrl_c().await;
                    },
                )
                .await
            })
        }
    }
}

/// Progress on standard error: a bar redrawn in place at a terminal, a line every tenth
/// otherwise (a log keeps a few lines, not thousands).
struct ProgressBar {
    terminal: bool,
    last_tenth: Option<usize>,
}

impl ProgressBar {
    fn new() -> Self {
        Self { terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()), last_tenth: None }
    }

    fn show(&mut self, done: usize, all: usize) {
        let tenths = (done * 10).checked_div(all).unwrap_or(10);
        if self.terminal {
            let filled = (done * 30).checked_div(all).unwrap_or(30);
            eprint!("\rImporting [{}{}] {done}/{all}", "#".repeat(filled), " ".repeat(30 - filled));
            if done == all {
                eprintln!();
            }
        } else if self.last_tenth != Some(tenths) {
            self.last_tenth = Some(tenths);
            eprintln!("Importing: {done} of {all} resources");
        }
    }
}
