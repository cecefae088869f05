import { describe, expect, it } from "vitest";
import { serverTrail } from "./settings";

describe("who viewed my record", () => {
  it("lists the clinic's accesses in words, flagging emergency access", () => {
    const section = serverTrail([
      {
        at: "2026-11-20T10:00:00Z",
        who: "dr.lee",
        role: "clinician",
        action: "GET /fhir/{type}",
        patient: "p1",
        break_glass: true,
        denied: false,
      },
      {
        at: "2026-11-19T09:00:00Z",
        who: null,
        role: "nurse",
        action: "PUT /fhir/{type}/{id}",
        patient: "p1",
        break_glass: false,
        denied: true,
      },
    ]);
    const rows = Array.from(section.querySelectorAll("tbody tr")).map((tr) =>
      Array.from(tr.querySelectorAll("td")).map((td) => td.textContent),
    );
    expect(rows[0]?.slice(1)).toEqual(["dr.lee (clinician)", "viewed records · EMERGENCY ACCESS"]);
    expect(rows[1]?.slice(1)).toEqual(["Someone (nurse)", "changed the record · refused"]);
  });

  it("says when the trail needs the server, and when it is empty", () => {
    expect(serverTrail(null).textContent).toContain("needs a connection");
    expect(serverTrail([]).textContent).toContain("No one has opened");
  });
});
