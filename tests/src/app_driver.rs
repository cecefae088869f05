//! The real app driven through WebDriver: `tauri-driver` (which starts WebKitWebDriver,
//! which starts the app binary) and the Rust client `fantoccini`, for the app's end-to-end
//! tests and its start-up benchmark. Needs a display (`xvfb-run`) and `tauri-driver` on PATH.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::{Running, World};

/// Where the build put things (`target/<profile>`, `target`): tests and benches run from
/// `target/<profile>/deps/`.
pub fn target_dir() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap().to_path_buf();
    (profile_dir, target)
}

/// The app, started by tauri-driver with its own profile and server configuration.
pub struct App {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

impl App {
    /// Starts tauri-driver (and so the app built beside this test) with `config` and
    /// `profile`, and opens a WebDriver session.
    pub async fn launch(config: &Path, profile: &Path) -> Self {
        let binary = target_dir().0.join("carekeep-app");
        assert!(binary.exists(), "build the app first: cargo build -p carekeep-app ({})", binary.display());
        Self::launch_binary(&binary, config, profile).await
    }

    /// As [`App::launch`], with `env` added to the app's environment.
    pub async fn launch_with_env(config: &Path, profile: &Path, env: &[(&str, &str)]) -> Self {
        let binary = target_dir().0.join("carekeep-app");
        assert!(binary.exists(), "build the app first: cargo build -p carekeep-app ({})", binary.display());
        Self::start(&binary, config, profile, env).await
    }

    /// Starts this build of the app (the benchmark's is the shipped `dist` build).
    pub async fn launch_binary(binary: &Path, config: &Path, profile: &Path) -> Self {
        Self::start(binary, config, profile, &[]).await
    }

