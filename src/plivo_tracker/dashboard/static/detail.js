// #/messages/<id>: one message, its parts and its event timeline (raw callbacks included).
import { api } from "./api.js";
import { badge, el, fullTime, maskNumber, seconds, timeEl, parseTime } from "./format.js";

const EFFECTS = {
  applied: "changed the status",
  same: "same status again, nothing changed",
  stale: "older than the current status: history only",
  conflict_won: "conflicting final status that replaced the previous one",
  conflict_kept: "conflicting final status, kept in the history only",
  duplicate: "duplicate",
};

function duration(from, to) {
  const a = parseTime(from);
  const b = parseTime(to);
  return a && b ? seconds((b - a) / 1000) : null;
}

function row(term, ...value) {
  const content = value.filter((v) => v !== null && v !== undefined && v !== "");
  return [el("dt", {}, term), el("dd", {}, content.length ? content : el("span", { class: "muted" }, "—"))];
}

function when(value) {
  if (!value) return null;
  return el("span", {}, fullTime(value), " ", el("span", { class: "muted" }, "("), timeEl(value), el("span", { class: "muted" }, ")"));
}

function errorText(code, meaning) {
  if (!code) return null;
  return el("span", {}, el("strong", { class: "mono" }, code), meaning ? ` — ${meaning}` : "");
}

export class DetailView {
  constructor() {
    this.root = document.getElementById("detail-content");
    this.ref = null;
    this.message = null;
    this.seq = 0;
    this.refreshTimer = 0;
    this.reveal = false;
  }

  async show(ref) {
    if (ref !== this.ref) {
      this.ref = ref;
      this.message = null;
      this.reveal = false;
      this.root.replaceChildren(el("h1", { tabindex: "-1", class: "detail-title" }, `Message ${ref}`), el("p", { class: "muted" }, "Loading…"));
    }
    await this.load();
  }

  hide() {
    this.ref = null;
    clearTimeout(this.refreshTimer);
  }

