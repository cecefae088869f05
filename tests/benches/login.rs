//! The login round trip (issue 4): password then authenticator code, from the core's pinned
//! client to the real server over TLS on 127.0.0.1, to tokens. Baseline, in the same run: the
//! same two steps through the server's `Auth` in-process — no network, TLS or client — so
//! the difference is what the wire adds. Argon2id (64 MiB, t = 3) is most of both, by design.
//!
//! A code is accepted once, so every measured sign-in is a different user (made up front);
//! and the server allows 30 sign-in requests per address per minute, so the run is held to
//! ten samples of one sign-in each (plus one warm-up): 22 requests.
//! `cargo bench -p carekeep-e2e --bench login`; under `cargo test` it runs once, as a smoke test.
//! The medians are written to `target/bench-login.md` (for `docs/benchmarks.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_e2e::bench_table::{Timings, publish};
use carekeep_e2e::{PASSWORD, Running, TENANT, World, now_unix};
use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LoginRequest, MfaRequest, Role};
use criterion::{Criterion, SamplingMode};

/// Where the in-process sign-ins come from.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn code(base32: &str, at: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(base32).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret.as_bytes())
        .build()
        .unwrap()
        .generate(at)
        .to_string()
}

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let world = World::new(Role::Clinician);
    let store = world.data.open_store().unwrap();
    let users: Vec<(String, String)> = (0..if real { 16 } else { 3 })
        .map(|i| {
            let name = format!("bench-{i}");
            let user = carekeep_server::admin::add_user(&store, TENANT, &name, Role::Clinician, PASSWORD, 0).unwrap();
            (name, user.totp_base32)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(Running::start(&world.data));
    let server = running.client(world.pins());
    let auth = carekeep_server::auth::Auth::new(Arc::new(store), carekeep_server::auth::AuthPolicy::default(), 2);
    let mut fresh = users.iter().cycle();
    let mut step = now_unix() + 3600;

    let timings = Timings::default();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("login round trip");
    // Tiny times make criterion take the minimum: one iteration per sample.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    group.bench_function("core client → server over pinned TLS", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (name, totp) = fresh.next().unwrap();
                let start = Instant::now();
                runtime.block_on(async {
                    let challenge = server.login(name, PASSWORD, None).await.unwrap();
                    server.verify_code(challenge, &code(totp, now_unix()), "bench").await.unwrap();
                });
                total += timings.record(WIRE, start.elapsed());
            }
            total
        });
    });
    group.bench_function("baseline: the server's Auth in-process", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                step += 30;
                let (name, totp) = &users[0];
                let now = i64::try_from(step).unwrap();
                let start = Instant::now();
                runtime.block_on(async {
                    let login =
                        LoginRequest { username: name.clone(), password: Secret::new(PASSWORD), device_cookie: None };
                    let challenge = auth.login(login, LOOPBACK, now).await.unwrap();
                    let mfa = MfaRequest {
                        mfa_token: challenge.mfa_token,
                        code: Secret::new(code(totp, step)),
                        device_name: "bench".into(),
                    };
                    auth.verify_mfa(mfa, LOOPBACK, now).await.unwrap();
                });
                total += timings.record(IN_PROCESS, start.elapsed());
            }
            total
        });
    });
    group.finish();
    c.final_summary();
    drop(running);
    if real {
        let (wire, in_process) =
            (timings.median(WIRE).unwrap_or_default(), timings.median(IN_PROCESS).unwrap_or_default());
        let table = format!(
            "| workload | measured | baseline | ratio |\n|---|---|---|---|\n\
             | sign-in (password, then code) from the core's pinned client over TLS | {wire:.1?} | the server's `Auth` in-process: {in_process:.1?} | {:.2} |\n",
            wire.as_secs_f64() / in_process.as_secs_f64()
        );
        publish("login", "The login round trip beside the server's Auth in-process (same run)", &table);
    }
}

const WIRE: &str = "over the wire";
const IN_PROCESS: &str = "in-process";
