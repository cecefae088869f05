//! `GET /fhir/metadata`: the CapabilityStatement, saying what this server does today.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The statement never changes while the server runs: built once, on first request.
static STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| statement().to_string());

/// The server's CapabilityStatement (FHIR R4, JSON only): the types it serves and how.
pub async fn capability_statement() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/fhir+json")], STATEMENT.as_str())
}

fn statement() -> serde_json::Value {
    serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "Carekeep",
        "kind": "instance",
        "software": {"name": "carekeep-server", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Carekeep reference server"},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {"cors": false, "description": "HTTPS only, TLS 1.2 or 1.3."},
            "resource": resources(),
            "interaction": [
                {"code": "transaction", "documentation": "All or nothing; up to 10 000 entries; fullUrl, conditional references and ifNoneExist on identifier resolved"},
                {"code": "batch", "documentation": "Each entry on its own"}
            ],
            "operation": [{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
        }]
    })
}

fn resources() -> Vec<serde_json::Value> {
    use crate::records::access::{Data, SERVED_TYPES};
    let date = serde_json::json!({"name": "date", "type": "date"});
    SERVED_TYPES
        .iter()
        .map(|t| {
            // Written by the clinic's own loads, not through the API.
            let read_only = matches!(Data::of(t), Some(Data::Directory | Data::Financial | Data::AuditTrail));
            let mut interactions = vec![serde_json::json!({"code": "search-type"})];
            if *t != "AuditEvent" {
                interactions.push(serde_json::json!({"code": "read"}));
            }
            if !read_only {
                interactions.push(serde_json::json!({"code": "create"}));
                interactions.push(serde_json::json!({"code": "update"}));
                interactions.push(serde_json::json!({"code": "delete"}));
            }
            let params = if *t == "AuditEvent" {
                vec![
                    serde_json::json!({"name": "patient", "type": "reference"}),
                    serde_json::json!({"name": "agent", "type": "reference"}),
                    date.clone(),
                ]
            } else {
                vec![
                    serde_json::json!({"name": "patient", "type": "reference"}),
                    serde_json::json!({"name": "category", "type": "token"}),
                    serde_json::json!({"name": "code", "type": "token"}),
                    date.clone(),
                    serde_json::json!({"name": "_lastUpdated", "type": "date"}),
                ]
            };
            serde_json::json!({
                "type": t,
                "interaction": interactions,
                "versioning": "versioned-update",
                "updateCreate": false,
                "conditionalUpdate": false,
                "searchParam": params,
            })
        })
        .collect()
}
