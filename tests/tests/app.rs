//! The real Carekeep app, end to end: the debug binary of `src-tauri` under Xvfb, driven
//! through `tauri-driver` and WebKitWebDriver, against a real carekeep-server on 127.0.0.1
//! with the demo data. `cargo xtask test` builds the UI and the app, installs tauri-driver,
//! and runs this inside `xvfb-run` and a private keyring session:
//!
//! ```sh
//! cargo xtask keyring-run -- xvfb-run -a cargo test --workspace --test app -- --ignored --test-threads 1
//! ```
//!
//! A patient signs in with a TOTP code, syncs, sees lab charts; a record whose narrative
//! carries `<script>` and `onerror=` runs nothing; the idle lock (a one-minute tenant
//! policy) and the OS screen lock leave no PHI in the page; the password unlocks; export
//! asks for step-up; a new authenticator is set up from its key; sign-out wipes. A
//! clinician's copy of a name leaves the X clipboard after a minute. A clinician searches
//! the care team and opens a record under break-glass, which the server's audit trail
//! flags. Under a window manager, minimising or losing the focus locks, and the lock leaves
//! another app's later copy on the clipboard. Each main screen is saved under
//! `target/e2e-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use carekeep_e2e::app_driver::{
    App, WindowManager, clipboard_text, copy_in_another_app, count_renderers, kill_renderers, window_titled,
    write_config, write_config_at, xdotool,
};
use carekeep_e2e::proxy::{Fault, FaultyProxy};
use carekeep_e2e::{Running, World};
use carekeep_protocol::auth::Role;
use carekeep_server::records::Records;
use fantoccini::Locator;
use serde_json::{Value, json};

const DEMO_TENANT: &str = carekeep_server::seed::DEMO_TENANT;

/// The demo bundles' patients: the patient user's own record is the first, the clinician's
/// care team the first ten.
fn fixture_patient(n: usize) -> Value {
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(fixture_path(n)).unwrap()).unwrap();
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .map(|e| {
            let mut patient = e["resource"].clone();
            patient["id"] = json!(e["fullUrl"].as_str().unwrap().trim_start_matches("urn:uuid:"));
            patient
        })
        .unwrap()
}

fn fixture_path(n: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../crates/core/tests/fixtures/carebundle/mixed-42-{n:04}.json"))
}

/// What must never be on the page while locked or after sign-out: the patient's name, birth
/// date (raw and as shown) and record number.
fn sentinels(patient: &Value) -> Vec<String> {
    let name = &patient["name"][0];
    let birth = patient["birthDate"].as_str().unwrap();
    let (year, month, day) = (&birth[..4], &birth[5..7], &birth[8..10]);
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let shown = format!("{} {} {year}", day.trim_start_matches('0'), months[month.parse::<usize>().unwrap() - 1]);
    vec![
        name["family"].as_str().unwrap().to_owned(),
        name["given"][0].as_str().unwrap().to_owned(),
        birth.to_owned(),
        shown,
        patient["identifier"][0]["value"].as_str().unwrap().to_owned(),
    ]
}

/// A Condition whose narrative tries to run script two ways.
fn hostile_condition(records: &Records, patient: &str) {
    let condition = json!({
        "resourceType": "Condition",
        "text": {
            "status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><img src=\"x\" onerror=\"document.title='pwned'\"/><script>document.title='pwned'</script>Hay fever</div>"
        },
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"text": "Seasonal allergic rhinitis"},
        "subject": {"reference": format!("Patient/{patient}")}
    });
    let checked = records.check(condition, "Condition").unwrap();
    records
        .import(DEMO_TENANT, vec![(checked, "hostile-narrative-1".to_owned())], time::OffsetDateTime::now_utc())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the app binary, tauri-driver and a display: run by `cargo xtask test` under xvfb-run"]
