//! Migrations that change what existing rows mean, run on a store from before them.

use carekeep_server::DataDir;

/// Migration 12 gives each stored document the DocumentReference that links it and removes
/// the bytes no reference links any more (left behind by deletions before the fix).
#[test]
fn documents_find_their_reference_and_orphans_go() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    {
        let store = data.open_store().unwrap();
        let conn = store.lock();
        conn.execute_batch(
            "INSERT INTO tenants (id, name, created_at) VALUES ('t', 'T', 0);
             INSERT INTO resources (tenant, type, id, version, last_updated, patient, json)
             VALUES ('t', 'DocumentReference', 'ref-1', 1, '2026', 'p',
                     '{\"resourceType\":\"DocumentReference\",\"content\":[{\"attachment\":{\"url\":\"/documents/doc-kept\"}}]}');
             INSERT INTO documents (tenant, id, patient, content_type, wrapped_key, ciphertext)
             VALUES ('t', 'doc-kept', 'p', 'text/plain', x'00', x'00'),
                    ('t', 'doc-orphan', 'p', 'text/plain', x'00', x'00');
             DROP INDEX documents_by_resource;
             ALTER TABLE documents DROP COLUMN resource_id;
             DELETE FROM schema_version WHERE version = 12;",
        )
        .unwrap();
    }
    let store = data.open_store().unwrap();
    let conn = store.read();
    let rows: Vec<(String, Option<String>)> = conn
        .prepare("SELECT id, resource_id FROM documents ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [("doc-kept".to_owned(), Some("ref-1".to_owned()))]);
}

/// Migration 14 indexes the identifiers of records stored before it (a list, or the one
/// Identifier some types carry), so a conditional create finds them.
#[test]
fn identifiers_of_existing_records_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
    {
        let store = data.open_store().unwrap();
        let conn = store.lock();
        conn.execute_batch(
            "INSERT INTO tenants (id, name, created_at) VALUES ('t', 'T', 0);
             INSERT INTO resources (tenant, type, id, version, last_updated, patient, json) VALUES
               ('t', 'Patient', 'p1', 1, '2026', 'p1',
                '{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:mrn\",\"value\":\"M1\"},{\"value\":\"loose\"}]}'),
               ('t', 'QuestionnaireResponse', 'q1', 1, '2026', 'p1',
                '{\"resourceType\":\"QuestionnaireResponse\",\"identifier\":{\"system\":\"urn:q\",\"value\":\"Q1\"}}'),
               ('t', 'Observation', 'o1', 1, '2026', 'p1', '{\"resourceType\":\"Observation\"}');
             DROP TABLE resource_identifiers;
             DELETE FROM schema_version WHERE version = 14;",
        )
        .unwrap();
    }
    let store = data.open_store().unwrap();
    let conn = store.read();
    let rows: Vec<(String, String, String, String)> = conn
        .prepare("SELECT type, id, system, value FROM resource_identifiers ORDER BY type, value")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |t: &str, id: &str, system: &str, value: &str| (t.into(), id.into(), system.into(), value.into());
    assert_eq!(
        rows,
        [
            row("Patient", "p1", "urn:mrn", "M1"),
            row("Patient", "p1", "", "loose"),
            row("QuestionnaireResponse", "q1", "urn:q", "Q1"),
        ]
    );
}
