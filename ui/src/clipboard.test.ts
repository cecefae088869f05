import { describe, expect, it } from "vitest";
import { copyThrough, selectedText } from "./clipboard";
import { el } from "./dom";
import { present } from "./testing";

function copyEvent(): Event {
  return new Event("copy", { cancelable: true });
}

describe("copying", () => {
  it("takes the selected text of the page or of the focused field, never of a password field", () => {
    const p = el("p", {}, "HbA1c 6.4 %");
    const note = el("textarea", {}, "Please refill my inhaler");
    const secret = el("input", { type: "password", value: "hunter22" });
    document.body.replaceChildren(p, note, secret);
    present(document.getSelection(), "a selection").selectAllChildren(p);
    expect(selectedText(document)).toBe("HbA1c 6.4 %");
    note.focus();
    note.setSelectionRange(7, 13);
    expect(selectedText(document)).toBe("refill");
    secret.focus();
    secret.setSelectionRange(0, 8);
    present(document.getSelection(), "a selection").removeAllRanges();
    expect(selectedText(document)).toBe("");
  });

  it("sends the copy to the shell instead of the system clipboard", async () => {
    const p = el("p", {}, "Amoxicillin 500 mg");
    document.body.replaceChildren(el("div", { id: "banner" }), p);
    present(document.getSelection(), "a selection").selectAllChildren(p);
    const sent: string[] = [];
    const event = copyEvent();
    copyThrough((text) => {
      sent.push(text);
      return Promise.resolve();
    })(event as ClipboardEvent);
    expect(event.defaultPrevented).toBe(true);
    expect(sent).toEqual(["Amoxicillin 500 mg"]);
    await Promise.resolve();
    expect(document.getElementById("banner")?.textContent).toContain("after a minute");
  });

  it("leaves an empty selection to the webview", () => {
    document.body.replaceChildren(el("p", {}, "text"));
    present(document.getSelection(), "a selection").removeAllRanges();
    const event = copyEvent();
    copyThrough(() => Promise.reject(new Error("not called")))(event as ClipboardEvent);
    expect(event.defaultPrevented).toBe(false);
  });
});
