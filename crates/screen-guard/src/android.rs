//! Android: `WindowManager.LayoutParams.FLAG_SECURE` on the activity's window, set through
//! JNI on the webview's (UI) thread, as Android requires for window flags.

use jni::JNIEnv;
use jni::objects::{JObject, JValue};
use tauri::{Runtime, WebviewWindow};

/// `android.view.WindowManager.LayoutParams.FLAG_SECURE`.
const FLAG_SECURE: i32 = 0x0000_2000;

/// Marks the activity behind `window` secure. `on_failure` runs if that could not be done
/// (the webview is gone, or Android threw), so that the caller can fail closed (Carekeep's
/// shell closes the app rather than show records a screenshot could take).
pub fn secure_window<R: Runtime>(window: &WebviewWindow<R>, on_failure: impl FnOnce() + Send + 'static) {
    // Whichever way the flag is not set — an error, or the closure dropped unrun — the
    // guard's drop reports it.
    let unsecured = Unsecured(Some(on_failure));
    let _ = window.with_webview(move |webview| {
        webview.jni_handle().exec(move |env, activity, _webview| {
            let mut unsecured = unsecured;
            if add_secure_flag(env, activity).is_ok() {
                unsecured.0 = None;
            } else {
                // A pending Java exception would abort the next JNI call.
                let _ = env.exception_clear();
            }
        });
    });
}

/// `activity.getWindow().addFlags(FLAG_SECURE)`.
fn add_secure_flag(env: &mut JNIEnv, activity: &JObject) -> jni::errors::Result<()> {
    let window = env.call_method(activity, "getWindow", "()Landroid/view/Window;", &[])?.l()?;
    env.call_method(&window, "addFlags", "(I)V", &[JValue::Int(FLAG_SECURE)])?;
    Ok(())
}

/// Runs the failure callback when dropped, unless the flag was set.
struct Unsecured<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Unsecured<F> {
    fn drop(&mut self) {
        if let Some(on_failure) = self.0.take() {
            on_failure();
        }
    }
}
