//! What the listener does before TLS: admits a connection only while its address (an IPv4
//! address, or an IPv6 /64, which one client owns whole) holds fewer than
//! [`Limits::per_address`] connections and the server fewer than [`Limits::total`], and
//! closes any connection on which no byte moves for [`Limits::idle`]. Together with the
//! TLS handshake, header-read and request-body deadlines (see [`Limits`]), a client that
//! connects and then says nothing, or trickles its headers or its body, holds a slot for
//! seconds, and one address cannot hold the descriptors every other client needs. (A
//! client may still fill its own address's share: neighbours behind one NAT address share
//! that cap.)

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::address::AddressKey;

/// How long each stage of a connection may take, and how many connections are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The TLS handshake must finish within this.
    pub handshake: Duration,
    /// A request's headers must arrive within this (HTTP/1.1; it also closes a keep-alive
    /// connection left idle this long between requests).
    pub header_read: Duration,
    /// A request's body must have arrived this long after its handler starts reading it
    /// (1 MiB at 140 kbit/s), whatever the protocol: a body trickled a byte at a time is
    /// cut off.
    pub body_read: Duration,
    /// A connection on which no byte moves either way for this long is closed (HTTP/2
    /// included).
    pub idle: Duration,
    /// Connections one address (an IPv4 address, or an IPv6 /64) may hold at once. A clinic
    /// behind one NAT address shares it: generous, but far below the descriptor limit.
    pub per_address: usize,
    /// Connections the server holds at once, kept below its descriptor limit so the store
    /// and the accept loop always have descriptors of their own.
    pub total: usize,
    /// The largest transaction or batch Bundle (`POST /fhir`) a signed-in caller may send;
    /// everyone else's bodies stay within [`super::MAX_BODY_BYTES`]. At most half the body
    /// budget, so two clinics loading at once cannot shut everyone else out.
    pub bundle_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let total = descriptor_limit().map_or(768, |limit| limit.saturating_sub(RESERVED_DESCRIPTORS).max(64));
        Self {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(15),
            body_read: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            per_address: 128.min(total / 4).max(8),
            total,
            bundle_bytes: super::BUNDLE_BODY_BYTES,
        }
    }
}

/// Descriptors kept back from connections: the store's files and their journals, the
/// data directory's keys, logs.
const RESERVED_DESCRIPTORS: usize = 128;

/// This process's soft limit on open files, where the system says (Linux).
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[derive(Default)]
struct Counts {
    by_address: HashMap<AddressKey, usize>,
    total: usize,
}

/// The admission side of the listener: counts connections per address and in all.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, counts: Arc::default() }
    }

    /// A slot for a connection from `ip`, or `None` when its address or the server is full.
    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let key = AddressKey::host(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.total
            || counts.by_address.get(&key).copied().unwrap_or(0) >= self.limits.per_address
        {
            return None;
        }
        counts.total += 1;
        *counts.by_address.entry(key).or_insert(0) += 1;
        Some(Slot { key, counts: self.counts.clone() })
    }
}

/// One admitted connection's place; given back when the connection closes.
pub struct Slot {
    key: AddressKey,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.key);
            }
        }
    }
}

impl<S> Accept<TcpStream, S> for Admission {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, S)>>;

    /// Admits the TCP connection or closes it at once (before any TLS work is spent on it).
    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream
            .peer_addr()
            .ok()
            .and_then(|peer| self.admit(peer.ip()))
            .map(|slot| (Guarded::new(stream, slot, self.limits.idle), service))
            .ok_or_else(|| io::Error::other("connection limit reached for this address"));
        ready(admitted)
    }
}

