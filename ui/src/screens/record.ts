// One patient's record: a tab per part (summary, labs with trend charts, vitals, visits with
// what happened at each, reports with their results, medications, allergies, conditions,
// procedures, immunizations, care plans and goals, documents, insurance and claims for the
// patient, appointments, messages), all read from the encrypted cache through the core, all
// rendered as text.
import { api, type FhirResource, type PendingView } from "../api";
import { announce, showError, views } from "../app";
import { trendChart } from "../chart";
import { clear, el, field } from "../dom";
import {
  atVisit,
  conceptText,
  formatDate,
  labTests,
  observationValue,
  patientName,
  recordedBy,
  referenceRange,
  resourceDate,
  summary,
} from "../fhir";
import { documentsTab } from "./documents";
import { pendingItem } from "./settings";

export interface Tab {
  id: string;
  label: string;
  render: (patient: FhirResource, into: HTMLElement) => Promise<void>;
}

/** What every record shows; `writes` adds what a patient can send. */
export function recordTabs(writes: boolean): Tab[] {
  const tabs: Tab[] = [
    { id: "summary", label: "Summary", render: summaryTab },
    { id: "labs", label: "Lab results", render: (p, into) => observationsTab(p, into, "laboratory", "lab results") },
    { id: "vitals", label: "Vitals", render: (p, into) => observationsTab(p, into, "vital-signs", "vital signs") },
    { id: "visits", label: "Visits", render: visitsTab },
    { id: "reports", label: "Reports", render: reportsTab },
    {
      id: "medications",
      label: "Medications",
      render: listTab(["MedicationRequest", "MedicationStatement", "MedicationAdministration"], "medications"),
    },
    { id: "allergies", label: "Allergies", render: listTab(["AllergyIntolerance"], "allergies") },
    { id: "conditions", label: "Conditions", render: listTab(["Condition"], "conditions") },
    { id: "procedures", label: "Procedures", render: listTab(["Procedure"], "procedures") },
    { id: "immunizations", label: "Immunizations", render: listTab(["Immunization"], "immunizations") },
    { id: "plans", label: "Care plans", render: listTab(["CarePlan", "Goal"], "care plans or goals") },
    { id: "documents", label: "Documents", render: documentsTab },
    {
      id: "appointments",
      label: "Appointments",
      render: writes ? appointmentsTab : listTab(["Appointment"], "appointments"),
    },
    { id: "messages", label: "Messages", render: writes ? messagesTab : listTab(["Communication"], "messages") },
  ];
  // Insurance and claims are the patient's and billing's, not the care team's (the server
  // sends them to neither clinicians nor nurses).
  if (writes)
    tabs.splice(tabs.length - 2, 0, {
      id: "insurance",
      label: "Insurance",
      render: listTab(["Coverage", "ExplanationOfBenefit"], "insurance or claims"),
    });
  return tabs;
}

/** The tab bar and panel; the first tab opens. */
export function tabbedRecord(patient: FhirResource, tabs: Tab[], extra: HTMLElement[] = []): HTMLElement {
  const panel = el("section", { class: "panel", role: "tabpanel", tabindex: "-1" });
  const list = el("div", { class: "tabs", role: "tablist", "aria-label": "Parts of the record" });
  const buttons = tabs.map((tab) =>
    el(
      "button",
      {
        type: "button",
        role: "tab",
        id: `tab-${tab.id}`,
        "data-tab": tab.id,
        "aria-selected": "false",
        tabindex: "-1",
      },
      tab.label,
    ),
  );
  const open = async (index: number, focus: boolean) => {
    const tab = tabs[index];
    if (!tab) return;
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", `tab-${tab.id}`);
    clear(panel);
    panel.append(el("p", { class: "muted" }, "Loading…"));
    if (focus) buttons[index]?.focus();
    try {
      const content = el("div");
      await tab.render(patient, content);
      clear(panel);
      panel.append(content);
    } catch (e) {
      clear(panel);
      showError(e);
    }
  };
  buttons.forEach((button, index) => {
    button.addEventListener("click", () => void open(index, false));
    button.addEventListener("keydown", (event) => {
      const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
      if (step !== 0) void open((index + step + tabs.length) % tabs.length, true);
    });
    list.append(button);
  });
  void open(0, false);
  return el(
    "div",
    { class: "record" },
    el("h2", {}, patientName(patient)),
    patientLine(patient),
    ...extra,
    list,
    panel,
  );
}

