import { describe, expect, it } from "vitest";
import type { FhirResource } from "./api";
import {
  atVisit,
  codeToken,
  formatDate,
  labTests,
  minutes,
  observationValue,
  patientName,
  recordedBy,
  referenceRange,
  summary,
} from "./fhir";
import { present } from "./testing";

const obs = (code: string, value: number, date: string): FhirResource => ({
  resourceType: "Observation",
  code: { coding: [{ system: "http://loinc.org", code, display: `Test ${code}` }] },
  effectiveDateTime: date,
  valueQuantity: { value, unit: "mmol/L" },
});

describe("reading FHIR for people", () => {
  it("names a patient by the official name, given names first", () => {
    const patient = {
      resourceType: "Patient",
      name: [
        { use: "nickname", given: ["Em"] },
        { use: "official", family: "Dummett", given: ["Emet", "J"] },
      ],
    };
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
    const tests = labTests([
      obs("2345-7", 5.1, "2024-01-01"),
      obs("2345-7", 6.2, "2025-01-01"),
      obs("4548-4", 5.7, "2024-06-01"),
    ]);
    expect(tests.map((t) => [t.token, t.count])).toEqual([
      ["http://loinc.org|2345-7", 2],
      ["http://loinc.org|4548-4", 1],
    ]);
    expect(observationValue(present(tests[0], "a lab test").latest)).toBe("6.2 mmol/L");
    expect(codeToken({ coding: [{ code: "x" }] })).toBe("x");
  });

  it("reads reference ranges with either bound missing", () => {
    expect(referenceRange({ resourceType: "Observation", referenceRange: [{ high: { value: 100 } }] })).toEqual({
      high: 100,
    });
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

  it("says what the types of a whole record hold", () => {
    const order = {
      resourceType: "MedicationRequest",
      status: "active",
      medicationReference: { reference: "Medication/m", display: "Metformin 500 mg" },
      dosageInstruction: [{ text: "1 tablet daily" }],
      encounter: { reference: "Encounter/e1" },
    };
    expect(summary(order)).toMatchObject({ title: "Metformin 500 mg", detail: "1 tablet daily · active" });
    expect(atVisit(order, "e1")).toBe(true);
    expect(atVisit({ resourceType: "MedicationAdministration", context: { reference: "Encounter/e1" } }, "e1")).toBe(
      true,
    );
    expect(atVisit(order, "e2")).toBe(false);
    expect(
      summary({
        resourceType: "Immunization",
        vaccineCode: { text: "Influenza" },
        status: "completed",
        lotNumber: "SYN-42",
        occurrenceDateTime: "2026-01-01",
      }),
    ).toEqual({ title: "Influenza", detail: "completed · lot SYN-42", date: "1 Jan 2026" });
    const eob = {
      resourceType: "ExplanationOfBenefit",
      type: { text: "Professional" },
      outcome: "complete",
      total: [{ amount: { value: 125, currency: "USD" } }],
      payment: { amount: { value: 100, currency: "USD" } },
      billablePeriod: { start: "2026-01-01" },
    };
    expect(summary(eob)).toEqual({
      title: "Claim: Professional",
      detail: "billed 125.00 USD · paid 100.00 USD · complete",
      date: "1 Jan 2026",
    });
    expect(
      summary({
        resourceType: "Goal",
        description: { text: "HbA1c below 7" },
        lifecycleStatus: "active",
        startDate: "2026-01-01",
      }).title,
    ).toBe("HbA1c below 7");
    expect(
      summary({
        resourceType: "CarePlan",
        category: [{ text: "Diabetes self management plan" }],
        status: "active",
        intent: "order",
      }).detail,
    ).toBe("active · order");
  });

  it("summarises any resource as text", () => {
    const allergy = {
      resourceType: "AllergyIntolerance",
      code: { text: "Peanut" },
      criticality: "high",
      reaction: [{ manifestation: [{ text: "Hives" }] }],
    };
    expect(summary(allergy)).toEqual({ title: "Peanut", detail: "Hives · high criticality", date: "" });
    const severe = { ...allergy, reaction: [{ manifestation: [{ text: "Wheal" }], severity: "severe" }] };
    expect(summary(severe).detail).toBe("Wheal · severe reaction · high criticality");
    expect(summary({ resourceType: "Binary" }).title).toBe("Binary");
    const own = {
      resourceType: "Appointment",
      description: "Knee check",
      meta: { tag: [{ system: "urn:carekeep:provenance", code: "patient-authored" }] },
    };
    expect(summary(own).source).toBe("Recorded by the patient");
    expect(recordedBy({ resourceType: "Appointment", meta: { tag: [] } })).toBeUndefined();
  });
});
