// Documents: the record's DocumentReferences, each attachment opened inline. The core
// downloads it through the server's short-lived signed link into the encrypted cache (or
// reads it from there offline); the page shows text as text, images as images and PDFs
// drawn by the bundled renderer. Nothing of a document outlives a lock (see `wipe`).
import { api, type DocumentView, type FhirResource } from "../api";
import { showError, views } from "../app";
import { clear, el } from "../dom";
import { conceptText, formatDate, str } from "../fhir";

/** One attachment of a DocumentReference, as the list shows it. */
export interface Attachment {
  /** The DocumentReference's id. */
  document: string;
  /** Which of its attachments. */
  index: number;
  title: string;
  /** What it is, in words (`Discharge summary · PDF · 12 KB`). */
  detail: string;
  date: string;
  /** Whether the app can show it (text, raster image, PDF); others are listed, not opened. */
  viewable: boolean;
}

const KINDS: Record<string, string> = {
  "text/plain": "Text",
  "application/pdf": "PDF",
  "image/png": "Image",
  "image/jpeg": "Image",
  "image/gif": "Image",
  "image/webp": "Image",
};

/** The attachments of `documents`, newest first. */
export function attachments(documents: FhirResource[]): Attachment[] {
  const found: { attachment: Attachment; sortKey: string }[] = [];
  for (const doc of documents) {
    const contents: unknown[] = Array.isArray(doc["content"]) ? doc["content"] : [];
    contents.forEach((content, index) => {
      // Cached JSON may hold anything where an object belongs: take only objects.
      const inner =
        typeof content === "object" && content !== null && "attachment" in content ? content.attachment : null;
      const attachment = (typeof inner === "object" && inner !== null ? inner : {}) as Record<string, unknown>;
      if (typeof attachment["url"] !== "string" || !doc.id) return;
      const type = typeof attachment["contentType"] === "string" ? attachment["contentType"] : "";
      const size = typeof attachment["size"] === "number" ? sizeText(attachment["size"]) : "";
      const when = str(attachment["creation"]) ?? str(doc["date"]) ?? "";
      const title =
        (str(attachment["title"]) ?? str(doc["description"]) ?? "") || conceptText(doc["type"]) || "Document";
      const viewable = Object.hasOwn(KINDS, type);
      const detail = [
        conceptText(doc["type"]),
        viewable ? KINDS[type] : "Cannot be shown in Carekeep: ask your care team for a PDF",
        size,
      ]
        .filter(Boolean)
        .join(" · ");
      found.push({
        attachment: { document: doc.id, index, title, detail, date: formatDate(when), viewable },
        sortKey: when,
      });
    });
  }
  return found.sort((a, b) => b.sortKey.localeCompare(a.sortKey)).map((f) => f.attachment);
}

/** A byte count for people: `812 bytes`, `12 KB`, `3.4 MB`. */
export function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The Documents tab: the list, and a viewer below it. */
export async function documentsTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const found = await api.records("DocumentReference", patient.id);
  views.records.set("DocumentReference/", found);
  const items = attachments(found);
  if (items.length === 0) {
    into.append(el("p", {}, "No documents on this device yet. Sync to fetch new ones."));
    return;
  }
  const viewer = el("section", { class: "viewer", "aria-live": "polite", "aria-label": "Open document" });
  const list = el("ul", { class: "items documents" });
  for (const item of items) {
    const open = el("button", { type: "button", class: "link", "data-document": item.document }, item.title);
    open.addEventListener(
      "click",
      () =>
        void openInto(item, viewer).catch((e: unknown) => {
          clear(viewer);
          showError(e);
        }),
    );
    list.append(
      el(
        "li",
        {},
        el("span", { class: "title" }, item.viewable ? open : item.title),
        el("span", { class: "detail" }, item.detail),
        el("span", { class: "date" }, item.date),
      ),
    );
  }
  into.append(list, viewer);
}

/** Opens `item` in `viewer` (downloading it first if this device does not have it yet). */
async function openInto(item: Attachment, viewer: HTMLElement): Promise<void> {
  release(viewer);
  clear(viewer);
  viewer.append(el("p", { class: "muted" }, `Opening ${item.title}…`));
  const document = await api.openDocument(item.document, item.index);
  const shown = await documentView(document, item.title, viewer);
  clear(viewer);
  const heading = el("h3", { tabindex: "-1" }, item.title);
  const close = el("button", { type: "button", class: "secondary" }, "Close");
  close.addEventListener("click", () => {
    release(viewer);
    clear(viewer);
  });
  viewer.append(el("div", { class: "viewer-head" }, heading, close), shown);
  heading.focus();
}

/** Lets go of what the viewer's last document holds besides the page (a PDF renderer). */
function release(viewer: HTMLElement): void {
  const held = viewerReleases.get(viewer);
  if (held) {
    held();
    views.releases.delete(held);
    viewerReleases.delete(viewer);
  }
}
const viewerReleases = new WeakMap<HTMLElement, () => void>();

/** The page's view of a document: never markup from it, only text, pixels or drawn pages. */
export async function documentView(document: DocumentView, title: string, viewer?: HTMLElement): Promise<HTMLElement> {
  switch (document.kind) {
    case "text":
      return el("pre", { class: "document-text", tabindex: "0", "aria-label": title }, document.text);
    case "image":
      return el("img", {
        class: "document-image",
        src: `data:${document.content_type};base64,${document.data_base64}`,
        alt: `${title} (image)`,
      });
    case "pdf": {
      const { pdfPages } = await import("../pdf");
      const { pages, close } = await pdfPages(document.data_base64, title);
      views.releases.add(close);
      if (viewer) viewerReleases.set(viewer, close);
      return pages;
    }
  }
}
