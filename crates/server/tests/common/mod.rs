//! Helpers shared by the server's integration tests: a real server on an ephemeral port,
//! and HTTPS clients that trust exactly that server's certificate.
#![allow(dead_code, missing_docs, reason = "shared by several test binaries, each using a part of it")]

use std::sync::Arc;

use carekeep_server::DataDir;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A server serving `data` on 127.0.0.1, stopped when dropped.
pub type Running = carekeep_server::http::Running;

pub async fn start(data: &DataDir) -> Running {
    Running::start(data, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// Every resource `tenant` holds in `data`'s store, counted by type.
pub fn resource_counts(data: &DataDir, tenant: &str) -> std::collections::BTreeMap<String, i64> {
    let store = data.open_store().unwrap();
    let conn = store.read();
    let mut stmt = conn
        .prepare("SELECT type, count(*) FROM resources WHERE tenant = ?1 GROUP BY type")
        .unwrap();
    stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A rustls client configuration whose only root is `cert_pem`, speaking only `versions`:
/// for tests that drive TLS connections by hand, and under [`client`].
pub fn tls_config(cert_pem: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// [`tls_config`] for `data`'s certificate, TLS 1.3 and 1.2.
pub fn tls_config_for(data: &DataDir) -> Arc<rustls::ClientConfig> {
    Arc::new(tls_config(&std::fs::read(data.cert_path()).unwrap(), &[&rustls::version::TLS13, &rustls::version::TLS12]))
}

/// A client whose only root is `cert_pem`, speaking only `versions`.
pub fn client(cert_pem: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> reqwest::Client {
    let config = tls_config(cert_pem, versions);
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .tls_info(true)
        .build()
        .unwrap()
}

/// A client that trusts `data`'s certificate, TLS 1.3 and 1.2.
pub fn client_for(data: &DataDir) -> reqwest::Client {
    client(&std::fs::read(data.cert_path()).unwrap(), &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// What a sign-in over HTTPS exchanged (for tests that look for it afterwards).
pub struct SignIn {
    /// The challenge from the password step.
    pub mfa_token: String,
    /// The TOTP code sent.
    pub code: String,
    /// The token response.
    pub tokens: serde_json::Value,
}

/// Password then TOTP over HTTPS. `step` picks the TOTP step (0 now, 1 the next), so two
/// sign-ins in one 30 s window need not reuse a code.
pub async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    totp_base32: &str,
    step: u64,
) -> SignIn {
    let challenge: serde_json::Value = http
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mfa_token = challenge["mfa_token"].as_str().expect("the password step succeeds").to_owned();
    let secret = totp_rs::Secret::try_from_base32(totp_base32).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = totp_rs::Builder::new()
        .with_secret(secret.as_bytes())
        .build()
        .unwrap()
        .generate(now + 30 * step)
        .to_string();
    let response = http
        .post(format!("{base}/auth/mfa"))
        .json(&serde_json::json!({"mfa_token": mfa_token, "code": code, "device_name": format!("{username}-{step}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    SignIn { mfa_token, code, tokens: response.json().await.unwrap() }
}

/// A fresh data directory (under `dir`) with tenant `clinic-1` and one patient user.
pub fn data_with_user(
    dir: &std::path::Path,
    username: &str,
    password: &str,
) -> (DataDir, carekeep_server::admin::NewUser) {
    let (data, _) = DataDir::init(&dir.join("server"), "localhost").unwrap();
    let store = data.open_store().unwrap();
    carekeep_server::admin::add_tenant(&store, "clinic-1", "Clinic One", 0).unwrap();
    let user = carekeep_server::admin::add_user(
        &store,
        "clinic-1",
        username,
        carekeep_protocol::auth::Role::Patient,
        password,
        0,
    )
    .unwrap();
    (data, user)
}

/// The server binary serving `root` on a free port of 127.0.0.1; returns it and its address.
pub fn serve_binary(root: &std::path::Path) -> (std::process::Child, String) {
    serve_binary_with(root, &[])
}

/// [`serve_binary`] with `env` set (`CAREKEEP_DATABASE`, for a PostgreSQL node).
pub fn serve_binary_with(root: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(root)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let addr = loop {
        let line = lines.next().expect("the server stopped before it listened").unwrap();
        if let Some(at) = line.find("addr=") {
            break line[at + 5..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("https://localhost:{}", addr.rsplit(':').next().unwrap()))
}

/// A heart-rate Observation of `patient` with `value`: a small, valid write.
pub fn reading(patient: &str, value: u32) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// A fresh PostgreSQL database on the server `CAREKEEP_TEST_POSTGRES` names (`cargo xtask
/// test` and `bench` start a private one), migrated by its owner, and a login role that is
/// only a member of the application role.
pub struct PgDatabase {
    /// Its name.
    pub name: String,
    /// The owner's connection string: a role with CREATEROLE that owns the database and
    /// migrated it, not a superuser (as a deployment's owner should be).
    pub owner_url: String,
    /// The superuser's, in this database: what a thief with the whole database (or a
    /// `pg_dump` by an administrator) has.
    pub superuser_url: String,
    /// The application's: a role bound by the row-level policies.
    pub app_url: String,
}

/// The superuser's connection string; the PostgreSQL tests need a server.
pub fn pg_superuser_url() -> String {
    std::env::var("CAREKEEP_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "CAREKEEP_TEST_POSTGRES is not set: run this through `cargo xtask test`, which starts a private PostgreSQL"
        )
    })
}

/// `url` with `key` set to `value` (libpq's key=value form).
pub fn pg_url_with(url: &str, key: &str, value: &str) -> String {
    let mut parts: Vec<String> = url
        .split_whitespace()
        .filter(|p| !p.starts_with(&format!("{key}=")))
        .map(str::to_owned)
        .collect();
    parts.push(format!("{key}={value}"));
    parts.join(" ")
}

/// Serialises the set-up of databases and roles (roles are the whole cluster's).
static PG_SETUP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static PG_NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Creates a [`PgDatabase`] named after `purpose`.
pub async fn pg_database(purpose: &str) -> PgDatabase {
    use carekeep_server::pg::{self, schema};
    let _setup = PG_SETUP.lock().await;
    let n = PG_NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("carekeep_{purpose}_{}_{n}", std::process::id());
    let superuser = pg_superuser_url();
    let admin = pg::connect(&superuser).await.unwrap();
    let owner_role = format!("{name}_owner");
    admin
        .batch_execute(&format!("CREATE ROLE {owner_role} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS"))
        .await
        .unwrap();
    admin
        // A linguistic collation, as most deployments have (en_US): comparisons the server
        // relies on must not depend on it.
        .batch_execute(&format!(
            "CREATE DATABASE {name} OWNER {owner_role} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
             LOCALE 'C.UTF-8'"
        ))
        .await
        .unwrap();
    let superuser_url = pg_url_with(&superuser, "dbname", &name);
    let owner_url = pg_url_with(&superuser_url, "user", &owner_role);
    let mut owner = pg::connect(&owner_url).await.unwrap();
    schema::migrate(&mut owner).await.unwrap();
    let node = format!("{name}_node");
    admin
        .batch_execute(&format!("CREATE ROLE {node} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE {}", schema::APP_ROLE))
        .await
        .unwrap();
    let app_url = pg_url_with(&owner_url, "user", &node);
    PgDatabase { name, owner_url, superuser_url, app_url }
}
