//! Crash safety of sync: the real `carekeep sync` process is killed with SIGKILL at random
//! points — while it unlocks, replays the outbox, uploads the access log, ingests pages —
//! more than fifty times. Afterwards the vault opens, the outbox lost nothing, the server
//! holds each write exactly once, and each offline read reached the audit trail once.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_core::account::{Account, HomeReading};
use carekeep_core::store::ResourceQuery;
use carekeep_core::{Clock, Keychain, Password, Profile, SystemClock};
use carekeep_e2e::{Running, World};
use carekeep_protocol::auth::Role;
use carekeep_server::records::{Records, Writer};

/// Kills that must land while the process runs.
const KILLS: usize = 55;

fn cli(profile: &std::path::Path, args: &[&str], password: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carekeep"))
        .arg("--profile")
        .arg(profile)
        .arg("--password-stdin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child
}

/// A random number below `n` (the test's own randomness; no extra crate).
fn below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % n.max(1)
}

/// The steps a kill aims at: the unlock, then each step `carekeep sync` reports.
const STEPS: &[&str] = &[
    "starting",
    "contacting the server",
    "uploading the access log",
    "sending your changes",
    "checking your patient list",
    "removing deleted records",
    "downloading records",
];

/// The step a progress line names (`carekeep: sending your changes (1/3)`).
fn last_step(line: &str) -> String {
    let line = line.strip_prefix("carekeep: ").unwrap_or(line);
    line.split(" (").next().unwrap_or(line).to_owned()
}

/// The child's standard error, line by line, as it comes.
fn report_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The device's and the server's side of the test: what was written, and what to check.
struct Workload {
    profile_dir: std::path::PathBuf,
    profile: Profile,
    password: String,
    patients: Vec<String>,
    records: Records,
    /// Every message queued on the device (each must reach the server once).
    messages: Vec<String>,
    /// Reads made from the cache (each must reach the audit trail once).
    reads: usize,
}

