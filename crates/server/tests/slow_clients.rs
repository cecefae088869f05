//! A thousand slow clients against the real listener: connections that never start TLS,
//! that stop half-way through a ClientHello, that finish TLS but trickle their headers or
//! their body, and that open HTTP/2 and then say nothing.
//! Each address may hold only a few connections (the rest are closed at once, before any
//! TLS work), every held one is closed by the handshake, header or idle timeout, and a real
//! client keeps getting answers throughout.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_server::http::{Limits, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PER_ADDRESS: usize = 16;
const ADDRESSES: u8 = 8;

fn limits() -> Limits {
    Limits {
        handshake: Duration::from_secs(2),
        header_read: Duration::from_secs(2),
        body_read: Duration::from_secs(2),
        idle: Duration::from_secs(3),
        per_address: PER_ADDRESS,
        total: 400,
        bundle_bytes: carekeep_server::http::BUNDLE_BODY_BYTES,
    }
}

/// This process's open-file limit (the test holds both ends of every connection).
fn descriptor_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("Max open files 1024");
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// A TCP connection to `server` from the loopback address 127.0.0.`host`.
async fn connect_from(host: u8, server: SocketAddr) -> std::io::Result<TcpStream> {
    connect_from_network(0, host, server).await
}

/// A connection from 127.`network`.0.`host` (another /24 for each `network`).
async fn connect_from_network(network: u8, host: u8, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, network, 0, host], 0)))?;
    socket.connect(server).await
}

/// How a slow client behaves.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and says nothing.
    Silent,
    /// Sends the first bytes of a TLS record, then nothing.
    HalfHello,
    /// Completes TLS, then sends a request's headers a byte every half second.
    Trickle,
    /// Completes TLS and opens HTTP/2 (preface and settings), then sends no request.
    IdleH2,
    /// Completes TLS, sends a request's headers at once and its body a byte every half
    /// second.
    TrickleBody,
}

