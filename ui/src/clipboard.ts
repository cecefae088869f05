// Copying record text: the webview never writes the clipboard itself. A copy goes to the
// shell, which takes it back after a minute or when Carekeep locks.
import { api } from "./api";
import { announce, showError } from "./app";

/** The text a copy would take: the page selection, or the selection inside a text field. */
export function selectedText(doc: Document): string {
  const active = doc.activeElement;
  if (active instanceof HTMLTextAreaElement || (active instanceof HTMLInputElement && active.type !== "password")) {
    const { selectionStart: start, selectionEnd: end } = active;
    if (start !== null && end !== null && end > start) return active.value.slice(start, end);
  }
  return doc.getSelection()?.toString() ?? "";
}

/** A `copy` listener that hands the selection to `send` instead of the system clipboard. */
export function copyThrough(send: (text: string) => Promise<unknown>): (event: ClipboardEvent) => void {
  return (event) => {
    const text = selectedText(document);
    if (!text) return;
    event.preventDefault();
    send(text).then(() => {
      announce("Copied. Carekeep removes it from the clipboard after a minute, or when it locks.");
    }, showError);
  };
}

/** Routes every copy in the app through the shell. (Cutting is left alone: it only happens
 *  in fields holding what the person is typing.) */
export function guardCopies(): void {
  document.addEventListener(
    "copy",
    copyThrough((text) => api.copyText(text)),
  );
}