impl Workload {
    /// Signs the world's clinician in with the CLI and syncs once to the end.
    fn start(world: &World, running: &Running, dir: &std::path::Path) -> Self {
        let pins = world.data.pins().unwrap();
        let profile_dir = dir.join("profile");
        let url = running.url().as_str().to_owned();
        let mut login = Command::new(env!("CARGO_BIN_EXE_carekeep"))
            .arg("--profile")
            .arg(&profile_dir)
            .args(["login", "--server", &url, "--pin", &pins.live.to_string(), "--pin", &pins.backup.to_string()])
            .args(["--user", &world.username, "--totp", &world.code(0), "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        login
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", world.password).as_bytes())
            .unwrap();
        assert!(login.wait().unwrap().success());
        let store = Arc::new(world.data.open_store().unwrap());
        let keys = world.data.master_keys().unwrap();
        let mut work = Self {
            profile: Profile::new(&profile_dir),
            profile_dir,
            password: world.password.clone(),
            patients: Vec::new(),
            records: Records::new(store, zeroize::Zeroizing::new(*keys.documents)),
            messages: Vec::new(),
            reads: 0,
        };
        work.sync_to_end();
        let mut account = work.unlocked();
        work.patients = account
            .store()
            .unwrap()
            .sync_patients()
            .unwrap()
            .into_iter()
            .map(|p| p.patient)
            .collect();
        drop(account);
        work
    }

    fn unlocked(&self) -> Account {
        let mut account = Account::open(&self.profile, Keychain::os(), Arc::new(SystemClock)).unwrap();
        account.unlock_with_password(&Password::new(self.password.as_str())).unwrap();
        account
    }

    fn sync(&self) -> std::process::Child {
        cli(&self.profile_dir, &["sync"], &self.password)
    }

    fn sync_to_end(&self) {
        let out = self.sync().wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Work for the next sync: writes and a read on the device, news on the server.
    fn round(&mut self, n: usize) {
        let mut account = self.unlocked();
        let patient = &self.patients[n % self.patients.len()];
        for k in 0..4 {
            let text = format!("kill-test message {n}-{k}");
            account.message_care_team(patient, &text, SystemClock.now_unix()).unwrap();
            self.messages.push(text);
        }
        let reading = HomeReading::BloodPressure { systolic: 100, diastolic: 70 };
        account.record_reading(patient, reading, SystemClock.now_unix()).unwrap();
        let query = ResourceQuery {
            resource_type: "Condition".into(),
            patient: Some(format!("Patient/{patient}")),
            ..ResourceQuery::default()
        };
        account.read_records(&query).unwrap();
        self.reads += 1;
        drop(account);
        for p in &self.patients {
            let value = serde_json::json!({
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                "subject": {"reference": format!("Patient/{p}")},
                "effectiveDateTime": "2026-11-01T08:00:00Z",
                "valueQuantity": {"value": n, "unit": "mg/dL"}
            });
            self.records
                .create("demo", self.records.check(value, "Observation").unwrap(), &Writer::CLINIC)
                .unwrap();
        }
    }

    /// Starts a sync and kills it with SIGKILL in a step picked at random: once the process
    /// reports the step, a random moment later (for the unlock, a random moment after the
    /// start). Returns the last step it reported, or `None` if it finished first.
    fn kill_a_sync(&self, unlock: Duration) -> Option<String> {
        let target = STEPS[usize::try_from(below(STEPS.len() as u64)).unwrap()];
        let mut child = self.sync();
        let lines = report_lines(&mut child);
        let mut last = String::from("starting");
        if target == "starting" {
            std::thread::sleep(Duration::from_micros(below(u64::try_from(unlock.as_micros()).unwrap())));
        } else {
            while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
                last = line;
                if last.contains(target) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(below(20_000)));
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        Some(last_step(&lines.try_iter().last().unwrap_or(last)))
    }

    /// Each queued write is on the server once, and each read is in the audit trail once.
    fn assert_each_once(&self, world: &World, panels_before: i64) {
        let mut account = self.unlocked();
        assert!(account.pending_writes().unwrap().is_empty(), "the outbox drained");
        assert!(account.set_aside_writes().unwrap().is_empty(), "nothing was refused or in conflict");
        drop(account);
        let store = world.data.open_store().unwrap();
        let conn = store.read();
        let mut stmt = conn.prepare("SELECT json FROM resources WHERE type = 'Communication'").unwrap();
        let sent: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|j| {
                let value: serde_json::Value = serde_json::from_str(&j.unwrap()).unwrap();
                value["payload"][0]["contentString"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        for text in &self.messages {
            assert_eq!(sent.iter().filter(|s| *s == text).count(), 1, "{text}: exactly once on the server");
        }
        let readings = blood_pressure_panels(world) - panels_before;
        assert_eq!(usize::try_from(readings).unwrap(), self.messages.len() / 4, "each reading exactly once");
        let mut stmt = conn.prepare("SELECT record FROM audit_log").unwrap();
        let offline_reads = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .filter(|r| r.as_ref().unwrap().contains("device access: read from the device cache"))
            .count();
        assert_eq!(offline_reads, self.reads, "each read from the cache is in the trail once");
    }
}

// The test drives processes with blocking waits; the server it talks to runs on the other
// workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_killed_at_random_points_loses_nothing_and_writes_once() {
    let world = World::demo(Role::Clinician);
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let mut work = Workload::start(&world, &running, dir.path());
    // How long a process takes to start and unlock: kills aimed at the unlock land in it.
    let started = Instant::now();
    assert!(cli(&work.profile_dir, &["pending"], &work.password).wait().unwrap().success());
    let unlock = started.elapsed();
    let panels_before = blood_pressure_panels(&world);

    let mut killed_in: BTreeMap<String, usize> = BTreeMap::new();
    let mut rounds = 0;
    while killed_in.values().sum::<usize>() < KILLS {
        assert!(rounds < 3 * KILLS, "kills keep missing the process: {killed_in:?}");
        work.round(rounds);
        rounds += 1;
        if let Some(step) = work.kill_a_sync(unlock) {
            *killed_in.entry(step).or_default() += 1;
        }
    }
    eprintln!("killed {KILLS} times in {rounds} rounds, by the last step reported: {killed_in:?}");
    for step in ["sending your changes", "downloading records"] {
        assert!(killed_in.contains_key(step), "no kill while {step}: {killed_in:?}");
    }
    assert!(killed_in.len() >= 4, "kills spread over the steps: {killed_in:?}");

    // Afterwards: one sync to the end, and everything is where it should be, once.
    work.sync_to_end();
    work.assert_each_once(&world, panels_before);
}

/// Blood-pressure panels on the server (the demo data has some of its own).
fn blood_pressure_panels(world: &World) -> i64 {
    let store = world.data.open_store().unwrap();
    let conn = store.read();
    conn.query_row("SELECT count(*) FROM resources WHERE type = 'Observation' AND json LIKE '%85354-9%'", [], |r| {
        r.get(0)
    })
    .unwrap()
}
