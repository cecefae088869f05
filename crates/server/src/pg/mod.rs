//! PostgreSQL, for deployments that outgrow one machine (issue 18; DESIGN §6, §9). Built so
//! far: the versioned [`schema`] with row-level security per tenant and an application role
//! that owns nothing; the [`records`] service (server-side encryption, blind indexes,
//! idempotency, documents, the access table, writes ordered and audited per tenant); the
//! [`audit`] trail as one chain per tenant across servers; the accounts, sessions and
//! sign-in throttle beside them ([`crate::auth::store::PgAccounts`]) — all shared by every
//! node through a [`Pool`] and tested against a real PostgreSQL. Not yet: exports, bundles,
//! break-glass opening and `serve --database`, so the HTTP server itself still runs on
//! SQLCipher only.

pub mod audit;
pub mod records;
pub mod schema;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::ServerError;

/// A PostgreSQL error as the server reports it: the database's message only, never its
/// detail, which may quote a row's values.
#[expect(clippy::needless_pass_by_value, reason = "map_err hands the error over by value")]
pub(crate) fn failed(e: tokio_postgres::Error) -> ServerError {
    ServerError::Store(format!(
        "PostgreSQL: {}",
        e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
    ))
}

/// Connects to `url` (a libpq connection string or URI, see [`Connection`]) and drives the
/// connection on the current tokio runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ServerError> {
    let unreachable = |e: tokio_postgres::Error| ServerError::Store(format!("cannot reach PostgreSQL: {}", reason(&e)));
    let drive = |e: Result<(), tokio_postgres::Error>| {
        if let Err(e) = e {
            tracing::error!(why = %reason(&e), "the PostgreSQL connection failed");
        }
    };
    let Connection { config, tls } = Connection::parse(url)?;
    if let Some(tls) = tls {
        let (client, connection) = config.connect(tls).await.map_err(unreachable)?;
        tokio::spawn(async move { drive(connection.await) });
        return Ok(client);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(unreachable)?;
    tokio::spawn(async move { drive(connection.await) });
    Ok(client)
}

/// Why a connection failed, without the database's detail (which may quote a row) and
/// without the connection string (which may hold a password).
fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        why = format!("{why}: {inner}");
        source = inner.source();
    }
    why
}

