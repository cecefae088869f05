// The sync button and its progress bar (phase, done / total).
import { api } from "../api";
import { announce, showError } from "../app";
import { el } from "../dom";

export function syncButton(afterSync: () => Promise<void>): HTMLElement {
  const button = el("button", { type: "button", class: "primary", id: "sync" }, "Sync");
  const bar = el("progress", { max: "1", value: "0", "aria-label": "Sync progress", hidden: true });
  const phase = el("span", { class: "muted", "aria-live": "polite" });
  button.addEventListener("click", () => {
    button.disabled = true;
    bar.hidden = false;
    api
      .sync((p) => {
        bar.max = Math.max(p.total, 1);
        bar.value = p.done;
        phase.textContent = p.total > 1 ? `${p.phase} (${p.done}/${p.total})` : p.phase;
      })
      .then(
        async (report) => {
          await afterSync();
          const over = report.patients_over_limit
            ? ` ${report.patients_over_limit} more patients can be opened on demand.`
            : "";
          const aside = report.conflicts + report.rejected;
          announce(
            `Synced: ${report.resources_pulled} records updated, ${report.writes_sent} changes sent${aside ? `, ${aside} need your attention under Pending` : ""}.${over}`,
          );
        },
        (e: unknown) => {
          button.disabled = false;
          bar.hidden = true;
          phase.textContent = "";
          showError(e);
        },
      );
  });
  return el("div", { class: "sync" }, button, bar, phase);
}