/// A connection that holds its [`Slot`] while open and fails once no byte has moved for
/// the idle limit.
pub struct Guarded<S> {
    inner: S,
    _slot: Slot,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, slot: Slot, idle: Duration) -> Self {
        Self { inner, _slot: slot, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// A write's outcome, with the idle timer restarted when bytes went out and checked while
    /// none can.
    fn after_write(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.check_idle(cx).map(Err),
            other @ Poll::Ready(Err(_)) => other,
        }
    }

    /// Once the deadline passed, the error that ends the connection.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => self.check_idle(cx).map(Err),
            other @ Poll::Ready(Err(_)) => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What request bodies may cost: the deadline for each ([`Limits::body_read`]) and the
/// bytes all bodies being read may hold at once, server-wide and per network. HTTP/2 lets
/// one connection carry many requests, each of which may buffer up to the route's body
/// limit: without a shared budget, a few connections of half-sent bodies would hold
/// gigabytes; without a per-network share, one client could take the whole budget and
/// stall everyone's writes and sign-ins.
#[derive(Clone)]
pub struct BodyRules {
    deadline: Duration,
    /// Bundles larger than other bodies, from signed-in callers only.
    bundles: Option<LargeBodies>,
    /// Kibibytes of bodies in flight the server still has room for.
    budget: Arc<tokio::sync::Semaphore>,
    /// Kibibytes each network (an IPv4 /24, an IPv6 /64) holds now.
    held: Arc<Mutex<HashMap<AddressKey, u32>>>,
    /// The most one network may hold.
    per_network_kib: u32,
    /// How long a request waits for room before it is refused as busy.
    wait: Duration,
}

impl BodyRules {
    /// Bodies due within `deadline`, `budget_bytes` of them in flight at once, an eighth of
    /// that from any one network.
    pub fn new(deadline: Duration, budget_bytes: usize) -> Self {
        Self::with_wait(deadline, budget_bytes, Duration::from_secs(5))
    }

    /// The same rules, letting signed-in callers of `state` send Bundles of up to
    /// `limit_bytes` (at most half the budget) to `POST /fhir`.
    #[must_use]
    pub fn with_bundles(mut self, state: super::AppState, limit_bytes: usize) -> Self {
        let half = self.budget.available_permits().saturating_mul(1024) / 2;
        let limit = limit_bytes.min(half).max(super::MAX_BODY_BYTES);
        let kib = (limit.div_ceil(1024) * 2).min(tokio::sync::Semaphore::MAX_PERMITS);
        self.bundles = Some(LargeBodies {
            state,
            limit,
            budget: Arc::new(tokio::sync::Semaphore::new(kib)),
            sending: Arc::default(),
        });
        self
    }

    fn with_wait(deadline: Duration, budget_bytes: usize, wait: Duration) -> Self {
        let kib = u32::try_from(budget_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Self {
            deadline,
            bundles: None,
            budget: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            held: Arc::default(),
            per_network_kib: (kib / 8).max(1),
            wait,
        }
    }

    /// Takes `kib` of `network`'s share, if it has that much left.
    fn take_share(&self, network: Option<AddressKey>, kib: u32) -> Option<Share> {
        let Some(network) = network else { return Some(Share { rules: None, network: None, kib }) };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = held.entry(network).or_insert(0);
        if now.saturating_add(kib) > self.per_network_kib {
            return None;
        }
        *now += kib;
        Some(Share { rules: Some(self.held.clone()), network: Some(network), kib })
    }
}

/// A network's share of the body budget, given back when the request ends.
struct Share {
    rules: Option<Arc<Mutex<HashMap<AddressKey, u32>>>>,
    network: Option<AddressKey>,
    kib: u32,
}

impl Drop for Share {
    fn drop(&mut self) {
        let (Some(rules), Some(network)) = (&self.rules, self.network) else { return };
        let mut held = rules.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(now) = held.get_mut(&network) {
            *now = now.saturating_sub(self.kib);
            if *now == 0 {
                held.remove(&network);
            }
        }
    }
}

/// Large Bundles: whose requests may send them, and the room they have. They never draw on
/// the budget other bodies (sign-ins, single writes) share: a slow upload of the largest
/// Bundles can delay other Bundles, nothing else.
#[derive(Clone)]
struct LargeBodies {
    state: super::AppState,
    limit: usize,
    /// Kibibytes of large bodies in flight the server still has room for: two of the largest.
    budget: Arc<tokio::sync::Semaphore>,
    /// Networks sending a large body now: one each.
    sending: Arc<Mutex<std::collections::HashSet<AddressKey>>>,
}

/// The slowest a large body may arrive (bytes per second) before its deadline cuts it off.
const LARGE_BODY_BYTES_PER_SEC: usize = 100 * 1024;

/// The largest body a request may send: the sign-in routes answer anyone, so they take
/// little; a Bundle to `POST /fhir` from a signed-in caller may be large (its token is
/// checked before any of the body is read); everything else takes a resource's worth.
async fn body_limit(rules: &BodyRules, route: BodyRoute) -> Result<usize, axum::response::Response> {
    use axum::response::IntoResponse as _;
    Ok(match route {
        BodyRoute::SignIn => super::SIGN_IN_BODY_BYTES,
        // Only the care team loads records in bulk through the API (a patient's writes are
        // single readings and messages; the clinic's own loads use `import`). A session that
        // has ended is told so, as the route itself would tell it, not given the size limit.
        BodyRoute::Bundle(Some(token)) if let Some(bundles) = &rules.bundles => {
            match bundles.state.auth.authenticate(&token, crate::now()).await {
                Ok(p)
                    if matches!(
                        p.role,
                        carekeep_protocol::auth::Role::Clinician | carekeep_protocol::auth::Role::Nurse
                    ) =>
                {
                    bundles.limit
                }
                Ok(_) => super::MAX_BODY_BYTES,
                Err(e) => return Err(e.into_response()),
            }
        }
        BodyRoute::Bundle(_) | BodyRoute::Other => super::MAX_BODY_BYTES,
    })
}

/// Which limit a request's body falls under, read off the request before any await (a
/// request is not shared across threads).
enum BodyRoute {
    SignIn,
    /// `POST /fhir`, with the bearer token it carries.
    Bundle(Option<String>),
    Other,
}

impl BodyRoute {
    fn of(request: &axum::extract::Request) -> Self {
        let path = request.uri().path();
        if path.starts_with("/auth/") {
            return BodyRoute::SignIn;
        }
        if path != "/fhir" || request.method() != axum::http::Method::POST {
            return BodyRoute::Other;
        }
        let token = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        BodyRoute::Bundle(token.and_then(|t| t.strip_prefix("Bearer ")).map(str::to_owned))
    }
}

/// Middleware: a request with a body first takes room for it — its `Content-Length` or
/// exact size, or the route's limit when neither is known — from its network's share and
/// the server's budget, waiting a few seconds for room in the budget and then refused as
/// busy (`503`); a body declared larger than its route takes is refused at once (`413`).
/// Its body fails once the deadline has passed, so a trickled body ends the request (the
/// handler answers, and the audit records it) instead of holding the connection.
pub async fn body_deadline(
    axum::extract::State(rules): axum::extract::State<BodyRules>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use carekeep_protocol::refusal::Refusal;
    use http_body::Body as _;
    let busy = || {
        super::json::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Busy,
            "The server is receiving more than it can hold right now. Try again in a few seconds.",
        )
    };
    let room = if request.body().is_end_stream() {
        None
    } else {
        let limit = match body_limit(&rules, BodyRoute::of(&request)).await {
            Ok(limit) => limit,
            Err(ended) => return ended,
        };
        let declared = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .or_else(|| usize::try_from(request.body().size_hint().exact()?).ok())
            .unwrap_or(limit);
        if declared > limit {
            return super::json::refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                Refusal::InvalidRequest,
                &format!("The body is larger than this request takes (at most {} KiB); send less.", limit / 1024),
            );
        }
        let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let network = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| AddressKey::network(c.0.ip()));
        if declared > super::MAX_BODY_BYTES
            && let Some(bundles) = &rules.bundles
        {
            let Some(sending) = Sending::start(bundles, network) else { return busy() };
            match tokio::time::timeout(rules.wait, bundles.budget.clone().acquire_many_owned(kib)).await {
                Ok(Ok(permit)) => Some(Room::Large(permit, sending)),
                _ => return busy(),
            }
        } else {
            let Some(share) = rules.take_share(network, kib) else { return busy() };
            match tokio::time::timeout(rules.wait, rules.budget.clone().acquire_many_owned(kib)).await {
                Ok(Ok(permit)) => Some(Room::Shared(permit, share)),
                _ => return busy(),
            }
        }
    };
    // A large body must keep arriving at 100 KiB/s or better (a clinic's Bundle on a slow
    // line); everything else within the usual deadline.
    let declared = match &room {
        Some(Room::Large(permit, _)) => permit.num_permits() * 1024,
        _ => 0,
    };
    let deadline = rules
        .deadline
        .max(Duration::from_secs(u64::try_from(declared / LARGE_BODY_BYTES_PER_SEC).unwrap_or(u64::MAX)));
    let paced = declared > 0;
    let request = request.map(|body| axum::body::Body::new(DeadlineBody::new(body, deadline, paced)));
    let response = next.run(request).await;
    drop(room);
    response
}

