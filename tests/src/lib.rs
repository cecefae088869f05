//! The harness the end-to-end tests share: a real `carekeep-server` on an ephemeral port of
//! 127.0.0.1, serving a fresh data directory with one tenant and one user, and the pins and
//! codes a client needs to reach it.

pub mod app_driver;
pub mod bench_table;
pub mod proxy;

use std::sync::Arc;

use carekeep_core::account::{Account, SignIn};
use carekeep_core::net::{Server, ServerUrl};
use carekeep_core::{Clock, Error, Keychain, Password, Profile, SystemClock};
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::{Pin, PinSet};
use carekeep_server::DataDir;

/// The tenant every harness server has.
pub const TENANT: &str = "clinic-1";
/// The user's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// A data directory with one tenant and one user, not yet served.
pub struct World {
    /// Where the data directory lives (removed with the last world sharing it).
    dir: Arc<tempfile::TempDir>,
    /// Everyone `seed-demo` created (empty for [`World::new`]).
    demo_users: Vec<carekeep_server::seed::DemoUser>,
    /// The server's data directory.
    pub data: DataDir,
    /// The user's name.
    pub username: String,
    /// The user's password.
    pub password: String,
    /// The user's TOTP secret (raw bytes).
    pub totp_secret: Vec<u8>,
    /// The user's opaque id.
    pub user_id: String,
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
        Self {
            dir: Arc::new(dir),
            demo_users: Vec::new(),
            data,
            username,
            password: PASSWORD.to_owned(),
            totp_secret: totp_bytes(&user.totp_base32),
            user_id: user.id,
        }
    }

    /// The demo tenant (`seed-demo`: 20 synthetic patients), signed in as its user of `role`.
    pub fn demo(role: Role) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
        let store = std::sync::Arc::new(data.open_store().unwrap());
        let keys = data.master_keys().unwrap();
        let records = carekeep_server::records::Records::new(store.clone(), zeroize::Zeroizing::new(*keys.documents));
        let users = carekeep_server::seed::seed_demo(&store, &records, 0).unwrap();
        let world = Self {
            dir: Arc::new(dir),
            demo_users: users,
            data,
            username: String::new(),
            password: String::new(),
            totp_secret: Vec::new(),
            user_id: String::new(),
        };
        world.colleague(role)
    }

    /// The same demo world, as its user of `role` (a clinician beside the patient).
    #[must_use]
    pub fn colleague(&self, role: Role) -> Self {
        let user = self.demo_users.iter().find(|u| u.role == role).unwrap();
        let user_id = self
            .data
            .open_store()
            .unwrap()
            .read()
            .query_row("SELECT id FROM users WHERE username = ?1", [&user.username], |r| r.get(0))
            .unwrap();
        Self {
            dir: self.dir.clone(),
            demo_users: self.demo_users.clone(),
            data: self.data.clone(),
            username: user.username.clone(),
            password: user.password.clone(),
            totp_secret: totp_bytes(&user.totp_base32),
            user_id,
        }
    }

    /// The server's records service over this data directory (to write as the clinic would).
    pub fn records(&self) -> carekeep_server::records::Records {
        let store = Arc::new(self.data.open_store().unwrap());
        let keys = self.data.master_keys().unwrap();
        carekeep_server::records::Records::new(store, zeroize::Zeroizing::new(*keys.documents))
    }

    /// Every event in the server's audit trail, oldest first.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let store = self.data.open_store().unwrap();
        let conn = store.read();
        let mut stmt = conn.prepare("SELECT record FROM audit_log ORDER BY seq").unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| serde_json::from_str::<serde_json::Value>(&r.unwrap()).unwrap()["event"].clone())
            .collect()
    }

    /// The server's pin set as `init` printed it: live key, backup key.
    pub fn pins(&self) -> PinSet {
        let pins = self.data.pins().unwrap();
        PinSet::new(vec![pins.live, pins.backup], in_days(90)).unwrap()
    }

    /// The authenticator code for `step` 30-second steps from now (the server accepts one
    /// step either side, each step once: three sign-ins at most in one window).
    pub fn code(&self, step: i64) -> String {
        let totp = totp_rs::Builder::new()
            .with_secret(self.totp_secret.as_slice())
            .build()
            .unwrap();
        totp.generate(now_unix().saturating_add_signed(30 * step)).to_string()
    }

    /// From now on the user's authenticator is the one `shown` (an `otpauth://` URI as in
    /// the QR code, or the base32 key to type): [`World::code`] answers with its codes.
    pub fn scan_authenticator(&mut self, shown: &str) {
        self.totp_secret = if shown.starts_with("otpauth://") {
            totp_rs::Totp::from_url(shown).unwrap().secret().to_vec()
        } else {
            totp_bytes(&shown.replace(' ', ""))
        };
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
    #[expect(clippy::new_without_default, reason = "each device is a new temporary profile: not a value to default to")]
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
        step: i64,
    ) -> Result<Account, Error> {
        self.sign_in_at(world, running.url(), clock, step).await
    }

    /// As [`Device::sign_in`], at `url` (a proxy in front of the server).
    pub async fn sign_in_at(
        &self,
        world: &World,
        url: ServerUrl,
        clock: Arc<dyn Clock>,
        step: i64,
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

/// The opening many tests share: `world`'s user signed in (with the current code) on a fresh
/// device against its server on 127.0.0.1, and synced once.
pub struct SyncedDevice {
    /// The server's data and the user.
    pub world: World,
    /// The server (stops when dropped).
    pub running: Running,
    /// The device (its profile is removed when dropped).
    pub device: Device,
    /// The signed-in, synced account.
    pub account: Account,
}

impl SyncedDevice {
    /// Starts `world`'s server, signs its user in on a new device and syncs.
    pub async fn start(world: World) -> Self {
        let running = Running::start(&world.data).await;
        let device = Device::new();
        let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
        account.sync(&mut |_| {}).await.unwrap();
        Self { world, running, device, account }
    }
}

/// The 20 synthetic carebundle patients (`carebundle generate --profile mixed --count 20
/// --seed 42`), one transaction Bundle each.
const CAREBUNDLE: [&str; 20] = [
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0000.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0001.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0002.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0003.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0004.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0005.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0006.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0007.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0008.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0009.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0010.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0011.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0012.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0013.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0014.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0015.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0016.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0017.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0018.json"),
    include_str!("../../crates/core/tests/fixtures/carebundle/mixed-42-0019.json"),
];

/// Synthetic patient `n`'s Bundle: one of the 20 carebundle patients, with every
/// `urn:uuid:` made unique to `n` (its first eight hex digits replaced by the copy number),
/// so any number of distinct patients can be made from the 20 — what `carebundle --count`
/// would give, without Python in the test run.
pub fn synthetic_patient(n: usize) -> String {
    let (copy, original) = (n / CAREBUNDLE.len(), CAREBUNDLE[n % CAREBUNDLE.len()]);
    if copy == 0 {
        return original.to_owned();
    }
    let prefix = format!("{copy:08x}");
    let mut out = String::with_capacity(original.len());
    let mut rest = original;
    while let Some(at) = rest.find("urn:uuid:") {
        let uuid_start = at + "urn:uuid:".len();
        out.push_str(&rest[..uuid_start]);
        out.push_str(&prefix);
        rest = &rest[uuid_start + 8..];
    }
    out.push_str(rest);
    out
}

/// The Synthea-shaped patient of the server's fixtures, whole (every type an export carries).
const SYNTHEA_PATIENT: &str = include_str!("../../crates/server/tests/fixtures/synthea-style/patient-00.json");
/// The directory its conditional references name.
pub const SYNTHEA_DIRECTORY: [&str; 2] = [
    include_str!("../../crates/server/tests/fixtures/synthea-style/hospitalInformation.json"),
    include_str!("../../crates/server/tests/fixtures/synthea-style/practitionerInformation.json"),
];

/// A Synthea-sized patient `n` as one transaction Bundle: the fixture patient's visit and
/// everything recorded at it, `visits` times over (about 68 resources a visit: `visits =
/// 29` gives the ~2 000 resources of a Synthea patient with a long history), each copy with
/// its own `urn:uuid:`s and the patient with its own record number.
pub fn synthea_sized_patient(n: usize, visits: usize) -> String {
    let bundle: serde_json::Value = serde_json::from_str(SYNTHEA_PATIENT).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let patient = entries.iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap();
    let patient_uuid = patient["fullUrl"]
        .as_str()
        .unwrap()
        .strip_prefix("urn:uuid:")
        .unwrap()
        .to_owned();
    let patient_prefix = format!("{n:04x}ffff");
    let relabel = |text: &str, copy: &str| {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("urn:uuid:") {
            let start = at + "urn:uuid:".len();
            out.push_str(&rest[..start]);
            let uuid = &rest[start..start + 36];
            out.push_str(if uuid == patient_uuid { &patient_prefix } else { copy });
            rest = &rest[start + 8..];
        }
        out.push_str(rest);
        out
    };
    let mut out = Vec::with_capacity(1 + visits * entries.len());
    let mut own = patient.clone();
    own["resource"]["identifier"][0]["value"] = serde_json::json!(format!("SYN{n:06}"));
    own["request"]["ifNoneExist"] =
        serde_json::json!(format!("identifier=http://hospital.smarthealthit.org|SYN{n:06}"));
    out.push(relabel(&own.to_string(), ""));
    for visit in 0..visits {
        let copy = format!("{n:04x}{visit:04x}");
        for entry in entries.iter().filter(|e| e["resource"]["resourceType"] != "Patient") {
            out.push(relabel(&entry.to_string(), &copy));
        }
    }
    format!(r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#, out.join(","))
}

/// Imports synthetic patients `range` into `world`'s tenant and puts them on its user's care
/// team. Returns their ids.
pub fn seed_care_team(world: &World, range: std::ops::Range<usize>) -> Vec<String> {
    let store = std::sync::Arc::new(world.data.open_store().unwrap());
    let keys = world.data.master_keys().unwrap();
    let records = carekeep_server::records::Records::new(store, zeroize::Zeroizing::new(*keys.documents));
    let mut patients = Vec::new();
    for n in range {
        for patient in carekeep_server::seed::import_bundle(&records, TENANT, &synthetic_patient(n)).unwrap() {
            records.link(TENANT, &world.user_id, &patient, "care-team").unwrap();
            patients.push(patient);
        }
    }
    patients
}

/// Stores a DocumentReference of demo `patient` with one plain-text attachment of
/// `bytes`, as an upload at the clinic would; returns its id.
pub fn seed_document(records: &carekeep_server::records::Records, patient: &str, title: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    let resource = serde_json::json!({
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": format!("Patient/{patient}")},
        "content": [{"attachment": {
            "contentType": "text/plain", "title": title,
            "data": base64::engine::general_purpose::STANDARD.encode(bytes)
        }}]
    });
    let checked = records.check(resource, "DocumentReference").unwrap();
    records
        .create(carekeep_server::seed::DEMO_TENANT, checked, &carekeep_server::records::Writer::CLINIC)
        .unwrap()
        .0
        .id
}

/// A running server, stopped when dropped.
pub struct Running(carekeep_server::http::Running);

impl Running {
    /// Serves `data` until dropped.
    pub async fn start(data: &DataDir) -> Self {
        Self(
            carekeep_server::http::Running::start(data, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        )
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
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
