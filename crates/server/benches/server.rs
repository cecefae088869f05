//! Server benchmarks against DESIGN.md §8, each beside a baseline measured in the same run:
//!
//! - **FHIR read**: `GET /fhir/Observation/{id}` as a signed-in clinician, over TLS
//!   keep-alive, with the audit on (one chained, fsynced record per request), many requests
//!   in flight. Baseline: `GET /policy/key` (a small public JSON document) through the same
//!   TLS, HTTP and header layers, with no token check, no store read and no audit record:
//!   the floor the stack itself sets. Budget ≥ 5 000 req/s.
//! - **Audit append**: records/s from many concurrent writers, through the group commit the
//!   server uses. Baseline: one fsynced one-row transaction on the same store, one after
//!   another (what each request would cost without group commit).
//! - **Audit append on PostgreSQL**: the same, through a node's writer (`AuditLog::postgres`:
//!   group commit per tenant, under the tenant's advisory lock), when
//!   `CAREKEEP_TEST_POSTGRES` names a server. Baseline: one one-row transaction after
//!   another there.
//! - **FHIR read on PostgreSQL**: the authenticated read from a node of a PostgreSQL
//!   deployment, beside the same read on the embedded store; and from two nodes on one
//!   database, beside one node (on two cores this shows the overhead, not a speed-up).
//! - **Token check**: the check every authenticated request makes of its access token, with
//!   the sign-in state shared by nodes on PostgreSQL (`auth::PgAccounts`). Baseline: the same
//!   check on the embedded SQLCipher store. The ratio is what sharing the state costs.
//! - **Login**: password then TOTP through [`Auth`], to tokens. Baseline: the Argon2id
//!   verification alone, which is deliberately most of it.
//!
//! The load generator runs in this process, on the same two cores as the server, so the
//! figures are a floor. After criterion's report a table prints medians, the baselines and
//! the budget; it is also written to `target/bench-server.md`. Under `cargo test` each
//! benchmark runs once on a small input, as a smoke test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carekeep_protocol::Secret;
use carekeep_protocol::audit::{AuditEvent, Outcome};
use carekeep_protocol::auth::{LoginRequest, MfaRequest, Role};
use carekeep_server::DataDir;
use carekeep_server::auth::{Auth, AuthPolicy};
use carekeep_server::http::Running;
use criterion::{Criterion, Throughput};

/// Where the in-process sign-ins come from.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[path = "../tests/common/mod.rs"]
mod common;

/// (operations, elapsed) of every timed batch of one (workload, variant).
type Batches = Vec<(u32, Duration)>;

/// Every timed batch, per (workload, variant).
static SAMPLES: Mutex<BTreeMap<(&'static str, &'static str), Batches>> = Mutex::new(BTreeMap::new());

const MEASURED: &str = "measured";
const BASELINE: &str = "baseline";

/// Requests in flight at once during the read benchmarks (one keep-alive connection each).
const IN_FLIGHT: usize = 32;

/// Runs `iters` timed batches of `ops` operations, records each, and returns their sum
/// (criterion's `iter_custom` contract).
fn batches(
    iters: u64,
    workload: &'static str,
    variant: &'static str,
    ops: u64,
    mut batch: impl FnMut() -> Duration,
) -> Duration {
    let ops = u32::try_from(ops).unwrap();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let elapsed = batch();
        SAMPLES
            .lock()
            .unwrap()
            .entry((workload, variant))
            .or_default()
            .push((ops, elapsed));
        total += elapsed;
    }
    total
}

fn is_real_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A data directory seeded with the demo tenant, and the demo clinician's credentials.
struct Fixture {
    _dir: tempfile::TempDir,
    data: DataDir,
    clinician: carekeep_server::seed::DemoUser,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    let keys = data.master_keys().unwrap();
    let records = carekeep_server::records::Records::new(store.clone(), zeroize::Zeroizing::new(*keys.documents));
    let users = carekeep_server::seed::seed_demo(&store, &records, carekeep_server::now()).unwrap();
    let clinician = users.into_iter().find(|u| u.role == Role::Clinician).unwrap();
    Fixture { _dir: dir, data, clinician }
}

