// A trend chart for one lab test or vital sign: an SVG line over time, the reference range
// as a shaded band, the unit on the axis, and every point focusable with its value (tap or
// Tab to it). Screen readers get a summary and the values as a list beside the chart.
import type { TrendPoint } from "./api";
import { el, svg } from "./dom";
import { formatDate, formatNumber } from "./fhir";

export interface Range {
  low?: number;
  high?: number;
}

const WIDTH = 640;
const HEIGHT = 260;
const PAD = { top: 16, right: 20, bottom: 36, left: 56 };

/** The chart and its accessible list of values. */
export function trendChart(title: string, points: TrendPoint[], range?: Range): HTMLElement {
  const unit = points.find((p) => p.unit)?.unit ?? "";
  const figure = el("figure", { class: "chart" });
  const first = points[0];
  const latest = points[points.length - 1];
  if (first === undefined || latest === undefined) {
    figure.append(el("p", {}, `No values of ${title} yet.`));
    return figure;
  }
  const time = (p: TrendPoint) => Date.parse(p.effective);
  const times = points.map(time);
  const values = points.map((p) => p.value);
  const domain = paddedDomain([
    ...values,
    ...(range?.low !== undefined ? [range.low] : []),
    ...(range?.high !== undefined ? [range.high] : []),
  ]);
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const x = (t: number) => PAD.left + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) => PAD.top + (1 - (v - domain[0]) / (domain[1] - domain[0])) * (HEIGHT - PAD.top - PAD.bottom);

  const label =
    `${title}: ${points.length} value${points.length === 1 ? "" : "s"} from ${formatDate(first.effective)} to ${formatDate(latest.effective)}; latest ${formatNumber(latest.value)} ${unit}`.trim();
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "trend" });
  chart.append(svg("title", {}, label));

  if (range && (range.low !== undefined || range.high !== undefined)) {
    const top = y(range.high ?? domain[1]);
    const bottom = y(range.low ?? domain[0]);
    chart.append(
      svg("rect", {
        class: "band",
        x: PAD.left,
        y: top,
        width: WIDTH - PAD.left - PAD.right,
        height: Math.max(bottom - top, 1),
      }),
    );
  }
  for (const tick of ticks(domain)) {
    chart.append(svg("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick) }));
    chart.append(
      svg("text", { class: "axis", x: PAD.left - 8, y: y(tick) + 4, "text-anchor": "end" }, formatNumber(tick)),
    );
  }
  chart.append(svg("text", { class: "axis unit", x: 8, y: PAD.top + 4 }, unit));
  chart.append(svg("text", { class: "axis", x: PAD.left, y: HEIGHT - 10 }, formatDate(first.effective.slice(0, 10))));
  chart.append(
    svg(
      "text",
      { class: "axis", x: WIDTH - PAD.right, y: HEIGHT - 10, "text-anchor": "end" },
      formatDate(latest.effective.slice(0, 10)),
    ),
  );
  const path = points
    .map((p, i) => `${i === 0 ? "M" : "L"}${x(time(p)).toFixed(1)},${y(p.value).toFixed(1)}`)
    .join(" ");
  chart.append(svg("path", { class: "line", d: path }));

  const readout = el(
    "p",
    { class: "readout", "aria-live": "polite" },
    `Latest: ${formatNumber(latest.value)} ${unit} on ${formatDate(latest.effective)}`,
  );
  points.forEach((p) => {
    const outside =
      range !== undefined &&
      ((range.low !== undefined && p.value < range.low) || (range.high !== undefined && p.value > range.high));
    const text = `${formatNumber(p.value)} ${p.unit ?? ""} on ${formatDate(p.effective)}${outside ? " (outside the reference range)" : ""}`;
    const dot = svg(
      "circle",
      {
        class: outside ? "point outside" : "point",
        cx: x(time(p)),
        cy: y(p.value),
        r: 6,
        tabindex: 0,
        role: "button",
        "aria-label": text,
      },
      svg("title", {}, text),
    );
    const show = () => {
      readout.textContent = text;
    };
    dot.addEventListener("click", show);
    dot.addEventListener("focus", show);
    chart.append(dot);
  });

  const list = el("ol", { class: "visually-hidden", "aria-label": `${title} values` });
  for (const p of points)
    list.append(el("li", {}, `${formatDate(p.effective)}: ${formatNumber(p.value)} ${p.unit ?? ""}`));
  figure.append(el("figcaption", {}, title), chart, readout, list);
  return figure;
}

/** The value axis: the data's span with a little room, never zero-height. */
export function paddedDomain(values: number[]): [number, number] {
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    const room = Math.abs(low) * 0.1 || 1;
    return [low - room, high + room];
  }
  const room = (high - low) * 0.1;
  low -= room;
  high += room;
  return [low, high];
}

/** About five round gridline values inside `domain`. */
export function ticks([low, high]: [number, number]): number[] {
  const rough = (high - low) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? rough;
  const result: number[] = [];
  for (let v = Math.ceil(low / step) * step; v <= high; v += step) result.push(Number(v.toPrecision(12)));
  return result;
}