function patientLine(patient: FhirResource): HTMLElement {
  const born = typeof patient["birthDate"] === "string" ? `Born ${formatDate(patient["birthDate"])}` : "";
  const gender = typeof patient["gender"] === "string" ? patient["gender"] : "";
  return el("p", { class: "muted" }, [born, gender].filter(Boolean).join(" · "));
}

async function load(type: string, patient: FhirResource, category?: string): Promise<FhirResource[]> {
  const found = await api.records(type, patient.id, category);
  views.records.set(`${type}/${category ?? ""}`, found);
  return found;
}

async function summaryTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const [labs, conditions, allergies, medications] = await Promise.all([
    load("Observation", patient, "laboratory"),
    load("Condition", patient),
    load("AllergyIntolerance", patient),
    load("MedicationRequest", patient),
  ]);
  // The newest result of each test, newest tests first.
  const latest = labTests(labs)
    .map((t) => t.latest)
    .sort((a, b) => resourceDate(b).localeCompare(resourceDate(a)))
    .slice(0, 6);
  into.append(
    el(
      "div",
      { class: "tiles" },
      tile(
        "Recent lab results",
        latest.map((o) => `${conceptText(o["code"])}: ${observationValue(o)}`),
        "No lab results yet.",
      ),
      tile(
        "Conditions",
        conditions.map((c) => summary(c).title),
        "No conditions recorded.",
      ),
      tile(
        "Allergies",
        allergies.map((a) => summary(a).title),
        "No known allergies recorded.",
      ),
      tile(
        "Medications",
        medications.map((m) => summary(m).title),
        "No medications recorded.",
      ),
    ),
  );
}

function tile(title: string, lines: string[], empty: string): HTMLElement {
  return el(
    "section",
    { class: "tile" },
    el("h3", {}, title),
    lines.length ? el("ul", {}, ...lines.map((l) => el("li", {}, l))) : el("p", { class: "muted" }, empty),
  );
}

/** Lab results or vitals: one row per test with its latest value; open a row for its chart. */
async function observationsTab(
  patient: FhirResource,
  into: HTMLElement,
  category: string,
  what: string,
): Promise<void> {
  const observations = await load("Observation", patient, category);
  const tests = labTests(observations);
  into.append(pendingList(writesFor(await api.pending(), "Observation", patient.id ?? "", category)));
  const [head] = tests;
  if (head === undefined) {
    into.append(el("p", {}, `No ${what} on this device yet. Sync to fetch new ones.`));
    return;
  }
  const chartArea = el("div", { class: "chart-area", "aria-live": "polite" });
  const table = el(
    "table",
    { class: "results" },
    el("caption", {}, `${tests.length} tests — choose one for its trend`),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Test"),
        el("th", { scope: "col" }, "Latest"),
        el("th", { scope: "col" }, "Date"),
        el("th", { scope: "col" }, "Results"),
      ),
    ),
  );
  const body = el("tbody");
  const openChart = async (token: string, name: string, latest: FhirResource) => {
    const points = await api.labTrend(patient.id ?? "", token);
    clear(chartArea);
    chartArea.append(trendChart(name, points, referenceRange(latest)));
  };
  for (const test of tests) {
    const open = el("button", { type: "button", class: "link", "data-code": test.token }, test.name);
    open.addEventListener("click", () => void openChart(test.token, test.name, test.latest).catch(showError));
    body.append(
      el(
        "tr",
        {},
        el("th", { scope: "row" }, open),
        el("td", {}, latestValue(test.latest)),
        el("td", {}, formatDate(resourceDate(test.latest))),
        el("td", {}, String(test.count)),
      ),
    );
  }
  table.append(body);
  into.append(chartArea, table);
  const first = tests.reduce((best, t) => (t.count > best.count ? t : best), head);
  await openChart(first.token, first.name, first.latest);
}

