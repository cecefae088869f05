//! The server's own output holds no secrets and no PHI: the real binary runs, real traffic
//! crosses the wire, then its stdout and stderr are searched for every secret, seeded
//! patient name, birth date and patient id that went through it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use serde_json::json;

const PASSWORD: &str = "Zq-sentinel-passphrase-91";
const USERNAME: &str = "zq-sentinel-user";

/// The real server binary serving `root`, its port, and everything it printed so far.
struct Served {
    child: Child,
    port: u16,
    lines: Receiver<String>,
    output: String,
}

impl Served {
    /// Starts `serve` with `RUST_LOG` as given (`None`: the default level).
    fn start(root: &Path, rust_log: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_carekeep-server"));
        command.args(["serve", "--data"]).arg(root).args(["--listen", "127.0.0.1:0"]);
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Read stderr on a thread so a server that never prints its address fails the test
        // within 30 s instead of hanging it.
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut output = String::new();
        let port = loop {
            let line = lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the server did not report its address: {output}")
            });
            output.push_str(&line);
            output.push('\n');
            if let Some(addr) = line.split("addr=").nth(1) {
                break addr
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        };
        Self { child, port, lines, output }
    }

    /// Stops the server and returns all it printed, on either stream.
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        let rest = self.child.wait_with_output().unwrap();
        self.output.push_str(&String::from_utf8_lossy(&rest.stdout));
        // The reader thread ends with the process; collect what it still holds.
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.output.push_str(&line);
            self.output.push('\n');
        }
        self.output
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_leaves_no_secret_in_the_servers_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, user) = common::data_with_user(dir.path(), USERNAME, PASSWORD);
    let served = Served::start(&root, None);

    let http = common::client_for(&data);
    let base = format!("https://localhost:{}", served.port);
    let wrong = json!({"username": USERNAME, "password": "Zq-wrong-sentinel"});
    http.post(format!("{base}/auth/login")).json(&wrong).send().await.unwrap();
    let signed_in = common::sign_in(&http, &base, USERNAME, PASSWORD, &user.totp_base32, 0).await;
    let tokens = &signed_in.tokens;
    assert!(tokens["access_token"].is_string(), "{tokens}");

    let output = served.stop();
    for secret in [
        PASSWORD,
        "Zq-wrong-sentinel",
        USERNAME,
        signed_in.code.as_str(),
        signed_in.mfa_token.as_str(),
        &format!("{USERNAME}-0"),
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
        &user.totp_base32,
    ] {
        assert!(!output.contains(secret), "the server printed a secret:\n{output}");
    }
}

const SENTINEL_FAMILY: &str = "Zqsentinelfamily";
const SENTINEL_GIVEN: &str = "Zqsentinelgiven";
const SENTINEL_BIRTH: &str = "1911-11-11";
const SENTINEL_NOTE: &str = "Zq-sentinel-clinical-note";

/// Names, birth dates and ids of the patients in a searchset.
fn phi_of(bundle: &serde_json::Value) -> Vec<String> {
    let mut phi = Vec::new();
    for entry in bundle["entry"].as_array().unwrap() {
        let patient = &entry["resource"];
        phi.push(patient["id"].as_str().unwrap().to_owned());
        phi.push(patient["birthDate"].as_str().unwrap().to_owned());
        for name in patient["name"].as_array().unwrap() {
            phi.push(name["family"].as_str().unwrap().to_owned());
            phi.extend(name["given"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()));
        }
    }
    phi
}

/// The demo tenant seeded by the real `seed-demo`, a clinician reading and writing records
/// (a renamed patient, a note, a refused write, an unknown id), with the server at `trace`:
/// not one name, birth date, note or patient id reaches its output.
#[tokio::test(flavor = "multi_thread")]
async fn seeded_patient_names_never_reach_the_servers_logs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
            .args(args)
            .arg(&root)
            .output()
            .unwrap()
    };
    assert!(run(&["init", "--data"]).status.success());
    let seeded = run(&["seed-demo", "--data"]);
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let users = String::from_utf8(seeded.stdout).unwrap();
    let clinician: Vec<&str> = users
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("clinician"))
        .unwrap()
        .split(' ')
        .collect();
    let data = carekeep_server::DataDir::open(&root).unwrap();
    let served = Served::start(&root, Some("trace"));

    let http = common::client_for(&data);
    let base = format!("https://localhost:{}", served.port);
    let token = common::sign_in(&http, &base, clinician[0], clinician[2], clinician[3], 0)
        .await
        .tokens["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = |path: String| {
        let request = http.get(format!("{base}{path}")).bearer_auth(&token);
        async move { request.send().await.unwrap() }
    };
    let patients: serde_json::Value = get("/fhir/Patient?_count=100".into()).await.json().await.unwrap();
    let mut phi = phi_of(&patients);
    assert!(phi.len() >= 30, "the clinician's care team holds ten patients");
    let first = patients["entry"][0]["resource"].clone();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(get(format!("/fhir/Patient/{id}/$everything")).await.status(), 200);
    assert_eq!(get(format!("/fhir/Observation?patient={id}")).await.status(), 200);

    // Rename the patient to the sentinel, add a note, try an invalid write with the
    // sentinel in it, and read the renamed patient back.
    let mut renamed = first.clone();
    renamed["name"] = json!([{"family": SENTINEL_FAMILY, "given": [SENTINEL_GIVEN]}]);
    renamed["birthDate"] = json!(SENTINEL_BIRTH);
    let version = first["meta"]["versionId"].as_str().unwrap();
    let put = |body: serde_json::Value| {
        http.put(format!("{base}/fhir/Patient/{id}"))
            .bearer_auth(&token)
            .header("If-Match", format!("W/\"{version}\""))
            .json(&body)
            .send()
    };
    let mut invalid = renamed.clone();
    invalid["birthDate"] = json!(format!("{SENTINEL_GIVEN}-1911"));
    assert_eq!(put(invalid).await.unwrap().status(), 422);
    assert_eq!(put(renamed).await.unwrap().status(), 200);
    let note = json!({"resourceType": "Observation", "status": "final",
        "code": {"text": SENTINEL_NOTE}, "subject": {"reference": format!("Patient/{id}")},
        "valueString": SENTINEL_NOTE});
    let created = http
        .post(format!("{base}/fhir/Observation"))
        .bearer_auth(&token)
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(
        get(format!("/fhir/Patient/{id}"))
            .await
            .text()
            .await
            .unwrap()
            .contains(SENTINEL_FAMILY)
    );
    assert_eq!(get("/fhir/Patient/no-such-patient".into()).await.status(), 404);

    let output = served.stop();
    assert!(output.contains("listening"), "{output}");
    phi.extend([SENTINEL_FAMILY, SENTINEL_GIVEN, SENTINEL_BIRTH, SENTINEL_NOTE, "no-such-patient"].map(String::from));
    for value in &phi {
        assert!(!output.contains(value.as_str()), "the server logged PHI ({value}):\n{output}");
    }
}
