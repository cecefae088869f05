//! The PostgreSQL records store against a real PostgreSQL (`cargo xtask test` starts a
//! private one and names it in `CAREKEEP_TEST_POSTGRES`), as an attacker meets it: a query
//! that forgets the tenant sees no other tenant's row, the application role cannot switch
//! the policies off, a dump holds no name or note, a body moved to another row or tenant
//! does not open, two servers migrating at once apply each migration once, and servers
//! appending audit records at once keep one unbroken chain per tenant that the application
//! role can only append to; and two nodes sharing sign-in state through it: a revocation, a
//! replayed refresh token, a network's limit and a burst of guesses hold across both.

use std::sync::Arc;

#[path = "../common/mod.rs"]
mod common;
mod records;
mod serve;

use carekeep_protocol::audit::{AuditEvent, Outcome};
use ed25519_dalek::SigningKey;

use std::net::IpAddr;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LoginRequest, MfaRequest, RefreshRequest, Role, TokenResponse};
use carekeep_server::DataDir;
use carekeep_server::auth::{Auth, AuthError, AuthPolicy, PgAccounts};
use carekeep_server::keys::MasterKeys;
use carekeep_server::pg::{self, records::PgRecords, schema};
use serde_json::json;

const SENTINEL_NAME: &str = "Pgsentinelfamily";
const SENTINEL_NOTE: &str = "pg-sentinel-note-do-not-store";
const BIRTH_DATE: &str = "1937-04-29";

use common::{PgDatabase as Database, pg_superuser_url as superuser_url, pg_url_with as with};

async fn database() -> Database {
    common::pg_database("test").await
}

/// The node's records service over `db`, with the keys of `master`.
async fn records(db: &Database, master: &[u8; 32]) -> PgRecords {
    let pool = pg::app_pool(&db.app_url, 4).await.unwrap();
    PgRecords::new(pool, &MasterKeys::derive(master), SigningKey::from_bytes(&[5; 32]))
}

/// Stores `resource` as given (its id included), as an import does.
async fn put(store: &PgRecords, tenant: &str, resource: serde_json::Value) {
    let id = resource["id"].as_str().unwrap().to_owned();
    let checked = store
        .check(resource.clone(), resource["resourceType"].as_str().unwrap())
        .unwrap();
    store.import(tenant, vec![(checked, id)]).await.unwrap();
}

fn patient(id: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": SENTINEL_NAME, "given": ["Ada"]}],
           "birthDate": BIRTH_DATE, "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{SENTINEL_NOTE}</div>")}})
}

fn observation(id: &str, patient: &str) -> serde_json::Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": "2026-11-01T08:00:00Z",
           "note": [{"text": SENTINEL_NOTE}], "valueQuantity": {"value": 61, "unit": "/min"}})
}

/// Two tenants holding the same patient id, and an Observation in the first.
async fn two_tenants(db: &Database) -> PgRecords {
    let store = records(db, &[7; 32]).await;
    for tenant in ["clinic-a", "clinic-b"] {
        store.add_tenant(tenant, "A clinic").await.unwrap();
        put(&store, tenant, patient("p1")).await;
    }
    put(&store, "clinic-a", observation("o1", "p1")).await;
    store
}

#[tokio::test]
async fn a_query_without_the_tenant_filter_sees_only_its_tenant_and_the_app_cannot_lift_that() {
    let db = database().await;
    two_tenants(&db).await;
    let mut app = pg::connect(&db.app_url).await.unwrap();

    // No tenant set: nothing at all.
    for table in ["tenants", "resources", "resource_names"] {
        let n: i64 = app
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} shows rows with no tenant set");
    }
    // Tenant A set, and a query that forgets the filter, or asks for B by name.
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('carekeep.tenant', 'clinic-a', true)", &[])
        .await
        .unwrap();
    let rows = tx
        .query("SELECT tenant, type, id FROM resources ORDER BY type", &[])
        .await
        .unwrap();
    let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        seen,
        [("clinic-a".to_owned(), "Observation".to_owned()), ("clinic-a".to_owned(), "Patient".to_owned())]
    );
    let of_b: i64 = tx
        .query_one("SELECT count(*) FROM resources WHERE tenant = 'clinic-b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(of_b, 0);
    let keys: i64 = tx.query_one("SELECT count(*) FROM tenants", &[]).await.unwrap().get(0);
    assert_eq!(keys, 1, "only its own tenant's wrapped key");
    tx.rollback().await.unwrap();

    // Writing into B, or moving a row of A to B, while A is set: refused by the policy.
    for statement in [
        "INSERT INTO resources (tenant, type, id, version, last_updated, body) VALUES ('clinic-b', 'Patient', 'x', 1, 'now', '\\x00')",
        "UPDATE resources SET tenant = 'clinic-b' WHERE id = 'o1'",
    ] {
        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_config('carekeep.tenant', 'clinic-a', true)", &[])
            .await
            .unwrap();
        let refused = message(&tx.batch_execute(statement).await.unwrap_err());
        assert!(refused.contains("row-level security"), "{statement}: {refused}");
    }
    // The application role owns nothing: it cannot turn the policies off or around.
    for statement in [
        "ALTER TABLE resources DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE resources NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY one_tenant ON resources",
        "CREATE POLICY everything ON resources USING (true)",
        "ALTER TABLE resources OWNER TO CURRENT_USER",
    ] {
        let refused = message(&app.batch_execute(statement).await.unwrap_err());
        assert!(refused.contains("must be owner"), "{statement}: {refused}");
    }
    let refused = message(
        &app.batch_execute("SET row_security = off; SELECT * FROM resources")
            .await
            .unwrap_err(),
    );
    assert!(refused.contains("row-level security"), "{refused}");
    let _ = db.owner_url;
}