/// The room a request's body holds until the request ends.
enum Room {
    /// A share of the budget all ordinary bodies draw on.
    Shared(
        #[expect(dead_code, reason = "held for its drop")] tokio::sync::OwnedSemaphorePermit,
        #[expect(dead_code, reason = "held for its drop")] Share,
    ),
    /// Room among the large Bundles, and its network's one place.
    Large(tokio::sync::OwnedSemaphorePermit, #[expect(dead_code, reason = "held for its drop")] Sending),
}

/// A network sending a large body; its place is given back on drop.
struct Sending {
    sending: Arc<Mutex<std::collections::HashSet<AddressKey>>>,
    network: Option<AddressKey>,
}

impl Sending {
    /// Takes `network`'s one place among large bodies, if it is free.
    fn start(bundles: &LargeBodies, network: Option<AddressKey>) -> Option<Sending> {
        if let Some(network) = network
            && !bundles.sending.lock().unwrap_or_else(PoisonError::into_inner).insert(network)
        {
            return None;
        }
        Some(Sending { sending: bundles.sending.clone(), network })
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(network) = self.network {
            self.sending.lock().unwrap_or_else(PoisonError::into_inner).remove(&network);
        }
    }
}

/// A body that errors once its deadline passes.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: Pin<Box<Sleep>>,
    /// For a large body: the current window and what arrived in it. Each [`PACE_WINDOW`]
    /// must bring [`LARGE_BODY_BYTES_PER_SEC`] a second, so a trickle cannot hold the
    /// large-body room until its overall deadline.
    pace: Option<(Pin<Box<Sleep>>, usize)>,
}

