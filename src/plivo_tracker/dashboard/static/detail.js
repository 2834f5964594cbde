// #/messages/<id>: one message, its send attempts, parts and event timeline (raw callbacks
// included); for a message whose send outcome is `unknown`, the operator's adopt/resend panel.
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

// What each send attempt's outcome means (send_attempts.outcome), and how it looks.
const OUTCOMES = {
  accepted: ["Plivo accepted the message", "ok"],
  retry: ["a temporary failure: tried again later", "warn"],
  ambiguous: ["no clear answer from Plivo: looked up before any resend", "warn"],
  paused: ["Plivo refused the account or address: sending paused", "warn"],
  failed: ["refused: not sent", "danger"],
  not_found: ["a lookup found no such message at Plivo", "plain"],
  reconciled: ["a lookup found the message at Plivo", "ok"],
  undecided: ["lookups could not decide: waits for an operator", "warn"],
  adopted: ["an operator adopted a MessageUUID", "ok"],
  resend: ["an operator asked to send again", "warn"],
};
const API_ID_TITLE = "Plivo's request id: quote this to Plivo support";

function settledText(m) {
  if (m.settled_reason === "no_receipt") return ["sent, no receipt", "Plivo still says sent; no delivery receipt came and none is expected any more"];
  if (m.settled) return ["settled", "a final status: nothing more is expected"];
  if (m.status === "unknown") return ["waiting", "for an operator to adopt a MessageUUID or send again"];
  return ["waiting", "more status changes are expected"];
}

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
    // The operator's half-typed MessageUUID and resend confirmation survive live re-renders.
    this.resolve = { uuid: "", confirming: false, busy: false, error: "", invalid: false };
    this.notice = null; // {kind: "ok" | "error", text}: the outcome of a resolve
  }

  async show(ref) {
    if (ref !== this.ref) {
      this.ref = ref;
      this.message = null;
      this.reveal = false;
      this.resolve = { uuid: "", confirming: false, busy: false, error: "", invalid: false };
      this.notice = null;
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
    const active = document.activeElement;
    const focusedKey = active && this.root.contains(active) ? active.dataset.focusKey : null;
    const caret = focusedKey && active instanceof HTMLInputElement ? [active.selectionStart, active.selectionEnd] : null;

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

    const [settledLabel, settledWhy] = settledText(m);
    const settledChip = el("span", {
      class: `chip chip-settled-${m.settled ? "yes" : "no"}`,
      id: "detail-settled",
      dataset: { settled: String(Boolean(m.settled)), settledReason: m.settled_reason ?? "" },
    }, settledLabel);

    const summary = el("dl", { class: "facts" },
      row("Status", badge(m.status)),
      row("Settled", settledChip, el("span", { class: "muted" }, ` — ${settledWhy}`)),
      row("To", toValue, m.to ? revealButton : null),
      row("From", m.from ? el("span", { class: "mono" }, m.from) : null),
      row("Type", (m.type || "").toUpperCase(), m.direction && m.direction !== "outbound" ? ` · ${m.direction}` : ""),
      row("Error", errorText(m.error_code, m.error_meaning), m.error_class ? el("span", { class: "muted" }, ` (${m.error_class})`) : null),
      m.error_detail ? row("Error detail", el("span", { id: "detail-error-detail", class: "error-detail" }, m.error_detail)) : null,
      row("MessageUUID", m.message_uuid ? el("span", { class: "mono break" }, m.message_uuid) : null),
      row("Created", when(m.created_at)),
      row("Sent", when(m.sent_at), m.sent_at ? el("span", { class: "muted" }, ` · after ${duration(m.created_at, m.sent_at)}`) : null),
      row("Delivered", when(m.delivered_at), m.delivered_at ? el("span", { class: "muted" }, ` · after ${duration(m.created_at, m.delivered_at)}`) : null),
      row("Units", m.units ?? null),
      row("Cost", m.total_amount ? `${m.total_amount} (rate ${m.total_rate ?? "—"})` : null),
      row("Carrier (MCC/MNC)", m.mcc || m.mnc ? el("span", { class: "mono" }, `${m.mcc ?? "—"} / ${m.mnc ?? "—"}`) : null),
      (m.chain || []).length > 1 ? row("Resend chain", this.chain(m)) : null,
    );

    const textCard = el("section", { class: "card", "aria-labelledby": "detail-text-heading" },
      el("h2", { id: "detail-text-heading" }, "Text"),
      m.text
        ? el("p", { class: "message-text" }, m.text)
        : el("p", { class: "muted" }, m.content_erased_at ? "(not stored): erased once sent (STORE_MESSAGE_TEXT=false)." : "No text."),
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

    const attempts = m.attempts || [];
    const attemptsCard = el("section", { class: "card", "aria-labelledby": "detail-attempts-heading" },
      el("h2", { id: "detail-attempts-heading" }, `Send attempts (${attempts.length})`),
      attempts.length
        ? el("ol", { class: "attempts", id: "attempts" }, attempts.map((a) => this.attempt(a)))
        : el("p", { class: "muted" }, m.direction === "inbound" || m.origin === "callback"
          ? "None: this message is known from Plivo's callbacks only."
          : "None yet: the message waits in the outbox."),
    );

    const children = [
      heading,
      this.notice ? el("p", { class: `notice notice-${this.notice.kind}`, id: "detail-notice", role: "status" }, this.notice.text) : null,
      m.status === "unknown" ? this.resolvePanel(m) : null,
      el("div", { class: "detail-grid" },
        el("section", { class: "card", "aria-labelledby": "detail-summary-heading" },
          el("h2", { id: "detail-summary-heading" }, "Summary"),
          summary,
        ),
        el("div", { class: "detail-side" }, textCard, partsCard),
      ),
      attemptsCard,
      timelineCard,
    ];
    this.root.replaceChildren(...children.filter(Boolean));
    this.root.dataset.messageId = String(m.id);
    this.root.dataset.status = m.status;
    document.title = `Message #${m.id} · plivo-tracker`;
    if (focusedKey) {
      const again = this.root.querySelector(`[data-focus-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
      if (again && caret && again instanceof HTMLInputElement) again.setSelectionRange(...caret);
    }
  }

  /** The original and each resend (RESEND_ERROR_CODES), oldest first; this one is marked. */
  chain(m) {
    return el("ol", { class: "chain", id: "detail-chain" },
      m.chain.map((link, i) => el("li", { dataset: { messageId: String(link.id) } },
        link.id === m.id
          ? el("strong", { "aria-current": "page" }, `#${link.id}`)
          : el("a", { href: `#/messages/${link.id}` }, `#${link.id}`),
        " ",
        badge(link.status),
        link.error_code ? el("span", { class: "muted" }, ` error ${link.error_code}`) : null,
        el("span", { class: "visually-hidden" }, i === 0 ? " (original)" : ` (resend ${i})`),
      )),
    );
  }

  attempt(a) {
    const [meaning, tone] = OUTCOMES[a.outcome] || [a.outcome, "plain"];
    const took = duration(a.started_at, a.finished_at);
    return el("li", { class: "attempt", dataset: { attempt: String(a.attempt), outcome: a.outcome } },
      el("div", { class: "attempt-head" },
        el("span", { class: "attempt-number" }, `Attempt ${a.attempt}`),
        el("span", { class: `chip chip-outcome chip-${tone}`, title: meaning }, a.outcome.replace("_", " ")),
        a.http_status !== null && a.http_status !== undefined
          ? el("span", { class: "chip mono attempt-http", title: "HTTP status of Plivo's answer" }, `HTTP ${a.http_status}`)
          : el("span", { class: "chip attempt-http muted" }, "no HTTP answer"),
        el("span", { class: "event-time" }, timeEl(a.started_at)),
      ),
      el("dl", { class: "facts facts-compact" },
        row("What happened", meaning),
        row("Started", fullTime(a.started_at)),
        row("Finished", fullTime(a.finished_at), took ? el("span", { class: "muted" }, ` · took ${took}`) : null),
        row("Plivo api_id", a.api_id
          ? el("span", { class: "mono break attempt-api-id", title: API_ID_TITLE }, a.api_id)
          : null,
          a.api_id ? el("span", { class: "muted attempt-api-hint" }, " (quote this to Plivo support)") : null),
        a.detail ? row("Detail", el("span", { class: "attempt-detail" }, a.detail)) : null,
      ),
    );
  }

  resolvePanel(m) {
    const r = this.resolve;
    const uuidInput = el("input", {
      type: "text",
      id: "resolve-uuid",
      name: "message_uuid",
      autocomplete: "off",
      spellcheck: "false",
      class: "mono",
      maxlength: "64",
      placeholder: "e.g. 9bd1c6a4-2f0c-11ef-a8b5-0242ac110002",
      "aria-describedby": "resolve-uuid-hint",
      "aria-invalid": r.invalid ? "true" : null,
      readonly: r.busy,
      dataset: { focusKey: "resolve-uuid" },
    });
    uuidInput.value = r.uuid;
    uuidInput.addEventListener("input", () => {
      r.uuid = uuidInput.value;
      if (r.invalid && r.uuid.trim()) {
        r.invalid = false;
        uuidInput.removeAttribute("aria-invalid");
      }
    });
    const adoptForm = el("form", { class: "resolve-adopt", id: "resolve-adopt", novalidate: true },
      el("div", { class: "field" },
        el("label", { for: "resolve-uuid" }, "Plivo MessageUUID"),
        el("div", { class: "resolve-row" },
          uuidInput,
          el("button", { type: "submit", class: "button button-primary", "aria-disabled": r.busy ? "true" : null, dataset: { focusKey: "resolve-adopt" } }, "Adopt this UUID"),
        ),
        el("p", { id: "resolve-uuid-hint", class: "hint" }, "If Plivo did create the message, find its MessageUUID in Plivo's logs (quote an attempt's api_id to Plivo support) and adopt it: nothing is sent again."),
      ),
    );
    adoptForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if (r.busy) return;
      const uuid = r.uuid.trim();
      if (!uuid) {
        r.invalid = true;
        r.error = "Enter the MessageUUID Plivo gave this message.";
        this.render();
        this.root.querySelector("#resolve-uuid")?.focus();
        return;
      }
      this.submitResolve(m.id, { action: "adopt", message_uuid: uuid });
    });

    const resendButton = el("button", {
      type: "button", class: "button", id: "resolve-resend", "aria-disabled": r.busy ? "true" : null,
      "aria-expanded": String(r.confirming), "aria-controls": "resolve-confirm", dataset: { focusKey: "resolve-resend" },
    }, "Send again");
    resendButton.addEventListener("click", () => {
      if (r.busy) return;
      r.confirming = true;
      r.error = "";
      this.render();
      this.root.querySelector("#resolve-confirm-cancel")?.focus();
    });
    const confirmYes = el("button", { type: "button", class: "button button-danger", id: "resolve-confirm-yes", "aria-disabled": r.busy ? "true" : null, dataset: { focusKey: "resolve-confirm-yes" } }, "Yes, send it again");
    confirmYes.addEventListener("click", () => this.submitResolve(m.id, { action: "resend" }));
    const confirmNo = el("button", { type: "button", class: "button button-ghost", id: "resolve-confirm-cancel", "aria-disabled": r.busy ? "true" : null, dataset: { focusKey: "resolve-confirm-cancel" } }, "Cancel");
    confirmNo.addEventListener("click", () => {
      if (r.busy) return;
      r.confirming = false;
      this.render();
      this.root.querySelector("#resolve-resend")?.focus();
    });
    const confirm = r.confirming
      ? el("div", { class: "resolve-confirm", id: "resolve-confirm", role: "group", "aria-labelledby": "resolve-confirm-text" },
          el("p", { id: "resolve-confirm-text" }, el("strong", {}, "Send this message again? "),
            "If Plivo did create the first one, the recipient gets the SMS twice."),
          el("div", { class: "form-actions" }, confirmYes, confirmNo),
        )
      : null;

    return el("section", { class: "card resolve-card", id: "resolve", "aria-labelledby": "resolve-heading" },
      el("h2", { id: "resolve-heading" }, "Resolve this send"),
      el("p", { class: "resolve-intro" },
        "Plivo's answer to this send was unclear and no lookup could tell whether it created the message. ",
        "Adopt the MessageUUID Plivo gave it, or, if Plivo has nothing, send it again."),
      adoptForm,
      el("div", { class: "resolve-resend-row" },
        resendButton,
        el("span", { class: "hint" }, "Only if Plivo has no such message: a resend may duplicate the SMS."),
      ),
      confirm,
      r.error ? el("p", { class: "notice notice-error", id: "resolve-error", role: "alert" }, r.error) : null,
    );
  }

  async submitResolve(id, body) {
    const r = this.resolve;
    if (r.busy) return;
    r.busy = true;
    r.error = "";
    this.render();
    const ref = this.ref;
    try {
      await api(`/api/messages/${encodeURIComponent(id)}/resolve`, { method: "POST", body });
    } catch (err) {
      if (ref !== this.ref) return;
      r.busy = false;
      r.error = err.status === 409 || err.status === 422 || err.status === 404
        ? err.message
        : `The server did not take it: ${err.message}`;
      this.render();
      return;
    }
    if (ref !== this.ref) return;
    this.resolve = { uuid: "", confirming: false, busy: false, error: "", invalid: false };
    this.notice = body.action === "adopt"
      ? { kind: "ok", text: `Adopted MessageUUID ${body.message_uuid}: its status follows from Plivo's callbacks.` }
      : { kind: "ok", text: "Queued to send again." };
    await this.load();
    this.focusHeading();
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