/// A connection string as the server uses it. PostgreSQL over a network is reached over
/// TLS with the server's certificate checked (chain and name, always: `verify-full`)
/// against the CA file `sslrootcert` names, or the system's roots; a TCP connection without
/// `sslmode=require`, `verify-ca` or `verify-full` is refused unless it stays on this
/// machine (loopback) and says `sslmode=disable`. A Unix socket needs no TLS.
pub struct Connection {
    /// What tokio-postgres connects with (`sslrootcert` taken out, the mode mapped to its
    /// own names).
    pub config: tokio_postgres::Config,
    /// The TLS connector, with its roots; `None` where TLS is off (a Unix socket, or
    /// loopback with `sslmode=disable`).
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connection {
    /// Parses `url` (libpq key=value pairs or a `postgres://` URI).
    pub fn parse(url: &str) -> Result<Self, ServerError> {
        use tokio_postgres::config::{Host, SslMode};
        let bad = |why: String| ServerError::Store(format!("the PostgreSQL connection string: {why}"));
        let (url, root_cert, mode) = libpq_tls_options(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(WAIT);
        }
        if config.get_options().is_none() {
            config.options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        }
        let hosts = config.get_hosts();
        let over_network = hosts.iter().any(|h| matches!(h, Host::Tcp(_)));
        // A name may say loopback while `hostaddr` points elsewhere: both must stay here.
        let loopback_only = hosts.iter().all(|h| match h {
            Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            Host::Unix(_) => true,
        }) && config.get_hostaddrs().iter().all(std::net::IpAddr::is_loopback);
        match mode.as_deref() {
            Some("require" | "verify-ca" | "verify-full") => {
                config.ssl_mode(SslMode::Require);
            }
            Some("disable") if loopback_only => {
                config.ssl_mode(SslMode::Disable);
            }
            _ if over_network => {
                return Err(bad("a connection over the network must be encrypted: add sslmode=verify-full (and \
                     sslrootcert=FILE when the database's certificate is not from a CA this system trusts)"
                    .into()));
            }
            _ => {
                config.ssl_mode(SslMode::Disable);
            }
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = root_cert {
            use rustls::pki_types::pem::PemObject as _;
            let pem = std::fs::read(&path).map_err(|e| bad(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {path} is not PEM: {e}")))?;
                roots.add(cert).map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {path} holds no certificate")));
            }
        } else {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let tls =
            (config.get_ssl_mode() == SslMode::Require).then(|| tokio_postgres_rustls::MakeRustlsConnect::new(tls));
        Ok(Self { config, tls })
    }
}

/// Takes libpq's `sslrootcert` and `sslmode` out of a connection string (tokio-postgres
/// knows neither `sslrootcert` nor the `verify-*` modes); returns the rest and both values.
fn libpq_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let is_tls_option = |key: &str| key == "sslrootcert" || key == "sslmode";
    let (mut root_cert, mut mode) = (None, None);
    let mut take = |key: &str, value: String| {
        if key == "sslrootcert" {
            root_cert = Some(value);
        } else {
            mode = Some(value);
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None, None) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((key, value)) if is_tls_option(key) => {
                    take(key, form_urlencoded::parse(value.as_bytes()).map(|(k, _)| k).collect());
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, root_cert, mode);
    }
    let mut kept = Vec::new();
    for part in url.split_whitespace() {
        match part.split_once('=') {
            Some((key, value)) if is_tls_option(key) => take(key, value.trim_matches('\'').to_owned()),
            _ => kept.push(part),
        }
    }
    (kept.join(" "), root_cert, mode)
}

/// A bounded pool of connections (one that closed is dropped, not handed out): what a node
/// shares between its requests.
pub type Pool = deadpool_postgres::Pool;

/// How long a request waits for a connection, to open one, or for a statement before it is
/// told to try again: a database out of reach is a quick 503, never a hung request.
const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest a statement may run (milliseconds), unless the connection string sets it.
const STATEMENT_TIMEOUT_MS: u32 = 15_000;

/// A pool for a node: at most `size` connections to `url` (a libpq connection string or
/// URI), as a role that may only read and write rows. Refuses a role that is a superuser,
/// bypasses row-level security or owns a table — any of which would switch the tenant
/// policies off for this node — and fails at once, naming the cause, when the database
/// cannot be reached: a node that starts without its database says so.
pub async fn app_pool(url: &str, size: usize) -> Result<Pool, ServerError> {
    let pool = pool(url, size).await?;
    let client = pooled(&pool).await?;
    check_app_role(&client).await?;
    drop(client);
    Ok(pool)
}

/// Refuses a connection whose role the tenant policies would not bind: a superuser, a role
/// that bypasses row-level security, owns (or is a member of a role that owns) a table or
/// function of the schema, or inherits the lookup role's policies; and one that is not a
/// member of [`schema::APP_ROLE`] (it could not work).
pub async fn check_app_role(client: &tokio_postgres::Client) -> Result<(), ServerError> {
    let row = client
        .query_one(
            "SELECT r.rolsuper OR r.rolbypassrls
                    OR EXISTS (SELECT 1 FROM pg_tables t
                               WHERE t.schemaname = 'public' AND pg_has_role(current_user, t.tableowner, 'MEMBER'))
                    OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                               WHERE n.nspname = 'public' AND pg_has_role(current_user, p.proowner, 'MEMBER'))
                    OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carekeep_lookup')
                        AND pg_has_role(current_user, 'carekeep_lookup', 'MEMBER')),
                    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AND pg_has_role(current_user, $1, 'USAGE')
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&schema::APP_ROLE],
        )
        .await
        .map_err(failed)?;
    let (unbound, member): (bool, bool) = (row.get(0), row.get(1));
    if unbound {
        return Err(ServerError::Store(format!(
            "the server's PostgreSQL role must not be a superuser, bypass row-level security, own the schema's tables \
             or functions (or belong to a role that does): connect as a role that is only a member of {}",
            schema::APP_ROLE
        )));
    }
    if !member {
        return Err(ServerError::Store(format!(
            "the server's PostgreSQL role is not a member of {}: `GRANT {0} TO` it, or run `init --database` first",
            schema::APP_ROLE
        )));
    }
    Ok(())
}

