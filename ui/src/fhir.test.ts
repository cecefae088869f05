import { describe, expect, it } from "vitest";
import type { FhirResource } from "./api";
import { codeToken, formatDate, labTests, minutes, observationValue, patientName, recordedBy, referenceRange, summary } from "./fhir";

const obs = (code: string, value: number, date: string): FhirResource => ({
  resourceType: "Observation",
  code: { coding: [{ system: "http://loinc.org", code, display: `Test ${code}` }] },
  effectiveDateTime: date,
  valueQuantity: { value, unit: "mmol/L" },
});

describe("reading FHIR for people", () => {
  it("names a patient by the official name, given names first", () => {
    const patient = { resourceType: "Patient", name: [{ use: "nickname", given: ["Em"] }, { use: "official", family: "Dummett", given: ["Emet", "J"] }] };
    expect(patientName(patient)).toBe("Emet J Dummett");
    expect(patientName({ resourceType: "Patient" })).toBe("Unnamed patient");
  });

  it("shows values with units, panels as systolic/diastolic, without float noise", () => {
    expect(observationValue(obs("1", 5.3999999999, "2024-01-01"))).toBe("5.4 mmol/L");
    const bp: FhirResource = {
      resourceType: "Observation",
      component: [{ valueQuantity: { value: 120, unit: "mmHg" } }, { valueQuantity: { value: 80, unit: "mmHg" } }],
    };
    expect(observationValue(bp)).toBe("120/80 mmHg");
  });

  it("groups lab results by code, keeping the newest and counting them", () => {
    const tests = labTests([obs("2345-7", 5.1, "2024-01-01"), obs("2345-7", 6.2, "2025-01-01"), obs("4548-4", 5.7, "2024-06-01")]);
    expect(tests.map((t) => [t.token, t.count])).toEqual([["http://loinc.org|2345-7", 2], ["http://loinc.org|4548-4", 1]]);
    expect(observationValue(tests[0]!.latest)).toBe("6.2 mmol/L");
    expect(codeToken({ coding: [{ code: "x" }] })).toBe("x");
  });

  it("reads reference ranges with either bound missing", () => {
    expect(referenceRange({ resourceType: "Observation", referenceRange: [{ high: { value: 100 } }] })).toEqual({ high: 100 });
    expect(referenceRange({ resourceType: "Observation" })).toBeUndefined();
  });

  it("formats FHIR dates of every precision", () => {
    expect(formatDate("1979-04-06")).toBe("6 Apr 1979");
    expect(formatDate("1979-04")).toBe("Apr 1979");
    expect(formatDate("1979")).toBe("1979");
    expect(formatDate("")).toBe("");
    expect(minutes(60)).toBe("1 minute");
    expect(minutes(900)).toBe("15 minutes");
  });

  it("summarises any resource as text", () => {
    const allergy = { resourceType: "AllergyIntolerance", code: { text: "Peanut" }, criticality: "high", reaction: [{ manifestation: [{ text: "Hives" }] }] };
    expect(summary(allergy)).toEqual({ title: "Peanut", detail: "high · Hives", date: "" });
    expect(summary({ resourceType: "Binary" }).title).toBe("Binary");
    const own = { resourceType: "Appointment", description: "Knee check", meta: { tag: [{ system: "urn:carekeep:provenance", code: "patient-authored" }] } };
    expect(summary(own).source).toBe("Recorded by the patient");
    expect(recordedBy({ resourceType: "Appointment", meta: { tag: [] } })).toBeUndefined();
  });
});
