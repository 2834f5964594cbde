// #/stats: totals, delivery rate over time, latency, error codes and carriers for a window.
import { api } from "./api.js";
import { inlineBar, latencyChart, rateChart, statusBar } from "./charts.js";
import { count, el, percent, relativeTime, seconds } from "./format.js";

export const WINDOWS = ["15m", "1h", "24h", "7d"];
const REFRESH_MS = 10_000;

export class StatsView {
  constructor() {
    this.content = document.getElementById("stats-content");
    this.error = document.getElementById("stats-error");
    this.updated = document.getElementById("stats-updated");
    this.picker = document.getElementById("window-picker");
    this.window = "24h";
    this.active = false;
    this.stats = null;
    this.loadedAt = 0;
    this.timer = 0;
    this.seq = 0;
    this.width = 0;

    this.picker.addEventListener("change", (event) => {
      const value = event.target.value;
      if (WINDOWS.includes(value)) location.hash = `#/stats?window=${value}`;
    });
    document.addEventListener("visibilitychange", () => {
      if (this.active && !document.hidden) this.load();
    });
    new ResizeObserver(() => {
      const width = this.content.clientWidth;
      if (this.stats && this.active && Math.abs(width - this.width) > 4) this.render();
    }).observe(this.content);
  }

  show(windowValue) {
    this.window = WINDOWS.includes(windowValue) ? windowValue : "24h";
    for (const input of this.picker.querySelectorAll("input")) input.checked = input.value === this.window;
    if (this.stats && this.stats.window !== this.window) {
      this.stats = null;
      this.content.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    }
    this.active = true;
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (!document.hidden) this.load();
      this.updated.textContent = this.loadedAt ? `Updated ${relativeTime(this.loadedAt)}` : "";
    }, REFRESH_MS);
    this.load();
  }

  hide() {
    this.active = false;
    clearInterval(this.timer);
  }

  async load() {
    const seq = ++this.seq;
    const windowValue = this.window;
    let stats;
    try {
      stats = await api(`/api/stats?window=${encodeURIComponent(windowValue)}`);
    } catch (err) {
      if (seq !== this.seq) return;
      this.error.textContent =
        err.status === 401 ? "An API key is needed to see statistics." : `Statistics could not be loaded: ${err.message}`;
      this.error.hidden = false;
      return;
    }
    if (seq !== this.seq || !this.active) return;
    this.error.hidden = true;
    this.stats = stats;
    this.loadedAt = Date.now();
    this.updated.textContent = "Updated just now · refreshes every 10 s";
    this.render();
  }

  render() {
    const s = this.stats;
    const by = s.by_status || {};
    const failures = (by.undelivered || 0) + (by.failed || 0) + (by.rejected || 0);
    // "Sent, no receipt" is settled (the carrier never sends receipts): not in flight.
    const noReceipt = s.sent_no_receipt || 0;
    const inFlight = (by.accepted || 0) + (by.queued || 0) + (by.sent || 0) - noReceipt;
    const kpi = (label, value, key, note) =>
      el("div", { class: `kpi kpi-${key}${value === "0" || value === "—" ? " kpi-zero" : ""}` },
        el("span", { class: "kpi-label" }, label),
        el("strong", { class: "kpi-value", dataset: { stat: key } }, value),
        note ? el("span", { class: "kpi-note muted" }, note) : null,
      );
    const kpis = el("div", { class: "kpis" },
      kpi("Messages", count(s.total), "total", `created in the last ${s.window}`),
      kpi("Delivery rate", percent(s.delivery_rate), "delivery_rate", "of messages with a final status"),
      kpi("Delivered", count(by.delivered || 0), "delivered"),
      kpi("Failed", count(failures), "failures", "undelivered, failed or rejected"),
      kpi("In flight", count(inFlight), "in_flight", "accepted, queued or sent"),
      noReceipt ? kpi("Sent, no receipt", count(noReceipt), "sent_no_receipt", "settled: the carrier sends no receipts") : null,
      by.unknown ? kpi("Outcome unknown", count(by.unknown), "unknown", "an operator must adopt or resend") : null,
    );

    const card = (id, title, ...body) =>
      el("section", { class: "card chart-card", "aria-labelledby": id }, el("h2", { id }, title), ...body);
    const statusBox = el("div", { class: "chart-box" });
    const rateBox = el("div", { class: "chart-box" });
    const latencyBox = el("div", { class: "chart-box" });

    const errors = [...(s.errors || [])].sort((a, b) => b.count - a.count);
    const maxError = Math.max(0, ...errors.map((e) => e.count));
    const errorList = errors.length
      ? el("ol", { class: "bar-list", id: "error-codes" },
          errors.map((e) =>
            el("li", { dataset: { code: e.code } },
              el("div", { class: "bar-label" },
                el("strong", { class: "mono" }, e.code),
                el("span", {}, e.meaning || "unknown code"),
              ),
              el("div", { class: "bar-row" }, inlineBar(e.count, maxError, "bar-error"), el("span", { class: "bar-count" }, count(e.count))),
            ),
          ),
        )
      : el("p", { class: "muted" }, "No errors in this window.");

    const carriers = [...(s.carriers || [])].sort((a, b) => b.total - a.total);
    const carrierTable = carriers.length
      ? el("div", { class: "table-scroll" },
          el("table", { class: "simple-table", id: "carriers" },
            el("thead", {}, el("tr", {}, [["MCC / MNC", ""], ["Messages", "num"], ["Delivered", "num"], ["Failed", "num"], ["Delivery rate", ""]].map(([h, cls]) => el("th", { scope: "col", class: cls || null }, h)))),
            el("tbody", {}, carriers.map((c) =>
              el("tr", {},
                el("td", { class: "mono" }, `${c.mcc ?? "—"} / ${c.mnc ?? "—"}`),
                el("td", { class: "num" }, count(c.total)),
                el("td", { class: "num" }, count(c.delivered)),
                el("td", { class: "num" }, count(c.failed)),
                el("td", {}, el("div", { class: "rate-cell" }, inlineBar(c.delivery_rate ?? 0, 1, "bar-rate"), el("span", {}, percent(c.delivery_rate)))),
              ),
            )),
          ),
        )
      : el("p", { class: "muted" }, "No carrier information yet (it arrives with the callbacks).");

    const step = s.series && s.series.step_seconds;
    this.content.replaceChildren(
      kpis,
      card("stats-status-heading", "By status", statusBox),
      card("stats-rate-heading", "Delivery rate over time", rateBox,
        el("p", { class: "chart-legend muted" },
          el("span", { class: "legend-line", "aria-hidden": "true" }), "delivery rate  ",
          el("span", { class: "legend-bar", "aria-hidden": "true" }), `messages per ${step ? seconds(step) : "interval"}`,
        ),
      ),
      el("div", { class: "grid-2" },
        card("stats-latency-heading", "Latency (from send request)", latencyBox),
        card("stats-errors-heading", "Error codes", errorList),
      ),
      card("stats-carriers-heading", "Carriers", carrierTable),
    );
    this.width = this.content.clientWidth;
    const inner = (box) => Math.max(200, box.clientWidth);
    statusBox.replaceChildren(...statusBar(inner(statusBox), by));
    rateBox.replaceChildren(rateChart(inner(rateBox), s.series, s.delivery_rate));
    latencyBox.replaceChildren(latencyChart(inner(latencyBox), s.latency));
  }
}
