import { describe, expect, it } from "vitest";
import { paddedDomain, ticks, trendChart } from "./chart";

const points = [
  { effective: "2024-01-01T08:00:00Z", value: 6.4, unit: "%" },
  { effective: "2024-04-01T08:00:00Z", value: 5.9, unit: "%" },
  { effective: "2024-07-01T08:00:00Z", value: 5.5, unit: "%" },
];

describe("trend charts", () => {
  it("draws a line, a reference band and one focusable point per value", () => {
    const figure = trendChart("HbA1c", points, { low: 4, high: 5.6 });
    expect(figure.querySelector("path.line")?.getAttribute("d")?.split("L")).toHaveLength(3);
    expect(figure.querySelector("rect.band")).not.toBeNull();
    const dots = figure.querySelectorAll("circle.point");
    expect(dots).toHaveLength(3);
    expect(dots[0]?.getAttribute("tabindex")).toBe("0");
    // Values above the range are marked, in words too.
    expect(figure.querySelectorAll("circle.outside")).toHaveLength(2);
    expect(dots[0]?.getAttribute("aria-label")).toContain("outside the reference range");
    // Screen readers get a summary and the values as a list.
    expect(figure.querySelector("svg")?.getAttribute("aria-label")).toContain("3 values");
    expect(figure.querySelectorAll("ol li")).toHaveLength(3);
  });

  it("tapping a point shows its value", () => {
    const figure = trendChart("HbA1c", points);
    figure.querySelector("circle.point")?.dispatchEvent(new Event("click"));
    const readout = figure.querySelector(".readout")?.textContent ?? "";
    expect(readout).toContain("6.4 % on 1 Jan 2024");
  });

  it("says so when there is nothing to draw, and never draws a flat axis", () => {
    expect(trendChart("HbA1c", []).textContent).toContain("No values");
    const [low, high] = paddedDomain([5, 5]);
    expect(high).toBeGreaterThan(low);
    expect(ticks([0, 10])).toEqual([0, 2, 4, 6, 8, 10]);
  });
});
