import { beforeEach, describe, expect, it } from "vitest";
import { el } from "../dom";
import { wipedScreen } from "./session";

describe("after a remote wipe", () => {
  beforeEach(() => {
    document.body.replaceChildren(el("div", { id: "banner" }), el("main", { id: "main" }));
  });

  it("shows the sign-in screen and says why the records are gone", () => {
    wipedScreen({
      state: "signed-out",
      role: null,
      server: "https://clinic.example",
      last_sync_unix: null,
      pending_writes: null,
      idle_lock_secs: 300,
    });
    expect(document.getElementById("signin-title")).not.toBeNull();
    expect(document.getElementById("banner")?.textContent).toContain("erased by your organisation");
  });
});