#[tokio::test]
async fn a_dump_holds_no_name_birth_date_or_note_and_moved_bodies_do_not_open() {
    let db = database().await;
    let store = two_tenants(&db).await;
    // Read back whole through the server's keys, and found by name through the blind index.
    let read = store.read("clinic-a", "Patient", "p1").await.unwrap().unwrap();
    let read: serde_json::Value = serde_json::from_str(&read.json).unwrap();
    assert_eq!(read["name"][0]["family"], SENTINEL_NAME);
    assert_eq!(store.patients_named("clinic-a", &SENTINEL_NAME.to_uppercase()).await.unwrap(), ["p1"]);
    assert_eq!(store.patients_named("clinic-a", "ada pgsentinelfamily").await.unwrap(), ["p1"]);
    assert!(store.patients_named("clinic-a", "Ada Lovelace").await.unwrap().is_empty());

    // pg_dump, as an administrator takes it for a backup (the owner is bound by the policies).
    let dump = std::process::Command::new(pg_bin("pg_dump"))
        .arg("--dbname")
        .arg(&db.superuser_url)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("clinic-a") && text.contains("CREATE POLICY"), "the dump is of the test database");
    for secret in [SENTINEL_NAME, &SENTINEL_NAME.to_lowercase(), SENTINEL_NOTE, BIRTH_DATE] {
        assert!(!text.contains(secret), "the dump holds {secret}");
    }

    // The owner (or a thief with write access) moves A's body onto B's row of the same id,
    // and onto A's Observation: neither opens.
    let owner = pg::connect(&db.superuser_url).await.unwrap();
    owner
        .batch_execute(
            "UPDATE resources SET body = (SELECT body FROM resources WHERE tenant = 'clinic-a' AND id = 'p1')
             WHERE tenant = 'clinic-b' AND id = 'p1';
             UPDATE resources SET body = (SELECT body FROM resources WHERE tenant = 'clinic-a' AND id = 'p1')
             WHERE tenant = 'clinic-a' AND id = 'o1';",
        )
        .await
        .unwrap();
    for (tenant, resource_type, id) in [("clinic-b", "Patient", "p1"), ("clinic-a", "Observation", "o1")] {
        let refused = store.read(tenant, resource_type, id).await.unwrap_err().to_string();
        assert!(refused.contains("altered or moved"), "{refused}");
        assert!(!refused.contains(SENTINEL_NAME));
    }
    // Another server's master key opens no tenant's data key.
    let stranger = records(&db, &[8; 32]).await;
    let refused = stranger.read("clinic-a", "Patient", "p1").await.unwrap_err().to_string();
    assert!(refused.contains("data key does not open"), "{refused}");
    let _ = db.name;
}

#[tokio::test]
async fn two_servers_migrating_at_once_apply_each_migration_once() {
    let db = database().await;
    let admin = pg::connect(&superuser_url()).await.unwrap();
    let fresh = format!("{}_fresh", db.name);
    admin.batch_execute(&format!("CREATE DATABASE {fresh}")).await.unwrap();
    let url = with(&superuser_url(), "dbname", &fresh);
    let (mut one, mut two) = (pg::connect(&url).await.unwrap(), pg::connect(&url).await.unwrap());
    let (a, b) = tokio::join!(schema::migrate(&mut one), schema::migrate(&mut two));
    let mut found = [a.unwrap(), b.unwrap()];
    found.sort_unstable();
    let version = i64::try_from(schema::VERSION).unwrap();
    assert_eq!(found, [0, version], "one applied the schema, the other found it applied");
    let versions: i64 = one.query_one("SELECT count(*) FROM schema_version", &[]).await.unwrap().get(0);
    assert_eq!(versions, version);
}

