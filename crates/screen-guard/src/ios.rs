//! iOS: an opaque cover over the app's windows while the app is inactive (it resigned
//! active: the app switcher, a call, Control Centre — iOS snapshots the screen then) or
//! while the screen is captured (recorded, mirrored, AirPlay). iOS offers no way to keep a
//! window out of a screenshot; the security screen says so.
//!
//! Everything here runs on the main thread (UIKit's rule), so the state is thread-local.

#![expect(unsafe_code, reason = "UIKit calls through objc2; each block says why it is sound")]

use std::cell::{Cell, RefCell};

use block2::RcBlock;
use objc2::MainThreadMarker;
use objc2::rc::Retained;
use objc2::runtime::{NSObjectProtocol, ProtocolObject};
use objc2_foundation::{NSNotificationCenter, NSOperationQueue};
use objc2_ui_kit::{
    UIApplication, UIColor, UIScreenCapturedDidChangeNotification, UIView, UIViewAutoresizing, UIWindow, UIWindowScene,
};

/// Marks the cover among a window's views ("CK").
const COVER_TAG: isize = 0x434B;

thread_local! {
    /// The app resigned active and has not become active again.
    static INACTIVE: Cell<bool> = const { Cell::new(false) };
    /// The notification centre's token for the capture observer, kept for the app's life.
    static CAPTURE_OBSERVER: RefCell<Option<Retained<ProtocolObject<dyn NSObjectProtocol>>>> =
        const { RefCell::new(None) };
}

/// Covers the app's windows now (`inactive`, on `Suspended`: before iOS takes its
/// snapshot) or uncovers them (on `Resumed`), unless the screen is still being captured.
pub fn cover_while_inactive(mtm: MainThreadMarker, inactive: bool) {
    INACTIVE.set(inactive);
    refresh(mtm);
}

/// Starts covering the app whenever its screen is captured, and checks once now.
pub fn watch_capture(mtm: MainThreadMarker) {
    if CAPTURE_OBSERVER.with_borrow(Option::is_some) {
        return refresh(mtm);
    }
    let on_change = RcBlock::new(|_| {
        if let Some(mtm) = MainThreadMarker::new() {
            refresh(mtm);
        }
    });
    let center = NSNotificationCenter::defaultCenter();
    // SAFETY: no object filter is given (so none of the wrong type); the queue is the main
    // queue, where UIKit may be used; the block captures nothing, so it may be sent.
    let token = unsafe {
        center.addObserverForName_object_queue_usingBlock(
            Some(UIScreenCapturedDidChangeNotification),
            None,
            Some(&NSOperationQueue::mainQueue()),
            &on_change,
        )
    };
    CAPTURE_OBSERVER.set(Some(token));
    refresh(mtm);
}

/// Puts the cover on every window of every scene, or takes it off, as the state asks.
fn refresh(mtm: MainThreadMarker) {
    for scene in &UIApplication::sharedApplication(mtm).connectedScenes() {
        let Ok(scene) = scene.downcast::<UIWindowScene>() else { continue };
        let cover = INACTIVE.get() || is_captured(&scene);
        for window in &scene.windows() {
            match (cover, window.viewWithTag(COVER_TAG)) {
                (true, None) => add_cover(mtm, &window),
                (false, Some(existing)) => existing.removeFromSuperview(),
                _ => {}
            }
        }
    }
}

/// Whether the scene's screen is being recorded, mirrored or shared.
#[expect(deprecated, reason = "`sceneCaptureState`, its successor, needs iOS 17; Tauri supports iOS 14")]
fn is_captured(scene: &UIWindowScene) -> bool {
    scene.screen().isCaptured()
}

/// An opaque view in the system background colour over the whole window, resized with it.
fn add_cover(mtm: MainThreadMarker, window: &UIWindow) {
    let cover = UIView::initWithFrame(mtm.alloc(), window.bounds());
    cover.setBackgroundColor(Some(&UIColor::systemBackgroundColor()));
    cover.setAutoresizingMask(UIViewAutoresizing::FlexibleWidth | UIViewAutoresizing::FlexibleHeight);
    cover.setTag(COVER_TAG);
    window.addSubview(&cover);
}
