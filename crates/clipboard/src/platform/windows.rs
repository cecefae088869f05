//! Windows: the Win32 clipboard, as `CF_UNICODETEXT`, with the registered formats that
//! keep a copy out of clipboard history and the cloud clipboard and tell clipboard
//! monitors to ignore it. Every change to the clipboard raises its sequence number, so the
//! number after the copy is the marker. Type-checked for Windows here; not yet run on
//! Windows.
#![expect(unsafe_code, reason = "Win32 clipboard calls; each block says why it is sound")]

use windows::Win32::Foundation::{GlobalFree, HANDLE, HGLOBAL};
use windows::Win32::System::DataExchange::{
    CloseClipboard, EmptyClipboard, GetClipboardSequenceNumber, OpenClipboard, RegisterClipboardFormatW,
    SetClipboardData,
};
use windows::Win32::System::Memory::{GMEM_MOVEABLE, GlobalAlloc, GlobalLock, GlobalUnlock};
use windows::Win32::System::Ole::CF_UNICODETEXT;
use windows::core::HSTRING;
use zeroize::Zeroizing;

/// The clipboard's sequence number once the copy was written.
#[derive(Debug)]
pub(crate) struct Marker(u32);

/// Formats whose presence (or zero value) keeps the copy out of history, the cloud clipboard
/// and clipboard monitors.
const PRIVATE_FORMATS: [&str; 3] =
    ["ExcludeClipboardContentFromMonitorProcessing", "CanIncludeInClipboardHistory", "CanUploadToCloudClipboard"];

pub(crate) fn place(text: &str) -> Result<Marker, crate::Unavailable> {
    // UTF-16 with its terminating NUL, as the bytes the clipboard stores.
    let wide: Zeroizing<Vec<u8>> = Zeroizing::new(text.encode_utf16().chain([0]).flat_map(u16::to_ne_bytes).collect());
    let open = Open::new()?;
    // SAFETY: the clipboard is open (owned by this thread) until `open` drops.
    unsafe { EmptyClipboard() }.map_err(|_| crate::Unavailable)?;
    set(CF_UNICODETEXT.0.into(), &wide)?;
    for name in PRIVATE_FORMATS {
        // SAFETY: `HSTRING` is a live, NUL-terminated wide string for the call.
        let format = unsafe { RegisterClipboardFormatW(&HSTRING::from(name)) };
        if format != 0 {
            set(format, &0u32.to_ne_bytes())?;
        }
    }
    // SAFETY: no preconditions; read while the clipboard is still open, so no other write
    // can come between the copy and its number.
    let marker = Marker(unsafe { GetClipboardSequenceNumber() });
    drop(open);
    Ok(marker)
}

pub(crate) fn take_back(Marker(number): Marker) {
    let Ok(_open) = Open::new() else { return };
    // SAFETY: no preconditions; the clipboard is open, so it cannot change between the check
    // and the emptying.
    if unsafe { GetClipboardSequenceNumber() } == number {
        // SAFETY: the clipboard is open (owned by this thread) until `_open` drops.
        let _ = unsafe { EmptyClipboard() };
    }
}

/// The clipboard, open for this thread until dropped.
struct Open;

impl Open {
    /// Opens the clipboard, retrying briefly while another program has it open.
    fn new() -> Result<Self, crate::Unavailable> {
        for _ in 0..10 {
            // SAFETY: no window owns the opening; it is closed again when `Open` drops.
            if unsafe { OpenClipboard(None) }.is_ok() {
                return Ok(Self);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(crate::Unavailable)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // SAFETY: this thread opened the clipboard in `Open::new`.
        let _ = unsafe { CloseClipboard() };
    }
}

/// Puts `bytes` on the open clipboard as `format`, in movable global memory that the
/// clipboard owns from then on.
fn set(format: u32, bytes: &[u8]) -> Result<(), crate::Unavailable> {
    // SAFETY: a plain allocation; checked for failure below.
    let memory: HGLOBAL = unsafe { GlobalAlloc(GMEM_MOVEABLE, bytes.len()) }.map_err(|_| crate::Unavailable)?;
    // SAFETY: `memory` is a live movable allocation of `bytes.len()` bytes.
    let target = unsafe { GlobalLock(memory) }.cast::<u8>();
    if target.is_null() {
        // SAFETY: `memory` was allocated above and given to no one.
        let _ = unsafe { GlobalFree(Some(memory)) };
        return Err(crate::Unavailable);
    }
    // SAFETY: `target` points at `bytes.len()` writable bytes that nothing else uses, and the
    // two regions cannot overlap (one is fresh global memory).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target, bytes.len()) };
    // SAFETY: locked once above. Its result reports the lock count, not an error.
    let _ = unsafe { GlobalUnlock(memory) };
    // SAFETY: the clipboard is open and emptied by this thread; on success the system owns
    // `memory`, on failure it is still ours to free.
    if unsafe { SetClipboardData(format, Some(HANDLE(memory.0))) }.is_err() {
        // SAFETY: the clipboard refused it, so `memory` is still ours.
        let _ = unsafe { GlobalFree(Some(memory)) };
        return Err(crate::Unavailable);
    }
    Ok(())
}
