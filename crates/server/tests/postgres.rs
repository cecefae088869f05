//! The PostgreSQL records store against a real PostgreSQL (`cargo xtask test` starts a
//! private one and names it in `CAREKEEP_TEST_POSTGRES`), as an attacker meets it: a query
//! that forgets the tenant sees no other tenant's row, the application role cannot switch
//! the policies off, a dump holds no name or note, a body moved to another row or tenant
//! does not open, two servers migrating at once apply each migration once, and servers
//! appending audit records at once keep one unbroken chain per tenant that the application
//! role can only append to.

use std::sync::Arc;

mod common;

use carekeep_protocol::audit::{AuditEvent, Outcome};
use ed25519_dalek::SigningKey;

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

async fn records(db: &Database, master: &[u8; 32]) -> PgRecords {
    PgRecords::new(pg::connect(&db.app_url).await.unwrap(), &MasterKeys::derive(master))
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
    let mut store = records(db, &[7; 32]).await;
    for tenant in ["clinic-a", "clinic-b"] {
        store.add_tenant(tenant).await.unwrap();
        store.put(tenant, &patient("p1")).await.unwrap();
    }
    store.put("clinic-a", &observation("o1", "p1")).await.unwrap();
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
    let mut store = two_tenants(&db).await;
    // Read back whole through the server's keys, and found by name through the blind index.
    let read = store.get("clinic-a", "Patient", "p1").await.unwrap().unwrap();
    assert_eq!(read["name"][0]["family"], SENTINEL_NAME);
    assert_eq!(store.patients_named("clinic-a", &SENTINEL_NAME.to_uppercase()).await.unwrap(), ["p1"]);
    assert_eq!(store.patients_named("clinic-a", "ada pgsentinelfamily").await.unwrap(), ["p1"]);
    assert!(store.patients_named("clinic-a", "Ada Lovelace").await.unwrap().is_empty());

    // pg_dump, as the database's owner would take it for a backup.
    let dump = std::process::Command::new(pg_bin("pg_dump"))
        .arg("--dbname")
        .arg(&db.owner_url)
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
    let owner = pg::connect(&db.owner_url).await.unwrap();
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
        let refused = store.get(tenant, resource_type, id).await.unwrap_err().to_string();
        assert!(refused.contains("altered or moved"), "{refused}");
        assert!(!refused.contains(SENTINEL_NAME));
    }
    // Another server's master key opens no tenant's data key.
    let mut stranger = records(&db, &[8; 32]).await;
    let refused = stranger.get("clinic-a", "Patient", "p1").await.unwrap_err().to_string();
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
    let owner = pg::connect(&db.owner_url).await.unwrap();
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
