// Generated from src-tauri/src/messages.rs by its tests: do not edit. After changing
// a type there, run `CAREKEEP_UPDATE_GENERATED=1 cargo test -p carekeep-app messages`.

/**
 * Why the account locked. The UI wipes its views for every one, and tells the person why.
 */
export type LockReason = "idle" | "background" | "os-locked" | "focus-lost" | "manual" | "renderer-lost";

/**
 * Sent when the account locks: the UI removes every view of records before anything else.
 */
export type LockNotice = { 
/**
 * Why it locked.
 */
reason: LockReason, };

/**
 * Where the session is: picks the UI's screen.
 */
export type SessionState = "signed-out" | "unlocked" | "locked" | "reauth-required" | "wiped";

/**
 * The signed-in person's role: what the UI offers (the server decides what is allowed).
 */
export type Role = "patient" | "clinician" | "nurse" | "billing" | "admin";

/**
 * How a write made on this device stands with the server.
 */
export type WriteStatus = "pending" | "conflict" | "rejected";

/**
 * The screen the UI turns to after a failed command (`CommandError.next`): one for each
 * kind of the core's `NextStep`, which travels beside it (`CommandError.step`).
 */
export type ErrorScreen = "sign-in" | "password" | "step-up" | "locked" | "offline" | "wiped" | "fix";

/**
 * What the person does next about an [`Error`]: the one answer the app's screens, the CLI's
 * exit codes and its password fallback all act on, so they cannot drift apart. Each is an
 * action the error's message already asks for; the message says it in words.
 */
export type NextStep = { "step": "sign-in" } | { "step": "reenter-credentials" } | { "step": "unlock-with-password" } | { "step": "unlock" } | { "step": "confirm-identity" } | { "step": "sign-in-after-wipe" } | { "step": "erase-and-sign-in" } | { "step": "wait", 
/**
 * How long, when known (the message says what to wait for otherwise).
 */
retry_after_secs: number | null, } | { "step": "reconnect" } | { "step": "try-again-later" } | { "step": "try-again" } | { "step": "update-app" } | { "step": "free-space" } | { "step": "contact-it" } | { "step": "ask-care-team" } | { "step": "correct-input" };