/// Runs one slow client; returns how long after `start` the server closed its connection.
async fn slow_client(
    host: u8,
    server: SocketAddr,
    how: Slow,
    tls: Arc<rustls::ClientConfig>,
    start: Instant,
) -> Duration {
    let Ok(mut tcp) = connect_from(host, server).await else { return start.elapsed() };
    let mut byte = [0_u8; 1];
    match how {
        Slow::Silent => {
            let _ = tcp.read(&mut byte).await;
        }
        Slow::HalfHello => {
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
            let _ = tcp.read(&mut byte).await;
        }
        Slow::IdleH2 => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut stream) = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await else {
                return start.elapsed();
            };
            let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            opening.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            let _ = stream.write_all(&opening).await;
            let mut frames = [0_u8; 256];
            while matches!(stream.read(&mut frames).await, Ok(n) if n > 0) {}
        }
        Slow::TrickleBody => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut stream) = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await else {
                return start.elapsed();
            };
            let head = "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                        Content-Length: 100000\r\n\r\n{";
            let _ = stream.write_all(head.as_bytes()).await;
            // Until the server closes the connection (an answer alone does not free the slot).
            let mut answer = [0_u8; 512];
            loop {
                if stream.write_all(b" ").await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::select! {
                    read = stream.read(&mut answer) => if !matches!(read, Ok(n) if n > 0) { break },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
        Slow::Trickle => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let Ok(mut stream) = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await else {
                return start.elapsed();
            };
            for b in b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().cycle() {
                if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::select! {
                    read = stream.read(&mut byte) => if !matches!(read, Ok(n) if n > 0) { break },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_neither_starve_a_real_one_nor_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = common::data_with_user(dir.path(), "someone", "a long enough password");
    let running = Running::start_with(&data, "127.0.0.1:0".parse().unwrap(), limits())
        .await
        .unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], running.port()));
    let http = common::client_for(&data);
    let base = format!("https://localhost:{}", running.port());
    let tls = common::tls_config_for(&data);
    // Both ends of every connection live in this process.
    let clients = 1000.min(descriptor_limit().saturating_sub(400) / 2);
    assert!(clients >= 400, "raise the open-file limit to run this test (ulimit -n)");
    let start = Instant::now();
    let mut slow = Vec::with_capacity(clients);
    for i in 0..clients {
        let host = 2 + u8::try_from(i % usize::from(ADDRESSES)).unwrap();
        let how = [Slow::Silent, Slow::HalfHello, Slow::Trickle, Slow::IdleH2, Slow::TrickleBody][i % 5];
        slow.push(tokio::spawn(slow_client(host, server, how, tls.clone(), start)));
        // In waves, as clients arrive over a network: a thousand SYNs in one instant would
        // overflow the kernel's accept queue, and a connection it dropped is one the server
        // never saw (the client alone thinks it is open).
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // While they hold what they were given, a real client is answered, promptly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let asked = Instant::now();
        let answer =
            tokio::time::timeout(Duration::from_secs(5), http.get(format!("{base}/fhir/metadata")).send()).await;
        let status = answer.expect("the real client got no answer").unwrap().status();
        assert_eq!(status, 200);
        assert!(asked.elapsed() < Duration::from_secs(2), "answered only after {:?}", asked.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut closed = Vec::new();
    for client in slow {
        closed.push(
            tokio::time::timeout(Duration::from_secs(15), client)
                .await
                .expect("a slow client was never closed")
                .unwrap(),
        );
    }
    // All but the few each address may hold were closed at once.
    let at_once = closed.iter().filter(|t| **t < Duration::from_millis(1500)).count();
    let held = usize::from(ADDRESSES) * PER_ADDRESS;
    assert!(at_once >= clients - held, "only {at_once} of {clients} closed at once");
    // And the held ones by a timeout: the slowest within the header timeout plus the idle one.
    let last = closed.iter().max().unwrap();
    assert!(*last < Duration::from_secs(9), "a slow client stayed {last:?}");
}

/// Opens TLS from 127.0.0.`host` and sends `head` (a request's headers and perhaps the start
/// of its body); returns the stream, still open, or `None` if the server refused it.
async fn send_head(
    host: u8,
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    head: &str,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(host, server).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.flush().await.ok()?;
    Some(stream)
}

/// The third review stalled every write and sign-in with 64 sign-in requests that each
/// announced (or, sent chunked, were assumed to carry) a 1 MiB body and sent none: the
/// sign-in routes answer anyone, and took room for the largest body any route takes. Now
/// a sign-in body larger than the route takes is refused at once, an unsized one holds the
/// route's 16 KiB, and a person signs in and writes while the attackers wait. (One network
/// cannot hold more than an eighth of the budget either: the unit tests show that share.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_sign_in_bodies_hold_no_room_for_anyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let (data, user) = common::data_with_user(dir.path(), "someone", "a long enough password");
    let long = Duration::from_secs(30);
    let limits = Limits { body_read: long, idle: long, header_read: long, per_address: 300, total: 600, ..limits() };
    let running = Running::start_with(&data, "127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], running.port()));
    let base = format!("https://localhost:{}", running.port());
    let http = common::client_for(&data);
    let tls = common::tls_config_for(&data);
    // A sign-in announcing a megabyte is refused before anything is read.
    let announced = "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                     Content-Length: 1048576\r\n\r\n";
    let mut big = send_head(9, server, tls.clone(), announced).await.unwrap();
    let mut answer = [0_u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), big.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer[..n]));

    // A hundred sign-ins that never finish their body (more than the whole budget, when
    // each took a megabyte), all held open.
    let unsized_sign_in = "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                           Transfer-Encoding: chunked\r\n\r\n";
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting.push(
            send_head(9, server, tls.clone(), unsized_sign_in)
                .await
                .expect("the listener took it"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile someone signs in and writes, without waiting on them.
    let asked = Instant::now();
    let signed_in = common::sign_in(&http, &base, "someone", "a long enough password", &user.totp_base32, 0).await;
    let token = signed_in.tokens["access_token"].as_str().unwrap().to_owned();
    let reading = serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let wrote = http
        .post(format!("{base}/fhir/Observation"))
        .bearer_auth(&token)
        .json(&reading)
        .send()
        .await
        .unwrap();
    assert_ne!(wrote.status(), 503, "a signed-in write was held back");
    assert!(asked.elapsed() < Duration::from_secs(4), "answered only after {:?}", asked.elapsed());
    drop(waiting);
}

/// The review held every sign-in back for ten minutes with two half-sent 32 MiB Bundles
/// from a patient's token: large Bundles drew on the budget everyone shares. Now only
/// clinicians and nurses may send them, they have room of their own (two of the largest, one
/// per network), and must keep arriving at 100 KiB/s, every 10 s window: while two stall, a
/// third waits and is told the server is busy, sign-ins and single writes go on as before,
/// and the stalled ones are cut off within a window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_large_bundles_hold_no_room_for_sign_ins_or_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, user) = common::data_with_user(dir.path(), "someone", "a long enough password");
    let clinician = carekeep_server::admin::add_user(
        &data.open_store().unwrap(),
        "clinic-1",
        "dr.someone",
        carekeep_protocol::auth::Role::Clinician,
        "another long password",
        0,
    )
    .unwrap();
    let long = Duration::from_secs(30);
    let limits = Limits { body_read: long, idle: long, header_read: long, per_address: 300, total: 600, ..limits() };
    let running = Running::start_with(&data, "127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], running.port()));
    let base = format!("https://localhost:{}", running.port());
    let http = common::client_for(&data);
    let patient = common::sign_in(&http, &base, "someone", "a long enough password", &user.totp_base32, 0).await;
    let doctor = common::sign_in(&http, &base, "dr.someone", "another long password", &clinician.totp_base32, 0).await;
    let token = |signed: &common::SignIn| signed.tokens["access_token"].as_str().unwrap().to_owned();
    let tls = common::tls_config_for(&data);
    let head = |bearer: &str, mib: usize| {
        format!(
            "POST /fhir HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n\
             Authorization: Bearer {bearer}\r\nContent-Length: {}\r\n\r\n{{",
            mib * 1024 * 1024
        )
    };
    let open = |network: u8, text: String| {
        let tls = tls.clone();
        async move {
            let tcp = connect_from_network(network, 9, server).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
            stream.write_all(text.as_bytes()).await.unwrap();
            stream.flush().await.unwrap();
            stream
        }
    };
    let status_of = |mut stream: tokio_rustls::client::TlsStream<TcpStream>| async move {
        let mut answer = [0_u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&answer[..n])
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    // A patient may not send a Bundle larger than a resource's worth; a session that has
    // ended is told so (as the route would tell it), not given the size limit.
    assert_eq!(status_of(open(1, head(&token(&patient), 2)).await).await, "413");
    assert_eq!(status_of(open(1, head("no-such-session", 2)).await).await, "401");
    // Two stalled 30 MiB Bundles from two networks: the room for large Bundles is taken.
    let stalled = [open(2, head(&token(&doctor), 30)).await, open(3, head(&token(&doctor), 30)).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third from one of those networks is turned away at once; from another, after a wait.
    assert_eq!(status_of(open(2, head(&token(&doctor), 30)).await).await, "503");
    assert_eq!(status_of(open(4, head(&token(&doctor), 30)).await).await, "503");
    // Meanwhile sign-ins and single writes go on, from anywhere.
    let asked = Instant::now();
    let again = common::sign_in(&http, &base, "someone", "a long enough password", &user.totp_base32, 1).await;
    let reading = serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let wrote = http
        .post(format!("{base}/fhir/Observation"))
        .bearer_auth(token(&again))
        .json(&reading)
        .send()
        .await
        .unwrap();
    assert_ne!(wrote.status(), 503, "a write was held back by the stalled Bundles");
    assert!(asked.elapsed() < Duration::from_secs(4), "answered only after {:?}", asked.elapsed());
    // A large body must keep its pace, window by window: the stalled ones are cut off within
    // a window (not at their size's whole deadline), and their room is free again.
    let started = Instant::now();
    for mut stream in stalled {
        let mut answer = [0_u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut answer))
            .await
            .unwrap()
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(n == 0 || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}
