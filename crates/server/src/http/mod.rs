//! The HTTPS API: a router of thin handlers behind the layers every response passes.

mod audit;
mod audit_events;
pub mod auth;
mod break_glass;
mod bundle;
pub mod connections;
mod documents;
pub mod error;
mod export;
pub mod fhir;
mod grant;
mod headers;
pub mod json;
mod metadata;
mod session;
mod sync;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::records::Records;

use crate::auth::{Auth, AuthPolicy};
use crate::{DataDir, ServerError};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Sign-in.
    pub auth: Arc<Auth>,
    /// The audit trail every audited request is appended to.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Signs policies (and, later, audit checkpoints).
    pub signing_key: Arc<ed25519_dalek::SigningKey>,
    /// Names the signing key.
    pub key_id: String,
    /// The pins handed out with the policy.
    pub pins: crate::datadir::ServerPins,
    /// The clinical records.
    pub records: Arc<Records>,
    /// Keys for signed links and page tokens.
    pub keys: Arc<crate::keys::MasterKeys>,
}

impl AppState {
    /// The state for a data directory.
    pub fn new(dir: &DataDir) -> Result<Self, ServerError> {
        let store = Arc::new(dir.open_store()?);
        let signing_key = Arc::new(dir.signing_key()?);
        let key_id = key_id(&signing_key.verifying_key());
        let audit = crate::audit::AuditLog::open(store.clone(), signing_key.clone())?;
        let keys = dir.master_keys()?;
        // Two password hashes at a time: 2 × 64 MiB, and reads keep a core.
        let auth = Auth::new(store.clone(), AuthPolicy::default(), 2).with_keys(&keys);
        let records = Arc::new(Records::new(store.clone(), zeroize::Zeroizing::new(*keys.documents)));
        Ok(Self {
            records,
            keys: Arc::new(keys),
            auth: Arc::new(auth),
            audit: Arc::new(audit),
            signing_key,
            key_id,
            pins: dir.pins()?,
        })
    }
}

impl AppState {
    /// The state of a node of a PostgreSQL deployment: the keys from `dir` (every node has
    /// a copy of one data directory), everything else in the database at `url`, reached
    /// through one pool of `connections`. Refuses a role the tenant policies would not bind,
    /// a schema of another version and another deployment's master key
    /// ([`crate::auth::PgAccounts::connect`]).
    pub async fn postgres(dir: &DataDir, url: &str, connections: usize) -> Result<Self, ServerError> {
        let keys = dir.master_keys()?;
        let accounts = crate::auth::PgAccounts::connect(url, connections, &keys).await?;
        dir.mark_postgres()?;
        let signing_key = Arc::new(dir.signing_key()?);
        let key_id = key_id(&signing_key.verifying_key());
        let pool = accounts.pool().clone();
        let records = crate::pg::records::PgRecords::new(pool.clone(), &keys, (*signing_key).clone());
        let audit = crate::audit::AuditLog::postgres(pool, signing_key.clone());
        let auth = Auth::new(accounts, AuthPolicy::default(), 2).with_keys(&keys);
        Ok(Self {
            records: Arc::new(Records::postgres(records, tokio::runtime::Handle::current())),
            keys: Arc::new(keys),
            auth: Arc::new(auth),
            audit: Arc::new(audit),
            signing_key,
            key_id,
            pins: dir.pins()?,
        })
    }
}

/// A short, stable name for a signing key: the first 8 bytes of its SHA-256, hex.
fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut id = String::from("ed25519-");
    crate::ids::push_hex(&mut id, &digest[..8]);
    id
}

/// Largest request body accepted (FHIR resources and Bundles from one device).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest transaction or batch Bundle a signed-in caller may send by default
/// ([`Limits::bundle_bytes`]).
pub const BUNDLE_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Largest body the sign-in routes take: a username, a password, a code, a cookie. They
/// answer anyone, so they buffer next to nothing.
pub const SIGN_IN_BODY_BYTES: usize = 16 * 1024;

