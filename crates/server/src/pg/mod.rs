//! PostgreSQL, for deployments that outgrow one machine (issue 18; DESIGN §6, §9). Built so
//! far: the versioned [`schema`] with row-level security per tenant and an application role
//! that owns nothing, the FHIR [`records`] with server-side encryption and a blind name
//! index, and the [`audit`] trail as one chain per tenant across servers, tested against a
//! real PostgreSQL; the accounts, sessions and sign-in throttle live beside them
//! ([`crate::auth::store::PgAccounts`]), shared by every node through a [`Pool`]. Not yet:
//! documents, idempotency, exports and `serve --database`, so the HTTP server itself still
//! runs on SQLCipher only.

pub mod audit;
pub mod records;
pub mod schema;

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

/// Connects to `url` (a libpq connection string or URI) and drives the connection on the
/// current tokio runtime. Unix sockets only for now: TLS to the database comes with `serve
/// --database`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ServerError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| ServerError::Store(format!("cannot reach PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "the PostgreSQL connection failed");
        }
    });
    Ok(client)
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
    let row = client
        .query_one(
            "SELECT r.rolsuper OR r.rolbypassrls,
                    EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user)
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(failed)?;
    let (bypasses, owns): (bool, bool) = (row.get(0), row.get(1));
    if bypasses || owns {
        return Err(ServerError::Store(
            "the server's PostgreSQL role must not be a superuser, bypass row-level security or own the tables: \
             connect as a member of carekeep_app (see docs/server-api.md)"
                .into(),
        ));
    }
    Ok(pool)
}

/// A pool of at most `size` connections to `url`, as given (the owner's, for migrations and
/// administration). See [`app_pool`] for the nodes'.
pub async fn pool(url: &str, size: usize) -> Result<Pool, ServerError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| ServerError::Store(format!("not a PostgreSQL connection string: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(WAIT);
    }
    if config.get_options().is_none() {
        config.options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    }
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
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

/// A connection from `pool`, or why there is none — without the database's detail, which
/// may quote a row.
pub(crate) async fn pooled(pool: &Pool) -> Result<deadpool_postgres::Object, ServerError> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|e| {
        let why = match &e {
            PoolError::Timeout(_) => "timed out".to_owned(),
            PoolError::Backend(e) => e
                .as_db_error()
                .map_or_else(|| "no connection".to_owned(), |db| db.message().to_owned()),
            _ => "the pool is closed".to_owned(),
        };
        tracing::error!(why = %why, "no PostgreSQL connection");
        ServerError::Store(format!("cannot reach PostgreSQL: {why}"))
    })
}

/// Whether `e` is a failure a retry may get past: the connection lost or refused, the
/// server shutting down or an operator ending the session (class 57), out of connections
/// or disk (53), a deadlock or serialisation conflict (40), a standby that cannot write
/// (25006).
pub(crate) fn passing(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
        }
        Some(db) => {
            let code = db.code().code();
            ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) || code == "25006"
        }
    }
}

/// Opens a transaction on a pooled connection in which only `tenant`'s rows exist.
pub(crate) async fn tenant_tx<'a>(
    client: &'a mut deadpool_postgres::Object,
    tenant: &str,
) -> Result<deadpool_postgres::Transaction<'a>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant]).await?;
    Ok(tx)
}