/** A test's latest value, marked when the patient recorded it (a home reading beside the clinic's). */
function latestValue(observation: FhirResource): HTMLElement {
  const source = recordedBy(observation);
  return el("span", {}, observationValue(observation), source ? el("span", { class: "source" }, ` · ${source}`) : "");
}

function listTab(types: string[], what: string) {
  return async (patient: FhirResource, into: HTMLElement) => {
    const found = (await Promise.all(types.map((t) => load(t, patient)))).flat();
    found.sort((a, b) => resourceDate(a).localeCompare(resourceDate(b)));
    const pending = await api.pending();
    into.append(
      pendingList(types.flatMap((t) => writesFor(pending, t, patient.id ?? "", undefined))),
      resourceList(found, `No ${what} on this device yet.`),
    );
  };
}

/** What can happen at a visit, besides the visit itself. */
const AT_VISITS = [
  "Condition",
  "Procedure",
  "Observation",
  "DiagnosticReport",
  "Immunization",
  "MedicationRequest",
  "MedicationAdministration",
  "CarePlan",
];

/** Visits, newest first, each with what happened at it. */
async function visitsTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const [visits, ...happened] = await Promise.all([
    load("Encounter", patient),
    ...AT_VISITS.map((t) => load(t, patient)),
  ]);
  const all = happened.flat();
  if (visits.length === 0) {
    into.append(el("p", {}, "No visits on this device yet."));
    return;
  }
  const list = el("ol", { class: "visits" });
  for (const visit of [...visits].sort((a, b) => resourceDate(b).localeCompare(resourceDate(a)))) {
    const { title, date } = summary(visit);
    const there = all.filter((r) => atVisit(r, visit.id ?? ""));
    list.append(
      el(
        "li",
        { class: "visit" },
        el("h3", {}, `${title} — ${date}`),
        there.length ? resourceList(there, "") : el("p", { class: "muted" }, "Nothing else recorded at this visit."),
      ),
    );
  }
  into.append(list);
}

/** Diagnostic reports, newest first, each with its results grouped under it. */
async function reportsTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const [reports, observations] = await Promise.all([load("DiagnosticReport", patient), load("Observation", patient)]);
  if (reports.length === 0) {
    into.append(el("p", {}, "No reports on this device yet."));
    return;
  }
  const byReference = new Map(observations.map((o) => [`Observation/${o.id ?? ""}`, o]));
  for (const report of [...reports].sort((a, b) => resourceDate(b).localeCompare(resourceDate(a)))) {
    const { title, detail, date } = summary(report);
    const results = (Array.isArray(report["result"]) ? report["result"] : [])
      .map((r) =>
        byReference.get(typeof r === "object" && r !== null ? String((r as Record<string, unknown>)["reference"]) : ""),
      )
      .filter((o): o is FhirResource => o !== undefined);
    const table = el(
      "table",
      { class: "results" },
      el("caption", {}, `${title} — ${date}${detail ? ` (${detail})` : ""}`),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Test"), el("th", { scope: "col" }, "Result"))),
      el(
        "tbody",
        {},
        ...results.map((o) =>
          el("tr", {}, el("th", { scope: "row" }, conceptText(o["code"])), el("td", {}, observationValue(o))),
        ),
      ),
    );
    into.append(
      el(
        "section",
        { class: "report" },
        results.length ? table : el("p", {}, `${title} — ${date}: no results on this device.`),
      ),
    );
  }
}

/** Resources as a list, newest last-written first, each saying who recorded it when that was the patient. */
export function resourceList(resources: FhirResource[], empty: string): HTMLElement {
  if (resources.length === 0) return el("p", {}, empty);
  const list = el("ul", { class: "items" });
  for (const resource of [...resources].reverse()) {
    const { title, detail, date, source } = summary(resource);
    const by = source ? el("span", { class: "source" }, source) : "";
    list.append(
      el(
        "li",
        {},
        el("span", { class: "title" }, title),
        el("span", { class: "detail" }, detail),
        by,
        el("span", { class: "date" }, date),
      ),
    );
  }
  return list;
}

