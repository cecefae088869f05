// Reading FHIR R4 JSON for display: plain functions over plain data, no DOM, unit-tested.
import type { FhirResource } from "./api";

type Json = Record<string, unknown>;

function obj(value: unknown): Json | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
}
function arr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
/** `value` if it is a string (FHIR JSON from the cache is not trusted to have the types). */
export function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** A CodeableConcept in words: its text, else the first coding's display, else its code. */
export function conceptText(value: unknown): string {
  const concept = obj(value);
  if (!concept) return "";
  const text = str(concept["text"]);
  if (text) return text;
  for (const coding of arr(concept["coding"])) {
    const c = obj(coding);
    const shown = str(c?.["display"]) ?? str(c?.["code"]);
    if (shown) return shown;
  }
  return "";
}

/** The first coding as `system|code` (the key of a lab trend). */
export function codeToken(value: unknown): string | undefined {
  const coding = obj(arr(obj(value)?.["coding"])[0]);
  const code = str(coding?.["code"]);
  if (!code) return undefined;
  const system = str(coding?.["system"]);
  return system ? `${system}|${code}` : code;
}

/** A patient's name as people write it: given names, then family name. */
export function patientName(patient: FhirResource): string {
  const names = arr(patient["name"])
    .map(obj)
    .filter((n): n is Json => n !== undefined);
  const name = names.find((n) => n["use"] === "official") ?? names[0];
  if (!name) return "Unnamed patient";
  const text = str(name["text"]);
  if (text) return text;
  const given = arr(name["given"]).map(str).filter(Boolean).join(" ");
  return [given, str(name["family"])].filter(Boolean).join(" ") || "Unnamed patient";
}

/** The medical record number (the first identifier's value). */
export function mrn(patient: FhirResource): string {
  return str(obj(arr(patient["identifier"])[0])?.["value"]) ?? "";
}

/** An Observation's value in words, with its unit (`140 mmol/L`, `120/80 mmHg`). */
export function observationValue(observation: FhirResource): string {
  const quantity = obj(observation["valueQuantity"]);
  if (quantity && typeof quantity["value"] === "number") {
    return [formatNumber(quantity["value"]), str(quantity["unit"]) ?? str(quantity["code"])].filter(Boolean).join(" ");
  }
  const components = arr(observation["component"])
    .map(obj)
    .filter((c): c is Json => c !== undefined);
  const values = components.map((c) => obj(c["valueQuantity"])).filter((q): q is Json => q !== undefined);
  if (values.length > 0 && values.every((q) => typeof q["value"] === "number")) {
    const unit = str(values[0]?.["unit"]) ?? "";
    return `${values.map((q) => formatNumber(q["value"] as number)).join("/")} ${unit}`.trim();
  }
  return str(observation["valueString"]) ?? conceptText(observation["valueCodeableConcept"]);
}

/** The date a resource is about (effective, onset, occurrence, authored, period start). */
export function resourceDate(resource: FhirResource): string {
  for (const key of [
    "effectiveDateTime",
    "issued",
    "onsetDateTime",
    "occurrenceDateTime",
    "authoredOn",
    "recordedDate",
    "sent",
    "start",
    "date",
    "performedDateTime",
    "startDate",
    "started",
    "created",
  ]) {
    const value = str(resource[key]);
    if (value) return value;
  }
  const period =
    obj(resource["period"]) ??
    obj(resource["effectivePeriod"]) ??
    obj(resource["performedPeriod"]) ??
    obj(resource["billablePeriod"]) ??
    obj(arr(resource["requestedPeriod"])[0]);
  return str(period?.["start"]) ?? "";
}

/** A FHIR date or dateTime for people: `6 Apr 1979`, `1 Mar 2024, 08:00`. */
export function formatDate(value: string): string {
  if (!value) return "";
  if (/^\d{4}$/.test(value)) return value;
  if (/^\d{4}-\d{2}$/.test(value)) {
    const [y, m] = value.split("-");
    return `${MONTHS[Number(m) - 1] ?? ""} ${y}`;
  }
  const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (day) return `${Number(day[3])} ${MONTHS[Number(day[2]) - 1] ?? ""} ${day[1]}`;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getDate()} ${MONTHS[date.getMonth()]} ${date.getFullYear()}, ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A number without float noise (`5.4`, not `5.3999999`). */