  /** A status frame arrived: refresh if it is about the message shown (at most every 300 ms). */
  frame(frame) {
    if (this.ref === null) return;
    const m = this.message;
    const ours = m
      ? frame.message_id === m.id || (frame.message_uuid && frame.message_uuid === m.message_uuid)
      : String(frame.message_id) === this.ref || frame.message_uuid === this.ref;
    if (!ours) return;
    if (m && frame.message_id !== m.id && typeof frame.message_id === "number") {
      // This was a placeholder (a callback faster than the send's answer); the sent message
      // adopted it and its id is gone: show the adopting message instead.
      location.replace(`#/messages/${frame.message_id}`);
      return;
    }
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.load(), 300);
  }

  async load() {
    const ref = this.ref;
    if (ref === null) return;
    const seq = ++this.seq;
    let message;
    try {
      message = await api(`/api/messages/${encodeURIComponent(ref)}`);
    } catch (err) {
      if (seq !== this.seq || ref !== this.ref) return;
      const text =
        err.status === 404
          ? `There is no message ${ref}.`
          : err.status === 401
            ? "An API key is needed to see this message."
            : `The message could not be loaded: ${err.message}`;
      this.root.replaceChildren(
        el("h1", { tabindex: "-1", class: "detail-title" }, `Message ${ref}`),
        el("p", { class: "notice notice-error", role: "alert" }, text),
      );
      return;
    }
    if (seq !== this.seq || ref !== this.ref) return;
    this.message = message;
    this.render();
  }

  focusHeading() {
    const heading = this.root.querySelector("h1");
    if (heading) heading.focus({ preventScroll: false });
  }

  render() {
    const m = this.message;
    // Keep the reader's place: which raw callbacks were open, and the focused element.
    const open = new Set([...this.root.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const focusedKey = document.activeElement && this.root.contains(document.activeElement)
      ? document.activeElement.dataset.focusKey
      : null;

    const heading = el("div", { class: "detail-head" },
      el("h1", { tabindex: "-1", class: "detail-title" }, `Message #${m.id}`),
      badge(m.status),
      m.has_conflict ? el("span", { class: "chip chip-warn" }, "conflicting final statuses") : null,
    );

    const toValue = el("span", { class: "mono", id: "detail-to" }, this.reveal ? m.to || "—" : maskNumber(m.to));
    const revealButton = el(
      "button",
      { type: "button", class: "button button-small button-ghost", "aria-pressed": String(this.reveal), "aria-controls": "detail-to", dataset: { focusKey: "reveal" } },
      this.reveal ? "Hide number" : "Show number",
    );
    revealButton.addEventListener("click", () => {
      this.reveal = !this.reveal;
      this.render();
    });

    const summary = el("dl", { class: "facts" },
      row("Status", badge(m.status)),
      row("To", toValue, m.to ? revealButton : null),
      row("From", m.from ? el("span", { class: "mono" }, m.from) : null),
      row("Type", (m.type || "").toUpperCase()),
      row("Error", errorText(m.error_code, m.error_meaning), m.error_class ? el("span", { class: "muted" }, ` (${m.error_class})`) : null),
      row("MessageUUID", m.message_uuid ? el("span", { class: "mono break" }, m.message_uuid) : null),
      row("Created", when(m.created_at)),
      row("Sent", when(m.sent_at), m.sent_at ? el("span", { class: "muted" }, ` · after ${duration(m.created_at, m.sent_at)}`) : null),
      row("Delivered", when(m.delivered_at), m.delivered_at ? el("span", { class: "muted" }, ` · after ${duration(m.created_at, m.delivered_at)}`) : null),
      row("Units", m.units ?? null),
      row("Cost", m.total_amount ? `${m.total_amount} (rate ${m.total_rate ?? "—"})` : null),
      row("Carrier (MCC/MNC)", m.mcc || m.mnc ? el("span", { class: "mono" }, `${m.mcc ?? "—"} / ${m.mnc ?? "—"}`) : null),
      m.attempt_of ? row("Re-send of", el("a", { href: `#/messages/${m.attempt_of}` }, `#${m.attempt_of}`)) : null,
    );

    const textCard = el("section", { class: "card", "aria-labelledby": "detail-text-heading" },
      el("h2", { id: "detail-text-heading" }, "Text"),
      m.text ? el("p", { class: "message-text" }, m.text) : el("p", { class: "muted" }, "No text."),
    );

    const parts = m.parts || [];
    const partsCard = parts.length
      ? el("section", { class: "card", "aria-labelledby": "detail-parts-heading" },
          el("h2", { id: "detail-parts-heading" }, `Parts (${parts.length})`),
          el("div", { class: "table-scroll" },
            el("table", { class: "simple-table", id: "parts" },
              el("thead", {}, el("tr", {}, ["Part", "UUID", "Status", "Error", "Updated"].map((h) => el("th", { scope: "col" }, h)))),
              el("tbody", {}, parts.map((p) =>
                el("tr", {},
                  el("td", {}, p.part_index ?? p.part_info ?? "—"),
                  el("td", { class: "mono break" }, p.part_uuid),
                  el("td", {}, badge(p.status)),
                  el("td", {}, errorText(p.error_code, p.error_meaning) || "—"),
                  el("td", {}, timeEl(p.updated_at)),
                ),
              )),
            ),
          ),
        )
      : null;

    const events = [...(m.events || [])].sort((a, b) => a.id - b.id);
    const timeline = el("ol", { class: "timeline", id: "timeline" },
      events.map((e) => this.event(e, open)),
    );
    const timelineCard = el("section", { class: "card", "aria-labelledby": "detail-timeline-heading" },
      el("h2", { id: "detail-timeline-heading" }, `Timeline (${events.length} event${events.length === 1 ? "" : "s"}, oldest first)`),
      events.length ? timeline : el("p", { class: "muted" }, "No events yet."),
    );

    this.root.replaceChildren(
      heading,
      el("div", { class: "detail-grid" },
        el("section", { class: "card", "aria-labelledby": "detail-summary-heading" },
          el("h2", { id: "detail-summary-heading" }, "Summary"),
          summary,
        ),
        el("div", { class: "detail-side" }, textCard, partsCard),
      ),
      timelineCard,
    );
    this.root.dataset.messageId = String(m.id);
    this.root.dataset.status = m.status;
    document.title = `Message #${m.id} · plivo-tracker`;
    if (focusedKey) {
      const again = this.root.querySelector(`[data-focus-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
    }
  }

  event(e, open) {
    const raw = e.raw || {};
    const rawKey = `raw-${e.id}`;
    const headersKey = `headers-${e.id}`;
    const headers = e.headers || {};
    const fields = Object.keys(raw).length;
    const what = e.source === "callback" ? "Raw callback" : "Raw data";
    const rawDetails = fields
      ? el("details", { class: "raw", dataset: { key: rawKey }, open: open.has(rawKey) },
          el("summary", { dataset: { focusKey: rawKey } }, `${what} (${fields} field${fields === 1 ? "" : "s"})`),
          el("pre", { class: "code", tabindex: "0", "aria-label": `${what} of event ${e.id}` }, JSON.stringify(raw, null, 2)),
        )
      : null;
    const headerDetails = Object.keys(headers).length
      ? el("details", { class: "raw", dataset: { key: headersKey }, open: open.has(headersKey) },
          el("summary", { dataset: { focusKey: headersKey } }, "Signature headers"),
          el("pre", { class: "code", tabindex: "0", "aria-label": `Headers of event ${e.id}` }, JSON.stringify(headers, null, 2)),
        )
      : null;
    const effect = e.effect || "applied";
    return el("li", { class: `event effect-${effect}`, dataset: { eventId: String(e.id), status: e.status, effect } },
      el("div", { class: "event-head" },
        badge(e.status),
        e.previous_status ? el("span", { class: "muted" }, `from ${e.previous_status}`) : null,
        el("span", { class: `chip chip-${effect}`, title: EFFECTS[effect] || null }, effect.replace("_", " ")),
        e.sequence !== null && e.sequence !== undefined ? el("span", { class: "chip" }, `sequence ${e.sequence}`) : null,
        el("span", { class: "event-time" }, timeEl(e.received_at)),
      ),
      el("dl", { class: "facts facts-compact" },
        row("Received", fullTime(e.received_at)),
        e.plivo_time ? row("Plivo time", fullTime(e.plivo_time)) : null,
        row("Source", e.source, e.signature_scheme ? ` · signature ${e.signature_scheme}` : ""),
        e.error_code ? row("Error", errorText(e.error_code, e.error_meaning)) : null,
        e.message_uuid && this.message && e.message_uuid !== this.message.message_uuid
          ? row("Part", el("span", { class: "mono break" }, e.message_uuid))
          : null,
        row("What it did", EFFECTS[effect] || effect),
      ),
      rawDetails,
      headerDetails,
    );
  }
}