/// A read by a clinician of `tenant`, tagged with `tag` (which group it belongs to).
fn event(tenant: &str, tag: &str) -> AuditEvent {
    AuditEvent {
        recorded_at: "2026-11-30T10:00:00Z".into(),
        occurred_at: None,
        tenant: tenant.into(),
        user: Some("usr-1".into()),
        role: Some("clinician".into()),
        device: Some("dev-1".into()),
        ip: Some("127.0.0.1".into()),
        action: "GET /fhir/Observation/{id}".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some(tag.into()),
        patient: Some("p1".into()),
        outcome: Outcome::Success,
        break_glass: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_appending_at_once_keep_one_chain_per_tenant_that_the_app_cannot_change() {
    let db = database().await;
    two_tenants(&db).await;
    let key = Arc::new(SigningKey::from_bytes(&[5; 32]));
    // Two servers, four writers each (each its own connection), appending groups of two
    // records to both tenants' chains at once.
    let mut writers = Vec::new();
    for node in 0..2 {
        for writer in 0..4 {
            let (url, key) = (db.app_url.clone(), key.clone());
            writers.push(tokio::spawn(async move {
                let mut client = pg::connect(&url).await.unwrap();
                for i in 0..25 {
                    let tenant = if i % 5 == 0 { "clinic-b" } else { "clinic-a" };
                    let tag = format!("n{node}-w{writer}-{i}");
                    let group = vec![event(tenant, &tag), event(tenant, &tag)];
                    pg::audit::append(&mut client, &key, tenant, group).await.unwrap();
                }
            }));
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut app = pg::connect(&db.app_url).await.unwrap();
    let a = pg::audit::verify(&mut app, &key.verifying_key(), "clinic-a").await.unwrap();
    let b = pg::audit::verify(&mut app, &key.verifying_key(), "clinic-b").await.unwrap();
    assert_eq!((a.len(), b.len()), (320, 80), "every record, each tenant its own sequence from 0");
    for pair in a.chunks(2).chain(b.chunks(2)) {
        assert_eq!(pair[0].event.resource_id, pair[1].event.resource_id, "a group's records are adjacent");
    }
    // Another tenant's event never joins a chain.
    let refused = pg::audit::append(&mut app, &key, "clinic-a", vec![event("clinic-b", "x")])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("another tenant"));

    // The application can append, never change or remove.
    for statement in [
        "UPDATE audit_log SET record = '{}'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET checkpoint = '{}'",
    ] {
        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_config('carekeep.tenant', 'clinic-a', true)", &[])
            .await
            .unwrap();
        let refused = message(&tx.batch_execute(statement).await.unwrap_err());
        assert!(refused.contains("permission denied"), "{statement}: {refused}");
    }
    // The owner (or a thief with the database) edits one record: verify names it.
    let owner = pg::connect(&db.superuser_url).await.unwrap();
    owner
        .batch_execute(
            r#"UPDATE audit_log SET record = replace(record, '"outcome":"success"', '"outcome":"denied"')
               WHERE tenant = 'clinic-a' AND seq = 150"#,
        )
        .await
        .unwrap();
    let broken = pg::audit::verify(&mut app, &key.verifying_key(), "clinic-a")
        .await
        .unwrap_err()
        .to_string();
    assert!(broken.contains("#150"), "{broken}");
    pg::audit::verify(&mut app, &key.verifying_key(), "clinic-b").await.unwrap();
}

// Accounts and sessions shared by stateless nodes: two `Auth` services, each with its own
// pool, on one database, as two `serve` processes would be.

const T0: i64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";
/// A username and a device name that must never show in a dump.
const AMY: &str = "amy.pg-sentinel-51e0";
const DEVICE: &str = "Amy-sentinel-phone";

/// Two nodes of one deployment on `db`, sharing the master key, and Amy's TOTP secret.
async fn two_nodes(db: &Database) -> (Arc<Auth>, Arc<Auth>, Vec<u8>) {
    let master = [7; 32];
    let keys = MasterKeys::derive(&master);
    records(db, &master).await.add_tenant("clinic-a", "Clinic A").await.unwrap();
    let node = || async { PgAccounts::connect(&db.app_url, 4, &keys).await.unwrap() };
    let (a, b) = (node().await, node().await);
    let amy = a.add_user("clinic-a", AMY, Role::Patient, PASSWORD, T0 - 3600).await.unwrap();
    let secret = totp_rs::Secret::try_from_base32(&amy.totp_base32).unwrap().as_bytes().to_vec();
    // No `with_keys`: PostgreSQL accounts bring the keys every node must share.
    let auth = |accounts| Arc::new(Auth::new(accounts, AuthPolicy::default(), 2));
    (auth(a), auth(b), secret)
}

fn code(secret: &[u8], time: i64) -> Secret {
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    Secret::new(totp.generate(u64::try_from(time).unwrap()).to_string())
}

fn login(user: &str, password: &str) -> LoginRequest {
    LoginRequest { username: user.into(), password: Secret::new(password), device_cookie: None }
}

const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

/// Password through `first`, code through `second`: a sign-in whose steps land on two nodes.
async fn sign_in(first: &Auth, second: &Auth, secret: &[u8], now: i64) -> TokenResponse {
    let challenge = first.login(login(AMY, PASSWORD), HOME, now).await.unwrap();
    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code: code(secret, now), device_name: DEVICE.into() };
    second.verify_mfa(mfa, HOME, now).await.unwrap()
}

fn refresh(tokens: &TokenResponse) -> RefreshRequest {
    RefreshRequest {
        refresh_token: tokens.refresh_token.clone(),
        device_id: tokens.device_id.clone(),
        rotation_id: None,
    }
}

#[tokio::test]
async fn a_device_revoked_through_one_node_is_refused_at_the_other_and_a_replayed_token_ends_it() {
    let db = database().await;
    let (a, b, secret) = two_nodes(&db).await;
    let phone = sign_in(&a, &b, &secret, T0).await;
    let laptop = sign_in(&b, &a, &secret, T0 + 30).await;
    let at_b = b.authenticate(phone.access_token.expose(), T0 + 40).await.unwrap();
    assert_eq!((at_b.tenant.as_str(), at_b.role), ("clinic-a", Role::Patient));

    // Another tenant's account beside Amy's: with clinic-a set, the nodes' role sees only its own.
    let keys = MasterKeys::derive(&[7; 32]);
    records(&db, &[7; 32]).await.add_tenant("clinic-b", "Clinic B").await.unwrap();
    let other = PgAccounts::connect(&db.app_url, 1, &keys).await.unwrap();
    other
        .add_user("clinic-b", "bob.other-tenant", Role::Clinician, PASSWORD, T0)
        .await
        .unwrap();
    let mut app = pg::connect(&db.app_url).await.unwrap();
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('carekeep.tenant', 'clinic-a', true)", &[])
        .await
        .unwrap();
    let tenants: Vec<String> = tx
        .query("SELECT DISTINCT tenant FROM users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, ["clinic-a"]);
    drop(tx);

    // One refresh token sent to both nodes at the same instant: one rotation, and since two
    // holders showed, the device ends.
    let twice = sign_in(&a, &b, &secret, T0 + 95).await;
    let (one, two) = tokio::join!(a.refresh(refresh(&twice), T0 + 96), b.refresh(refresh(&twice), T0 + 96));
    assert_eq!([one.is_ok(), two.is_ok()].iter().filter(|ok| **ok).count(), 1, "{one:?} {two:?}");
    assert!([&one, &two].iter().any(|r| matches!(r, Err(AuthError::SessionEnded))));

    // A refresh token rotated at A and replayed at B: someone holds a copy, the device ends.
    let rotated = a.refresh(refresh(&phone), T0 + 60).await.unwrap();
    assert_eq!(b.refresh(refresh(&phone), T0 + 61).await.unwrap_err(), AuthError::SessionEnded);
    assert_eq!(a.refresh(refresh(&rotated), T0 + 62).await.unwrap_err(), AuthError::SessionEnded);

    // The laptop's owner revokes it (with a wipe) through A; B refuses it at once.
    let caller = a.authenticate(laptop.access_token.expose(), T0 + 70).await.unwrap();
    assert!(a.revoke(&caller, &laptop.device_id, true).await.unwrap());
    assert_eq!(b.authenticate(laptop.access_token.expose(), T0 + 71).await.unwrap_err(), AuthError::DeviceWipe);
    assert_eq!(b.refresh(refresh(&laptop), T0 + 72).await.unwrap_err(), AuthError::DeviceWipe);
    let listed = b.devices(&caller).await.unwrap();
    assert_eq!(listed.len(), 3, "the phone, the one whose token was sent twice, the laptop");
    assert!(listed.iter().all(|d| d.name == DEVICE && d.revoked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_sign_ins_spread_over_both_nodes_trip_the_one_network_limit() {
    let db = database().await;
    let (a, b, _) = two_nodes(&db).await;
    let limit = AuthPolicy::default().throttle.per_network_per_minute;
    assert_eq!(limit, 30);
    // Forty wrong passwords from one network at once, half through each node, each for
    // another name (so no account budget makes any wait): thirty are checked, ten refused.
    let attempts = (0..40).map(|i| {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let from: IpAddr = format!("198.51.100.{}", i + 1).parse().unwrap();
        tokio::spawn(async move { node.login(login(&format!("guess-{i}"), "wrong password!"), from, T0 + 1).await })
    });
    let answers = futures_join(attempts).await;
    let checked = answers.iter().filter(|a| matches!(a, Err(AuthError::BadCredentials))).count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(AuthError::RateLimited { .. })))
        .count();
    assert_eq!((checked, refused), (30, 10), "{answers:?}");
    // Another attempt, at either node, is over the network's one limit.
    for node in [&a, &b] {
        let refused = node
            .login(login(AMY, PASSWORD), "198.51.100.200".parse().unwrap(), T0 + 2)
            .await;
        assert_eq!(refused.unwrap_err(), AuthError::RateLimited { retry_after_secs: 58 });
    }
    // Someone with the nodes' database credential wipes the shared windows: each node's own
    // window still holds. Node A saw 21 of the minute's attempts; 9 more pass it, no more.
    let insider = pg::connect(&db.app_url).await.unwrap();
    insider
        .batch_execute("DELETE FROM sign_in_windows; DELETE FROM sign_in_failures")
        .await
        .unwrap();
    let mut at_a = Vec::new();
    for i in 0..15 {
        let from: IpAddr = format!("198.51.100.{}", 100 + i).parse().unwrap();
        at_a.push(a.login(login(&format!("again-{i}"), "wrong password!"), from, T0 + 2).await);
    }
    let checked = at_a.iter().filter(|a| matches!(a, Err(AuthError::BadCredentials))).count();
    assert_eq!(checked, 9, "{at_a:?}");
    // Another network is not held back, and the next minute starts afresh.
    a.login(login(AMY, PASSWORD), "203.0.113.9".parse().unwrap(), T0 + 3)
        .await
        .unwrap();
    b.login(login(AMY, PASSWORD), "198.51.100.200".parse().unwrap(), T0 + 61)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_both_nodes_is_checked_one_by_one_and_one_code_signs_in_once() {
    let db = database().await;
    let (a, b, secret) = two_nodes(&db).await;
    let stranger: IpAddr = "198.51.100.77".parse().unwrap();
    let challenge = a.login(login(AMY, PASSWORD), stranger, T0).await.unwrap();
    let token = challenge.mfa_token.expose().to_owned();
    let guesses = (0..20).map(|i| {
        let (node, token) = (if i % 2 == 0 { a.clone() } else { b.clone() }, token.clone());
        tokio::spawn(async move {
            let guess = MfaRequest {
                mfa_token: Secret::new(token),
                code: Secret::new(format!("{:06}", 100_000 + i)),
                device_name: "x".into(),
            };
            node.verify_mfa(guess, stranger, T0 + 1).await
        })
    });
    let answers = futures_join(guesses).await;
    let checked = answers.iter().filter(|a| matches!(a, Err(AuthError::BadCode))).count();
    assert!((1..=5).contains(&checked), "{checked} wrong codes checked: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(AuthError::BadCode | AuthError::Throttled { .. })))
    );

    // One code sent to both nodes at the same instant, on two challenges with budgets of
    // their own (one from a device Amy signed in from before): one device.
    let cookie = sign_in(&a, &b, &secret, T0 + 90).await.device_cookie.unwrap();
    let now = T0 + 120;
    let known = LoginRequest { device_cookie: Some(cookie), ..login(AMY, PASSWORD) };
    let (first, second) =
        (a.login(login(AMY, PASSWORD), HOME, now).await.unwrap(), b.login(known, HOME, now).await.unwrap());
    let send = |node: Arc<Auth>, challenge: carekeep_protocol::auth::LoginResponse| {
        let code = code(&secret, now);
        tokio::spawn(async move {
            let mfa = MfaRequest { mfa_token: challenge.mfa_token, code, device_name: "x".into() };
            node.verify_mfa(mfa, HOME, now).await
        })
    };
    let (one, two) = tokio::join!(send(a.clone(), first), send(b.clone(), second));
    let results = [one.unwrap(), two.unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().any(|r| matches!(r, Err(AuthError::CodeAlreadyUsed))));
}

#[tokio::test]
async fn accounts_are_opaque_in_a_dump_and_invisible_without_their_tenant() {
    let db = database().await;
    let (a, b, secret) = two_nodes(&db).await;
    let tokens = sign_in(&a, &b, &secret, T0).await;
    let dump = std::process::Command::new(pg_bin("pg_dump"))
        .arg("--dbname")
        .arg(&db.superuser_url)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains(&tokens.device_id) && text.contains(&tokens.user_id), "the dump holds the accounts");
    for secret in [AMY, DEVICE, "$argon2id$", tokens.access_token.expose(), tokens.refresh_token.expose()] {
        assert!(!text.contains(secret), "the dump holds {secret}");
    }
    let base32 = totp_rs::Secret::from(secret.clone()).to_base32();
    let hex: String = secret.iter().fold(String::new(), |hex, b| hex + &format!("{b:02x}"));
    assert!(!text.contains(&base32) && !text.contains(&hex), "the dump holds the TOTP secret");

    let app = pg::connect(&db.app_url).await.unwrap();
    for table in ["users", "devices", "access_tokens", "refresh_tokens", "mfa_challenges", "idle_limits"] {
        let n: i64 = app
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} shows rows with no tenant set");
    }
    // The lookup functions name a tenant for one exact key and nothing else.
    let none: Option<String> = app
        .query_one("SELECT tenant_of_access_token($1)", &[&b"not a token hash".as_slice()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    // The owner (not a superuser) is bound too, and did not stay in the lookup role.
    let owner = pg::connect(&db.owner_url).await.unwrap();
    let seen: i64 = owner.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
    assert_eq!(seen, 0, "the owner reads accounts without a tenant set");
    let member: bool = owner
        .query_one("SELECT pg_has_role(current_user, 'carekeep_lookup', 'MEMBER')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!member, "the owner kept the lookup role's policies");
    // A node refuses to run as a role the policies do not bind: the owner, a member of the
    // owner's role, or a role outside carekeep_app.
    let refused = pg::app_pool(&db.owner_url, 1).await.unwrap_err().to_string();
    assert!(refused.contains("must not be a superuser"), "{refused}");
    let admin = pg::connect(&superuser_url()).await.unwrap();
    let owner_role = db.owner_url.split_whitespace().find_map(|p| p.strip_prefix("user=")).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {0}_deputy LOGIN IN ROLE {owner_role}, carekeep_app; CREATE ROLE {0}_stranger LOGIN",
            db.name
        ))
        .await
        .unwrap();
    let refused = pg::app_pool(&with(&db.app_url, "user", &format!("{}_deputy", db.name)), 1)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("or belong to a role that does"), "{refused}");
    let refused = pg::app_pool(&with(&db.app_url, "user", &format!("{}_stranger", db.name)), 1)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not a member of carekeep_app"), "{refused}");
    // Another data directory's master key: its rows would open on no other node.
    let refused = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[9; 32]))
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("master key is not the one"), "{refused}");
    // A schema newer than this server's: refused until the server is upgraded.
    let superuser = pg::connect(&db.superuser_url).await.unwrap();
    superuser.batch_execute("INSERT INTO schema_version VALUES (99)").await.unwrap();
    let refused = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("newer than this server's"), "{refused}");
    superuser
        .batch_execute("DELETE FROM schema_version WHERE version = 99")
        .await
        .unwrap();
    PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .unwrap();

    // A sealed field moved into another column does not open: the node refuses without
    // saying whose or what.
    let owner = pg::connect(&db.superuser_url).await.unwrap();
    owner
        .batch_execute("SET session_replication_role = replica; UPDATE users SET username_sealed = totp_secret")
        .await
        .unwrap();
    let challenge = a.login(login(AMY, PASSWORD), HOME, T0 + 60).await.unwrap();
    let mfa = MfaRequest { mfa_token: challenge.mfa_token, code: code(&secret, T0 + 60), device_name: "x".into() };
    assert_eq!(b.verify_mfa(mfa, HOME, T0 + 60).await.unwrap_err(), AuthError::Internal);
}