async fn a_patient_signs_in_sees_charts_locks_unlocks_steps_up_and_signs_out() {
    let mut world = World::demo(Role::Patient);
    let me = fixture_patient(0);
    let phi = sentinels(&me);
    // A one-minute idle policy for patients, so the idle lock comes inside the test.
    carekeep_server::admin::set_idle_limit(&world.data.open_store().unwrap(), DEMO_TENANT, Role::Patient, 1).unwrap();
    hostile_condition(&world.records(), me["id"].as_str().unwrap());
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &world, &running);
    let profile = dir.path().join("profile");

    // With compositing off (a common GPU workaround), WebKitGTK left an idle page blank and
    // deaf after about half a minute; the app runs with compositing instead, and this test's
    // idle minutes below show it.
    // Compositing off (a common GPU workaround): WebKitGTK's software path left a page that
    // drew nothing for ~45 s blank and deaf until the UI kept it drawing; the idle minute
    // below would show that again.
    let app = App::launch_with_env(&config, &profile, &[("WEBKIT_DISABLE_COMPOSITING_MODE", "1")]).await;
    app.wait("#signin-title").await;
    app.screenshot("01-sign-in").await;
    app.sign_in_and_sync(&world, 0).await;
    // The record opens on its summary; the name is the patient's own.
    app.wait_text(".record h2", phi[0].as_str()).await;
    app.screenshot("02-summary").await;

    app.click("#tab-labs").await;
    app.wait("svg.trend path.line").await;
    let points = app.client.find_all(Locator::Css("svg.trend circle.point")).await.unwrap();
    assert!(points.len() >= 8, "the two-year lab history is charted ({} points)", points.len());
    app.wait("svg.trend rect.band").await;
    points[0].click().await.unwrap();
    app.wait_text(".readout", "on").await;
    app.screenshot("03-labs").await;
    app.click("#tab-vitals").await;
    app.wait("svg.trend path.line").await;
    app.screenshot("04-vitals").await;

    // The hostile narrative never reached the page: its structured fields show as text.
    app.click("#tab-conditions").await;
    app.wait_text(".panel", "Seasonal allergic rhinitis").await;
    assert_eq!(app.client.title().await.unwrap(), "Carekeep", "no script of the narrative ran");
    let source = app.source().await;
    assert!(!source.contains("onerror") && !source.contains("pwned"), "narrative markup is not in the page");
    app.screenshot("05-conditions").await;

    view_documents(&app).await;

    app.click("#nav-access").await;
    app.wait_text(".content h2", "Who viewed my record").await;
    // The clinic's trail (the patient's own sync is in it) and this device's views.
    let trail = app.wait_text(".content", "read from the device cache").await;
    assert!(
        trail.contains("At your clinic") && trail.contains("(patient)") && trail.contains("viewed records"),
        "{trail}"
    );
    app.screenshot("07-access-log").await;
    app.click("#nav-security").await;
    app.wait_text(".content", "Cannot be blocked").await;
    app.screenshot("08-security").await;
    // Lock-on-blur is the Linux default; the idle lock is what this test waits for.
    app.client
        .find(Locator::Css("#lock-on-blur"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    app.click("#nav-record-0").await;
    view_the_whole_record(&app).await;

    // No input for the tenant's minute: the core locks and the page holds no PHI.
    app.client
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::Css("#lock-title"))
        .await
        .unwrap();
    app.assert_no_phi(&phi, "after the idle lock").await;
    assert!(!app.source().await.contains("Seasonal allergic rhinitis"));
    app.screenshot("09-locked").await;
    app.type_into("form.lock input[name=password]", &world.password).await;
    app.click("form.lock button[type=submit]").await;
    app.wait_text(".record h2", phi[0].as_str()).await;
    // A copy of the name is on the clipboard when the OS locks the screen (the
    // screensaver's signal on the session bus): the app locks, and takes its copy back.
    app.copy_text_of(".record h2").await;
    app.wait_text("#banner", "removes it from the clipboard").await;
    assert!(clipboard_text().contains(phi[0].as_str()));
    lock_the_screen();
    app.wait("#lock-title").await;
    app.assert_no_phi(&phi, "after the OS screen lock").await;
    assert!(!clipboard_text().contains(phi[0].as_str()), "the lock took the copy back");
    app.quit().await;

    // Ten minutes after the last full sign-in (the session file says when), export asks
    // for step-up: password and a fresh code, then the file is written.
    let session_file = profile.join("session.json");
    let mut facts: Value = serde_json::from_slice(&std::fs::read(&session_file).unwrap()).unwrap();
    facts["last_full_auth_unix"] = json!(facts["last_full_auth_unix"].as_i64().unwrap() - 600);
    std::fs::write(&session_file, facts.to_string()).unwrap();
    let app = App::launch(&config, &profile).await;
    app.wait("#lock-title").await;
    app.type_into("form.lock input[name=password]", &world.password).await;
    app.click("form.lock button[type=submit]").await;
    app.click("#export").await;
    app.wait("dialog #stepup-title").await;
    app.screenshot("10-step-up").await;
    app.type_into("dialog input[name=username]", &world.username).await;
    app.type_into("dialog input[name=password]", &world.password).await;
    app.type_into("dialog input[name=code]", &world.code(1)).await;
    app.click("dialog button[type=submit]").await;
    let saved = app.wait_text("#banner", "Saved the record to").await;
    check_export(&saved, &me);

    // Inside the same step-up window: a new authenticator.
    set_up_new_authenticator(&app, &mut world).await;

    // Sign-out: back to the sign-in screen, nothing of the record on the page, no session.
    app.click("#sign-out").await;
    app.wait("#signin-title").await;
    app.assert_no_phi(&phi, "after sign-out").await;
    assert!(!session_file.exists(), "sign-out removes the session facts");
    app.quit().await;
}