fn totp_code(base32: &str, at: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(base32).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret.as_bytes()).build().unwrap();
    totp.generate(u64::try_from(at).unwrap()).to_string()
}

/// Sends `total` GETs of `url`, `IN_FLIGHT` at a time, each one checked for 200.
async fn load(http: &reqwest::Client, url: &str, bearer: Option<&str>, total: u64) -> Duration {
    load_over(http, &[url], bearer, total).await
}

/// [`load`] spread over `urls` (one per node): the in-flight requests take them in turn.
async fn load_over(http: &reqwest::Client, urls: &[&str], bearer: Option<&str>, total: u64) -> Duration {
    let per_task = total.div_ceil(IN_FLIGHT as u64);
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|task| {
            let (http, url, bearer) = (http.clone(), urls[task % urls.len()].to_owned(), bearer.map(str::to_owned));
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let mut request = http.get(&url);
                    if let Some(token) = &bearer {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// Signs `user` in at `base` (TOTP step `step`): their token, and the URL of an Observation
/// they may read.
async fn signed_in_read(
    http: &reqwest::Client,
    base: &str,
    user: &carekeep_server::seed::DemoUser,
    step: u64,
) -> (String, String) {
    let signed = common::sign_in(http, base, &user.username, &user.password, &user.totp_base32, step).await;
    let token = signed.tokens["access_token"].as_str().unwrap().to_owned();
    let found: serde_json::Value = http
        .get(format!("{base}/fhir/Observation?_count=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{base}/fhir/Observation/{}", found["entry"][0]["resource"]["id"].as_str().unwrap());
    (token, url)
}

fn bench_fhir_read(c: &mut Criterion, f: &Fixture) {
    // The server gets the runtime production gets (a worker per core); the load generator
    // gets its own single thread.
    let server_runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server_runtime
        .block_on(Running::start(&f.data, "127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let base = format!("https://localhost:{}", server.port());
    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = common::client_for(&f.data);
    let (token, read_url) = client_runtime.block_on(signed_in_read(&http, &base, &f.clinician, 0));
    let public_url = format!("{base}/policy/key");
    let batch = if is_real_run() { 2_000 } else { IN_FLIGHT as u64 };

    let mut group = c.benchmark_group("fhir read over TLS keep-alive");
    group
        .throughput(Throughput::Elements(batch))
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("authenticated read, audit on", |b| {
        b.iter_custom(|iters| {
            batches(iters, "fhir read", MEASURED, batch, || {
                client_runtime.block_on(load(&http, &read_url, Some(&token), batch))
            })
        });
    });
    group.bench_function("baseline: /policy/key, no auth, no store, no audit", |b| {
        b.iter_custom(|iters| {
            batches(iters, "fhir read", BASELINE, batch, || {
                client_runtime.block_on(load(&http, &public_url, None, batch))
            })
        });
    });
    group.finish();
    drop(server);
    drop(server_runtime);
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        recorded_at: "2026-11-23T10:00:00Z".into(),
        occurred_at: None,
        tenant: "demo".into(),
        user: Some("user-1".into()),
        role: Some("clinician".into()),
        device: Some("device-1".into()),
        ip: Some("127.0.0.1".into()),
        action: "GET /fhir/{type}/{id}".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some(format!("obs-{i}")),
        patient: Some("patient-1".into()),
        outcome: Outcome::Success,
        break_glass: false,
    }
}

fn bench_audit_append(c: &mut Criterion, f: &Fixture) {
    let store = Arc::new(f.data.open_store().unwrap());
    let key = Arc::new(f.data.signing_key().unwrap());
    let log = Arc::new(carekeep_server::audit::AuditLog::open(store.clone(), key).unwrap());
    store
        .lock()
        .execute_batch("CREATE TABLE IF NOT EXISTS bench_rows (n INTEGER) STRICT")
        .unwrap();
    let batch: u64 = if is_real_run() { 2_000 } else { 64 };
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let mut group = c.benchmark_group("audit append");
    group.throughput(Throughput::Elements(batch)).sample_size(10);
    group.bench_function("chained records, concurrent writers (group commit)", |b| {
        b.iter_custom(|iters| {
            batches(iters, "audit append", MEASURED, batch, || {
                let log = log.clone();
                runtime.block_on(async move {
                    let start = Instant::now();
                    let writers: Vec<_> = (0..IN_FLIGHT as u64)
                        .map(|w| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..batch / IN_FLIGHT as u64 {
                                    log.record(vec![event(w * batch + i)]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for writer in writers {
                        writer.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    });
    group.bench_function("baseline: one fsynced row per transaction", |b| {
        b.iter_custom(|iters| {
            batches(iters, "audit append", BASELINE, batch, || {
                let start = Instant::now();
                for n in 0..batch {
                    let mut conn = store.lock();
                    let tx = conn.transaction().unwrap();
                    tx.execute("INSERT INTO bench_rows (n) VALUES (?1)", [i64::try_from(n).unwrap()])
                        .unwrap();
                    tx.commit().unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// The same appends on PostgreSQL (issue 18), when `CAREKEEP_TEST_POSTGRES` names a server
/// (`cargo xtask bench` starts a private one): each request its own transaction under the
/// tenant's advisory lock, through a login role bound by the row-level policies. Baseline:
/// one one-row transaction after another on the same server.
/// The demo tenant seeded into a fresh PostgreSQL database for a data directory of its own
/// (a PostgreSQL deployment's is marked so, and the fixture's stays embedded); the
/// directory, the application's connection string and the demo clinician.
fn postgres_deployment() -> (tempfile::TempDir, DataDir, String, carekeep_server::seed::DemoUser) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(common::pg_database("bench_read"));
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    let keys = data.master_keys().unwrap();
    let (pg, accounts) = runtime.block_on(async {
        let accounts = carekeep_server::auth::PgAccounts::connect(&db.app_url, 4, &keys).await.unwrap();
        let pg =
            carekeep_server::pg::records::PgRecords::new(accounts.pool().clone(), &keys, data.signing_key().unwrap());
        pg.add_tenant(carekeep_server::seed::DEMO_TENANT, "Demo").await.unwrap();
        (pg, accounts)
    });
    let records = carekeep_server::records::Records::postgres(pg, runtime.handle().clone());
    let now = carekeep_server::now();
    let users = carekeep_server::seed::seed_tenant(&records, |username, role, password| {
        runtime.block_on(accounts.add_user(carekeep_server::seed::DEMO_TENANT, username, role, password, now))
    })
    .unwrap();
    let clinician = users.into_iter().find(|u| u.role == Role::Clinician).unwrap();
    (dir, data, db.app_url, clinician)
}

/// The same authenticated read as [`bench_fhir_read`], from nodes of a PostgreSQL
/// deployment: one node beside the embedded store, and two nodes on one database beside
/// one. On this machine's two cores the second node adds no cores, only its overhead: the
/// ratio says what spreading costs, not what it gains on more machines.
fn bench_fhir_read_postgres(c: &mut Criterion, f: &Fixture) {
    if std::env::var_os("CAREKEEP_TEST_POSTGRES").is_none() {
        eprintln!("FHIR read on PostgreSQL: not measured (CAREKEEP_TEST_POSTGRES is not set)");
        return;
    }
    let (_dir, data, url, clinician) = postgres_deployment();
    let server_runtime = tokio::runtime::Runtime::new().unwrap();
    let (embedded, one, two) = server_runtime.block_on(async {
        let any = "127.0.0.1:0".parse().unwrap();
        (
            Running::start(&f.data, any).await.unwrap(),
            Running::start_postgres(&data, &url, any).await.unwrap(),
            Running::start_postgres(&data, &url, any).await.unwrap(),
        )
    });
    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = common::client_for(&data);
    let embedded_http = common::client_for(&f.data);
    let base = |running: &Running| format!("https://localhost:{}", running.port());
    let (token, one_url) = client_runtime.block_on(signed_in_read(&http, &base(&one), &clinician, 0));
    let two_url = one_url.replace(&base(&one), &base(&two));
    // The fixture's clinician signed in with this step's code already: the next one.
    let (embedded_token, embedded_url) =
        client_runtime.block_on(signed_in_read(&embedded_http, &base(&embedded), &f.clinician, 1));
    let batch = if is_real_run() { 2_000 } else { IN_FLIGHT as u64 };

    let mut group = c.benchmark_group("fhir read (PostgreSQL)");
    group
        .throughput(Throughput::Elements(batch))
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("one node on PostgreSQL", |b| {
        b.iter_custom(|iters| {
            batches(iters, "fhir read (PostgreSQL)", MEASURED, batch, || {
                client_runtime.block_on(load(&http, &one_url, Some(&token), batch))
            })
        });
    });
    group.bench_function("baseline: the embedded store", |b| {
        b.iter_custom(|iters| {
            batches(iters, "fhir read (PostgreSQL)", BASELINE, batch, || {
                client_runtime.block_on(load(&embedded_http, &embedded_url, Some(&embedded_token), batch))
            })
        });
    });
    group.bench_function("two nodes on one database", |b| {
        b.iter_custom(|iters| {
            batches(iters, "two nodes (PostgreSQL)", MEASURED, batch, || {
                client_runtime.block_on(load_over(&http, &[&one_url, &two_url], Some(&token), batch))
            })
        });
    });
    group.bench_function("baseline: one node", |b| {
        b.iter_custom(|iters| {
            batches(iters, "two nodes (PostgreSQL)", BASELINE, batch, || {
                client_runtime.block_on(load(&http, &one_url, Some(&token), batch))
            })
        });
    });
    group.finish();
    drop((embedded, one, two));
    drop(server_runtime);
}

fn bench_audit_append_postgres(c: &mut Criterion) {
    if std::env::var_os("CAREKEEP_TEST_POSTGRES").is_none() {
        eprintln!("audit append on PostgreSQL: not measured (CAREKEEP_TEST_POSTGRES is not set)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app_url = runtime.block_on(postgres_database());
    let key = Arc::new(ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
    let clients: Vec<_> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..IN_FLIGHT {
            clients.push(Arc::new(tokio::sync::Mutex::new(carekeep_server::pg::connect(&app_url).await.unwrap())));
        }
        clients
    });
    let batch: u64 = if is_real_run() { 2_000 } else { 64 };
    let mut group = c.benchmark_group("audit append (PostgreSQL)");
    group.throughput(Throughput::Elements(batch)).sample_size(10);
    // A node's writer: its own pool, group commit per tenant.
    let log = Arc::new(runtime.block_on(async {
        let pool = carekeep_server::pg::app_pool(&app_url, 8).await.unwrap();
        carekeep_server::audit::AuditLog::postgres(pool, key.clone())
    }));
    group.bench_function("chained records, concurrent writers (group commit, tenant lock)", |b| {
        b.iter_custom(|iters| {
            batches(iters, "audit append (PostgreSQL)", MEASURED, batch, || {
                runtime.block_on(async {
                    let start = Instant::now();
                    let writers: Vec<_> = (0..IN_FLIGHT as u64)
                        .map(|w| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..batch / IN_FLIGHT as u64 {
                                    log.record(vec![event(w * batch + i)]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for writer in writers {
                        writer.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    });
    group.bench_function("baseline: one row per transaction", |b| {
        b.iter_custom(|iters| {
            batches(iters, "audit append (PostgreSQL)", BASELINE, batch, || {
                runtime.block_on(async {
                    let client = clients[0].lock().await;
                    let start = Instant::now();
                    for n in 0..batch {
                        client
                            .execute("INSERT INTO bench_rows (n) VALUES ($1)", &[&i64::try_from(n).unwrap()])
                            .await
                            .unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    });
    group.finish();
}

/// A fresh database (see [`common::pg_database`]) with tenant `demo` and a table for the
/// baseline's rows; the application's connection string.
async fn postgres_database() -> String {
    let db = common::pg_database("bench").await;
    let owner = carekeep_server::pg::connect(&db.owner_url).await.unwrap();
    let node = db
        .app_url
        .split_whitespace()
        .find_map(|p| p.strip_prefix("user="))
        .unwrap()
        .to_owned();
    owner
        .batch_execute(&format!("CREATE TABLE bench_rows (n bigint); GRANT INSERT ON bench_rows TO {node}"))
        .await
        .unwrap();
    let records = carekeep_server::pg::records::PgRecords::new(
        carekeep_server::pg::app_pool(&db.app_url, 1).await.unwrap(),
        &carekeep_server::keys::MasterKeys::derive(&[7; 32]),
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    );
    records.add_tenant("demo", "Demo").await.unwrap();
    db.app_url
}

/// Signs `username` in through `auth` at `now`; its access token.
async fn access_token(auth: &Auth, username: &str, password: &str, totp_base32: &str, now: i64) -> String {
    let login = LoginRequest { username: username.into(), password: Secret::new(password), device_cookie: None };
    let challenge = auth.login(login, LOOPBACK, now).await.unwrap();
    let code = Secret::new(totp_code(totp_base32, now));
    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code, device_name: "bench".into() };
    auth.verify_mfa(mfa, LOOPBACK, now)
        .await
        .unwrap()
        .access_token
        .expose()
        .to_owned()
}

/// The check every authenticated request makes of its access token — its device's standing,
/// its user, its tenant's idle limit — with the sign-in state shared by nodes on PostgreSQL
/// (a lookup of the token's tenant, then the row and its MACs, in one transaction), beside
/// the same check on the embedded store. The ratio is what sharing the state costs a
/// request. `IN_FLIGHT` checks at a time, on one node (a pool of 8 connections).
fn bench_token_check(c: &mut Criterion, f: &Fixture) {
    if std::env::var_os("CAREKEEP_TEST_POSTGRES").is_none() {
        eprintln!("token check on PostgreSQL: not measured (CAREKEEP_TEST_POSTGRES is not set)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A TOTP step after the read bench's sign-in and before the login bench's (each code
    // is accepted once, in order).
    let now = carekeep_server::now() + 1800;
    let keys = carekeep_server::keys::MasterKeys::derive(&[7; 32]);
    let (on_postgres, pg_token) = runtime.block_on(async {
        let url = postgres_database().await;
        let accounts = carekeep_server::auth::PgAccounts::connect(&url, 8, &keys).await.unwrap();
        let user = accounts
            .add_user("demo", "bench.user", Role::Clinician, "bench password 1234", now)
            .await
            .unwrap();
        let auth = Arc::new(Auth::new(accounts, AuthPolicy::default(), 2));
        let token = access_token(&auth, "bench.user", "bench password 1234", &user.totp_base32, now).await;
        (auth, token)
    });
    let embedded = Arc::new(Auth::new(Arc::new(f.data.open_store().unwrap()), AuthPolicy::default(), 2));
    let user = &f.clinician;
    let embedded_token =
        runtime.block_on(access_token(&embedded, &user.username, &user.password, &user.totp_base32, now));
    let batch: u64 = if is_real_run() { 4_000 } else { 64 };
    let checks = |auth: &Arc<Auth>, token: &str| {
        runtime.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let (auth, token) = (auth.clone(), token.to_owned());
                    tokio::spawn(async move {
                        for _ in 0..batch / IN_FLIGHT as u64 {
                            auth.authenticate(&token, now).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            start.elapsed()
        })
    };
    let mut group = c.benchmark_group("token check");
    group.throughput(Throughput::Elements(batch)).sample_size(10);
    group.bench_function("shared by nodes (PostgreSQL)", |b| {
        b.iter_custom(|iters| batches(iters, "token check", MEASURED, batch, || checks(&on_postgres, &pg_token)));
    });
    group.bench_function("baseline: embedded store (SQLCipher)", |b| {
        b.iter_custom(|iters| batches(iters, "token check", BASELINE, batch, || checks(&embedded, &embedded_token)));
    });
    group.finish();
}

fn bench_login(c: &mut Criterion, f: &Fixture) {
    let store = Arc::new(f.data.open_store().unwrap());
    let auth = Auth::new(store, AuthPolicy::default(), 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let user = &f.clinician;
    let phc = carekeep_server::auth::password::hash(&user.password).unwrap();
    // Each sign-in uses the next TOTP step, as a code is accepted once only.
    let mut now = carekeep_server::now() + 3600;

    let mut group = c.benchmark_group("login");
    group.sample_size(10);
    group.bench_function("password + TOTP to tokens", |b| {
        b.iter_custom(|iters| {
            batches(iters, "login", MEASURED, 1, || {
                now += 30;
                let start = Instant::now();
                runtime.block_on(async {
                    let login = LoginRequest {
                        username: user.username.clone(),
                        password: Secret::new(&user.password),
                        device_cookie: None,
                    };
                    let challenge = auth.login(login, LOOPBACK, now).await.unwrap();
                    let code = Secret::new(totp_code(&user.totp_base32, now));
                    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code, device_name: "bench".into() };
                    auth.verify_mfa(mfa, LOOPBACK, now).await.unwrap();
                });
                start.elapsed()
            })
        });
    });
    group.bench_function("baseline: Argon2id verification alone", |b| {
        b.iter_custom(|iters| {
            batches(iters, "login", BASELINE, 1, || {
                let start = Instant::now();
                assert!(carekeep_server::auth::password::verify(&user.password, Some(&phc)));
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// Median of per-operation time over batches, and the rate it means.
fn median_rate(samples: &[(u32, Duration)]) -> (Duration, f64) {
    let mut per_op: Vec<f64> = samples.iter().map(|(ops, d)| d.as_secs_f64() / f64::from(*ops)).collect();
    per_op.sort_by(f64::total_cmp);
    let median = per_op[per_op.len() / 2];
    (Duration::from_secs_f64(median), 1.0 / median)
}

/// The table: per workload, the measured figure beside its baseline, and the budget.
fn summary() -> String {
    let samples = SAMPLES.lock().unwrap();
    let mut out = String::from("| workload | measured | baseline | budget | verdict |\n|---|---|---|---|---|\n");
    for (workload, budget) in [
        ("fhir read", "≥ 5 000 req/s"),
        ("audit append", "—"),
        ("fhir read (PostgreSQL)", "—"),
        ("two nodes (PostgreSQL)", "—"),
        ("audit append (PostgreSQL)", "—"),
        ("token check", "—"),
        ("login", "—"),
    ] {
        let (Some(measured), Some(baseline)) = (samples.get(&(workload, MEASURED)), samples.get(&(workload, BASELINE)))
        else {
            continue;
        };
        let ((m_time, m_rate), (b_time, b_rate)) = (median_rate(measured), median_rate(baseline));
        let (measured, baseline, verdict) = match workload {
            "fhir read" => (
                format!("{m_rate:.0} req/s"),
                format!("{b_rate:.0} req/s"),
                if m_rate >= 5_000.0 { "within budget" } else { "OVER BUDGET" },
            ),
            "audit append" | "audit append (PostgreSQL)" => {
                (format!("{m_rate:.0} records/s"), format!("{b_rate:.0} transactions/s"), "reported")
            }
            "fhir read (PostgreSQL)" => {
                (format!("{m_rate:.0} req/s (PostgreSQL)"), format!("{b_rate:.0} req/s (SQLCipher)"), "reported")
            }
            "two nodes (PostgreSQL)" => {
                (format!("{m_rate:.0} req/s (two nodes)"), format!("{b_rate:.0} req/s (one node)"), "reported")
            }
            "token check" => {
                (format!("{m_rate:.0} checks/s (PostgreSQL)"), format!("{b_rate:.0} checks/s (SQLCipher)"), "reported")
            }
            _ => (format!("{m_time:.1?}"), format!("{b_time:.1?}"), "reported"),
        };
        writeln!(out, "| {workload} | {measured} | {baseline} | {budget} | {verdict} |").unwrap();
    }
    out
}

fn main() {
    let f = fixture();
    let mut c = Criterion::default().configure_from_args();
    bench_fhir_read(&mut c, &f);
    bench_fhir_read_postgres(&mut c, &f);
    bench_audit_append(&mut c, &f);
    bench_audit_append_postgres(&mut c);
    bench_token_check(&mut c, &f);
    bench_login(&mut c, &f);
    c.final_summary();
    if is_real_run() {
        let table = summary();
        println!("\nCarekeep server vs DESIGN.md §8 (each beside its baseline, same run)\n\n{table}");
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-server.md");
        let _ = std::fs::write(target, &table);
    }
}
