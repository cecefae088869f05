// The signed-in app: a header (sync, lock, sign out), the offline banner with the last
// sync, and either the patient's own record (and those they are proxy for) or the
// clinician's patient list with search and break-glass.
import { api, type FhirResource, type SessionView } from "../api";
import { announce, refresh, show, showError, views } from "../app";
import { clear, el, field } from "../dom";
import { formatDate, mrn, patientName } from "../fhir";
import { recordTabs, tabbedRecord } from "./record";
import { accessLogPanel, pendingPanel, securityPanel } from "./settings";
import { withStepUp } from "./session";
import { syncButton } from "./sync";

export async function homeScreen(session: SessionView): Promise<void> {
  const content = el("div", { class: "content" });
  const nav = el("nav", { class: "side", "aria-label": "Carekeep" });
  const header = el(
    "header",
    { class: "top" },
    el("h1", { class: "brand" }, "Carekeep"),
    syncButton(refresh),
    el(
      "button",
      {
        type: "button",
        class: "secondary",
        id: "lock-now",
        onclick: () => void api.lock().then(() => refresh(), showError),
      },
      "Lock",
    ),
    el("button", { type: "button", class: "secondary", id: "sign-out", onclick: () => void signOut() }, "Sign out"),
  );
  show(el("div", { class: "home" }, header, nav, content));
  offlineBanner(session);
  const patients = await api.records("Patient").catch((e: unknown) => {
    showError(e);
    return [] as FhirResource[];
  });
  views.records.set("patients", patients);
  const open = (id: string, label: string, render: () => void | Promise<void>) => {
    const button = el("button", { type: "button", class: "nav", id: `nav-${id}` }, label);
    button.addEventListener("click", () => {
      for (const b of Array.from(nav.querySelectorAll("button"))) b.removeAttribute("aria-current");
      button.setAttribute("aria-current", "page");
      clear(content);
      void Promise.resolve(render()).catch(showError);
    });
    nav.append(button);
    return button;
  };
  const isPatient = session.role === "patient";
  const first = isPatient
    ? patientNav(patients, open, content)
    : open("patients", "Patients", () => {
        clinicianList(patients, content);
      });
  open("pending", "Pending", () => pendingPanel(content));
  if (isPatient) open("access", "Who viewed my record", () => accessLogPanel(content));
  open("security", "Security", () => securityPanel(content));
  first?.click();
}

type Open = (id: string, label: string, render: () => void) => HTMLButtonElement;

function patientNav(patients: FhirResource[], open: Open, content: HTMLElement): HTMLButtonElement | undefined {
  if (patients.length === 0) {
    return open("record-0", "My record", () => {
      content.append(el("p", {}, "Nothing on this device yet: choose Sync to download your record."));
    });
  }
  let first: HTMLButtonElement | undefined;
  patients.forEach((patient, index) => {
    const label = index === 0 ? "My record" : patientName(patient);
    const button = open(`record-${index}`, label, () => {
      content.append(patientRecord(patient, true));
    });
    first ??= button;
  });
  return first;
}

function patientRecord(patient: FhirResource, writes: boolean): HTMLElement {
  const exportButton = el("button", { type: "button", class: "secondary", id: "export" }, "Export record");
  exportButton.addEventListener("click", () => {
    void withStepUp(() => api.exportPatient(patient.id ?? ""), "Exporting a record").then((saved) => {
      if (!saved) return;
      const missing =
        saved.documentsMissing > 0
          ? ` ${saved.documentsMissing} document(s) were not on this device and could not be fetched: export again when online to include them.`
          : "";
      announce(
        `Saved the record to ${saved.bundle} and a summary to read or print to ${saved.summary}. Anyone with these files can read them: keep them safe.${missing}`,
      );
    });
  });
  return tabbedRecord(patient, recordTabs(writes), [el("div", { class: "actions" }, exportButton)]);
}

/** The clinician's patients (their care team), searchable by name or MRN. */
function clinicianList(patients: FhirResource[], content: HTMLElement): void {
  const search = el("input", { type: "search", name: "search", placeholder: "Name or MRN", autocomplete: "off" });
  const list = el("ul", { class: "patients", "aria-live": "polite" });
  const render = () => {
    clear(list);
    const needle = search.value.trim().toLowerCase();
    const shown = patients.filter(
      (p) => !needle || patientName(p).toLowerCase().includes(needle) || mrn(p).toLowerCase().includes(needle),
    );
    for (const patient of shown) {
      const open = el("button", { type: "button", class: "link" }, patientName(patient));
      open.addEventListener("click", () => {
        clear(content);
        content.append(patientRecord(patient, false));
      });
      const born = typeof patient["birthDate"] === "string" ? formatDate(patient["birthDate"]) : "";
      list.append(
        el("li", {}, open, el("span", { class: "detail" }, `MRN ${mrn(patient)}`), el("span", { class: "date" }, born)),
      );
    }
    if (shown.length === 0)
      list.append(
        el(
          "li",
          { class: "muted" },
          needle ? "No patient on your care team matches." : "No patients on this device yet: choose Sync.",
        ),
      );
  };
  search.addEventListener("input", render);
  content.append(el("h2", {}, "Your patients"), field("Search your care team", search), list, breakGlassForm());
  render();
}

/** Break-glass: a patient outside the care team, in an emergency, with a reason for review. */
function breakGlassForm(): HTMLElement {
  const patient = el("input", { type: "text", name: "patient", required: true, autocomplete: "off" });
  const reason = el("textarea", { name: "reason", required: true, minlength: "10", maxlength: "500", rows: "3" });
  const form = el(
    "form",
    { class: "card warning", "aria-labelledby": "bg-title" },
    el("h3", { id: "bg-title" }, "Emergency access (break-glass)"),
    el("p", {}, "Opens a patient outside your care team. Your reason is kept and every view is reviewed."),
    field("Patient id", patient),
    field("Reason (required)", reason),
    el("button", { type: "submit", class: "danger" }, "Open record"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void withStepUp(() => api.breakGlass(patient.value.trim(), reason.value), "Emergency access").then(
      async (count) => {
        if (count !== undefined) {
          await refresh();
          announce(
            `Emergency access granted: ${count} records downloaded. Every view is flagged for review; the record leaves this device when the access ends.`,
          );
        }
      },
    );
  });
  return form;
}

function offlineBanner(session: SessionView): void {
  const last = session.last_sync_unix ? formatDate(new Date(session.last_sync_unix * 1000).toISOString()) : "never";
  const pending = session.pending_writes ? ` · ${session.pending_writes} waiting to be sent` : "";
  announce(`Last synced: ${last}${pending}`);
}

async function signOut(): Promise<void> {
  try {
    const out = await api.logout();
    await refresh();
    announce(
      out.revoked_at_server
        ? "Signed out."
        : "Signed out on this device; the server could not be reached and ends the session at its idle limit.",
    );
  } catch (e) {
    showError(e);
  }
}
