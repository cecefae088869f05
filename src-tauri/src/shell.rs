//! The shell's state: one profile, the account signed in on it (if any), the channel that
//! tells the UI to wipe its views, and the person's lock-on-blur choice.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use carekeep_core::account::Account;
use carekeep_core::error::UnlockError;
use carekeep_core::{Error, Keychain, Profile, SystemClock};
use tauri::ipc::Channel;
use tokio::sync::Mutex;

use crate::config::ServerConfig;
use crate::messages::LockNotice;

/// Everything the commands and the lifecycle share.
pub struct Shell {
    /// The encrypted cache and its session facts.
    pub profile: Profile,
    /// The pinned server (from `server.json`).
    pub server: ServerConfig,
    /// The account on this profile: `None` until opened or signed in.
    pub account: Mutex<Option<Account>>,
    /// Where the UI hears "locked: wipe every view now".
    lock_channel: std::sync::Mutex<LockChannel>,
    /// Lock when the window loses focus (offered where screen capture cannot be blocked).
    lock_on_blur: AtomicBool,
    /// Copies of record text, taken back after a minute or on lock.
    pub clipboard: crate::clipboard::Clipboard,
    /// Rung when a lock is due while a command holds the account: long commands (a sync,
    /// a download, anything waiting on the server) stop at once and let go of it.
    interrupt: tokio::sync::Notify,
    /// The person's last input, and the idle limit the core last said was in force: so an
    /// idle lock falling due during a long command is noticed without the account.
    idle: std::sync::Mutex<(std::time::Instant, Option<std::time::Duration>)>,
}

/// How long a lifecycle event waits for the account before asking a command to let go.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

impl Shell {
    /// The shell for this run: the server configuration from `CAREKEEP_SERVER_CONFIG`, the
    /// profile from `CAREKEEP_PROFILE` (both default to the per-user app directories).
    pub fn from_environment() -> Result<Self, String> {
        let dirs = AppDirs::for_this_user()?;
        let config = std::env::var_os("CAREKEEP_SERVER_CONFIG").map_or(dirs.config.join("server.json"), PathBuf::from);
        let profile = std::env::var_os("CAREKEEP_PROFILE").map_or(dirs.data.join("profile"), PathBuf::from);
        let server = ServerConfig::read(&config)?;
        Ok(Self {
            profile: Profile::new(&profile),
            server,
            account: Mutex::new(None),
            lock_channel: std::sync::Mutex::new(LockChannel::default()),
            // Linux cannot keep the window out of screenshots, so there the safer default is on.
            lock_on_blur: AtomicBool::new(!crate::platform::CAN_BLOCK_CAPTURE),
            clipboard: crate::clipboard::Clipboard::default(),
            interrupt: tokio::sync::Notify::new(),
            idle: std::sync::Mutex::new((std::time::Instant::now(), None)),
        })
    }

