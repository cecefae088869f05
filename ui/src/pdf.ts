// PDFs drawn inline by pdf.js (Mozilla's renderer, bundled: nothing remote), loaded only
// when a PDF is opened so the app starts without it. The renderer runs in a worker from
// this origin; it has no script engine of its own for the document (PDF JavaScript,
// forms and XFA stay off), so a hostile PDF can only draw. Each page is a canvas with its
// text beside it for screen readers and copying.
import { GlobalWorkerOptions, getDocument } from "pdfjs-dist";
import workerUrl from "pdfjs-dist/build/pdf.worker.min.mjs?url";
import { el } from "./dom";

GlobalWorkerOptions.workerSrc = workerUrl;

/** The pages of a PDF (base64), and how to let go of the renderer's copy. */
export async function pdfPages(base64: string, title: string): Promise<{ pages: HTMLElement; close: () => void }> {
  const data = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const task = getDocument({ data, enableXfa: false, isOffscreenCanvasSupported: false });
  const pdf = await task.promise;
  const close = () => void task.destroy();
  const pages = el("div", {
    class: "pdf",
    role: "group",
    "aria-label": `${title}, ${pdf.numPages} page${pdf.numPages === 1 ? "" : "s"}`,
  });
  try {
    for (let number = 1; number <= pdf.numPages; number++) {
      const page = await pdf.getPage(number);
      const viewport = page.getViewport({ scale: 1.5 });
      const canvas = el("canvas", {
        width: Math.floor(viewport.width),
        height: Math.floor(viewport.height),
        role: "img",
        "aria-label": `Page ${number}`,
      });
      await page.render({ canvas, viewport }).promise;
      const text = (await page.getTextContent()).items
        .map((item) => ("str" in item ? item.str : ""))
        .join(" ")
        .replace(/\s+/g, " ")
        .trim();
      pages.append(
        el(
          "figure",
          { class: "pdf-page" },
          canvas,
          el(
            "figcaption",
            {},
            el(
              "details",
              {},
              el("summary", {}, `Text of page ${number}`),
              el("p", {}, text || "(no text on this page)"),
            ),
          ),
        ),
      );
      page.cleanup();
    }
  } catch (e) {
    close();
    throw e;
  }
  return { pages, close };
}