/// What someone holding the nodes' database credential (but not the master key) can do
/// by editing account rows in a session of their own: nothing that grants anything.
#[tokio::test]
async fn the_nodes_database_credential_grants_nothing_by_editing_account_rows() {
    let db = database().await;
    let (a, b, secret) = two_nodes(&db).await;
    let accounts = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .unwrap();
    accounts
        .add_user("clinic-a", "dr.victim", Role::Clinician, PASSWORD, T0)
        .await
        .unwrap();
    let amy = sign_in(&a, &b, &secret, T0).await;
    let token = amy.access_token.expose();
    let insider = pg::connect(&db.app_url).await.unwrap();
    let edit = |sql: &str| format!("BEGIN; SELECT set_config('carekeep.tenant', 'clinic-a', true); {sql}; COMMIT;");
    let run = |sql: String| {
        let insider = &insider;
        async move {
            let refused = insider.batch_execute(&sql).await.err().map(|e| message(&e));
            if refused.is_some() {
                insider.batch_execute("ROLLBACK").await.unwrap();
            }
            refused.map_or(Ok(()), Err)
        }
    };

    // The insider's role may not rebind a row: a role, a device's user, a token's expiry.
    for (sql, why) in [
        ("UPDATE users SET role = 'admin' WHERE role = 'patient'", "cannot change"),
        ("UPDATE devices SET user_id = (SELECT id FROM users WHERE role = 'clinician')", "cannot change"),
        ("UPDATE access_tokens SET expires_at = expires_at + 86400", "permission denied"),
    ] {
        let refused = run(edit(sql)).await.unwrap_err();
        assert!(refused.contains(why), "{sql}: {refused}");
    }
    // A thief with the whole database (a superuser, triggers off) but not the master key
    // makes the same edits: each is refused where it is used, by the rows' MACs.
    let thief = pg::connect(&db.superuser_url).await.unwrap();
    thief.batch_execute("SET session_replication_role = replica").await.unwrap();
    // Amy's role raised to admin, her device handed to the clinician, her token's expiry
    // pushed a day out: each refused at either node, and her session back once undone.
    for (n, (tamper, undo)) in (0_i64..).zip([
        (
            "UPDATE users SET role = 'admin' WHERE role = 'patient'",
            "UPDATE users SET role = 'patient' WHERE role = 'admin'",
        ),
        (
            "UPDATE devices SET user_id = (SELECT id FROM users WHERE role = 'clinician')",
            "UPDATE devices SET user_id = (SELECT id FROM users WHERE role = 'patient')",
        ),
        (
            "UPDATE access_tokens SET expires_at = expires_at + 86400",
            "UPDATE access_tokens SET expires_at = expires_at - 86400",
        ),
    ]) {
        let node = if n % 2 == 0 { &a } else { &b };
        thief.batch_execute(tamper).await.unwrap();
        assert_eq!(node.authenticate(token, T0 + 1 + 2 * n).await.unwrap_err(), AuthError::Internal, "{tamper}");
        thief.batch_execute(undo).await.unwrap();
        assert_eq!(node.authenticate(token, T0 + 2 + 2 * n).await.unwrap().role, Role::Patient, "{undo}");
    }
    // A token row of the insider's own making, for her device: it matches no token.
    let forged = carekeep_server::auth::secrets::token_hash("insider-made-token");
    let hex: String = forged.iter().fold(String::new(), |hex, b| hex + &format!("{b:02x}"));
    run(edit(&format!(
        "INSERT INTO access_tokens (token_hash, tenant, device_id, expires_at, last_used, mac)
         VALUES ('\\x{hex}', 'clinic-a', '{}', {}, 0, '\\x00')",
        amy.device_id,
        T0 + 86_400
    )))
    .await
    .unwrap();
    assert_eq!(a.authenticate("insider-made-token", T0 + 6).await.unwrap_err(), AuthError::SessionEnded);
    // Step-up claimed by moving the last full sign-in forward, a used code's step taken
    // back, a device's id moved away to free it, a row deleted to be put back unrevoked:
    // refused by the schema itself.
    for (sql, why) in [
        ("UPDATE devices SET full_auth_at = full_auth_at + 3600", "cannot change"),
        ("UPDATE users SET totp_last_step = -1", "cannot be undone"),
        ("UPDATE devices SET id = id || '-moved'", "cannot change"),
        ("DELETE FROM devices", "permission denied"),
        ("DELETE FROM users", "permission denied"),
        ("DELETE FROM refresh_tokens", "permission denied"),
        ("UPDATE access_tokens SET last_used = 0", "permission denied"),
    ] {
        let refused = run(edit(sql)).await.unwrap_err();
        assert!(refused.contains(why), "{sql}: {refused}");
    }
    // What only goes one way stays: a spent refresh token, a revoked device.
    a.refresh(refresh(&amy), T0 + 7).await.unwrap();
    let refused = run(edit("UPDATE refresh_tokens SET used = false")).await.unwrap_err();
    assert!(refused.contains("cannot be undone"), "{refused}");
    let caller = a.authenticate(token, T0 + 8).await.unwrap();
    assert!(a.revoke(&caller, &amy.device_id, false).await.unwrap());
    let refused = run(edit("UPDATE devices SET revoked = false, revoked_by_person = false"))
        .await
        .unwrap_err();
    assert!(refused.contains("cannot be undone"), "{refused}");
    assert_eq!(b.authenticate(token, T0 + 9).await.unwrap_err(), AuthError::DeviceRevoked);
}

