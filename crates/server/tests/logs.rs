//! The server's own output holds no secrets: the real binary, default logging, a full
//! sign-in, then its stdout and stderr are searched for every secret that crossed the wire.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

const PASSWORD: &str = "Zq-sentinel-passphrase-91";
const USERNAME: &str = "zq-sentinel-user";

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_leaves_no_secret_in_the_servers_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, user) = common::data_with_user(dir.path(), USERNAME, PASSWORD);

    let mut child = Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(["serve", "--data"])
        .arg(&root)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
            break addr.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };

    let http = common::client_for(&data);
    let base = format!("https://localhost:{port}");
    let wrong = json!({"username": USERNAME, "password": "Zq-wrong-sentinel"});
    http.post(format!("{base}/auth/login")).json(&wrong).send().await.unwrap();
    let signed_in = common::sign_in(&http, &base, USERNAME, PASSWORD, &user.totp_base32, 0).await;
    let tokens = &signed_in.tokens;
    assert!(tokens["access_token"].is_string(), "{tokens}");

    child.kill().unwrap();
    let rest = child.wait_with_output().unwrap();
    output.push_str(&String::from_utf8_lossy(&rest.stdout));
    // The reader thread ends with the process; collect what it still holds.
    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(5)) {
        output.push_str(&line);
        output.push('\n');
    }
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
