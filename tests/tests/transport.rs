//! The pinned transport against the real server over TLS on 127.0.0.1: pins that match,
//! pins that do not, the backup pin after a key rotation, a one-pin set, an expired set, a
//! certificate from a trusted CA that is not pinned, a TLS 1.1 server, and `http://`.
#![allow(missing_docs)]

use carekeep_core::Error;
use carekeep_core::net::{Roots, Server, ServerUrl};
use carekeep_e2e::{Running, World, in_days, stranger_pin};
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::{PinError, PinSet};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TLS worked (and the pins held) when the server answered the password step at all.
async fn reaches(server: &Server) -> Result<(), Error> {
    match server.login("nobody", "not a password at all").await {
        Err(Error::BadCredentials) => Ok(()),
        Err(other) => Err(other),
        Ok(_) => panic!("an unknown user signed in"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_own_pins_connect_and_a_strangers_fail_closed() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    reaches(&running.client(world.pins())).await.unwrap();

    let strangers = PinSet::new(vec![stranger_pin(b"a"), stranger_pin(b"b")], in_days(90)).unwrap();
    let refused = reaches(&running.client(strangers)).await.unwrap_err();
    assert!(matches!(refused, Error::PinMismatch), "{refused:?}");
    assert!(refused.to_string().contains("may be intercepted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_server_rotates_to_its_backup_key_the_backup_pin_carries_the_connection() {
    let world = World::new(Role::Patient);
    let before = world.pins();
    let old = world.data.pins().unwrap();
    let rotated = world.data.rotate_tls("localhost").unwrap();
    assert_eq!(rotated.live, old.backup);
    let running = Running::start(&world.data).await;
    reaches(&running.client(before)).await.unwrap();
    // A client that pinned only the old live key (and no backup of this server) is cut off.
    let live_only = PinSet::new(vec![old.live, stranger_pin(b"x")], in_days(90)).unwrap();
    assert!(matches!(reaches(&running.client(live_only)).await, Err(Error::PinMismatch)));
}

#[test]
fn a_set_of_one_pin_is_refused_before_anything_connects() {
    let world = World::new(Role::Patient);
    let live = world.data.pins().unwrap().live;
    assert_eq!(PinSet::new(vec![live], in_days(90)).unwrap_err(), PinError::TooFewPins);
    assert_eq!(PinSet::new(vec![live, live], in_days(90)).unwrap_err(), PinError::TooFewPins);
}

/// An expired set is still enforced — pinning never fails open — and says it is expired.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_pin_set_is_still_enforced() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let pins = world.data.pins().unwrap();
    let expired = PinSet::new(vec![pins.live, pins.backup], in_days(-1)).unwrap();
    assert!(expired.is_expired(in_days(0)));
    reaches(&running.client(expired)).await.unwrap();
    let expired_strangers = PinSet::new(vec![stranger_pin(b"a"), stranger_pin(b"b")], in_days(-1)).unwrap();
    assert!(matches!(reaches(&running.client(expired_strangers)).await, Err(Error::PinMismatch)));
}

/// Someone with a certificate for the same hostname from a CA the device trusts is still
/// refused: the chain is valid, but its key is not pinned. The same chain with its key
/// pinned connects, so the refusal is the pin's doing.
#[tokio::test(flavor = "multi_thread")]
async fn a_valid_certificate_from_a_trusted_ca_is_refused_unless_its_key_is_pinned() {
    let world = World::new(Role::Patient);
    let genuine = world.pins();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let impostor_key = rcgen::KeyPair::generate().unwrap();
    let impostor =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&impostor_key, &ca).unwrap();
    let cert_path = world.data.cert_path();
    std::fs::write(&cert_path, impostor.pem()).unwrap();
    std::fs::write(cert_path.with_file_name("key.pem"), impostor_key.serialize_pem()).unwrap();
    let running = Running::start(&world.data).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let trusting_ca = Server::with_roots(running.url(), genuine, Roots::Only(roots.clone())).unwrap();
    assert!(matches!(reaches(&trusting_ca).await, Err(Error::PinMismatch)));

    let impostor_pin = carekeep_core::net::pinning::spki_pin(&CertificateDer::from(impostor.der().to_vec())).unwrap();
    let pinned = PinSet::new(vec![impostor_pin, stranger_pin(b"backup")], in_days(90)).unwrap();
    reaches(&Server::with_roots(running.url(), pinned.clone(), Roots::Only(roots)).unwrap()).await.unwrap();
    // Without the CA among the roots the chain leads nowhere, and a pinned key is an anchor
    // only for a self-signed certificate: refused.
    let no_roots = Server::with_roots(running.url(), pinned, Roots::Only(rustls::RootCertStore::empty())).unwrap();
    assert!(matches!(reaches(&no_roots).await, Err(Error::TlsRefused)));
}

/// A server that answers every ClientHello with a TLS 1.1 ServerHello.
async fn tls11_only_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut hello = [0_u8; 1024];
            let _ = socket.read(&mut hello).await;
            // ServerHello: version 3.2 (TLS 1.1), a random, no session id,
            // TLS_RSA_WITH_AES_128_CBC_SHA, no compression.
            let mut body = vec![0x03, 0x02];
            body.extend_from_slice(&[7_u8; 32]);
            body.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00]);
            let mut handshake = vec![0x02, 0x00, 0x00, u8::try_from(body.len()).unwrap()];
            handshake.extend_from_slice(&body);
            let mut record = vec![0x16, 0x03, 0x02, 0x00, u8::try_from(handshake.len()).unwrap()];
            record.extend_from_slice(&handshake);
            let _ = socket.write_all(&record).await;
            let _ = socket.read(&mut hello).await;
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_offering_only_tls_1_1_is_refused() {
    let world = World::new(Role::Patient);
    let port = tls11_only_server().await;
    let url = ServerUrl::parse(&format!("https://localhost:{port}")).unwrap();
    let refused = reaches(&Server::connect(url, world.pins()).unwrap()).await.unwrap_err();
    assert!(matches!(refused, Error::TlsRefused), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_and_odd_addresses_are_refused_before_any_socket_opens() {
    // Something listens on the port, and nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    assert!(matches!(ServerUrl::parse(&format!("http://127.0.0.1:{port}")), Err(Error::InsecureUrl)));
    assert!(matches!(ServerUrl::parse("ftp://example.org"), Err(Error::InsecureUrl)));
    for odd in ["https://", "https://user:pw@example.org", "https://example.org/?patient=1", "not a url"] {
        assert!(matches!(ServerUrl::parse(odd), Err(Error::InvalidArgument { .. })), "{odd}");
    }
    assert!(listener.accept().is_err(), "a connection was attempted");
    // Nothing listening at all: the server is unreachable, said so.
    drop(listener);
    let world = World::new(Role::Patient);
    let url = ServerUrl::parse(&format!("https://localhost:{port}")).unwrap();
    assert!(matches!(reaches(&Server::connect(url, world.pins()).unwrap()).await, Err(Error::ServerUnreachable)));
}
