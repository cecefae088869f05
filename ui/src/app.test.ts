import { beforeEach, describe, expect, it } from "vitest";
import { show, views, wipe } from "./app";
import { el } from "./dom";
import { present } from "./testing";

describe("the wipe on lock", () => {
  beforeEach(() => {
    document.body.replaceChildren(el("div", { id: "banner" }), el("main", { id: "main" }));
  });

  it("removes every view of records: page, banner, dialogs and loaded data", () => {
    show(el("section", {}, el("h2", {}, "Emet Dummett"), el("p", {}, "Born 6 Apr 1979")));
    present(document.getElementById("banner"), "the banner").append("Synced: 119 records");
    document.body.append(el("dialog", {}, "Exporting Emet Dummett"));
    views.records.set("patients", [{ resourceType: "Patient" }]);
    wipe();
    expect(document.body.textContent).not.toContain("Emet");
    expect(document.body.textContent).not.toContain("Synced");
    expect(document.querySelectorAll("dialog")).toHaveLength(0);
    expect(views.records.size).toBe(0);
  });

  it("renders text as text: markup from a record never becomes elements", () => {
    show(el("section", {}, el("h2", {}, "<img src=x onerror=alert(1)>")));
    expect(document.querySelector("img")).toBeNull();
    expect(document.querySelector("h2")?.textContent).toBe("<img src=x onerror=alert(1)>");
  });
});