/// A pool of at most `size` connections to `url`, as given (the owner's, for migrations and
/// administration). See [`app_pool`] for the nodes'.
pub async fn pool(url: &str, size: usize) -> Result<Pool, ServerError> {
    let Connection { config, tls } = Connection::parse(url)?;
    let recycling = deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
    let manager = match tls {
        Some(tls) => deadpool_postgres::Manager::from_config(config, tls, recycling),
        None => deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, recycling),
    };
    let pool = Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .recycle_timeout(Some(WAIT))
        .build()
        .map_err(|e| ServerError::Store(format!("cannot build a PostgreSQL pool: {e}")))?;
    drop(pooled(&pool).await?);
    Ok(pool)
}

/// Set when a statement failed in a way that can leave dead connections in a pool (the
/// database restarted, an operator ended a session): until a connection checks out
/// healthy, each one handed out is first tried with an empty query and a dead one is
/// discarded — so one lost database costs one failed request, not one per pooled
/// connection (a pool only notices a dead one once its driver task has ended).
static SUSPECT: AtomicBool = AtomicBool::new(false);

/// A connection from `pool`, or why there is none — without the database's detail, which
/// may quote a row.
pub(crate) async fn pooled(pool: &Pool) -> Result<deadpool_postgres::Object, ServerError> {
    use deadpool_postgres::PoolError;
    let unreachable = |e: PoolError| {
        let why = match &e {
            PoolError::Timeout(_) => "timed out".to_owned(),
            PoolError::Backend(e) => reason(e),
            _ => "the pool is closed".to_owned(),
        };
        tracing::error!(why = %why, "no PostgreSQL connection");
        ServerError::Store(format!("cannot reach PostgreSQL: {why}"))
    };
    // Every pooled connection may be tried before a new one is made.
    for _ in 0..=pool.status().max_size {
        let client = pool.get().await.map_err(unreachable)?;
        if !SUSPECT.load(Ordering::Relaxed) {
            return Ok(client);
        }
        if tokio::time::timeout(WAIT, client.simple_query(""))
            .await
            .is_ok_and(|answered| answered.is_ok())
        {
            SUSPECT.store(false, Ordering::Relaxed);
            return Ok(client);
        }
        drop(deadpool_postgres::Object::take(client));
    }
    Err(ServerError::Store("cannot reach PostgreSQL: no connection answers".into()))
}

/// Whether `e` is a failure a retry may get past: the connection lost or refused, the
/// server shutting down or an operator ending the session (class 57), out of connections
/// or disk (53), a deadlock or serialisation conflict (40), a standby that cannot write
/// (25006). Such a failure also makes [`pooled`] check connections before handing them out
/// (see `SUSPECT`).
pub(crate) fn passing(e: &tokio_postgres::Error) -> bool {
    let passing = match e.as_db_error() {
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
        }
        Some(db) => {
            let code = db.code().code();
            ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) || code == "25006"
        }
    };
    // Only a lost connection can leave dead ones in a pool; a conflict or a timeout cannot.
    let connection_lost = e.as_db_error().map_or(passing, |db| {
        let code = db.code().code();
        code.starts_with("08") || code.starts_with("57P")
    });
    if connection_lost {
        SUSPECT.store(true, Ordering::Relaxed);
    }
    passing
}

/// Opens a read-only transaction on one snapshot (repeatable read), whatever the role's
/// default: what is read together was there together.
pub(crate) async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// Opens a transaction on a pooled connection in which only `tenant`'s rows exist.
pub(crate) async fn tenant_tx<'a>(
    client: &'a mut deadpool_postgres::Object,
    tenant: &str,
) -> Result<deadpool_postgres::Transaction<'a>, tokio_postgres::Error> {
    // READ COMMITTED whatever the role's default says: each statement after a lock sees
    // what committed before it (a role may set its own default isolation).
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await?;
    tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant]).await?;
    Ok(tx)
}
