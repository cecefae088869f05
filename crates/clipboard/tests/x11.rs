//! The Linux clipboard against a real X server (Xvfb) and a real other app (xclip): a copy
//! is taken back only while it is still ours. GTK runs on one thread per process, so the
//! cases run in order in one test.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs an X display and xclip: `cargo xtask test` runs it under xvfb-run"]
fn a_copy_is_taken_back_only_while_the_clipboard_still_holds_it() {
    gtk::init().expect("an X display (run under xvfb-run)");

    // Taken back: the clipboard is empty.
    let placed = carekeep_clipboard::place("Copy one").unwrap();
    assert_eq!(paste("UTF8_STRING"), "Copy one");
    assert_eq!(paste("x-kde-passwordManagerHint"), "secret", "clipboard managers are asked not to keep it");
    carekeep_clipboard::take_back(placed);
    assert_eq!(paste("UTF8_STRING"), "");

    // Another app copied since: its copy stays.
    let placed = carekeep_clipboard::place("Copy two").unwrap();
    copy_in_another_app("another app's text");
    pump(Duration::from_millis(300));
    carekeep_clipboard::take_back(placed);
    assert_eq!(paste("UTF8_STRING"), "another app's text");

    // The app copied again: taking back the older copy leaves the newer one.
    let older = carekeep_clipboard::place("Copy three").unwrap();
    let newer = carekeep_clipboard::place("Copy four").unwrap();
    carekeep_clipboard::take_back(older);
    assert_eq!(paste("text/plain;charset=utf-8"), "Copy four");
    carekeep_clipboard::take_back(newer);
    assert_eq!(paste("STRING"), "");
}

/// What a paste of `target` gets now, read by xclip while this thread serves the selection.
fn paste(target: &str) -> String {
    let reader = Command::new("xclip")
        .args(["-o", "-selection", "clipboard", "-t", target])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("xclip (cargo xtask setup)");
    let read = thread::spawn(move || reader.wait_with_output().unwrap().stdout);
    while !read.is_finished() {
        pump(Duration::from_millis(20));
    }
    String::from_utf8(read.join().unwrap()).unwrap()
}

/// xclip takes the clipboard with `text` (and keeps serving it in the background).
fn copy_in_another_app(text: &str) {
    let mut xclip = Command::new("xclip")
        .args(["-i", "-selection", "clipboard"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("xclip (cargo xtask setup)");
    xclip.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(xclip.wait().unwrap().success());
}

/// Runs GTK's main loop for `time`, so that X events (requests, `SelectionClear`) are handled.
fn pump(time: Duration) {
    let end = Instant::now() + time;
    while Instant::now() < end {
        while gtk::events_pending() {
            gtk::main_iteration_do(false);
        }
        thread::sleep(Duration::from_millis(5));
    }
}
