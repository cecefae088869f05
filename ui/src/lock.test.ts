import { beforeEach, describe, expect, it } from "vitest";
import type { LockReason, SessionView } from "./api";
import { el } from "./dom";
import { forgetLock, lockMessage, lockMessages, noteLock } from "./lock";
import { lockScreen, signInScreen } from "./screens/session";

function session(state: SessionView["state"]): SessionView {
  return {
    state,
    role: "patient",
    server: "https://clinic.example",
    last_sync_unix: null,
    pending_writes: null,
    idle_lock_secs: 300,
  };
}

describe("telling the person why the app locked", () => {
  beforeEach(() => {
    document.body.replaceChildren(el("div", { id: "banner" }), el("main", { id: "main" }));
    forgetLock();
  });

  it("has words for every reason but a lock the person made", () => {
    const reasons = Object.keys(lockMessages) as LockReason[];
    expect(reasons.sort()).toEqual(["background", "focus-lost", "idle", "manual", "os-locked", "renderer-lost"]);
    for (const reason of reasons) expect(lockMessages[reason] === null).toBe(reason === "manual");
  });

  it("says on the lock screen that the display process stopped and the screen was reloaded", () => {
    noteLock("renderer-lost");
    lockScreen(session("locked"));
    expect(document.querySelector("#main [role=status]")?.textContent).toContain("reloaded");
  });

  it("says it on the sign-in screen when only a full sign-in unlocks", () => {
    noteLock("idle");
    signInScreen(session("reauth-required"));
    expect(document.querySelector("#main [role=status]")?.textContent).toContain("not used for a while");
  });

  it("says nothing once the person is back in, after signing out, or after a manual lock", () => {
    noteLock("os-locked");
    expect(lockMessage(session("signed-out"))).toBeNull();
    forgetLock();
    expect(lockMessage(session("locked"))).toBeNull();
    noteLock("manual");
    lockScreen(session("locked"));
    expect(document.querySelector("#main [role=status]")).toBeNull();
  });
});