export function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}

/** An Observation's reference range as `[low, high]` (either may be missing). */
export function referenceRange(observation: FhirResource): { low?: number; high?: number; text?: string } | undefined {
  const range = obj(arr(observation["referenceRange"])[0]);
  if (!range) return undefined;
  const low = obj(range["low"])?.["value"];
  const high = obj(range["high"])?.["value"];
  const result: { low?: number; high?: number; text?: string } = {};
  if (typeof low === "number") result.low = low;
  if (typeof high === "number") result.high = high;
  const text = str(range["text"]);
  if (text) result.text = text;
  return result;
}

/** Lab tests grouped by code, newest result first within each group: one row per test. */
export interface LabTest {
  token: string;
  name: string;
  latest: FhirResource;
  count: number;
}

export function labTests(observations: FhirResource[]): LabTest[] {
  const byCode = new Map<string, LabTest>();
  for (const observation of observations) {
    const token = codeToken(observation["code"]);
    if (!token) continue;
    const seen = byCode.get(token);
    if (!seen) {
      byCode.set(token, { token, name: conceptText(observation["code"]), latest: observation, count: 1 });
      continue;
    }
    seen.count += 1;
    if (resourceDate(observation) >= resourceDate(seen.latest)) seen.latest = observation;
  }
  return [...byCode.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** The tag the server puts on what a patient (or proxy) wrote, and on nothing else. */
const PATIENT_AUTHORED = { system: "urn:carekeep:provenance", code: "patient-authored" };

/** Who recorded a resource, when it was not the care team: a patient's home reading or
 * message reads as theirs, never as a result or the clinic's word. */
export function recordedBy(resource: FhirResource): string | undefined {
  const tags = arr(obj(resource["meta"])?.["tag"]).map(obj);
  const patient = tags.some(
    (t) => str(t?.["system"]) === PATIENT_AUTHORED.system && str(t?.["code"]) === PATIENT_AUTHORED.code,
  );
  return patient ? "Recorded by the patient" : undefined;
}

/** The one-line summary of any resource for a list, with who recorded it if that was the patient. */
export function summary(resource: FhirResource): { title: string; detail: string; date: string; source?: string } {
  const line = describe(resource);
  const source = recordedBy(resource);
  return source ? { ...line, source } : line;
}

function describe(resource: FhirResource): { title: string; detail: string; date: string } {
  const date = formatDate(resourceDate(resource));
  switch (resource.resourceType) {
    case "Observation":
      return { title: conceptText(resource["code"]), detail: observationValue(resource), date };
    case "MedicationRequest":
    case "MedicationStatement": {
      const dose = [...arr(resource["dosageInstruction"]), ...arr(resource["dosage"])]
        .map((d) => str(obj(d)?.["text"]) ?? "")
        .filter(Boolean)
        .join("; ");
      return {
        title: medicationName(resource),
        detail: [dose, str(resource["status"])].filter(Boolean).join(" · "),
        date,
      };
    }
    case "MedicationAdministration":
      return {
        title: medicationName(resource),
        detail: ["given", str(resource["status"])].filter(Boolean).join(" · "),
        date,
      };
    case "AllergyIntolerance": {
      const reactions = arr(resource["reaction"]).map(obj);
      const manifestations = reactions.flatMap((r) => arr(r?.["manifestation"]).map(conceptText)).filter(Boolean);
      const severity = reactions.map((r) => str(r?.["severity"])).find(Boolean);
      const criticality = str(resource["criticality"]);
      const detail = [
        manifestations.join(", "),
        severity ? `${severity} reaction` : undefined,
        criticality ? `${criticality} criticality` : undefined,
      ];
      return { title: conceptText(resource["code"]) || "Allergy", detail: detail.filter(Boolean).join(" · "), date };
    }
    case "Condition":
      return {
        title: conceptText(resource["code"]) || "Condition",
        detail: conceptText(resource["clinicalStatus"]),
        date,
      };
    case "Immunization": {
      const lot = str(resource["lotNumber"]);
      return {
        title: conceptText(resource["vaccineCode"]) || "Immunization",
        detail: [str(resource["status"]), lot ? `lot ${lot}` : undefined].filter(Boolean).join(" · "),
        date,
      };
    }
    case "Procedure":
      return { title: conceptText(resource["code"]) || "Procedure", detail: str(resource["status"]) ?? "", date };
    case "CarePlan":
      return {
        title: conceptText(arr(resource["category"])[0]) || "Care plan",
        detail: [str(resource["status"]), str(resource["intent"])].filter(Boolean).join(" · "),
        date,
      };
    case "Goal":
      return {
        title: conceptText(resource["description"]) || "Goal",
        detail: str(resource["lifecycleStatus"]) ?? "",
        date,
      };
    case "Coverage":
      return { title: conceptText(resource["type"]) || "Insurance", detail: str(resource["status"]) ?? "", date };
    case "ExplanationOfBenefit":
    case "Claim": {
      const billed = money(obj(obj(arr(resource["total"])[0])?.["amount"]) ?? obj(resource["total"]));
      const paid = money(obj(obj(resource["payment"])?.["amount"]));
      const detail = [
        billed ? `billed ${billed}` : undefined,
        paid ? `paid ${paid}` : undefined,
        str(resource["outcome"]) ?? str(resource["status"]),
      ];
      return {
        title: `Claim: ${conceptText(resource["type"]) || "care"}`,
        detail: detail.filter(Boolean).join(" · "),
        date,
      };
    }
    case "Device":
      return { title: conceptText(resource["type"]) || "Device", detail: str(resource["status"]) ?? "", date };
    case "ImagingStudy":
      return {
        title: conceptText(arr(resource["procedureCode"])[0]) || "Imaging study",
        detail: str(resource["status"]) ?? "",
        date,
      };
    case "Appointment":
      return { title: str(resource["description"]) ?? "Appointment", detail: str(resource["status"]) ?? "", date };
    case "Communication":
      return {
        title: str(obj(arr(resource["payload"])[0])?.["contentString"]) ?? "Message",
        detail: str(resource["status"]) ?? "",
        date,
      };
    case "Encounter":
      return {
        title: conceptText(arr(resource["type"])[0]) || conceptText(resource["class"]) || "Visit",
        detail: str(resource["status"]) ?? "",
        date,
      };
    case "DiagnosticReport":
      return {
        title: conceptText(resource["code"]) || "Report",
        detail: str(resource["conclusion"]) ?? str(resource["status"]) ?? "",
        date,
      };
    default:
      return { title: resource.resourceType, detail: str(resource["status"]) ?? "", date };
  }
}

/** What a medication order, statement or administration names: its coded medication, or the display of the one it refers to. */
function medicationName(resource: FhirResource): string {
  return (
    conceptText(resource["medicationCodeableConcept"]) ||
    str(obj(resource["medicationReference"])?.["display"]) ||
    "Medication"
  );
}

/** An amount of money as people write it (`125.00 USD`), or undefined. */
function money(amount: Record<string, unknown> | undefined): string | undefined {
  const value = amount?.["value"];
  if (typeof value !== "number") return undefined;
  return `${value.toFixed(2)} ${str(amount?.["currency"]) ?? ""}`.trim();
}

/** Whether `resource` happened at visit `encounterId` (its `encounter`, or `context` for an administration). */
export function atVisit(resource: FhirResource, encounterId: string): boolean {
  const reference = str(obj(resource["encounter"])?.["reference"]) ?? str(obj(resource["context"])?.["reference"]);
  return reference === `Encounter/${encounterId}`;
}

/** A duration in whole minutes, in words (`1 minute`, `15 minutes`). */
export function minutes(seconds: number): string {
  const n = Math.max(1, Math.round(seconds / 60));
  return `${n} minute${n === 1 ? "" : "s"}`;
}
