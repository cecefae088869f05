//! The one window: created content-protected, showing only the bundled UI. Navigation to
//! any other origin is refused, so no remote page ever gets the app's commands.

use tauri::{AppHandle, WebviewUrl, WebviewWindowBuilder, Window};

/// Opens the main window (the capability in capabilities/main.json names it).
pub fn open_main(app: &AppHandle) -> tauri::Result<()> {
    let builder = WebviewWindowBuilder::new(app, "main", WebviewUrl::App("index.html".into()))
        .content_protected(true)
        .on_navigation(is_bundled_ui);
    // A phone gives the app its whole screen; a desktop window gets a title and a size.
    #[cfg(desktop)]
    let builder = builder.title("Carekeep").inner_size(1100.0, 760.0).min_inner_size(360.0, 560.0);
    let window = builder.build()?;
    let app = app.clone();
    crate::platform::guard_window(&window, move || crate::lifecycle::renderer_lost(&app));
    Ok(())
}

/// Applies content protection again (it can be lost across minimise and restore).
pub fn protect(window: &Window) {
    let _ = window.set_content_protected(true);
}

/// The bundled UI's origins: `tauri://localhost` (Linux, macOS) and
/// `http://tauri.localhost` (Windows).
fn is_bundled_ui(url: &tauri::Url) -> bool {
    matches!((url.scheme(), url.host_str()), ("tauri", Some("localhost")) | ("http" | "https", Some("tauri.localhost")))
}

#[cfg(test)]
mod tests {
    use super::is_bundled_ui;

    #[test]
    fn only_the_bundled_ui_may_be_shown() {
        for allowed in ["tauri://localhost/index.html", "http://tauri.localhost/index.html"] {
            assert!(is_bundled_ui(&allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "https://example.org/",
            "http://localhost:1420/",
            "tauri://localhost.evil.org/",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ] {
            assert!(!is_bundled_ui(&refused.parse().unwrap()), "{refused}");
        }
    }
}