/// Request bodies all requests may hold at once, server-wide ([`connections::BodyRules`]).
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Requests one HTTP/2 connection may have open at once (hyper's default is 200).
pub const STREAMS_PER_CONNECTION: u32 = 32;

/// The application: routes, then the security headers and body limit on every response;
/// request bodies must arrive within `body_read` and share one budget.
pub fn router(state: AppState, limits: &Limits) -> Router {
    // Passwords and codes are what can be guessed: sign-in throttles its two steps itself
    // (per account, per known device, per network, per server), and the authenticator
    // change draws on the same per-network window. Refresh and logout carry a 256-bit token
    // nobody can guess, and every device refreshes every few minutes, so limiting them per
    // address would throttle a whole hospital behind one NAT.
    let sign_in = Router::new()
        .route("/auth/mfa/enroll", post(auth::enroll))
        .route("/auth/mfa/confirm", post(auth::confirm))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::rate_limit))
        .route("/auth/login", post(auth::login))
        .route("/auth/mfa", post(auth::mfa))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route_layer(DefaultBodyLimit::max(SIGN_IN_BODY_BYTES));
    // Everything but the public metadata and key is audited (the audit layer outermost, so
    // throttled attempts are recorded too).
    let audited = Router::new()
        .route("/policy", get(session::policy))
        .route("/devices", get(session::devices))
        .route("/devices/{id}/revoke", post(session::revoke))
        .route("/devices/{id}/wipe", post(session::wipe))
        .route(
            "/fhir",
            get(fhir::page)
                .post(bundle::bundle)
                .layer(DefaultBodyLimit::max(limits.bundle_bytes)),
        )
        .route("/fhir/{type}", get(fhir::search).post(fhir::create))
        .route("/fhir/{type}/{id}", get(fhir::read).put(fhir::update).delete(fhir::delete))
        .route("/fhir/Patient/{id}/$everything", get(fhir::everything))
        .route("/fhir/$export", get(export::system))
        .route("/fhir/Patient/$export", get(export::patients))
        .route("/fhir/Group/{id}/$export", get(export::group))
        .route("/exports/{id}", get(export::status).delete(export::delete))
        .route("/exports/{id}/files/{n}", get(export::file))
        .route("/sync/status", get(sync::status))
        .route("/sync/removed", get(sync::removed))
        .route("/audit/device", post(sync::upload_device_audit))
        .route("/break-glass", post(break_glass::open).get(break_glass::review))
        .route("/alerts", get(break_glass::alerts))
        .route("/documents/{id}/link", get(documents::link))
        .route("/documents/{id}", get(documents::download))
        .merge(sign_in);
    // The audit wraps every route, the fallback and every 405 (only public GETs pass
    // unrecorded, see `audit::PUBLIC_ROUTES`).
    Router::new()
        .route("/fhir/metadata", get(metadata::capability_statement))
        .route("/policy/key", get(session::policy_key))
        .merge(audited)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            connections::BodyRules::new(limits.body_read, BODY_BUDGET_BYTES)
                .with_bundles(state.clone(), limits.bundle_bytes),
            connections::body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::audit))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(headers::security_headers))
}

pub use connections::Limits;

/// Serves the API over TLS on `listen` until `shutdown` resolves. There is no plaintext
/// listener: a client speaking plain HTTP gets no HTTP answer at all. `limits` bound how
/// many connections one address and the server hold and how long each may stay silent
/// ([`connections`]). `on_bound` receives the bound address (useful with port 0).
pub async fn serve(
    dir: &DataDir,
    listen: SocketAddr,
    limits: Limits,
    on_bound: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_state(dir, AppState::new(dir)?, listen, limits, on_bound, shutdown).await
}

