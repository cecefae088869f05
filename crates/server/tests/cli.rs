//! The `carekeep-server` binary's administration commands, run as an operator would.
#![allow(missing_docs)]

use std::process::Command;

use carekeep_protocol::pins::Pin;

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
}

#[test]
fn init_then_pins_print_the_same_two_pins_live_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let master = secrets.join("carekeep-master.key");

    let init = server()
        .args(["init", "--data"])
        .arg(&data)
        .args(["--hostname", "clinic.example"])
        .env("CAREKEEP_MASTER_KEY_FILE", &master)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let printed: Vec<String> = String::from_utf8(init.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), 2);
    for line in &printed {
        Pin::parse(line).unwrap();
    }
    assert_ne!(printed[0], printed[1]);
    assert!(String::from_utf8_lossy(&init.stderr).contains("backup-key.pem"));
    assert_eq!(std::fs::read(&master).unwrap().len(), 32, "the master key went where the environment said");
    assert!(!data.join("master.key").exists());

    let pins = server().args(["pins", "--data"]).arg(&data).output().unwrap();
    assert!(pins.status.success());
    let again: Vec<String> = String::from_utf8(pins.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(again, printed);

    let twice = server().args(["init", "--data"]).arg(&data).output().unwrap();
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already holds a Carekeep server"));
}

#[test]
fn commands_on_a_missing_directory_say_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = server().args(["pins", "--data"]).arg(dir.path().join("none")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `carekeep-server init --data DIR` first"));
}
