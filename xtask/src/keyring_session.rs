//! A private, headless Secret Service for tests and benchmarks: a fresh D-Bus session bus
//! with gnome-keyring unlocked inside it, and HOME/XDG dirs in a temporary directory so the
//! developer's own keyring is never touched.

use std::path::PathBuf;
use std::process::Command;

use crate::Result;
use crate::setup::which;

/// A temporary home for one keyring session; removed on drop.
pub struct KeyringSession {
    root: PathBuf,
}

impl KeyringSession {
    /// Prepares the directories. The bus and daemon start with each [`KeyringSession::wrap`].
    pub fn new() -> Result<Self> {
        for tool in ["dbus-run-session", "gnome-keyring-daemon"] {
            if which(tool).is_none() {
                return Err(format!("{tool} is not installed; run `cargo xtask setup`"));
            }
        }
        let root = std::env::temp_dir().join(format!("carekeep-keyring-{}", std::process::id()));
        for dir in ["home", "data", "config", "cache"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        }
        // XDG_RUNTIME_DIR must be the user's alone, or D-Bus and the keyring refuse it.
        let runtime = root.join("runtime");
        carekeep_private_files::create_dir(&runtime)
            .map_err(|e| format!("cannot create {}: {e}", runtime.display()))?;
        Ok(Self { root })
    }

    /// Wraps `command` to run inside `dbus-run-session` with gnome-keyring's Secret Service
    /// started and its login keyring unlocked.
    pub fn wrap(&self, command: &Command) -> Command {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        // Cargo and rustup find themselves through HOME unless told: pin them first.
        let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from);
        let rustup_home = std::env::var_os("RUSTUP_HOME").map_or_else(|| home.join(".rustup"), PathBuf::from);

        let mut wrapped = Command::new("dbus-run-session");
        wrapped
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(
                "printf %s \"$CAREKEEP_TEST_KEYRING_PASSWORD\" | gnome-keyring-daemon --unlock --components=secrets >/dev/null \
                 && unset CAREKEEP_TEST_KEYRING_PASSWORD && exec \"$@\"",
            )
            .arg("sh")
            .arg(command.get_program())
            .args(command.get_args())
            .env("CARGO_HOME", cargo_home)
            .env("RUSTUP_HOME", rustup_home)
            .env("HOME", self.root.join("home"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_CACHE_HOME", self.root.join("cache"))
            .env("XDG_RUNTIME_DIR", self.root.join("runtime"))
            .env("CAREKEEP_TEST_KEYRING_PASSWORD", "carekeep-test-keyring")
            .env("CAREKEEP_KEYRING_SESSION", "1");
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        for (key, value) in command.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }
}

impl Drop for KeyringSession {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
