//! Migrations that change what existing rows mean, run on a store from before them.
#![allow(missing_docs)]

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
