//! The server's data directory and HTTPS listener, over real TLS on 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;

use carekeep_protocol::pins::Pin;
use carekeep_server::DataDir;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

mod common;

/// A running server with its data directory and certificate.
struct Running {
    server: common::Running,
    addr: SocketAddr,
    cert_pem: Vec<u8>,
    _dir: tempfile::TempDir,
    data: DataDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = DataDir::init(&dir.path().join("server"), "carekeep.test").unwrap();
    let server = common::start(&data).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    let cert_pem = std::fs::read(data.cert_path()).unwrap();
    Running { server, addr, cert_pem, _dir: dir, data }
}

fn client(server: &Running, versions: &[&'static rustls::SupportedProtocolVersion]) -> reqwest::Client {
    common::client(&server.cert_pem, versions)
}

fn url(server: &Running, path: &str) -> String {
    format!("https://localhost:{}{path}", server.server.port())
}

#[test]
fn init_writes_private_files_prints_two_pins_and_refuses_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, pins) = DataDir::init(&root, "clinic.example").unwrap();
    assert_ne!(pins.live, pins.backup);
    assert_eq!(data.pins().unwrap(), pins, "pins are stable and derived from the stored keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        for file in ["master.key", "signing.key", "tls/key.pem", "tls/backup-key.pem"] {
            assert_eq!(mode(&root.join(file)), 0o600, "{file}");
        }
    }
    assert!(matches!(DataDir::init(&root, "clinic.example"), Err(carekeep_server::ServerError::AlreadyInitialised(_))));
    let missing = DataDir::open(&dir.path().join("nothing")).unwrap_err();
    assert!(missing.to_string().contains("carekeep-server init"));
}

#[test]
fn the_live_pin_is_the_served_certificates_key_and_the_backup_is_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, pins) = DataDir::init(&dir.path().join("s"), "clinic.example").unwrap();
    let pem = std::fs::read(data.cert_path()).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let spki_pin = Pin::from_spki_der(cert.tbs_certificate.subject_pki.raw);
    assert_eq!(spki_pin, pins.live);
    assert_ne!(spki_pin, pins.backup);
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    for expected in ["DNSName(clinic.example)", "DNSName(localhost)", "IPAddress(7f:00:00:01)"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_tls_1_3_and_1_2_serves_metadata_with_security_headers() {
    let server = start().await;
    let pins = server.data.pins().unwrap();
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let response = client(&server, versions)
            .get(url(&server, "/fhir/metadata"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let peer = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .unwrap()
            .peer_certificate()
            .unwrap()
            .to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&peer).unwrap();
        assert_eq!(Pin::from_spki_der(cert.tbs_certificate.subject_pki.raw), pins.live);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/fhir+json");
        assert_eq!(headers["strict-transport-security"], "max-age=63072000; includeSubDomains");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers.get("access-control-allow-origin").is_none());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["resourceType"], "CapabilityStatement");
        assert_eq!(body["fhirVersion"], "4.0.1");
        assert_eq!(body["format"], serde_json::json!(["json"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_get_an_operation_outcome_and_cors_preflights_get_no_grant() {
    let server = start().await;
    let http = client(&server, &[&rustls::version::TLS13]);
    let response = http.get(url(&server, "/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    let preflight = http
        .request(reqwest::Method::OPTIONS, url(&server, "/fhir/metadata"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_key_is_refused() {
    let server = start().await;
    // Another server's certificate as the only root: the handshake must fail.
    let other = tempfile::tempdir().unwrap();
    let (other_data, _) = DataDir::init(&other.path().join("o"), "carekeep.test").unwrap();
    let impostor = common::client(&std::fs::read(other_data.cert_path()).unwrap(), &[&rustls::version::TLS13]);
    let result = impostor.get(url(&server, "/fhir/metadata")).send().await;
    assert!(result.is_err());
}

/// Raw socket I/O in a blocking task, so the server keeps running on the runtime.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        stream.write_all(&bytes).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    reply.extend_from_slice(&buf[..n]);
                    if reply.len() >= 5 {
                        break;
                    }
                }
            }
        }
        reply
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_http_gets_no_http_answer() {
    let server = start().await;
    let reply = exchange(server.addr, b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()).await;
    assert!(!reply.starts_with(b"HTTP/"), "a plaintext request was answered: {:?}", String::from_utf8_lossy(&reply));
}

/// A minimal ClientHello offering only `version` (no supported_versions extension), with
/// CBC and GCM ECDHE-ECDSA suites.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    let suites: [u16; 4] = [0xc02b, 0xc009, 0xc00a, 0x00ff];
    body.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms: ecdsa_secp256r1_sha256
    ];
    body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_is_refused_while_the_same_hello_at_1_2_is_answered() {
    let server = start().await;
    // Control: the hand-made hello works when it offers TLS 1.2 — a ServerHello comes back.
    let reply = exchange(server.addr, client_hello([3, 3])).await;
    assert_eq!(reply.first(), Some(&0x16), "TLS 1.2 hello not answered with a handshake: {reply:?}");
    // TLS 1.1 and 1.0: an alert (content type 21), never a ServerHello.
    for version in [[3, 2], [3, 1]] {
        let reply = exchange(server.addr, client_hello(version)).await;
        assert_eq!(reply.first(), Some(&0x15), "version {version:?} was not refused with an alert: {reply:?}");
    }
}
