//! macOS: LocalAuthentication's `LAPolicyDeviceOwnerAuthentication` (Touch ID, or the
//! account password when biometry is unavailable). Type-checked for macOS here; not yet run
//! on a Mac.
#![expect(unsafe_code, reason = "LocalAuthentication through objc2; each block says why it is sound")]

use std::sync::mpsc;

use block2::RcBlock;
use objc2::runtime::Bool;
use objc2_foundation::{NSError, NSString};
use objc2_local_authentication::{LAContext, LAPolicy};

use crate::{PresenceError, PresenceVerifier};

/// Asks LocalAuthentication.
pub(super) struct LocalAuthentication;

impl PresenceVerifier for LocalAuthentication {
    fn verify(&self, reason: &str) -> Result<(), PresenceError> {
        let policy = LAPolicy::DeviceOwnerAuthentication;
        // SAFETY: `new` has no preconditions and returns an owned, initialised context.
        let context = unsafe { LAContext::new() };
        // SAFETY: `context` is a live LAContext and `policy` one of the framework's constants.
        if unsafe { context.canEvaluatePolicy_error(policy) }.is_err() {
            return Err(PresenceError::Unavailable);
        }
        let (answer, answered) = mpsc::channel();
        let reply = RcBlock::new(move |ok: Bool, _error: *mut NSError| {
            let _ = answer.send(ok.as_bool());
        });
        let reason = NSString::from_str(reason);
        // SAFETY: `context` and `reason` are live Objective-C objects for the whole call; the
        // framework copies `reply` (a 'static block owning only a channel sender) before it
        // returns and calls it once, on its own queue.
        unsafe { context.evaluatePolicy_localizedReason_reply(policy, &reason, &reply) };
        match answered.recv() {
            Ok(true) => Ok(()),
            Ok(false) => Err(PresenceError::Refused),
            Err(_) => Err(PresenceError::Unavailable),
        }
    }
}
