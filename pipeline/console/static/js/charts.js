// Bar charts as inline SVG drawn here: no library, no network. Each chart is a labelled image with a
// legend and its numbers in a table underneath (for screen readers and for copying).

import { h, s, scroller } from "./dom.js";

const W = 640;
const H = 240;
const PAD = { left: 56, right: 8, top: 10, bottom: 54 };
// more bars than this and their labels are drawn slanted, so that every bar keeps its label
const UPRIGHT_LABELS = 14;
let chartId = 0;

function niceMax(value) {
  if (value <= 5) return 5;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return value;
}

// series: [{ name, values }]; stacked (default) or side by side (grouped: true). Every bar has its label
// (slanted when there are many); xTitle and yTitle name the axes.
export function barChart({ title, labels, series, grouped = false, xTitle, yTitle }) {
  const id = `chart-${++chartId}`;
  const totals = labels.map((_, i) => (grouped ? Math.max(...series.map((x) => x.values[i])) : series.reduce((a, x) => a + x.values[i], 0)));
  const top = niceMax(Math.max(1, ...totals));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / labels.length;
  const barW = Math.max(1, (grouped ? slot / (series.length + 0.5) : slot * 0.75));
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t`, class: "chart" },
    s("title", { id: `${id}-t` }, title));
  for (const tick of [0, 0.5, 1]) {
    const v = top * tick;
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid-line" }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, v.toLocaleString("en")));
  }
  const slanted = labels.length > UPRIGHT_LABELS;
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((x, k) => {
      const v = x.values[i];
      if (!v) return;
      const x0 = PAD.left + i * slot + (grouped ? slot * 0.25 / 2 + k * barW : (slot - barW) / 2);
      const y0 = grouped ? y(v) : y(base + v);
      const height = grouped ? y(0) - y(v) : y(base) - y(base + v);
      svg.append(s("rect", { x: x0.toFixed(1), y: y0.toFixed(1), width: barW.toFixed(1), height: Math.max(0.5, height).toFixed(1), class: `bar s${k}` },
        s("title", null, `${label}: ${v.toLocaleString("en")} ${x.name}`)));
      base += v;
    });
    const cx = (PAD.left + i * slot + slot / 2).toFixed(1);
    const cy = H - PAD.bottom + 14;
    svg.append(slanted
      ? s("text", { x: cx, y: cy, class: "axis bar-label", "text-anchor": "end", transform: `rotate(-55 ${cx} ${cy})` }, label)
      : s("text", { x: cx, y: cy, class: "axis bar-label", "text-anchor": "middle" }, label));
  });
  if (xTitle) {
    svg.append(s("text", { x: PAD.left + plotW / 2, y: H - 4, class: "axis-title", "text-anchor": "middle" }, xTitle));
  }
  if (yTitle) {
    const yx = 12;
    const yy = PAD.top + plotH / 2;
    svg.append(s("text", { x: yx, y: yy, class: "axis-title", "text-anchor": "middle", transform: `rotate(-90 ${yx} ${yy})` }, yTitle));
  }
  const legend = series.length > 1
    ? h("ul", { class: "legend" }, series.map((x, k) => h("li", null, h("span", { class: `key s${k}`, "aria-hidden": "true" }), x.name)))
    : null;
  const table = h("details", null, h("summary", null, "Numbers"),
    scroller(`Numbers of ${title}`, h("table", { class: "grid" },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, ""), series.map((x) => h("th", { scope: "col" }, x.name)))),
      h("tbody", null, labels.map((label, i) => h("tr", null, h("th", { scope: "row" }, label),
        series.map((x) => h("td", null, x.values[i].toLocaleString("en")))))))));
  return h("figure", { class: "chart-box" }, h("figcaption", null, title), svg, legend, table);
}
