//! A misbehaving network between a device and the real server: a TLS proxy holding the
//! server's own certificate (so the device's pins still hold) that forwards each request,
//! or — as a test sets it — answers 5xx, garbles the answer, answers slowly, repeats a page
//! of results, or is down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carekeep_core::net::ServerUrl;
use carekeep_server::DataDir;
use rustls::pki_types::pem::PemObject as _;

/// What the proxy does to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards faithfully.
    None,
    /// Answers every request with this status (and no body a client could use).
    Status(u16),
    /// Answers `200` with truncated JSON.
    Malformed,
    /// Forwards after this long.
    Slow(Duration),
    /// Answers `$everything` and its next pages with an empty page whose next link is
    /// always the same: a server that would page forever.
    RepeatPage,
}

struct Shared {
    fault: Mutex<Fault>,
    upstream: u16,
    client: reqwest::Client,
    requests: AtomicUsize,
}

/// The proxy, stopped when dropped (then its port refuses connections: the server is down).
pub struct FaultyProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
}

impl FaultyProxy {
    /// A proxy in front of the server on `upstream` (port), serving `data`'s certificate on
    /// `port` (0: any free port). Call inside a Tokio runtime: it serves on a task of it.
    pub fn start(data: &DataDir, upstream: u16, port: u16) -> Self {
        let cert = std::fs::read(data.cert_path()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(&cert) {
            roots.add(der.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(client_tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let shared =
            Arc::new(Shared { fault: Mutex::new(Fault::None), upstream, client, requests: AtomicUsize::new(0) });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = axum_server::tls_rustls::RustlsConfig::from_config(data.tls_config().unwrap());
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, config).unwrap().handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service()));
        Self { shared, addr, handle }
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("https://localhost:{}", self.addr.port())).unwrap()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// From now on, does `fault`.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let fault = *shared.fault.lock().unwrap_or_else(PoisonError::into_inner);
    let path = request.uri().path().to_owned();
    let is_next_page = path == "/fhir" && request.uri().query().is_some_and(|q| q.contains("_page="));
    match fault {
        Fault::Status(code) => {
            return (StatusCode::from_u16(code).unwrap(), "upstream unavailable").into_response();
        }
        Fault::Malformed => {
            return ([(header::CONTENT_TYPE, "application/fhir+json")], r#"{"resourceType":"Bundle","entry":[{"#)
                .into_response();
        }
        Fault::Slow(pause) => tokio::time::sleep(pause).await,
        Fault::RepeatPage if is_next_page || path.ends_with("/$everything") => {
            let page = r#"{"resourceType":"Bundle","type":"searchset","entry":[],
                "link":[{"relation":"next","url":"https://localhost/fhir?_page=again"}]}"#;
            return ([(header::CONTENT_TYPE, "application/fhir+json")], page).into_response();
        }
        Fault::None | Fault::RepeatPage => {}
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 2 * 1024 * 1024).await.unwrap_or_default();
    let url = format!(
        "https://localhost:{}{}",
        shared.upstream,
        parts.uri.path_and_query().map_or("/", axum::http::uri::PathAndQuery::as_str)
    );
    let mut upstream = shared.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            headers.insert(name, value.clone());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    (status, headers, body).into_response()
}
