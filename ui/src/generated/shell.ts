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