#[tokio::test]
async fn a_tenant_idle_limit_and_a_disabled_account_hold_on_every_node() {
    let db = database().await;
    let (a, b, secret) = two_nodes(&db).await;
    let tokens = sign_in(&a, &b, &secret, T0).await;
    let admin = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .unwrap();
    admin.set_idle_limit("clinic-a", Role::Patient, 5).await.unwrap();
    // Five minutes and a second unused: signed out at either node.
    let late = T0 + 5 * 60 + 1;
    assert_eq!(b.authenticate(tokens.access_token.expose(), late).await.unwrap_err(), AuthError::SessionEnded);
    assert_eq!(a.refresh(refresh(&tokens), late).await.unwrap_err(), AuthError::SessionEnded);

    let again = sign_in(&b, &a, &secret, T0 + 600).await;
    admin.disable_user(AMY).await.unwrap();
    assert_eq!(a.authenticate(again.access_token.expose(), T0 + 601).await.unwrap_err(), AuthError::DeviceRevoked);
    assert_eq!(b.login(login(AMY, PASSWORD), HOME, T0 + 602).await.unwrap_err(), AuthError::BadCredentials);
    let refused = admin.disable_user("nobody").await.unwrap_err().to_string();
    assert!(refused.contains("no user named nobody"), "{refused}");
}

