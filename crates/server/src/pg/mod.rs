//! PostgreSQL, for deployments that outgrow one machine (issue 18; DESIGN §6, §9). Built so
//! far: the versioned [`schema`] with row-level security per tenant and an application role
//! that owns nothing, the FHIR [`records`] with server-side encryption and a blind name
//! index, and the [`audit`] trail as one chain per tenant across servers, tested against a
//! real PostgreSQL. Not yet: the rest of the store (accounts, sessions, documents,
//! idempotency) and `serve --database`, so the server itself still runs on SQLCipher only.

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
