//! The pinned transport against the real server over TLS on 127.0.0.1: pins that match,
//! pins that do not, the backup pin after a key rotation, a one-pin set, an expired set, a
//! certificate from a trusted CA that is not pinned, a TLS 1.1 server, and `http://`.

use carekeep_core::Error;
use carekeep_core::error::{ConnectionError, ServerError};
use carekeep_core::net::{Roots, Server, ServerUrl};
use carekeep_e2e::{Running, World, in_days, stranger_pin};
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::{PinError, PinSet};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TLS worked (and the pins held) when the server answered the password step at all.
async fn reaches(server: &Server) -> Result<(), Error> {
    match server.login("nobody", "not a password at all", None).await {
        Err(Error::Server(ServerError::BadCredentials)) => Ok(()),
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
    assert!(matches!(refused, Error::Connection(ConnectionError::PinMismatch)), "{refused:?}");
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
    assert!(matches!(reaches(&running.client(live_only)).await, Err(Error::Connection(ConnectionError::PinMismatch))));
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
    assert!(matches!(
        reaches(&running.client(expired_strangers)).await,
        Err(Error::Connection(ConnectionError::PinMismatch))
    ));
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
    let impostor = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&impostor_key, &ca)
        .unwrap();
    let cert_path = world.data.cert_path();
    std::fs::write(&cert_path, impostor.pem()).unwrap();
    std::fs::write(cert_path.with_file_name("key.pem"), impostor_key.serialize_pem()).unwrap();
    let running = Running::start(&world.data).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let trusting_ca = Server::with_roots(running.url(), genuine, Roots::Only(roots.clone())).unwrap();
    assert!(matches!(reaches(&trusting_ca).await, Err(Error::Connection(ConnectionError::PinMismatch))));

    let impostor_pin = carekeep_core::net::pinning::spki_pin(&CertificateDer::from(impostor.der().to_vec())).unwrap();
    let pinned = PinSet::new(vec![impostor_pin, stranger_pin(b"backup")], in_days(90)).unwrap();
    reaches(&Server::with_roots(running.url(), pinned.clone(), Roots::Only(roots)).unwrap())
        .await
        .unwrap();
    // Without the CA among the roots the chain leads nowhere, and a pinned key is an anchor
    // only for a self-signed certificate: refused.
    let no_roots = Server::with_roots(running.url(), pinned, Roots::Only(rustls::RootCertStore::empty())).unwrap();
    assert!(matches!(reaches(&no_roots).await, Err(Error::Connection(ConnectionError::TlsRefused))));
}

/// A certificate authority for the tests below (rcgen), optionally under another one.
fn authority(
    parent: Option<&rcgen::CertifiedIssuer<'static, rcgen::KeyPair>>,
) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    match parent {
        None => rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        Some(parent) => rcgen::CertifiedIssuer::signed_by(params, key, &**parent).unwrap(),
    }
}

/// Serves `chain` (leaf first) with `key` from `world`'s data directory.
async fn serve_chain(world: &World, chain: &[&CertificateDer<'static>], key: &rcgen::KeyPair) -> Running {
    let pem: String = chain.iter().map(|der| pem_of(der)).collect();
    let cert_path = world.data.cert_path();
    std::fs::write(&cert_path, pem).unwrap();
    std::fs::write(cert_path.with_file_name("key.pem"), key.serialize_pem()).unwrap();
    Running::start(&world.data).await
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The clinic pins its CA's intermediate. Someone holding a certificate for the hostname
/// from another CA the device trusts (a mis-issuing CA, an interception box) sends it alone,
/// and then together with the clinic's genuine intermediate: the intermediate is not on the
/// path that validation builds, so both are refused, and the server never sees a request.
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_intermediate_sent_beside_an_impostor_leaf_does_not_vouch_for_it() {
    let world = World::new(Role::Patient);
    let clinic_root = authority(None);
    let pinned_intermediate = authority(Some(&clinic_root));
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &pinned_intermediate)
        .unwrap();
    let other_ca = authority(None);
    let impostor_key = rcgen::KeyPair::generate().unwrap();
    let impostor = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&impostor_key, &other_ca)
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(clinic_root.der().to_vec())).unwrap();
    roots.add(CertificateDer::from(other_ca.der().to_vec())).unwrap();
    let intermediate_pin =
        carekeep_core::net::pinning::spki_pin(&CertificateDer::from(pinned_intermediate.der().to_vec())).unwrap();
    let pins = PinSet::new(vec![intermediate_pin, stranger_pin(b"backup")], in_days(90)).unwrap();
    let client =
        |running: &Running| Server::with_roots(running.url(), pins.clone(), Roots::Only(roots.clone())).unwrap();

    // The genuine chain connects: the pin is the intermediate the leaf was issued by.
    let genuine = serve_chain(&world, &[leaf.der(), pinned_intermediate.der()], &leaf_key).await;
    reaches(&client(&genuine)).await.unwrap();
    drop(genuine);
    let answered = world.audit_events().len();

    for chain in [vec![impostor.der()], vec![impostor.der(), pinned_intermediate.der()]] {
        let running = serve_chain(&world, &chain, &impostor_key).await;
        let refused = reaches(&client(&running)).await.unwrap_err();
        assert!(
            matches!(refused, Error::Connection(ConnectionError::PinMismatch)),
            "{} certificates: {refused:?}",
            chain.len()
        );
        drop(running);
    }
    // Nothing reached the impostor's server: not the password, not any request.
    assert_eq!(world.audit_events().len(), answered, "a request reached a server that failed the pins");
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
    assert!(matches!(refused, Error::Connection(ConnectionError::TlsRefused)), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_and_odd_addresses_are_refused_before_any_socket_opens() {
    // Something listens on the port, and nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    assert!(matches!(
        ServerUrl::parse(&format!("http://127.0.0.1:{port}")),
        Err(Error::Connection(ConnectionError::InsecureUrl))
    ));
    assert!(matches!(ServerUrl::parse("ftp://example.org"), Err(Error::Connection(ConnectionError::InsecureUrl))));
    for odd in ["https://", "https://user:pw@example.org", "https://example.org/?patient=1", "not a url"] {
        assert!(matches!(ServerUrl::parse(odd), Err(Error::InvalidArgument { .. })), "{odd}");
    }
    assert!(listener.accept().is_err(), "a connection was attempted");
    // Nothing listening at all: the server is unreachable, said so.
    drop(listener);
    let world = World::new(Role::Patient);
    let url = ServerUrl::parse(&format!("https://localhost:{port}")).unwrap();
    assert!(matches!(
        reaches(&Server::connect(url, world.pins()).unwrap()).await,
        Err(Error::Connection(ConnectionError::ServerUnreachable))
    ));
}
