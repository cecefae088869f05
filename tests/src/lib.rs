//! The harness the end-to-end tests share: a real `carekeep-server` on an ephemeral port of
//! 127.0.0.1, serving a fresh data directory with one tenant and one user, and the pins and
//! codes a client needs to reach it.

pub mod proxy;

use std::sync::Arc;

use carekeep_core::account::{Account, SignIn};
use carekeep_core::net::{Server, ServerUrl};
use carekeep_core::{Clock, Error, Keychain, Password, Profile};
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::{Pin, PinSet};
use carekeep_server::DataDir;

/// The tenant every harness server has.
pub const TENANT: &str = "clinic-1";
/// The user's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// A data directory with one tenant and one user, not yet served.
pub struct World {
    _dir: tempfile::TempDir,
    /// The server's data directory.
    pub data: DataDir,
    /// The user's name.
    pub username: String,
    /// The user's password.
    pub password: String,
    /// The user's TOTP secret (raw bytes).
    pub totp_secret: Vec<u8>,
}

impl World {
    /// A fresh world whose user has `role`.
    pub fn new(role: Role) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
        let store = data.open_store().unwrap();
        carekeep_server::admin::add_tenant(&store, TENANT, "Clinic One", 0).unwrap();
        let username = format!("e2e-{}", role.as_str());
        let user = carekeep_server::admin::add_user(&store, TENANT, &username, role, PASSWORD, 0).unwrap();
        Self { _dir: dir, data, username, password: PASSWORD.to_owned(), totp_secret: totp_bytes(&user.totp_base32) }
    }

    /// The demo tenant (`seed-demo`: 20 synthetic patients), signed in as its user of `role`.
    pub fn demo(role: Role) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
        let store = std::sync::Arc::new(data.open_store().unwrap());
        let keys = data.master_keys().unwrap();
        let records = carekeep_server::records::Records::new(store.clone(), zeroize::Zeroizing::new(*keys.documents));
        let users = carekeep_server::seed::seed_demo(&store, &records, 0).unwrap();
        let user = users.into_iter().find(|u| u.role == role).unwrap();
        let totp_secret = totp_bytes(&user.totp_base32);
        Self { _dir: dir, data, username: user.username, password: user.password, totp_secret }
    }

    /// The server's pin set as `init` printed it: live key, backup key.
    pub fn pins(&self) -> PinSet {
        let pins = self.data.pins().unwrap();
        PinSet::new(vec![pins.live, pins.backup], in_days(90)).unwrap()
    }

    /// The authenticator code for `step` 30-second steps from now.
    pub fn code(&self, step: u64) -> String {
        let totp = totp_rs::Builder::new().with_secret(self.totp_secret.as_slice()).build().unwrap();
        totp.generate(now_unix() + 30 * step).to_string()
    }
}

/// A device: a profile directory of its own and a keychain service of its own.
pub struct Device {
    _dir: tempfile::TempDir,
    /// The profile.
    pub profile: Profile,
    /// Its keychain (a service name unique to this device).
    pub keychain: Keychain,
}

impl Device {
    /// A fresh device.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(dir.path().join("profile"));
        let keychain =
            Keychain::with_service(format!("carekeep-e2e-{}-{:?}", std::process::id(), std::thread::current().id()));
        Self { _dir: dir, profile, keychain }
    }

    /// Signs `world`'s user in on this device, with the code `step` steps from now.
    pub async fn sign_in(
        &self,
        world: &World,
        running: &Running,
        clock: Arc<dyn Clock>,
        step: u64,
    ) -> Result<Account, Error> {
        self.sign_in_at(world, running.url(), clock, step).await
    }

    /// As [`Device::sign_in`], at `url` (a proxy in front of the server).
    pub async fn sign_in_at(
        &self,
        world: &World,
        url: ServerUrl,
        clock: Arc<dyn Clock>,
        step: u64,
    ) -> Result<Account, Error> {
        let password = Password::new(world.password.as_str());
        let request = SignIn {
            url,
            pins: world.pins(),
            username: &world.username,
            password: &password,
            code: &world.code(step),
            device_name: "e2e device",
        };
        Account::sign_in(&self.profile, self.keychain.clone(), clock, request).await
    }

    /// Every byte the profile holds on disk.
    pub fn files(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.profile.dir()).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
        }
        all
    }
}

/// A running server, stopped when dropped.
pub struct Running(carekeep_server::http::Running);

impl Running {
    /// Serves `data` until dropped.
    pub async fn start(data: &DataDir) -> Self {
        Self(carekeep_server::http::Running::start(data, "127.0.0.1:0".parse().unwrap()).await.unwrap())
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("https://localhost:{}", self.0.port())).unwrap()
    }

    /// The port it listens on.
    pub fn port_number(&self) -> u16 {
        self.0.port()
    }

    /// A client pinned to `pins`.
    pub fn client(&self, pins: PinSet) -> Server {
        Server::connect(self.url(), pins).unwrap()
    }
}

/// A pin of no key anyone holds.
pub fn stranger_pin(seed: &[u8]) -> Pin {
    Pin::from_spki_der(seed)
}

/// The date `days` from today.
pub fn in_days(days: i64) -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A TOTP secret's raw bytes from its base32 form.
fn totp_bytes(base32: &str) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(base32).unwrap().as_bytes().to_vec()
}

/// A test double of the presence check (no fingerprint sensor or polkit agent exists here):
/// answers as constructed, and counts the times it was asked.
pub struct PresenceTestDouble {
    available: bool,
    asked: std::sync::atomic::AtomicU32,
}

impl PresenceTestDouble {
    /// The person is there.
    pub fn present() -> Self {
        Self { available: true, asked: std::sync::atomic::AtomicU32::new(0) }
    }

    /// This device has no presence check.
    pub fn unavailable() -> Self {
        Self { available: false, asked: std::sync::atomic::AtomicU32::new(0) }
    }

    /// How many times it was asked.
    pub fn asked(&self) -> u32 {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl carekeep_core::presence::PresenceVerifier for PresenceTestDouble {
    fn verify(&self, _reason: &str) -> Result<(), carekeep_core::presence::PresenceError> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.available { Ok(()) } else { Err(carekeep_core::presence::PresenceError::Unavailable) }
    }
}
