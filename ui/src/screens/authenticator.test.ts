import { describe, expect, it } from "vitest";
import { wipe } from "../app";
import { el } from "../dom";
import { setupView } from "./authenticator";
import { present } from "../testing";

const setup = { qr_png_base64: "iVBORw0KGgoAAAANSUhEUg", setup_key: "JBSW Y3DP EHPK 3PXP" };

describe("setting up a new authenticator", () => {
  it("shows the QR code with a text alternative, the key to type, and a labelled code field", () => {
    document.body.replaceChildren(el("main", { id: "main" }));
    const section = el("section");
    present(document.getElementById("main"), "#main").append(section);
    setupView(section, setup, () => {});
    const qr = present(section.querySelector("img.qr"), "the QR code");
    expect(qr.getAttribute("src")).toBe("data:image/png;base64,iVBORw0KGgoAAAANSUhEUg");
    expect(qr.getAttribute("alt")).toContain("type the key");
    expect(section.querySelector("#setup-key")?.textContent).toBe("JBSW Y3DP EHPK 3PXP");
    const code = present(section.querySelector<HTMLInputElement>("#new-authenticator-code"), "the code field");
    expect(section.querySelector(`label[for="${code.id}"]`)?.textContent).toContain("new authenticator");
    expect(document.activeElement).toBe(code);
  });

  it("leaves no trace of the secret once cancelled or locked", () => {
    document.body.replaceChildren(el("main", { id: "main" }));
    const section = el("section");
    present(document.getElementById("main"), "#main").append(section);
    let cancelled = false;
    setupView(section, setup, () => {
      cancelled = true;
      section.replaceChildren();
    });
    present(section.querySelector<HTMLButtonElement>("button.secondary"), "the cancel button").click();
    expect(cancelled).toBe(true);
    expect(document.body.textContent).not.toContain("JBSW");

    setupView(section, setup, () => {});
    wipe();
    expect(document.body.textContent).not.toContain("JBSW");
    expect(document.querySelector("img.qr")).toBeNull();
  });
});
