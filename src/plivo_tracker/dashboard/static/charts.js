// Hand-drawn SVG charts, sized to their container in CSS pixels (so text stays readable on a
// phone); colours come from CSS classes. Every chart has a text alternative.
import { count, el, percent, seconds } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function root(width, height, name, label) {
  const id = `chart-${name}-title`;
  return svg(
    "svg",
    {
      class: `chart chart-${name}`,
      "data-chart": name,
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": id,
    },
    svg("title", { id, text: label }),
  );
}

function tickTimes(points, maxTicks) {
  if (points.length === 0) return [];
  const step = Math.max(1, Math.ceil(points.length / maxTicks));
  const out = [];
  for (let i = 0; i < points.length; i += step) out.push(i);
  return out;
}

function timeLabel(value, stepSeconds) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  if (stepSeconds >= 3 * 3600) {
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/** Delivery rate over time (line, 0–100 %) over message volume (bars). */
export function rateChart(width, series, overallRate) {
  const points = (series && series.points) || [];
  const stepSeconds = (series && series.step_seconds) || 60;
  const height = 220;
  const m = { top: 14, right: 12, bottom: 28, left: 44 };
  const innerW = Math.max(10, width - m.left - m.right);
  const innerH = height - m.top - m.bottom;
  const rated = points.filter((p) => p.delivery_rate !== null && p.delivery_rate !== undefined);
  const label =
    `Delivery rate over time: ${percent(overallRate)} overall, ` +
    `${points.length} intervals of ${seconds(stepSeconds)}, ${rated.length} with final statuses.`;
  const chart = root(width, height, "delivery-rate", label);
  const maxTotal = Math.max(0, ...points.map((p) => p.total || 0));
  const band = points.length ? innerW / points.length : innerW;
  const x = (i) => m.left + band * i + band / 2;
  const y = (rate) => m.top + innerH * (1 - rate);

  const grid = svg("g", { class: "chart-grid" });
  for (const r of [0, 0.25, 0.5, 0.75, 1]) {
    grid.append(
      svg("line", { x1: m.left, x2: m.left + innerW, y1: y(r), y2: y(r) }),
      svg("text", { class: "chart-tick", x: m.left - 6, y: y(r) + 4, "text-anchor": "end", text: `${r * 100}%` }),
    );
  }
  chart.append(grid);

  const bars = svg("g", { class: "chart-volume" });
  points.forEach((p, i) => {
    if (!p.total) return;
    const h = maxTotal ? (innerH * 0.45 * p.total) / maxTotal : 0;
    bars.append(
      svg(
        "rect",
        {
          x: m.left + band * i + band * 0.15,
          y: m.top + innerH - h,
          width: Math.max(1, band * 0.7),
          height: h,
          "data-total": p.total,
        },
        svg("title", {
          text:
            `${timeLabel(p.t, stepSeconds)}: ${count(p.total)} sent, ${count(p.delivered)} delivered, ` +
            `${count(p.failed)} failed, rate ${percent(p.delivery_rate)}`,
        }),
      ),
    );
  });
  chart.append(bars);

  let d = "";
  let open = false;
  const dots = svg("g", { class: "chart-dots" });
  points.forEach((p, i) => {
    if (p.delivery_rate === null || p.delivery_rate === undefined) {
      open = false;
      return;
    }
    d += `${open ? "L" : "M"}${x(i).toFixed(1)},${y(p.delivery_rate).toFixed(1)}`;
    open = true;
    dots.append(
      svg(
        "circle",
        { cx: x(i), cy: y(p.delivery_rate), r: 3 },
        svg("title", { text: `${timeLabel(p.t, stepSeconds)}: ${percent(p.delivery_rate)} delivered` }),
      ),
    );
  });
  chart.append(svg("path", { class: "chart-line", d: d || "M0,0" }), dots);

  const axis = svg("g", { class: "chart-axis" });
  axis.append(svg("line", { x1: m.left, x2: m.left + innerW, y1: m.top + innerH, y2: m.top + innerH }));
  const maxTicks = Math.max(2, Math.floor(innerW / 90));
  for (const i of tickTimes(points, maxTicks)) {
    axis.append(
      svg("text", {
        class: "chart-tick",
        x: x(i),
        y: height - 8,
        "text-anchor": "middle",
        text: timeLabel(points[i].t, stepSeconds),
      }),
    );
  }
  chart.append(axis);
  if (maxTotal === 0) {
    chart.append(
      svg("text", {
        class: "chart-empty",
        x: m.left + innerW / 2,
        y: m.top + innerH / 2,
        "text-anchor": "middle",
        text: "No messages in this window",
      }),
    );
  }
  return chart;
}

const PERCENTILES = ["p50", "p90", "p99"];

/** p50/p90/p99 bars for each latency measure, on one shared scale. */
export function latencyChart(width, latency) {
  const groups = [
    ["time_to_sent", "Time to sent"],
    ["time_to_delivered", "Time to delivered"],
  ];
  const rowH = 24;
  const headH = 26;
  const m = { left: 44, right: 64 };
  const height = groups.length * (headH + PERCENTILES.length * rowH) + 6;
  const values = [];
  const parts = [];
  for (const [key, name] of groups) {
    const g = (latency && latency[key]) || {};
    values.push(...PERCENTILES.map((p) => g[p]).filter((v) => typeof v === "number"));
    parts.push(`${name}: ${PERCENTILES.map((p) => `${p} ${seconds(g[p])}`).join(", ")} (${count(g.count ?? 0)} messages)`);
  }
  const chart = root(width, height, "latency", `Latency percentiles. ${parts.join(". ")}.`);
  const max = Math.max(0, ...values) || 1;
  const innerW = Math.max(10, width - m.left - m.right);
  let top = 0;
  for (const [key, name] of groups) {
    const g = (latency && latency[key]) || {};
    chart.append(
      svg("text", { class: "chart-group-label", x: 0, y: top + 17, text: `${name} · ${count(g.count ?? 0)} messages` }),
    );
    top += headH;
    for (const p of PERCENTILES) {
      const value = g[p];
      const w = typeof value === "number" ? Math.max(2, (innerW * value) / max) : 0;
      chart.append(
        svg("text", { class: "chart-tick", x: m.left - 8, y: top + 16, "text-anchor": "end", text: p }),
        svg("rect", { class: `chart-bar bar-${p}`, x: m.left, y: top + 4, width: w, height: rowH - 8, rx: 3, "data-metric": `${key}.${p}`, "data-value": value ?? "" }),
        svg("text", {
          class: "chart-value",
          x: m.left + w + 6,
          y: top + 16,
          text: typeof value === "number" ? seconds(value) : "no data",
        }),
      );
      top += rowH;
    }
  }
  return chart;
}

const STATUS_ORDER = ["delivered", "read", "sent", "queued", "accepted", "unknown", "received", "undelivered", "rejected", "failed"];

/** One stacked bar of the statuses, and a legend with the counts. */
export function statusBar(width, byStatus) {
  const entries = STATUS_ORDER.filter((s) => (byStatus[s] || 0) > 0).map((s) => [s, byStatus[s]]);
  for (const [s, n] of Object.entries(byStatus || {})) {
    if (!STATUS_ORDER.includes(s) && n > 0) entries.push([s, n]);
  }
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const label = total
    ? `Messages by status: ${entries.map(([s, n]) => `${s} ${n}`).join(", ")}.`
    : "No messages by status.";
  const height = 28;
  const chart = root(width, height, "status", label);
  chart.append(svg("rect", { class: "chart-track", x: 0, y: 0, width, height, rx: 6 }));
  let x = 0;
  for (const [status, n] of entries) {
    const w = (width * n) / total;
    chart.append(
      svg(
        "rect",
        { class: `seg seg-${status}`, x, y: 0, width: Math.max(w, 1), height, "data-status": status },
        svg("title", { text: `${status}: ${count(n)} (${percent(n / total)})` }),
      ),
    );
    x += w;
  }
  const legend = el(
    "ul",
    { class: "legend" },
    entries.map(([status, n]) =>
      el(
        "li",
        {},
        el("span", { class: `swatch seg-${status}`, "aria-hidden": "true" }),
        el("span", {}, status),
        el("strong", { dataset: { statusCount: status } }, count(n)),
      ),
    ),
  );
  return [chart, legend];
}

/** A thin horizontal bar (for lists and tables): share of `max`. */
export function inlineBar(value, max, cls = "") {
  const width = 120;
  const w = max > 0 ? Math.max(value > 0 ? 2 : 0, (width * value) / max) : 0;
  return svg(
    "svg",
    {
      class: `inline-bar ${cls}`,
      width,
      height: 10,
      viewBox: `0 0 ${width} 10`,
      preserveAspectRatio: "none", // stretched to the space CSS gives it
      "aria-hidden": "true",
      focusable: "false",
    },
    svg("rect", { class: "chart-track", x: 0, y: 0, width, height: 10, rx: 3 }),
    svg("rect", { class: "inline-bar-fill", x: 0, y: 0, width: w, height: 10, rx: 3 }),
  );
}
