//! `carekeep` end to end: the real binary against the real server over TLS, in the private
//! keyring session of `cargo xtask test`: login, sync, show, status, lock, unlock, logout,
//! wipe, and the exit codes of refusals.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use carekeep_e2e::{Running, World};
use carekeep_protocol::auth::Role;

/// Runs `carekeep --profile PROFILE ARGS`, with `stdin` on standard input.
async fn carekeep(profile: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let (profile, args, stdin) =
        (profile.to_owned(), args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(), stdin.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_carekeep"))
            .arg("--profile")
            .arg(&profile)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(format!("{text}\n").as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// `carekeep login` with the world's user, password on standard input.
async fn login(profile: &std::path::Path, world: &World, server: &str, pins: [&str; 2], code: &str) -> Output {
    let args = [
        "login",
        "--server",
        server,
        "--pin",
        pins[0],
        "--pin",
        pins[1],
        "--user",
        &world.username,
        "--totp",
        code,
        "--password-stdin",
    ];
    carekeep(profile, &args, Some(&world.password)).await
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sync_show_lock_unlock_logout_and_wipe() {
    let world = World::demo(Role::Patient);
    let running = Running::start(&world.data).await;
    let pins = world.data.pins().unwrap();
    let (live, backup) = (pins.live.to_string(), pins.backup.to_string());
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let url = running.url().as_str().to_owned();
    let code = world.code(0);
    // Refusals first: plain HTTP, and a pin that is not the server's (exit 4, nothing sent).
    let insecure = login(&profile, &world, &url.replace("https://", "http://"), [&live, &backup], &code).await;
    assert_eq!(insecure.status.code(), Some(4), "{}", text(&insecure));
    assert!(text(&insecure).contains("HTTPS only"));
    let stranger = carekeep_protocol::pins::Pin::from_spki_der(b"someone else").to_string();
    let mismatch = login(&profile, &world, &url, [&stranger, &backup], &code).await;
    assert_eq!(mismatch.status.code(), Some(4), "{}", text(&mismatch));
    assert!(text(&mismatch).contains("may be intercepted"));
    std::fs::create_dir_all(&profile).unwrap();
    let queued_before = std::fs::read_to_string(profile.join("audit-queue.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    let again = login(&profile, &world, &url, [&stranger, &backup], &code).await;
    assert_eq!(again.status.code(), Some(4));
    let queue = std::fs::read_to_string(profile.join("audit-queue.jsonl")).unwrap();
    assert_eq!(queue.lines().count(), queued_before + 1);
    assert!(queue.contains("connection refused (pin-mismatch)"), "a refused sign-in is queued for the organisation");

    let signed_in = login(&profile, &world, &url, [&live, &backup], &code).await;
    assert!(signed_in.status.success(), "{}", text(&signed_in));
    assert!(text(&signed_in).contains("state: unlocked"));

    // This machine has no presence check (no polkit): the keychain alone never unlocks, the
    // password is needed, and the CLI says so.
    let no_presence = carekeep(&profile, &["sync"], None).await;
    assert_eq!(no_presence.status.code(), Some(3), "{}", text(&no_presence));
    assert!(text(&no_presence).contains("Unlock with your password"), "{}", text(&no_presence));
    let synced = carekeep(&profile, &["--password-stdin", "sync"], Some(&world.password)).await;
    assert!(synced.status.success(), "{}", text(&synced));
    assert!(text(&synced).contains("patients: 2"), "{}", text(&synced));
    assert!(String::from_utf8_lossy(&synced.stderr).contains("downloading records (2/2)"), "{}", text(&synced));

    let shown = carekeep(&profile, &["--password-stdin", "show", "Patient"], Some(&world.password)).await;
    assert!(shown.status.success(), "{}", text(&shown));
    let patients: Vec<&str> = std::str::from_utf8(&shown.stdout).unwrap().lines().collect();
    assert_eq!(patients.len(), 2);
    assert!(patients.iter().all(|p| p.contains("\"resourceType\":\"Patient\"")));

    // A home reading: queued and shown as pending at once, sent at the next sync.
    let patient_id = patients[0].split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap();
    let pw = Some(world.password.as_str());
    let ambiguous = carekeep(&profile, &["--password-stdin", "reading", "--bp", "120/80"], pw).await;
    assert_eq!(ambiguous.status.code(), Some(1), "two patients are kept: say which");
    assert!(text(&ambiguous).contains("--patient"), "{}", text(&ambiguous));
    let bad = carekeep(&profile, &["--password-stdin", "reading", "--bp", "high", "--patient", patient_id], pw).await;
    assert!(text(&bad).contains("expected systolic/diastolic"), "{}", text(&bad));
    let queued =
        carekeep(&profile, &["--password-stdin", "reading", "--bp", "120/80", "--patient", patient_id], pw).await;
    assert!(queued.status.success(), "{}", text(&queued));
    let pending = carekeep(&profile, &["--password-stdin", "pending"], pw).await;
    assert!(text(&pending).contains("pending #1: Observation create"), "{}", text(&pending));
    let sent = carekeep(&profile, &["--password-stdin", "sync"], pw).await;
    assert!(text(&sent).contains("sent: 1"), "{}", text(&sent));
    let pending = carekeep(&profile, &["--password-stdin", "pending"], pw).await;
    assert!(std::str::from_utf8(&pending.stdout).unwrap().is_empty(), "{}", text(&pending));

    let status = carekeep(&profile, &["status"], None).await;
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("state: locked") && text(&status).contains("role: patient"), "{}", text(&status));

    // Locked by hand: the password opens it again; a wrong one is refused (exit 3).
    assert!(carekeep(&profile, &["lock"], None).await.status.success());
    let refused = carekeep(&profile, &["show", "Patient"], None).await;
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(text(&refused).contains("password"));
    let wrong = carekeep(&profile, &["unlock"], Some("not the password")).await;
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));
    let unlocked = carekeep(&profile, &["unlock"], Some(&world.password)).await;
    assert!(unlocked.status.success(), "{}", text(&unlocked));
    assert!(text(&unlocked).contains("state: unlocked"));

    let logout = carekeep(&profile, &["logout"], None).await;
    assert!(logout.status.success(), "{}", text(&logout));
    let after = carekeep(&profile, &["status"], None).await;
    assert_eq!(after.status.code(), Some(3), "{}", text(&after));
    assert!(text(&after).contains("Sign in"));

    let wiped = carekeep(&profile, &["wipe"], None).await;
    assert!(wiped.status.success(), "{}", text(&wiped));
    assert!(!profile.join("vault.keys").exists() && !profile.join("vault.db").exists());
    // The password never appears in anything the CLI printed.
    for output in [&signed_in, &synced, &shown, &status, &refused, &wrong, &unlocked, &logout, &after, &wiped] {
        assert!(!text(output).contains(&world.password));
    }
}