async function appointmentsTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const pending = writesFor(await api.pending(), "Appointment", patient.id ?? "", undefined);
  into.append(
    pendingList(pending),
    resourceList(await load("Appointment", patient), "No appointments on this device yet."),
  );
  const reason = el("input", { type: "text", name: "reason", required: true, maxlength: "200" });
  const when = el("input", { type: "datetime-local", name: "when", required: true });
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "appt-title" },
    el("h3", { id: "appt-title" }, "Request an appointment"),
    field("Reason", reason),
    field("Preferred time", when),
    el("button", { type: "submit", class: "primary" }, "Request"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const start = Math.floor(new Date(when.value).getTime() / 1000);
    api.requestAppointment(patient.id ?? "", reason.value, start).then(async () => {
      await rerender(appointmentsTab, patient, into);
      announce("Request saved on this device; it is sent at the next sync (see Pending).");
    }, showError);
  });
  into.append(form);
  into.append(readingForm(patient, () => rerender(appointmentsTab, patient, into)));
}

/** Draws a tab again (after a write, so it shows inline as pending). */
async function rerender(
  tab: (patient: FhirResource, into: HTMLElement) => Promise<void>,
  patient: FhirResource,
  into: HTMLElement,
): Promise<void> {
  const fresh = el("div");
  await tab(patient, fresh);
  into.replaceChildren(...Array.from(fresh.childNodes));
}

/** The writes of `type` about `patient` (and in `category`, for observations) not yet settled. */
export function writesFor(
  writes: PendingView[],
  type: string,
  patient: string,
  category: string | undefined,
): PendingView[] {
  const reference = JSON.stringify(`Patient/${patient}`);
  return writes.filter(
    (w) =>
      w.resource.resourceType === type &&
      JSON.stringify(w.resource).includes(reference) &&
      (category === undefined || JSON.stringify(w.resource["category"] ?? []).includes(JSON.stringify(category))),
  );
}

/** Writes made here and not yet on the server, marked as such, newest first ("" if none). */
export function pendingList(writes: PendingView[]): HTMLElement | string {
  if (writes.length === 0) return "";
  return el(
    "ul",
    { class: "items", "aria-label": "Not yet on the server" },
    ...[...writes].reverse().map((write) => pendingItem(write, true)),
  );
}

async function messagesTab(patient: FhirResource, into: HTMLElement): Promise<void> {
  const pending = writesFor(await api.pending(), "Communication", patient.id ?? "", undefined);
  into.append(
    pendingList(pending),
    resourceList(await load("Communication", patient), "No messages on this device yet."),
  );
  const text = el("textarea", { name: "message", required: true, rows: "4", maxlength: "2000" });
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "msg-title" },
    el("h3", { id: "msg-title" }, "Message your care team"),
    field("Message", text),
    el("button", { type: "submit", class: "primary" }, "Send"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.messageCareTeam(patient.id ?? "", text.value).then(async () => {
      await rerender(messagesTab, patient, into);
      announce("Message saved on this device; it is sent at the next sync (see Pending).");
    }, showError);
  });
  into.append(form);
}

/** A home blood-pressure or glucose reading; `saved` once it is queued. */
function readingForm(patient: FhirResource, saved: () => Promise<void>): HTMLElement {
  const systolic = el("input", { type: "number", name: "systolic", min: "50", max: "300", inputmode: "numeric" });
  const diastolic = el("input", { type: "number", name: "diastolic", min: "30", max: "200", inputmode: "numeric" });
  const glucose = el("input", {
    type: "number",
    name: "glucose",
    min: "0.5",
    max: "50",
    step: "0.1",
    inputmode: "decimal",
  });
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "reading-title" },
    el("h3", { id: "reading-title" }, "Add a home reading"),
    el("div", { class: "row" }, field("Systolic (mmHg)", systolic), field("Diastolic (mmHg)", diastolic)),
    field("or glucose (mmol/L)", glucose),
    el("button", { type: "submit", class: "primary" }, "Save reading"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const reading = glucose.value
      ? { kind: "glucose" as const, mmol_per_l: Number(glucose.value) }
      : { kind: "blood-pressure" as const, systolic: Number(systolic.value), diastolic: Number(diastolic.value) };
    api.recordReading(patient.id ?? "", reading).then(async () => {
      await saved();
      announce("Reading saved on this device; it is sent at the next sync (see Pending).");
    }, showError);
  });
  return form;
}
