//! Opening a document (a DocumentReference's attachment) for the viewer: the core fetches
//! it through the server's signed link into the encrypted cache, or reads it from there;
//! this hands the webview only kinds it can show without running anything.

use base64::Engine as _;
use carekeep_protocol::Secret;
use serde::Serialize;
use tauri::State;

use super::account;
use crate::shell::Shell;
use crate::views::CommandResult;

/// A document, as the viewer shows it. Its content is held as [`Secret`]: wiped from
/// memory once sent, and never printed by `Debug`.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DocumentView {
    /// Plain text, shown as text (never as HTML).
    Text {
        /// The text (invalid UTF-8 shown as replacement characters).
        text: Secret,
    },
    /// A raster image, shown as a `data:` image.
    Image {
        /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
        content_type: String,
        /// The bytes, base64.
        data_base64: Secret,
    },
    /// A PDF, drawn page by page by the bundled PDF renderer (scripts off).
    Pdf {
        /// The bytes, base64.
        data_base64: Secret,
    },
}

/// Raster image types the webview decodes without running anything (SVG can script: not here).
const IMAGES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Opens attachment `attachment` of the cached DocumentReference `document`.
#[tauri::command]
pub async fn open_document(
    shell: State<'_, Shell>,
    document: String,
    attachment: usize,
) -> CommandResult<DocumentView> {
    let mut account = account(&shell).await?;
    let opened = shell.until_lock(account.open_document(&document, attachment)).await?;
    drop(account);
    view(&opened.content_type, &opened.bytes)
}

/// The view of a document of `content_type`; kinds that could carry script (HTML, SVG) or
/// that the webview cannot draw are refused with what to do instead.
fn view(content_type: &str, bytes: &[u8]) -> CommandResult<DocumentView> {
    let base64 = || Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes));
    match content_type {
        "text/plain" => Ok(DocumentView::Text { text: Secret::new(String::from_utf8_lossy(bytes)) }),
        "application/pdf" => Ok(DocumentView::Pdf { data_base64: base64() }),
        image if IMAGES.contains(&image) => {
            Ok(DocumentView::Image { content_type: image.to_owned(), data_base64: base64() })
        }
        _ => Err("Carekeep cannot show this kind of document. Ask your care team for it as a PDF or an image.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{DocumentView, view};

    #[test]
    fn only_kinds_that_run_nothing_reach_the_webview() {
        for hostile in ["text/html", "image/svg+xml", "application/xhtml+xml", "application/javascript", ""] {
            assert!(view(hostile, b"<script>alert(1)</script>").is_err(), "{hostile}");
        }
        let Ok(DocumentView::Text { text }) = view("text/plain", b"<b>not bold</b>\xff") else { panic!() };
        assert_eq!(text.expose(), "<b>not bold</b>\u{fffd}", "text stays text");
        let Ok(DocumentView::Image { content_type, data_base64 }) = view("image/png", b"\x89PNG") else { panic!() };
        assert_eq!((content_type.as_str(), data_base64.expose()), ("image/png", "iVBORw=="));
        assert!(matches!(view("application/pdf", b"%PDF-1.4"), Ok(DocumentView::Pdf { .. })));
    }
}
