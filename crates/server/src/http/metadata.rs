//! `GET /fhir/metadata`: the CapabilityStatement, saying what this server does today.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The server's CapabilityStatement (FHIR R4, JSON only). Its resource list grows with the
/// FHIR endpoints; today it serves none.
pub async fn capability_statement() -> impl IntoResponse {
    let body = serde_json::json!({
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
            "resource": []
        }]
    });
    ([(CONTENT_TYPE, "application/fhir+json")], body.to_string())
}
