//! Copies of record text. The webview never writes the clipboard: the UI hands a copy to
//! [`Clipboard::copy`], so the shell can take it back — [`CLEAR_AFTER`] later or when the
//! app locks, whichever comes first — and only while the clipboard still holds that copy
//! (whatever the person copied since, here or in another app, is left alone).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tauri::{AppHandle, Manager};

use crate::platform;
use crate::shell::Shell;

/// How long a copy of record text stays on the clipboard.
pub const CLEAR_AFTER: Duration = Duration::from_secs(60);

/// The app's copies on the system clipboard.
#[derive(Default)]
pub struct Clipboard {
    app: OnceLock<AppHandle>,
    /// Counts copies and clears: a timer clears only the copy it was started for.
    generation: AtomicU64,
}

impl Clipboard {
    /// Connects to the running app (its main thread owns the clipboard).
    pub fn attach(&self, app: &AppHandle) {
        let _ = self.app.set(app.clone());
    }

    /// Puts `text` on the clipboard and starts its clock.
    pub fn copy(&self, text: String) -> Result<(), &'static str> {
        let app = self.app.get().ok_or(platform::clipboard::UNAVAILABLE)?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        platform::clipboard::set(app, text)?;
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            tokio::time::sleep(CLEAR_AFTER).await;
            let clipboard = &app.state::<Shell>().clipboard;
            if clipboard.generation.load(Ordering::SeqCst) == generation {
                clipboard.clear();
            }
        });
        Ok(())
    }

    /// Takes the app's copy back now (on lock and sign-out), if the clipboard still holds it.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(app) = self.app.get() {
            platform::clipboard::clear_ours(app);
        }
    }
}