    async fn start(binary: &Path, config: &Path, profile: &Path, env: &[(&str, &str)]) -> Self {
        let target = target_dir().1;
        let port = free_port();
        let driver = Command::new("tauri-driver")
            .args(["--port", &port.to_string(), "--native-port", &free_port().to_string()])
            .env("CAREKEEP_SERVER_CONFIG", config)
            .env("CAREKEEP_PROFILE", profile)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tauri-driver is not installed: cargo install tauri-driver --locked");
        let capabilities = json!({"browserName": "wry", "tauri:options": {"application": binary}});
        let capabilities = capabilities.as_object().unwrap().clone();
        let mut client = None;
        for _ in 0..100 {
            let builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            if let Ok(connected) = builder {
                client = Some(connected);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let client = client.expect("tauri-driver did not start the app");
        let shots = target.join("e2e-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self { client, driver, shots }
    }

    /// Waits for an element (the UI renders after async calls to the core).
    pub async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    /// Waits until the element's text contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        for _ in 0..150 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text.contains(needle)
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{css} never said {needle:?}; the page: {}", self.client.source().await.unwrap_or_default());
    }

    /// Types `text` into the field `css` (cleared first). A screen drawn again meanwhile
    /// (the lock screen when the window comes back, say) replaces the field: then it is found
    /// again.
    pub async fn type_into(&self, css: &str, text: &str) {
        for _ in 0..10 {
            let field = self.wait(css).await;
            if field.clear().await.is_ok() && field.send_keys(text).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{css} kept being replaced while typing into it");
    }

    /// Clicks the element `css` once it appears.
    pub async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap();
    }

    /// Selects the text of the element `css` and presses Ctrl+C, as a person copying it.
    pub async fn copy_text_of(&self, css: &str) {
        use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
        self.wait(css).await;
        let select = "getSelection().selectAllChildren(document.querySelector(arguments[0]))";
        self.client.execute(select, vec![json!(css)]).await.unwrap();
        let control = char::from(fantoccini::key::Key::Control);
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: control })
            .then(KeyAction::Down { value: 'c' })
            .then(KeyAction::Up { value: 'c' })
            .then(KeyAction::Up { value: control });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Saves a screenshot once rendering has settled.
    pub async fn screenshot(&self, name: &str) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// The page's source now.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Fails if the page holds any of `sentinels`.
    pub async fn assert_no_phi(&self, sentinels: &[String], when: &str) {
        let source = self.source().await;
        for sentinel in sentinels {
            assert!(!source.contains(sentinel.as_str()), "{when}: the page still shows {sentinel:?}");
        }
    }

    /// Fills and submits the sign-in form with `world`'s user and the code `step` steps away.
    pub async fn sign_in(&self, world: &World, step: i64) {
        self.type_into("form input[name=username]", &world.username).await;
        self.type_into("form input[name=password]", &world.password).await;
        self.type_into("form input[name=code]", &world.code(step)).await;
        self.click("form button[type=submit]").await;
    }

    /// Signs in (as [`App::sign_in`]) and syncs, waiting until the sync is done.
    pub async fn sign_in_and_sync(&self, world: &World, step: i64) {
        self.sign_in(world, step).await;
        self.click("#sync").await;
        self.wait_text("#banner", "Synced").await;
    }

    /// Ends the session (the app exits) and tauri-driver.
    pub async fn quit(self) {
        let Self { client, mut driver, .. } = self;
        let _ = client.close().await;
        let _ = driver.kill();
        let _ = driver.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The app's `server.json` for `running`, pinned to the world's keys.
pub fn write_config(dir: &Path, world: &World, running: &Running) -> PathBuf {
    write_config_at(dir, world, &running.url())
}

/// The app's `server.json` for the server at `url` (a proxy in front of it), pinned to the
/// world's keys.
pub fn write_config_at(dir: &Path, world: &World, url: &carekeep_core::net::ServerUrl) -> PathBuf {
    let pins = world.data.pins().unwrap();
    let config = json!({
        "server": url.as_str(),
        "pins": [pins.live.to_string(), pins.backup.to_string()],
        "pins_expire": "2099-01-01",
    });
    let path = dir.join("server.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// The X clipboard's text now, as another app would paste it ("" when it is empty).
pub fn clipboard_text() -> String {
    let out = Command::new("xclip")
        .args(["-o", "-selection", "clipboard"])
        .output()
        .expect("xclip (cargo xtask setup)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Another app (xclip) takes the X clipboard with `text`, and keeps serving it in the
/// background until someone else copies.
pub fn copy_in_another_app(text: &str) {
    let mut xclip = Command::new("xclip")
        .args(["-i", "-selection", "clipboard"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("xclip (cargo xtask setup)");
    xclip
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("xclip reads its text");
    assert!(xclip.wait().expect("xclip runs").success(), "xclip took the clipboard");
}

/// A window manager (openbox) on the test's X display, for as long as this lives: without
/// one, X windows are never minimised and focus never moves between apps.
pub struct WindowManager(Child);

impl WindowManager {
    /// Starts openbox and waits until it manages the display.
    pub fn start() -> Self {
        let wm = Self(
            Command::new("openbox")
                .args(["--sm-disable"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openbox (cargo xtask setup)"),
        );
        for _ in 0..100 {
            let check = Command::new("xprop").args(["-root", "_NET_SUPPORTING_WM_CHECK"]).output();
            if check.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("window id")) {
                return wm;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(wm);
        panic!("openbox did not take the display");
    }
}

impl Drop for WindowManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs xdotool (the person's hand on the window manager) and returns what it printed.
pub fn xdotool(args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .output()
        .expect("xdotool (cargo xtask setup)");
    assert!(out.status.success(), "xdotool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The X window showing `title`, once it is mapped.
pub fn window_titled(title: &str) -> String {
    let name = format!("^{title}$");
    let found = xdotool(&["search", "--sync", "--onlyvisible", "--name", &name]);
    found.lines().next().unwrap_or_default().to_owned()
}

/// Every process now, as (id, parent id).
pub fn processes() -> Vec<(u32, u32)> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The web processes (WebKit's renderers) of the running app.
fn renderers() -> Vec<u32> {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    processes()
        .into_iter()
        // `comm` keeps 15 characters: "WebKitWebProcess" reads "WebKitWebProces".
        .filter(|&(pid, parent)| comm(pid).trim() == "WebKitWebProces" && comm(parent).trim() == "carekeep-app")
        .map(|(pid, _)| pid)
        .collect()
}

/// How many renderers the running app has now.
pub fn count_renderers() -> usize {
    renderers().len()
}

/// Kills the running app's renderers, as a crash would end them; returns how many.
pub fn kill_renderers() -> usize {
    let renderers = renderers();
    for pid in &renderers {
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill")
                .success()
        );
    }
    renderers.len()
}