#[tokio::test]
async fn a_node_without_its_database_says_so_and_a_lost_database_is_a_retry_not_an_error() {
    let db = database().await;
    let (a, _, secret) = two_nodes(&db).await;
    let tokens = sign_in(&a, &a, &secret, T0).await;
    // Nothing listens on this socket directory: the pool says so at once.
    let nowhere = with(&db.app_url, "host", "/nonexistent-carekeep-socket-dir");
    let refused = pg::app_pool(&nowhere, 2).await.unwrap_err().to_string();
    assert!(refused.contains("cannot reach PostgreSQL"), "{refused}");
    // The database goes away under a running node: its requests are told to retry.
    let admin = pg::connect(&superuser_url()).await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name
        ))
        .await
        .unwrap();
    assert_eq!(a.authenticate(tokens.access_token.expose(), T0 + 1).await.unwrap_err(), AuthError::Unavailable);
    admin
        .batch_execute(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", db.name))
        .await
        .unwrap();
    a.authenticate(tokens.access_token.expose(), T0 + 2).await.unwrap();
}

/// Runs the server's command line with `stdin`; returns (succeeded, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(args)
        .env_remove("CAREKEEP_DATABASE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The TOTP secret a command printed.
fn printed_secret(stdout: &str) -> Vec<u8> {
    let base32 = stdout.lines().find_map(|l| l.strip_prefix("totp_secret: ")).unwrap();
    totp_rs::Secret::try_from_base32(base32).unwrap().as_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_commands_take_a_database_and_a_node_signs_in_whom_they_made() {
    let db = database().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let data = data.to_str().unwrap();

    // Pointed at nothing, init says so, fails, and leaves no data directory behind; the
    // connection string's password is never echoed.
    let nowhere = with(&with(&db.owner_url, "host", "/nonexistent-carekeep-socket-dir"), "password", "pw-SENTINEL-3f1");
    let (ok, _, err) = cli(&["init", "--data", data], &[("CAREKEEP_OWNER_DATABASE", nowhere.as_str())], "");
    assert!(!ok && err.contains("cannot reach PostgreSQL") && !err.contains("SENTINEL"), "{err}");
    assert!(!std::path::Path::new(data).exists());
    let (ok, _, err) = cli(&["migrate", "--database", &db.owner_url], &[], "");
    assert!(ok && err.contains(&format!("found {}", schema::VERSION)), "{err}");
    let (ok, _, err) = cli(&["migrate"], &[], "");
    assert!(!ok && err.contains("CAREKEEP_OWNER_DATABASE"), "{err}");
    // The schema (already there: found at its version), then the keys.
    let (ok, _, err) = cli(&["init", "--data", data, "--database", &db.owner_url], &[], "");
    assert!(ok && err.contains(&format!("found {}", schema::VERSION)), "{err}");

    // The rest as the servers' role, the connection string from the environment.
    let app = [("CAREKEEP_DATABASE", db.app_url.as_str())];
    let (ok, _, err) = cli(&["tenant", "add", "--data", data, "--id", "clinic-x", "--name", "Clinic X"], &app, "");
    assert!(ok, "{err}");
    let add = ["user", "add", "--data", data, "--tenant", "clinic-x", "--username", AMY, "--role", "patient"];
    let (ok, out, err) = cli(&add, &app, &format!("{PASSWORD}\n"));
    assert!(ok, "{err}");
    let first = printed_secret(&out);
    let (ok, _, err) = cli(
        &["tenant", "idle", "--data", data, "--tenant", "clinic-x", "--role", "patient", "--minutes", "0"],
        &app,
        "",
    );
    assert!(!ok && err.contains("an idle limit is 1 to 720 minutes"), "{err}");
    let unreachable = [("CAREKEEP_DATABASE", nowhere.as_str())];
    let (ok, _, err) = cli(&["tenant", "add", "--data", data, "--id", "c-2", "--name", "Two"], &unreachable, "");
    assert!(!ok && err.contains("cannot reach PostgreSQL") && !err.contains("SENTINEL"), "{err}");

    // A node with the same data directory's keys signs Amy in.
    let keys = DataDir::open(std::path::Path::new(data)).unwrap().master_keys().unwrap();
    let node = Auth::new(PgAccounts::connect(&db.app_url, 2, &keys).await.unwrap(), AuthPolicy::default(), 2);
    let tokens = sign_in(&node, &node, &first, T0).await;

    // A lost authenticator: a new secret, the old one's codes refused, the device signed out.
    let (ok, out, err) = cli(&["user", "reset-mfa", "--data", data, "--username", AMY], &app, "");
    assert!(ok, "{err}");
    let second = printed_secret(&out);
    assert_ne!(first, second);
    assert_eq!(node.authenticate(tokens.access_token.expose(), T0 + 1).await.unwrap_err(), AuthError::SessionEnded);
    let challenge = node.login(login(AMY, PASSWORD), HOME, T0 + 60).await.unwrap();
    let old = MfaRequest { mfa_token: challenge.mfa_token, code: code(&first, T0 + 60), device_name: "x".into() };
    assert_eq!(node.verify_mfa(old, HOME, T0 + 60).await.unwrap_err(), AuthError::BadCode);
    let again = sign_in(&node, &node, &second, T0 + 120).await;

    let (ok, _, err) = cli(&["user", "disable", "--data", data, "--username", AMY], &app, "");
    assert!(ok, "{err}");
    assert_eq!(node.authenticate(again.access_token.expose(), T0 + 121).await.unwrap_err(), AuthError::DeviceRevoked);
    let (ok, _, err) = cli(&["user", "disable", "--data", data, "--username", "nobody"], &app, "");
    assert!(!ok && err.contains("no user named nobody"), "{err}");
}

/// `url` without `key` (libpq's key=value form).
fn without(url: &str, key: &str) -> String {
    url.split_whitespace()
        .filter(|p| !p.starts_with(&format!("{key}=")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn over_a_network_the_database_is_reached_over_tls_with_its_certificate_checked() {
    let url = std::env::var("CAREKEEP_TEST_POSTGRES_TLS")
        .expect("CAREKEEP_TEST_POSTGRES_TLS is not set: run this through `cargo xtask test`");
    // Checked against the run's own CA: it connects, and the session is encrypted.
    let client = pg::connect(&url).await.unwrap();
    let encrypted: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);
    pg::pool(&url, 1).await.unwrap();
    // The same server checked against the system's roots, which do not hold that CA.
    let refused = pg::connect(&without(&url, "sslrootcert")).await.unwrap_err().to_string();
    assert!(refused.contains("cannot reach PostgreSQL") && refused.contains("UnknownIssuer"), "{refused}");
    // The right CA, but a name the certificate does not hold: refused.
    let elsewhere = format!("{} host=db.carekeep.invalid hostaddr=127.0.0.1", without(&url, "host"));
    let refused = pg::connect(&elsewhere).await.unwrap_err().to_string();
    assert!(refused.contains("not valid for name"), "{refused}");
    // Plain TCP to it: the client allows it on loopback only when asked, the server refuses.
    let plain = with(&without(&url, "sslrootcert"), "sslmode", "disable");
    let refused = pg::connect(&plain).await.unwrap_err().to_string();
    assert!(refused.contains("no encryption") || refused.contains("pg_hba.conf"), "{refused}");
    assert!(!refused.contains("password="), "the connection string is not echoed: {refused}");
    // Over a real network, unencrypted or unverified is refused before anything is sent.
    for url in ["host=db.example.org user=carekeep", "postgres://carekeep@db.example.org/carekeep?sslmode=prefer"] {
        let refused = pg::Connection::parse(url).err().unwrap().to_string();
        assert!(refused.contains("must be encrypted"), "{refused}");
    }
    assert!(pg::Connection::parse("postgres://carekeep@db.example.org/carekeep?sslmode=verify-full").is_ok());
    // A name that says loopback while the address goes elsewhere is over the network.
    let refused = pg::Connection::parse("host=localhost hostaddr=192.0.2.7 sslmode=disable")
        .err()
        .unwrap();
    assert!(refused.to_string().contains("must be encrypted"), "{refused}");
    let refused = pg::Connection::parse("host=db.example.org sslmode=verify-full sslrootcert=/etc/hostname")
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("holds no certificate"), "{refused}");
}

/// Awaits every spawned task, in order.
async fn futures_join<T: std::fmt::Debug>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut answers = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        answers.push(task.await.unwrap());
    }
    answers
}

/// What the server said.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// A PostgreSQL program (Debian keeps them outside PATH).
fn pg_bin(program: &str) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin").join(program))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap()
}