    /// The person did something: noted at once, even while a command holds the account.
    pub fn note_input(&self) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 = std::time::Instant::now();
    }

    /// The idle limit now in force (from the account, whenever the ticker holds it).
    pub fn note_idle_limit(&self, limit: Option<std::time::Duration>) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = limit;
    }

    /// Whether the idle limit has passed since the last input, as far as the shell knows.
    pub fn idle_overdue(&self) -> bool {
        let (last, limit) = *self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        limit.is_some_and(|limit| last.elapsed() >= limit)
    }

    /// Runs `work` — a command's use of the account, typically waiting on the server —
    /// until it ends or a lock is due ([`Shell::account_for_lock`]): then it is dropped where
    /// it waits (the core's steps are each safe to cut short, as a crash would) and the
    /// command answers [`UnlockError::Locked`].
    pub async fn until_lock<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::select! {
            biased;
            () = self.interrupt.notified() => Err(Error::Unlock(UnlockError::Locked)),
            done = work => done,
        }
    }

    /// The account's slot for a lifecycle event that may lock it. A lock must take effect
    /// within a second whatever else runs: if a command holds the account, it is asked to
    /// let go (see [`Shell::until_lock`]) until it does.
    pub async fn account_for_lock(&self) -> tokio::sync::MutexGuard<'_, Option<Account>> {
        loop {
            if let Ok(slot) = tokio::time::timeout(LOCK_PATIENCE, self.account.lock()).await {
                return slot;
            }
            self.interrupt.notify_waiters();
        }
    }

    /// The keychain of this OS.
    pub fn keychain() -> Keychain {
        Keychain::os()
    }

    /// The account, opened (locked) from the profile if not yet in memory.
    /// [`CacheError::NoVault`](carekeep_core::error::CacheError::NoVault): no one is signed in
    /// on this device.
    pub fn ensure_open(&self, slot: &mut Option<Account>) -> Result<(), Error> {
        if slot.is_none() {
            *slot = Some(Account::open(&self.profile, Self::keychain(), Arc::new(SystemClock))?);
        }
        Ok(())
    }

    /// Remembers where to send lock notices (the UI calls `watch_lock` once at start, and
    /// again after a reload), and sends it a notice held for it.
    pub fn set_lock_channel(&self, channel: Channel<LockNotice>) {
        self.lock_channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .watch(channel);
    }

    /// Tells the UI the account is locked: it removes every view of records at once (and
    /// a copy of record text leaves the clipboard).
    pub fn notify_locked(&self, notice: LockNotice) {
        self.clipboard.clear();
        self.lock_channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(notice);
    }

    /// The page is gone and is about to be loaded again: its channel goes with it, and
    /// `notice` waits for the new page's `watch_lock`, so the person learns why the app came
    /// back locked.
    pub fn notify_locked_after_reload(&self, notice: LockNotice) {
        self.clipboard.clear();
        self.lock_channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hold(notice);
    }

    /// Whether losing focus locks.
    pub fn lock_on_blur(&self) -> bool {
        self.lock_on_blur.load(Ordering::Relaxed)
    }

    /// The person's choice of lock-on-blur.
    pub fn set_lock_on_blur(&self, on: bool) {
        self.lock_on_blur.store(on, Ordering::Relaxed);
    }
}

/// The UI's lock channel, and a notice kept for the next page when the current one is gone.
#[derive(Default)]
struct LockChannel {
    channel: Option<Channel<LockNotice>>,
    held: Option<LockNotice>,
}

impl LockChannel {
    fn watch(&mut self, channel: Channel<LockNotice>) {
        if let Some(notice) = self.held.take() {
            let _ = channel.send(notice);
        }
        self.channel = Some(channel);
    }

    fn send(&mut self, notice: LockNotice) {
        if let Some(channel) = &self.channel {
            // A closed channel means the page is gone: nothing is left to wipe.
            let _ = channel.send(notice);
        }
    }

    fn hold(&mut self, notice: LockNotice) {
        self.channel = None;
        self.held = Some(notice);
    }
}

/// The per-user directories (XDG on Linux).
struct AppDirs {
    config: PathBuf,
    data: PathBuf,
}

impl AppDirs {
    fn for_this_user() -> Result<Self, String> {
        const APP: &str = "org.carekeep.app";
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = |var: &str, fallback: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(fallback)))
                .map(|dir| dir.join(APP))
                .ok_or_else(|| {
                    format!("neither {var} nor HOME is set: set CAREKEEP_PROFILE and CAREKEEP_SERVER_CONFIG")
                })
        };
        Ok(Self { config: xdg("XDG_CONFIG_HOME", ".config")?, data: xdg("XDG_DATA_HOME", ".local/share")? })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tauri::ipc::{Channel, InvokeResponseBody};

    use super::LockChannel;
    use crate::messages::{LockNotice, LockReason};

    /// A channel that keeps what it is sent, as the page would receive it.
    fn recording() -> (Channel<LockNotice>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let channel = Channel::new(move |body| {
            if let InvokeResponseBody::Json(json) = body {
                sink.lock().unwrap().push(json);
            }
            Ok(())
        });
        (channel, seen)
    }

    #[test]
    fn a_notice_held_across_a_reload_reaches_the_next_page_once() {
        let mut lock = LockChannel::default();
        let (old_page, old_seen) = recording();
        lock.watch(old_page);
        lock.send(LockNotice { reason: LockReason::Idle });
        lock.hold(LockNotice { reason: LockReason::RendererLost });
        // Sent while no page listens: nowhere to go, and not kept.
        lock.send(LockNotice { reason: LockReason::OsLocked });
        let (new_page, new_seen) = recording();
        lock.watch(new_page);
        let (later_page, later_seen) = recording();
        lock.watch(later_page);
        assert_eq!(*old_seen.lock().unwrap(), [r#"{"reason":"idle"}"#]);
        assert_eq!(*new_seen.lock().unwrap(), [r#"{"reason":"renderer-lost"}"#]);
        assert!(later_seen.lock().unwrap().is_empty());
    }
}
