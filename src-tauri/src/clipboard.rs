//! Copies of record text. The webview never writes the clipboard: the UI hands a copy to
//! [`Clipboard::copy`], so the shell can take it back — [`CLEAR_AFTER`] later or when the
//! app locks, whichever comes first — and only while the clipboard still holds that copy
//! (whatever the person copied since is left alone). The OS work is `carekeep-clipboard`'s,
//! on the main thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use carekeep_clipboard::Placed;
use tauri::{AppHandle, Manager};
use zeroize::Zeroizing;

use crate::shell::Shell;

/// How long a copy of record text stays on the clipboard.
pub const CLEAR_AFTER: Duration = Duration::from_secs(60);

/// Why a copy could not be made.
pub const UNAVAILABLE: &str = "Copying is not available right now. Try again.";

/// The app's copy on the system clipboard.
#[derive(Default)]
pub struct Clipboard {
    app: OnceLock<AppHandle>,
    /// The copy on the clipboard now, numbered so that a timer takes back only its own.
    current: Mutex<Option<(u64, Placed)>>,
    /// Numbers the copies.
    copies: AtomicU64,
}

impl Clipboard {
    /// Connects to the running app (its main thread owns the clipboard).
    pub fn attach(&self, app: &AppHandle) {
        let _ = self.app.set(app.clone());
    }

    /// Puts `text` on the clipboard and starts its clock.
    pub fn copy(&self, text: String) -> Result<(), &'static str> {
        let app = self.app.get().ok_or(UNAVAILABLE)?;
        let text = Zeroizing::new(text);
        let (placed, receive) = mpsc::channel();
        app.run_on_main_thread(move || {
            let _ = placed.send(carekeep_clipboard::place(&text));
        })
        .map_err(|_| UNAVAILABLE)?;
        let placed = receive.recv().map_err(|_| UNAVAILABLE)?.map_err(|_| UNAVAILABLE)?;
        let number = self.copies.fetch_add(1, Ordering::SeqCst) + 1;
        // The copy before this one is no longer on the clipboard (this one replaced it).
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((number, placed));
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            tokio::time::sleep(CLEAR_AFTER).await;
            app.state::<Shell>().clipboard.take_back(Some(number));
        });
        Ok(())
    }

    /// Takes the app's copy back now (on lock and sign-out), if the clipboard still holds it.
    pub fn clear(&self) {
        self.take_back(None);
    }

    /// Takes back the current copy: any copy, or only copy `number`.
    fn take_back(&self, number: Option<u64>) {
        let placed = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_none_or(|(n, _)| number.is_some_and(|wanted| wanted != *n)) {
                return;
            }
            current.take().map(|(_, placed)| placed)
        };
        if let (Some(placed), Some(app)) = (placed, self.app.get()) {
            let _ = app.run_on_main_thread(move || carekeep_clipboard::take_back(placed));
        }
    }
}