/// How often a large body's pace is checked, in seconds.
const PACE_WINDOW_SECS: usize = 10;
/// The same, as a duration.
const PACE_WINDOW: Duration = Duration::from_secs(PACE_WINDOW_SECS as u64);

impl DeadlineBody {
    fn new(inner: axum::body::Body, limit: Duration, paced: bool) -> Self {
        let pace = paced.then(|| (Box::pin(tokio::time::sleep(PACE_WINDOW)), 0));
        Self { inner, deadline: Box::pin(tokio::time::sleep(limit)), pace }
    }
}

fn too_slow(what: &'static str) -> axum::Error {
    axum::Error::new(io::Error::new(io::ErrorKind::TimedOut, what))
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let (Some((_, arrived)), Some(Ok(frame))) = (self.pace.as_mut(), frame.as_ref())
                && let Some(data) = frame.data_ref()
            {
                *arrived += data.len();
            }
            return Poll::Ready(frame);
        }
        if let Some((window, arrived)) = self.pace.as_mut()
            && window.as_mut().poll(cx).is_ready()
        {
            if *arrived < LARGE_BODY_BYTES_PER_SEC * PACE_WINDOW_SECS {
                return Poll::Ready(Some(Err(too_slow("the request body arrives too slowly"))));
            }
            *arrived = 0;
            window.as_mut().reset(tokio::time::Instant::now() + PACE_WINDOW);
            // Registers the new window's wake-up.
            let _ = window.as_mut().poll(cx);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(too_slow("the request body took too long")))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, total: usize) -> Limits {
        Limits { per_address, total, ..Limits::default() }
    }

    #[test]
    fn an_address_and_the_server_each_have_a_cap_and_slots_come_back() {
        let admission = Admission::new(limits(2, 3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "a third from one address");
        let _other = admission.admit(b).unwrap();
        assert!(admission.admit("192.0.2.3".parse().unwrap()).is_none(), "the server is full");
        drop(first);
        assert!(admission.admit(a).is_some(), "a closed connection gives its slot back");
    }

    /// The idle limit, whatever the protocol above: no byte for the limit ends the
    /// connection; traffic keeps it open.
    /// A body that sends `first` bytes and then nothing, as a half-sent upload.
    struct HalfSent(usize);

    impl http_body::Body for HalfSent {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            let first = std::mem::take(&mut self.0);
            if first == 0 {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(http_body::Frame::data(vec![b'{'; first].into()))))
            }
        }
    }

    /// Bodies being read share one budget: half-sent uploads beyond it are refused as busy
    /// (not buffered), and room comes back when a request ends.
    #[tokio::test]
    async fn bodies_in_flight_share_one_budget() {
        use tower::ServiceExt as _;
        let rules = BodyRules::with_wait(Duration::from_millis(300), 2 * 1024, Duration::from_millis(100));
        let app = axum::Router::new()
            .route("/", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .layer(axum::middleware::from_fn_with_state(rules, body_deadline));
        let upload = |len: usize| {
            axum::http::Request::post("/")
                .header("content-length", "1024")
                .body(axum::body::Body::new(HalfSent(len)))
                .unwrap()
        };
        let first = tokio::spawn(app.clone().oneshot(upload(100)));
        let second = tokio::spawn(app.clone().oneshot(upload(100)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = app.clone().oneshot(upload(100)).await.unwrap();
        assert_eq!(third.status(), 503, "no room for a third kibibyte");
        // The two time out at their deadline and give their room back.
        assert_ne!(first.await.unwrap().unwrap().status(), 200);
        assert_ne!(second.await.unwrap().unwrap().status(), 200);
        let complete = axum::http::Request::post("/").body(axum::body::Body::from("{}")).unwrap();
        assert_eq!(app.oneshot(complete).await.unwrap().status(), 200);
    }

    /// One network holds at most an eighth of the budget: its next body is refused as busy
    /// at once while another network's still gets room; a sign-in body announced larger
    /// than the route takes is refused before any room is taken.
    #[tokio::test]
    async fn one_network_holds_an_eighth_of_the_budget() {
        use axum::extract::ConnectInfo;
        use tower::ServiceExt as _;
        let rules = BodyRules::with_wait(Duration::from_millis(300), 64 * 1024, Duration::from_millis(100));
        let app = axum::Router::new()
            .route("/fhir", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .route("/auth/login", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .layer(axum::middleware::from_fn_with_state(rules, body_deadline));
        let upload = |from: [u8; 4], path: &str, declared: usize| {
            let mut request = axum::http::Request::post(path)
                .header("content-length", declared.to_string())
                .body(axum::body::Body::new(HalfSent(1)))
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(std::net::SocketAddr::from((from, 443))));
            request
        };
        // 8 KiB is the share: 4 + 4 from two hosts of one /24 fill it.
        let a = tokio::spawn(app.clone().oneshot(upload([192, 0, 2, 1], "/fhir", 4 * 1024)));
        let b = tokio::spawn(app.clone().oneshot(upload([192, 0, 2, 2], "/fhir", 4 * 1024)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let over = app.clone().oneshot(upload([192, 0, 2, 3], "/fhir", 1024)).await.unwrap();
        assert_eq!(over.status(), 503, "the network's share is spent");
        let other = tokio::spawn(app.clone().oneshot(upload([198, 51, 100, 1], "/fhir", 4 * 1024)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!other.is_finished(), "another network got room and is reading its body");
        let big = app
            .clone()
            .oneshot(upload([198, 51, 100, 2], "/auth/login", 17 * 1024))
            .await
            .unwrap();
        assert_eq!(big.status(), 413);
        for held in [a, b, other] {
            assert_ne!(held.await.unwrap().unwrap().status(), 200, "ended by the body deadline");
        }
        let again = app.oneshot(upload([192, 0, 2, 3], "/fhir", 1024)).await.unwrap();
        assert_ne!(again.status(), 503, "the share came back");
    }

    #[tokio::test]
    async fn a_connection_on_which_nothing_moves_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let idle = Duration::from_millis(300);
        let admission = Admission::new(Limits { idle, ..limits(4, 4) });
        let (server_end, mut client) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server_end, admission.admit("192.0.2.1".parse().unwrap()).unwrap(), idle);
        let started = std::time::Instant::now();
        let mut byte = [0_u8; 1];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            guarded.read_exact(&mut byte).await.unwrap();
        }
        let ended = guarded.read(&mut byte).await.unwrap_err();
        assert_eq!(ended.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(900), "traffic kept it open: {:?}", started.elapsed());
        drop(guarded);
        assert!(admission.admit("192.0.2.1".parse().unwrap()).is_some());
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let admission = Admission::new(limits(1, 10));
        let _one = admission.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(admission.admit("2001:db8:1:2:ffff::9".parse().unwrap()).is_none(), "same /64");
        assert!(admission.admit("2001:db8:1:3::1".parse().unwrap()).is_some(), "another /64");
    }
}