/// [`serve`] with `state` made already (a PostgreSQL node's: [`AppState::postgres`]); `dir`
/// gives the TLS certificate and key.
pub async fn serve_state(
    dir: &DataDir,
    state: AppState,
    listen: SocketAddr,
    limits: Limits,
    on_bound: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let config = axum_server::tls_rustls::RustlsConfig::from_config(dir.tls_config()?);
    // Admission (per address, in all) and the idle limit come first, before any TLS work.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .handshake_timeout(limits.handshake)
        .acceptor(connections::Admission::new(limits));
    let handle = axum_server::Handle::new();
    let watcher = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = watcher.listening().await {
            on_bound(addr);
        }
    });
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let mut server = axum_server::bind(listen)
        .acceptor(acceptor)
        .handle(handle)
        .first_request_timeout(limits.header_read);
    server.http_builder().http1().header_read_timeout(limits.header_read);
    server.http_builder().http2().max_concurrent_streams(STREAMS_PER_CONNECTION);
    server
        .serve(router(state, &limits).into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|e| ServerError::Io { action: "listen on", path: listen.to_string().into(), source: e })
}

/// A server serving in the background of the current tokio runtime until dropped: for
/// tests, benchmarks, and embedding (a demo server inside the app).
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Starts serving `dir` on `listen` (port 0: any free port) and returns once bound.
    pub async fn start(dir: &DataDir, listen: SocketAddr) -> Result<Self, ServerError> {
        Self::start_with(dir, listen, Limits::default()).await
    }

    /// As [`Running::start`], under other connection `limits`.
    pub async fn start_with(dir: &DataDir, listen: SocketAddr, limits: Limits) -> Result<Self, ServerError> {
        Self::start_state(dir, AppState::new(dir)?, listen, limits).await
    }

    /// A node of a PostgreSQL deployment at `url` ([`AppState::postgres`]), on `listen`.
    pub async fn start_postgres(dir: &DataDir, url: &str, listen: SocketAddr) -> Result<Self, ServerError> {
        let state = AppState::postgres(dir, url, 8).await?;
        Self::start_state(dir, state, listen, Limits::default()).await
    }

    async fn start_state(
        dir: &DataDir,
        state: AppState,
        listen: SocketAddr,
        limits: Limits,
    ) -> Result<Self, ServerError> {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dir = dir.clone();
        let serving = tokio::spawn(async move {
            let on_bound = move |addr| {
                let _ = bound_tx.send(addr);
            };
            serve_state(&dir, state, listen, limits, on_bound, async move {
                let _ = stopped.await;
            })
            .await
        });
        match bound_rx.await {
            Ok(addr) => Ok(Self { addr, stop: Some(stop) }),
            // It never bound: the task ended with the reason.
            Err(_) => Err(serving
                .await
                .map_err(|e| ServerError::Tls(e.to_string()))?
                .err()
                .unwrap_or_else(|| ServerError::Tls("the server stopped before it was listening".into()))),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A FHIR OperationOutcome with one issue; `diagnostics` must never carry PHI.
pub fn operation_outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let body = serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]
    });
    (status, [(axum::http::header::CONTENT_TYPE, "application/fhir+json")], body.to_string()).into_response()
}

async fn not_found() -> Response {
    operation_outcome(StatusCode::NOT_FOUND, "not-found", "No such endpoint.")
}

#[cfg(test)]
mod layer_tests {
    /// The storage boundary (issue 18): handlers reach the store only through the modules
    /// that own its tables (`auth`, `records`, `audit`), so another storage engine changes
    /// nothing here.
    #[test]
    fn the_http_layer_holds_no_sql() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let whole = std::fs::read_to_string(&path).unwrap();
            // This test's own list of needles is not SQL.
            let text = whole.split("mod layer_tests").next().unwrap();
            for needle in ["rusqlite", "SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", ".prepare(", "query_row("] {
                assert!(!text.contains(needle), "{} holds `{needle}`: move it to the store side", path.display());
            }
            checked += 1;
        }
        assert!(checked > 10, "src/http was not where the test looked");
    }
}