/// The export the banner names: the record (documents inside) and the summary page beside
/// it, each readable by this user only. Removes both.
fn check_export(saved: &str, me: &Value) {
    let (path, summary) = saved
        .trim_start_matches("Saved the record to ")
        .split(". Anyone")
        .next()
        .unwrap()
        .split_once(" and a summary to read or print to ")
        .unwrap();
    let export: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(export["entry"][0]["resource"]["id"], me["id"]);
    // The documents travel inside the record, and a page a person reads lies beside it.
    let documents = export["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "DocumentReference");
    assert!(
        documents.clone().count() > 0
            && documents
                .clone()
                .all(|e| e["resource"]["content"][0]["attachment"]["data"].is_string())
    );
    let page = std::fs::read_to_string(summary).unwrap();
    assert!(page.contains("<h2>Latest results</h2>") && !page.contains("<script"), "{page}");
    for file in [path, summary] {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
        std::fs::remove_file(file).unwrap();
    }
}

/// The parts of a whole record a clinic's export brings: visits with what happened at
/// each, reports with their results, medications with dose and status, immunisations with
/// their lot, care plans and goals, and — the patient's own — insurance and claims.
async fn view_the_whole_record(app: &App) {
    app.click("#tab-visits").await;
    let visits = app.wait_text(".panel", "Medication reconciliation").await;
    assert!(visits.contains("Influenza"), "what happened at the visit is listed under it: {visits}");
    app.screenshot("05b-visits").await;
    app.click("#tab-reports").await;
    app.wait("table.results caption").await;
    app.screenshot("05c-reports").await;
    app.click("#tab-medications").await;
    app.wait_text(".panel", "1 tablet daily · active").await;
    app.click("#tab-immunizations").await;
    app.wait_text(".panel", "lot SYN-0042").await;
    app.click("#tab-plans").await;
    app.wait_text(".panel", "Diabetes self management plan").await;
    app.screenshot("05d-care-plans").await;
    app.click("#tab-insurance").await;
    app.wait_text(".panel", "paid 100.00 USD").await;
    app.screenshot("05e-insurance").await;
}

/// The OS locks the screen: the screensaver's signal on the session bus, as GNOME and KDE
/// send it.
fn lock_the_screen() {
    let signal = Command::new("dbus-send")
        .args(["--session", "--type=signal", "/org/freedesktop/ScreenSaver"])
        .args(["org.freedesktop.ScreenSaver.ActiveChanged", "boolean:true"])
        .status()
        .unwrap();
    assert!(signal.success());
}

/// A lock takes effect at once whatever else runs: with a sync stuck on a slow server (the
/// test's proxy holds every request for a minute), the OS screen lock wipes the page and
/// drops the key within a second or two — the core records the lock then, not when the
/// sync would have ended.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the app binary, tauri-driver and a display: run by `cargo xtask test` under xvfb-run"]
async fn the_screen_lock_during_a_slow_sync_locks_at_once() {
    let world = World::demo(Role::Patient);
    let phi = sentinels(&fixture_patient(0));
    let running = Running::start(&world.data).await;
    let proxy = FaultyProxy::start(&world.data, running.port_number(), 0);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_at(dir.path(), &world, &proxy.url());
    let profile = dir.path().join("profile");
    let app = App::launch(&config, &profile).await;
    app.wait("#signin-title").await;
    app.sign_in_and_sync(&world, 0).await;
    app.wait_text(".record h2", phi[0].as_str()).await;

    proxy.set(Fault::Slow(Duration::from_secs(60)));
    let before = proxy.requests();
    app.click("#sync").await;
    while proxy.requests() == before {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let locks_recorded = || {
        let queue = std::fs::read_to_string(profile.join("audit-queue.jsonl")).unwrap_or_default();
        queue.matches("session locked (os-locked)").count()
    };
    let already = locks_recorded();
    let locked_at = std::time::Instant::now();
    lock_the_screen();
    app.client
        .wait()
        .at_most(Duration::from_secs(3))
        .for_element(Locator::Css("#lock-title"))
        .await
        .unwrap();
    while locks_recorded() == already {
        assert!(locked_at.elapsed() < Duration::from_secs(3), "the core did not lock while the sync waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(locked_at.elapsed() < Duration::from_secs(3), "locked only after {:?}", locked_at.elapsed());
    app.assert_no_phi(&phi, "after the screen lock during a sync").await;
    app.screenshot("11-locked-during-sync").await;

    // Nothing was lost: unlocked, the next sync (the server answering again) completes.
    proxy.set(Fault::None);
    app.type_into("form.lock input[name=password]", &world.password).await;
    app.click("form.lock button[type=submit]").await;
    app.wait_text(".record h2", phi[0].as_str()).await;
    app.click("#sync").await;
    app.wait_text("#banner", "Synced").await;
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the app binary, tauri-driver, a display, openbox and xdotool: run by `cargo xtask test` under xvfb-run"]
async fn minimising_or_switching_to_another_app_locks_under_a_window_manager() {
    let world = World::demo(Role::Patient);
    let phi = sentinels(&fixture_patient(0));
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &world, &running);
    let _wm = WindowManager::start();
    let app = App::launch(&config, &dir.path().join("profile")).await;
    app.sign_in_and_sync(&world, 0).await;
    app.wait_text(".record h2", phi[0].as_str()).await;
    let window = window_titled("Carekeep");

    // The name is copied, then another app copies something of its own: the lock below
    // takes Carekeep's copy back only while the clipboard still holds it, so the other
    // app's text stays.
    app.copy_text_of(".record h2").await;
    app.wait_text("#banner", "removes it from the clipboard").await;
    assert!(clipboard_text().contains(phi[0].as_str()));
    copy_in_another_app("another app's text");

    // Minimised, with lock-on-blur off so that only the minimise can lock: the record is
    // gone from the page before anyone can look at the window again.
    set_lock_on_blur(&app, false).await;
    xdotool(&["windowminimize", "--sync", &window]);
    app.wait("#lock-title").await;
    app.assert_no_phi(&phi, "after minimising").await;
    assert_eq!(clipboard_text(), "another app's text", "the lock leaves another app's copy alone");
    xdotool(&["windowactivate", "--sync", &window]);
    app.type_into("form.lock input[name=password]", &world.password).await;
    app.click("form.lock button[type=submit]").await;
    app.wait_text(".record h2", phi[0].as_str()).await;

    // Lock-on-blur back on: another app taking the focus locks Carekeep.
    set_lock_on_blur(&app, true).await;
    let mut other = Command::new("xmessage")
        .args(["-title", "Another app", "another app"])
        .spawn()
        .unwrap();
    xdotool(&["windowactivate", "--sync", &window_titled("Another app")]);
    app.wait("#lock-title").await;
    app.assert_no_phi(&phi, "after another app took the focus").await;
    other.kill().unwrap();
    other.wait().unwrap();
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the app binary, tauri-driver and a display: run by `cargo xtask test` under xvfb-run"]
async fn when_the_renderer_dies_the_app_locks_and_starts_a_new_one() {
    let world = World::demo(Role::Patient);
    let phi = sentinels(&fixture_patient(0));
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &world, &running);
    let profile = dir.path().join("profile");
    let app = App::launch(&config, &profile).await;
    app.sign_in_and_sync(&world, 0).await;
    app.wait_text(".record h2", phi[0].as_str()).await;
    let password_required = || {
        let facts: Value = serde_json::from_slice(&std::fs::read(profile.join("session.json")).unwrap()).unwrap();
        facts["password_required"] == json!(true)
    };
    assert!(!password_required());

    // WebKit's web process dies, as in a crash. WebKitWebDriver ends its session then
    // ("page crash"), so what follows is read off the app itself: the account locks (the
    // password is required next, as after a walk-away lock) and the app starts a new
    // renderer for its page (a screenshot by hand showed the lock screen).
    assert!(kill_renderers() >= 1, "the app had a web process");
    let mut recovered = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if password_required() && count_renderers() >= 1 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "locked, with a new renderer");
    app.quit().await;
}

/// Security → "Lock when Carekeep loses focus" set to `on`, checked as the core reports it
/// when the screen is drawn again, then back to the record.
async fn set_lock_on_blur(app: &App, on: bool) {
    let checked = "return document.querySelector('#lock-on-blur').checked";
    app.click("#nav-security").await;
    app.wait("#lock-on-blur").await;
    if app.client.execute(checked, vec![]).await.unwrap() != json!(on) {
        app.click("#lock-on-blur").await;
    }
    let mut kept = false;
    for _ in 0..20 {
        app.click("#nav-record-0").await;
        app.click("#nav-security").await;
        app.wait("#lock-on-blur").await;
        kept = app.client.execute(checked, vec![]).await.unwrap() == json!(on);
        if kept {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(kept, "the core keeps lock-on-blur {on}");
    app.click("#nav-record-0").await;
}

/// Documents open inline from the encrypted cache (downloaded through the signed link on
/// first open): the letter as text, the PNG decoded, the PDF drawn page by page.
async fn view_documents(app: &App) {
    app.click("#tab-documents").await;
    open_document(app, "Discharge letter").await;
    app.wait_text(".viewer .document-text", "community-acquired pneumonia").await;
    open_document(app, "Chest image").await;
    let image =
        "const i = document.querySelector('.viewer img.document-image'); return !!i && i.complete && i.naturalWidth;";
    assert_eq!(wait_for_script(app, image).await, json!(256), "the PNG decoded");
    open_document(app, "Immunisation record").await;
    app.wait(".viewer .pdf-page canvas").await;
    let inked = "const c = document.querySelector('.viewer canvas'); \
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
        return d.some((v, i) => i % 4 !== 3 && v < 128);";
    assert_eq!(wait_for_script(app, inked).await, json!(true), "the PDF's page was drawn");
    assert!(app.source().await.contains("Influenza, seasonal"), "the page's text is beside it");
    app.screenshot("06-documents").await;
}

/// Opens the document titled `title` from the Documents tab's list.
async fn open_document(app: &App, title: &str) {
    let xpath = format!("//ul[contains(@class,'documents')]//button[normalize-space()='{title}']");
    app.client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(&xpath))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    app.wait_text(".viewer h3", title).await;
}

/// Runs `script` until it returns something truthy (or 30 s pass); returns its last answer.
async fn wait_for_script(app: &App, script: &str) -> Value {
    let mut answer = Value::Null;
    for _ in 0..150 {
        answer = app.client.execute(script, vec![]).await.unwrap();
        if answer != json!(false) && answer != json!(0) && !answer.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answer
}

/// Security → new authenticator: scanned by its key, confirmed with a code from it.
async fn set_up_new_authenticator(app: &App, world: &mut World) {
    app.click("#nav-security").await;
    app.click("#change-authenticator").await;
    let key = app.wait_text("#setup-key", " ").await;
    app.wait("img.qr").await;
    app.screenshot("11-new-authenticator").await;
    world.scan_authenticator(&key);
    app.type_into("#new-authenticator-code", &world.code(0)).await;
    app.click("#confirm-authenticator").await;
    app.wait_text("#banner", "new authenticator app is set up").await;
    assert!(!app.source().await.contains(&key), "the key leaves the page once confirmed");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the app binary, tauri-driver and a display: run by `cargo xtask test` under xvfb-run"]
async fn a_clinician_searches_the_care_team_and_break_glass_is_flagged_in_the_audit() {
    let world = World::demo(Role::Clinician);
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &world, &running);
    let app = App::launch(&config, &dir.path().join("profile")).await;
    app.sign_in_and_sync(&world, 0).await;

    let on_team = fixture_patient(3);
    let family = on_team["name"][0]["family"].as_str().unwrap();
    app.type_into("input[type=search]", family).await;
    app.wait_text("ul.patients", family).await;
    app.screenshot("12-clinician-search").await;
    app.click("ul.patients button.link").await;
    app.wait_text(".record h2", family).await;
    app.screenshot("13-clinician-chart").await;

    // Copying the name: it reaches the real X clipboard through the shell, and the shell
    // takes it back a minute later while the app stays unlocked (a clinician's idle limit
    // is 15 minutes: this is the clipboard's own clock, not a lock).
    app.copy_text_of(".record h2").await;
    app.wait_text("#banner", "removes it from the clipboard").await;
    assert!(clipboard_text().contains(family), "the copy is on the clipboard: {:?}", clipboard_text());
    tokio::time::sleep(Duration::from_secs(62)).await;
    assert!(!clipboard_text().contains(family), "the copy was taken back after a minute");
    app.wait_text(".record h2", family).await;

    // A patient outside the care team, opened in an emergency with a reason.
    let outsider = fixture_patient(15);
    let outsider_id = outsider["id"].as_str().unwrap();
    app.click("#nav-patients").await;
    app.type_into("form.warning input[name=patient]", outsider_id).await;
    app.type_into("form.warning textarea[name=reason]", "Unconscious in the emergency department")
        .await;
    app.click("form.warning button[type=submit]").await;
    app.wait_text("#banner", "Emergency access granted").await;
    app.screenshot("14-break-glass").await;

    let store = world.data.open_store().unwrap();
    let trail =
        carekeep_server::audit::query(&store, outsider_id, "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z").unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.event.break_glass && r.event.user.as_deref() == Some(world.user_id.as_str())),
        "the break-glass access is flagged in the server's audit trail"
    );
    app.quit().await;
}
