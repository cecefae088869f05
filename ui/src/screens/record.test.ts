import { describe, expect, it } from "vitest";
import type { PendingView } from "../api";
import { pendingList, resourceList, writesFor } from "./record";

const write = (seq: number, status: PendingView["status"], resource: PendingView["resource"]): PendingView => ({
  seq,
  status,
  resource,
  server_version: null,
  reason: null,
});

const writes = [
  write(1, "pending", {
    resourceType: "Communication",
    subject: { reference: "Patient/p1" },
    payload: [{ contentString: "Refill please" }],
  }),
  write(2, "conflict", {
    resourceType: "Appointment",
    participant: [{ actor: { reference: "Patient/p1" } }],
    description: "Knee check",
  }),
  write(3, "pending", {
    resourceType: "Observation",
    subject: { reference: "Patient/p1" },
    category: [{ coding: [{ code: "vital-signs" }] }],
    code: { text: "Blood pressure" },
  }),
  write(4, "pending", {
    resourceType: "Communication",
    subject: { reference: "Patient/p10" },
    payload: [{ contentString: "Other patient" }],
  }),
];

describe("pending writes inline", () => {
  it("picks the writes of one type about one patient, by category for observations", () => {
    expect(writesFor(writes, "Communication", "p1", undefined).map((w) => w.seq)).toEqual([1]);
    expect(writesFor(writes, "Appointment", "p1", undefined).map((w) => w.seq)).toEqual([2]);
    expect(writesFor(writes, "Observation", "p1", "vital-signs").map((w) => w.seq)).toEqual([3]);
    expect(writesFor(writes, "Observation", "p1", "laboratory")).toEqual([]);
    expect(writesFor(writes, "Communication", "p", undefined)).toEqual([]);
  });

  it("marks each as not yet on the server, and says where conflicts are settled", () => {
    const list = pendingList(writes.slice(0, 2));
    expect(list).toBeInstanceOf(HTMLElement);
    const items = Array.from((list as HTMLElement).querySelectorAll("li"));
    expect(items.map((li) => li.querySelector(".badge")?.textContent)).toEqual([
      "Changed elsewhere — see Pending",
      "Waiting to send",
    ]);
    expect((list as HTMLElement).getAttribute("aria-label")).toBe("Not yet on the server");
    expect(pendingList([])).toBe("");
  });
});

describe("who recorded it", () => {
  const tag = { system: "urn:carekeep:provenance", code: "patient-authored", display: "Recorded by the patient" };
  const reading = {
    resourceType: "Observation",
    meta: { tag: [tag] },
    code: { text: "Body weight" },
    valueQuantity: { value: 70.5, unit: "kg" },
  };
  const message = {
    resourceType: "Communication",
    meta: { tag: [{ code: "kept" }] },
    payload: [{ contentString: "Your results are in" }],
  };

  it("marks what the patient wrote, and only that", () => {
    const list = resourceList([reading, message], "none");
    const items = Array.from(list.querySelectorAll("li"));
    expect(items.map((li) => li.querySelector(".source")?.textContent ?? null)).toEqual([
      null,
      "Recorded by the patient",
    ]);
  });

  it("does not take a look-alike tag for the server's", () => {
    const lookalike = { ...reading, meta: { tag: [{ system: "urn:other", code: "patient-authored" }] } };
    expect(resourceList([lookalike], "none").querySelector(".source")).toBeNull();
  });
});
