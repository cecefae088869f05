// Why the account locked, in words. Every reason the shell sends (`LockReason`, generated
// from the shell's own enum) must have an entry here, so a new reason fails the type check
// until the person would be told about it.
import type { LockReason, SessionView } from "./api";

/** What the lock and sign-in screens say after each kind of lock (`null`: nothing to say). */
export const lockMessages: Record<LockReason, string | null> = {
  idle: "Carekeep locked because it was not used for a while.",
  background: "Carekeep locked while it was in the background.",
  "os-locked": "Carekeep locked when this device's screen was locked.",
  "focus-lost": "Carekeep locked when you switched to another window.",
  // The person just did it: nothing to explain.
  manual: null,
  "renderer-lost":
    "The screen was reloaded because the app's display process stopped. Nothing was lost: unlock to carry on.",
};

/** The reason of the last lock, until the person is back in. */
let last: LockReason | null = null;

/** A lock notice arrived. */
export function noteLock(reason: LockReason): void {
  last = reason;
}

/** The person is back in (or signed out): the last lock is no longer news. */
export function forgetLock(): void {
  last = null;
}

/** What to say about the last lock on the screen `session` calls for, if anything. */
export function lockMessage(session: SessionView): string | null {
  if (last === null || (session.state !== "locked" && session.state !== "reauth-required")) return null;
  return lockMessages[last];
}
