import { describe, expect, it, vi } from "vitest";
import { views, wipe } from "../app";
import { el } from "../dom";
import { attachments, documentView, sizeText } from "./documents";

const letter = {
  resourceType: "DocumentReference",
  id: "d1",
  date: "2026-01-05T10:00:00Z",
  type: { text: "Discharge summary" },
  content: [
    { attachment: { contentType: "text/plain", title: "Discharge letter", url: "/documents/doc-1", size: 812 } },
  ],
};
const scans = {
  resourceType: "DocumentReference",
  id: "d2",
  date: "2026-03-01T10:00:00Z",
  content: [
    { attachment: { contentType: "application/pdf", title: "Scan report", url: "/documents/doc-2", size: 3_500_000 } },
    { attachment: { contentType: "text/html", title: "Web page", url: "/documents/doc-3" } },
    { attachment: { contentType: "image/png", title: "Not on the server" } },
  ],
};

describe("documents", () => {
  it("lists every downloadable attachment, newest first, saying what it is", () => {
    const found = attachments([letter, scans]);
    expect(found.map((a) => [a.document, a.index, a.title])).toEqual([
      ["d2", 0, "Scan report"],
      ["d2", 1, "Web page"],
      ["d1", 0, "Discharge letter"],
    ]);
    expect(found[0]?.detail).toBe("PDF · 3.3 MB");
    expect(found[1]?.detail).toBe("Cannot be shown in Carekeep: ask your care team for a PDF");
    expect(found.map((a) => a.viewable)).toEqual([true, false, true]);
    expect(found[2]?.detail).toBe("Discharge summary · Text · 812 bytes");
  });

  it("sizes bytes for people", () => {
    expect([sizeText(812), sizeText(12_345), sizeText(3_500_000)]).toEqual(["812 bytes", "12 KB", "3.3 MB"]);
  });

  it("shows a text document as text, never as markup", async () => {
    const shown = await documentView({ kind: "text", text: "<img src=x onerror=alert(1)>Dear colleague" }, "Letter");
    expect(shown.tagName).toBe("PRE");
    expect(shown.textContent).toBe("<img src=x onerror=alert(1)>Dear colleague");
    expect(shown.querySelector("img")).toBeNull();
  });

  it("shows an image as a data: image with a text alternative", async () => {
    const shown = (await documentView(
      { kind: "image", content_type: "image/png", data_base64: "iVBORw==" },
      "Chest image",
    )) as HTMLImageElement;
    expect(shown.getAttribute("src")).toBe("data:image/png;base64,iVBORw==");
    expect(shown.alt).toBe("Chest image (image)");
  });

  it("lets go of an open PDF's renderer when the app locks", () => {
    document.body.replaceChildren(el("div", { id: "banner" }), el("main", { id: "main" }, el("canvas")));
    const close = vi.fn();
    views.releases.add(close);
    wipe();
    expect(close).toHaveBeenCalledOnce();
    expect(views.releases.size).toBe(0);
    expect(document.querySelector("canvas")).toBeNull();
  });
});
