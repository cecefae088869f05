//! The `carekeep-server` binary's administration commands, run as an operator would.

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

    // Rotation: the backup key goes live, a new backup appears; without the backup key on
    // disk (moved offline), rotation says where to put it back.
    let rotate = |data: &std::path::Path| {
        server()
            .args(["rotate-tls", "--data"])
            .arg(data)
            .args(["--hostname", "clinic.example"])
            .output()
            .unwrap()
    };
    let rotated = rotate(&data);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let now_live: Vec<String> = String::from_utf8(rotated.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(now_live[0], printed[1]);
    assert!(!printed.contains(&now_live[1]));
    std::fs::remove_file(data.join("tls").join("backup-key.pem")).unwrap();
    let offline = rotate(&data);
    assert!(!offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stderr).contains("bring it back from offline storage"));

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

#[test]
fn tenants_and_users_are_added_with_the_password_on_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(server().args(["init", "--data"]).arg(&data).output().unwrap().status.success());
    let tenant = server()
        .args(["tenant", "add", "--data"])
        .arg(&data)
        .args(["--id", "clinic-1", "--name", "Clinic One"])
        .output()
        .unwrap();
    assert!(tenant.status.success(), "{}", String::from_utf8_lossy(&tenant.stderr));
    let idle = |minutes: &str| {
        server()
            .args(["tenant", "idle", "--data"])
            .arg(&data)
            .args(["--tenant", "clinic-1", "--role", "clinician", "--minutes", minutes])
            .output()
            .unwrap()
    };
    let set = idle("30");
    assert!(String::from_utf8_lossy(&set.stderr).contains("after 30 idle minutes"), "{set:?}");
    let too_long = idle("1000");
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("1 to 720 minutes"));

    let add_user = |password: &str| {
        let mut child = server()
            .args(["user", "add", "--data"])
            .arg(&data)
            .args(["--tenant", "clinic-1", "--username", "dr-lee", "--role", "clinician"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let short = add_user("short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));

    let added = add_user("a long enough passphrase");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let out = String::from_utf8(added.stdout).unwrap();
    assert!(out.contains("user_id: usr-"));
    assert!(out.contains("otpauth_uri: otpauth://totp/Carekeep:dr-lee?"));
    let secret = out.lines().find_map(|l| l.strip_prefix("totp_secret: ")).unwrap();
    assert!(totp_rs::Secret::try_from_base32(secret).is_ok());
    assert!(!out.contains("a long enough passphrase"), "the password is never echoed");

    let again = add_user("a long enough passphrase");
    assert!(!again.status.success(), "usernames are unique");

    let reset = server()
        .args(["user", "reset-mfa", "--data"])
        .arg(&data)
        .args(["--username", "dr-lee"])
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let reset_out = String::from_utf8(reset.stdout).unwrap();
    let new_secret = reset_out.lines().find_map(|l| l.strip_prefix("totp_secret: ")).unwrap();
    assert_ne!(new_secret, secret, "a new authenticator secret");

    let disable = server()
        .args(["user", "disable", "--data"])
        .arg(&data)
        .args(["--username", "dr-lee"])
        .output()
        .unwrap();
    assert!(disable.status.success());
    let unknown = server()
        .args(["user", "disable", "--data"])
        .arg(&data)
        .args(["--username", "nobody"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user named nobody"));
}
