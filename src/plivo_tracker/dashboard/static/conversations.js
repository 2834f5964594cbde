// #/conversations and #/conversations/<number>: one thread per remote number (GET
// /api/conversations), the thread's messages as bubbles (GET /api/conversations/<number>), the
// number's opt-out state (PUT/DELETE /api/opt-outs/<number>) and a reply box (POST
// /api/messages). Kept live by the page's one WebSocket: `message` frames (inbound) add a
// bubble and bump the thread to the top, `status` frames update our bubbles. Every server string
// goes through textContent.
import { api } from "./api.js";
import { badge, el, maskNumber, randomKey, timeEl } from "./format.js";

const PAGE_SIZE = 50;
const THREAD_PAGE = 50;
const FETCH_BATCH = 50;

function digits(value) {
  return String(value || "").replace(/\D/g, "");
}

/** The other party of a message: its sender when it came in, its recipient when we sent it. */
function remoteOf(message) {
  return message.direction === "inbound" ? message.from : message.to;
}

/** Whether a message belongs in a thread (the server's rule: ours sent through the API, or
 * received); messages known only from callbacks are in no thread. */
function threaded(message) {
  return message.direction === "inbound" || message.origin === "api";
}

/** http(s) URLs only: anything else (javascript:, data:, …) is shown as text, never a link. */
export function safeHref(value) {
  try {
    const url = new URL(String(value));
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export function conversationHash(number) {
  return `#/conversations/${encodeURIComponent(number)}`;
}

function preview(message) {
  if (!message) return "";
  const text = message.text || "";
  const media = (message.media_urls || []).length;
  let body = text;
  if (!body && media) body = media === 1 ? "(1 attachment)" : `(${media} attachments)`;
  if (!body && message.content_erased_at) body = "(not stored)";
  return `${message.direction === "inbound" ? "" : "You: "}${body || "—"}`;
}

function optOutLabel(state) {
  if (state === true) return "opted out";
  if (state === false) return "subscribed";
  return "opt-out state unknown";
}

export class ConversationsView {
  constructor() {
    this.view = document.getElementById("view-conversations");
    this.listEl = document.getElementById("convo-list");
    this.listError = document.getElementById("convo-error");
    this.emptyEl = document.getElementById("convo-empty");
    this.moreButton = document.getElementById("convo-more");
    this.placeholder = document.getElementById("thread-placeholder");
    this.content = document.getElementById("thread-content");
    this.heading = document.getElementById("thread-heading");
    this.numberEl = document.getElementById("thread-number");
    this.revealButton = document.getElementById("thread-reveal");
    this.optState = document.getElementById("thread-optout-state");
    this.optButton = document.getElementById("thread-optout");
    this.optResult = document.getElementById("thread-optout-result");
    this.threadError = document.getElementById("thread-error");
    this.olderButton = document.getElementById("thread-older");
    this.bubblesEl = document.getElementById("thread-messages");
    this.scroller = document.getElementById("thread-scroll");
    this.form = document.getElementById("reply-form");
    this.replyText = document.getElementById("reply-text");
    this.replyErrors = document.getElementById("reply-errors");
    this.replyButton = document.getElementById("reply-button");
    this.replyResult = document.getElementById("reply-result");

    this.started = false;
    this.shown = false;
    this.loaded = false; // the first page of the list is in: frames apply (before: buffered)
    this.buffer = [];
    this.generation = 0;
    this.items = new Map(); // digits of the number → {data, li}
    this.nextCursor = null;

    this.number = null; // the open thread's number (E.164), or null
    this.thread = null; // {number, our_number, opted_out, next_cursor}
    this.bubbles = new Map(); // message id → {data, li}
    this.threadSeq = 0;
    this.optPending = null; // a number whose opt-out state is to be re-read (recheckOptOut)
    this.optInflight = false;
    this.optAfterLoad = false;
    this.threadLoaded = false;
    this.reveal = false;
    this.unknown = new Set();
    this.inflight = false;
    this.threadBuffer = []; // status frames that came while the thread loaded
    this.lastStatus = new Map(); // message id → its newest status frame (bounded)
    this.idempotency = { key: null, body: null };
    this.sending = false;

    this.moreButton.addEventListener("click", () => this.loadMore());
    this.olderButton.addEventListener("click", () => this.loadOlder());
    this.revealButton.addEventListener("click", () => {
      this.reveal = !this.reveal;
      this.renderHead();
    });
    this.optButton.addEventListener("click", () => this.toggleOptOut());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.reply();
    });
    this.replyText.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter starts a new line (as chat boxes do).
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.reply();
      }
    });
  }

  // --- showing ------------------------------------------------------------------------------

  show(number) {
    this.shown = true;
    if (!this.started) {
      this.started = true;
      this.reload();
    }
    this.view.dataset.thread = number ? "open" : "none";
    if (number !== this.number) this.openThread(number);
    else if (number) document.title = `Conversation ${maskNumber(number)} · plivo-tracker`;
    this.markCurrent();
  }

  hide() {
    this.shown = false;
  }

  /** After a fresh (not resumed) WebSocket subscription: read everything again. */
  refresh() {
    if (!this.started) return;
    this.reload();
    if (this.number) this.loadThread(this.number);
  }

  focusHeading() {
    (this.number ? this.heading : document.getElementById("convo-heading")).focus({ preventScroll: true });
  }

  // --- the list of conversations ------------------------------------------------------------

  query(cursor) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    return `/api/conversations?${params}`;
  }

  async reload() {
    const generation = ++this.generation;
    this.loaded = false;
    this.listEl.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api(this.query(null));
    } catch (err) {
      if (generation !== this.generation) return;
      this.showListError(err);
      this.listEl.removeAttribute("aria-busy");
      this.loaded = true;
      this.flush();
      return;
    }
    if (generation !== this.generation) return;
    this.listError.hidden = true;
    this.items.clear();
    this.listEl.replaceChildren();
    for (const item of page.conversations || []) this.upsertItem(item, "bottom");
    this.nextCursor = page.next_cursor || null;
    this.listEl.removeAttribute("aria-busy");
    this.loaded = true;
    this.flush();
    this.refreshChrome();
  }

  async loadMore() {
    if (!this.nextCursor) return;
    const generation = this.generation;
    this.moreButton.disabled = true;
    try {
      const page = await api(this.query(this.nextCursor));
      if (generation !== this.generation) return;
      for (const item of page.conversations || []) {
        if (!this.items.has(digits(item.number))) this.upsertItem(item, "bottom");
      }
      this.nextCursor = page.next_cursor || null;
    } catch (err) {
      this.showListError(err);
    } finally {
      this.moreButton.disabled = false;
      this.refreshChrome();
    }
  }

  showListError(err) {
    this.listError.textContent =
      err.status === 401 ? "An API key is needed to list conversations." : `Conversations could not be loaded: ${err.message}`;
    this.listError.hidden = false;
  }

  refreshChrome() {
    this.emptyEl.hidden = this.items.size > 0 || !this.listError.hidden;
    this.moreButton.hidden = !this.nextCursor;
  }

  /** Add or update a conversation; `where`: "bottom" (a page, in order) or "sorted" (live). */
  upsertItem(item, where) {
    const key = digits(item.number);
    let entry = this.items.get(key);
    if (entry) {
      const newer = !entry.data.last_message || (item.last_message && item.last_message.id >= entry.data.last_message.id);
      if (newer) entry.data.last_message = item.last_message;
      if (item.opted_out !== undefined) entry.data.opted_out = item.opted_out;
      if (item.our_number) entry.data.our_number = item.our_number;
    } else {
      if (where === "sorted" && !this.placeable(item)) return; // it belongs to a later page
      entry = { data: { ...item }, li: el("li", { class: "convo-item", dataset: { number: item.number } }) };
      this.items.set(key, entry);
    }
    this.renderItem(entry);
    if (where === "bottom" && !entry.li.isConnected) this.listEl.append(entry.li);
    else this.place(entry);
    this.refreshChrome();
  }

  /** Newest last message first: a conversation with a new message moves to the top. */
  place(entry) {
    const id = entry.data.last_message ? entry.data.last_message.id : 0;
    let before = null;
    for (const li of this.listEl.children) {
      if (li === entry.li) continue;
      const other = this.items.get(digits(li.dataset.number));
      if (other && (other.data.last_message ? other.data.last_message.id : 0) < id) {
        before = li;
        break;
      }
    }
    if (entry.li.nextSibling !== before || !entry.li.isConnected) this.listEl.insertBefore(entry.li, before);
  }

  placeable(item) {
    const last = this.listEl.lastElementChild;
    if (!last || !this.nextCursor) return true;
    const other = this.items.get(digits(last.dataset.number));
    return !other || !other.data.last_message || item.last_message.id > other.data.last_message.id;
  }

  renderItem(entry) {
    const { data, li } = entry;
    const m = data.last_message;
    li.dataset.optedOut = data.opted_out === true ? "true" : data.opted_out === false ? "false" : "unknown";
    li.dataset.lastMessageId = m ? String(m.id) : "";
    const link = el(
      "a",
      { href: conversationHash(data.number), class: "convo-link" },
      el(
        "span",
        { class: "convo-top" },
        el("span", { class: "convo-number mono" }, maskNumber(data.number)),
        data.opted_out === true ? el("span", { class: "chip chip-danger convo-optout" }, "opted out") : null,
        m ? el("span", { class: "convo-time muted" }, timeEl(m.created_at)) : null,
      ),
      el("span", { class: "convo-preview truncate" }, preview(m)),
    );
    link.setAttribute("aria-label", `Conversation with ${maskNumber(data.number)}${data.opted_out === true ? ", opted out" : ""}`);
    if (this.number && digits(this.number) === digits(data.number)) link.setAttribute("aria-current", "true");
    li.replaceChildren(link);
  }

  markCurrent() {
    for (const { data, li } of this.items.values()) {
      const link = li.firstElementChild;
      if (!link) continue;
      if (this.number && digits(this.number) === digits(data.number)) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    }
  }

  // --- one thread ---------------------------------------------------------------------------

  openThread(number) {
    this.number = number;
    this.thread = null;
    this.optAfterLoad = false;
    this.bubbles.clear();
    this.bubblesEl.replaceChildren();
    this.threadLoaded = false;
    this.threadBuffer = [];
    this.reveal = false;
    this.optResult.textContent = "";
    this.replyResult.textContent = "";
    this.replyErrors.replaceChildren();
    this.replyText.value = "";
    this.idempotency = { key: null, body: null };
    this.placeholder.hidden = Boolean(number);
    this.content.hidden = !number;
    if (!number) return;
    document.title = `Conversation ${maskNumber(number)} · plivo-tracker`;
    this.renderHead();
    this.loadThread(number);
  }

  async loadThread(number) {
    const seq = ++this.threadSeq;
    this.bubblesEl.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api(`/api/conversations/${encodeURIComponent(number)}?limit=${THREAD_PAGE}`);
    } catch (err) {
      if (seq !== this.threadSeq || number !== this.number) return;
      this.bubblesEl.removeAttribute("aria-busy");
      this.threadError.textContent =
        err.status === 422
          ? `Not a phone number this server can show: ${err.message}`
          : err.status === 401
            ? "An API key is needed to see this conversation."
            : `The conversation could not be loaded: ${err.message}`;
      this.threadError.hidden = false;
      return;
    }
    if (seq !== this.threadSeq || number !== this.number) return;
    this.threadError.hidden = true;
    this.thread = {
      number: page.number,
      our_number: page.our_number || null,
      opted_out: page.opted_out,
      next_cursor: page.next_cursor || null,
    };
    // Messages that arrived live while the page loaded stay (they are newer than the page).
    const live = [...this.bubbles.values()].map((b) => b.data);
    this.bubbles.clear();
    this.bubblesEl.replaceChildren();
    for (const message of page.messages || []) this.upsertBubble(message);
    for (const message of live) this.upsertBubble(message);
    this.bubblesEl.removeAttribute("aria-busy");
    this.threadLoaded = true;
    // Frames are in commit order: replaying those that came meanwhile ends where the stream is.
    const frames = this.threadBuffer;
    this.threadBuffer = [];
    for (const frame of frames) this.applyStatus(frame);
    this.olderButton.hidden = !this.thread.next_cursor;
    this.renderHead();
    this.scrollToEnd();
    if (this.optAfterLoad) {
      this.optAfterLoad = false;
      this.recheckOptOut(number);
    }
  }

  async loadOlder() {
    const thread = this.thread;
    if (!thread || !thread.next_cursor) return;
    const number = this.number;
    this.olderButton.disabled = true;
    const height = this.scroller.scrollHeight;
    try {
      const page = await api(
        `/api/conversations/${encodeURIComponent(number)}?limit=${THREAD_PAGE}&cursor=${encodeURIComponent(thread.next_cursor)}`,
      );
      if (number !== this.number) return;
      for (const message of page.messages || []) this.upsertBubble(message);
      thread.next_cursor = page.next_cursor || null;
      // Keep the reader's place: the older messages appear above what they were reading.
      this.scroller.scrollTop += this.scroller.scrollHeight - height;
    } catch (err) {
      this.threadError.textContent = `Older messages could not be loaded: ${err.message}`;
      this.threadError.hidden = false;
    } finally {
      this.olderButton.disabled = false;
      this.olderButton.hidden = !thread.next_cursor;
    }
  }

  renderHead() {
    if (!this.number) return;
    this.numberEl.textContent = this.reveal ? this.number : maskNumber(this.number);
    this.revealButton.textContent = this.reveal ? "Hide number" : "Show number";
    this.revealButton.setAttribute("aria-pressed", String(this.reveal));
    const state = this.thread ? this.thread.opted_out : undefined;
    this.optState.hidden = state === undefined;
    this.optState.textContent = optOutLabel(state);
    this.optState.className = `chip ${state === true ? "chip-danger" : state === false ? "chip-ok" : ""}`;
    this.optState.dataset.optedOut = state === true ? "true" : state === false ? "false" : "unknown";
    this.optButton.hidden = state === undefined;
    this.optButton.textContent = state === true ? "Opt back in" : "Opt out";
    this.optButton.dataset.action = state === true ? "opt_in" : "opt_out";
  }

  async toggleOptOut() {
    const number = this.number;
    const thread = this.thread;
    if (!number || !thread || this.optButton.disabled) return;
    const optIn = thread.opted_out === true;
    if (!optIn && !window.confirm(`Opt ${maskNumber(number)} out? Nothing more is sent to this number until it opts back in.`)) return;
    this.optButton.disabled = true;
    this.optResult.className = "send-result";
    this.optResult.textContent = optIn ? "Opting back in…" : "Opting out…";
    const path = `/api/opt-outs/${encodeURIComponent(number)}`;
    try {
      // A JSON body even here: every write to /api needs Content-Type: application/json (a
      // cross-site form cannot send one), DELETE included.
      if (optIn) await api(path, { method: "DELETE", body: {} });
      else await api(path, { method: "PUT", body: { note: "dashboard" } });
    } catch (err) {
      if (number !== this.number) return;
      this.optResult.className = "send-result send-result-error";
      this.optResult.textContent = `Not changed: ${err.message}`;
      return;
    } finally {
      this.optButton.disabled = false;
    }
    if (number !== this.number) return;
    this.optResult.className = "send-result send-result-ok";
    this.optResult.textContent = optIn ? "Opted back in." : "Opted out.";
    this.setOptedOut(!optIn);
  }

  /** The open thread's opt-out state, in its head and its entry of the list. */
  setOptedOut(optedOut) {
    if (!this.thread) return;
    this.thread.opted_out = optedOut;
    this.renderHead();
    const entry = this.items.get(digits(this.thread.number || this.number));
    if (entry) {
      entry.data.opted_out = optedOut;
      this.renderItem(entry);
    }
  }

  /**
   * Re-read the open thread's opt-out state (GET /api/conversations/{number}). A received STOP
   * or START changes it in the commit that stores the message, with no frame of its own: the
   * message's frame is the sign to look. One request at a time; a burst is read once.
   */
  recheckOptOut(number) {
    this.optPending = number;
    if (this.optInflight) return;
    this.optInflight = true;
    (async () => {
      while (this.optPending) {
        const pending = this.optPending;
        this.optPending = null;
        try {
          const page = await api(`/api/conversations/${encodeURIComponent(pending)}?limit=1`);
          if (this.number && digits(pending) === digits(this.number)) {
            // Still loading (its answer may predate the change): again once it is in.
            if (!this.thread) this.optAfterLoad = true;
            else if (page.opted_out !== this.thread.opted_out) this.setOptedOut(page.opted_out);
          }
        } catch {
          // Unreachable: the next received message, or a reload, shows the truth.
        }
      }
      this.optInflight = false;
    })();
  }

  upsertBubble(message) {
    let bubble = this.bubbles.get(message.id);
    if (bubble) {
      Object.assign(bubble.data, message);
      this.renderBubble(bubble);
      return bubble;
    }
    bubble = { data: { ...message }, li: el("li", { dataset: { messageId: String(message.id) } }) };
    this.bubbles.set(message.id, bubble);
    this.renderBubble(bubble);
    // Oldest first by id, whatever order they arrive in.
    let before = null;
    for (const li of this.bubblesEl.children) {
      if (Number(li.dataset.messageId) > message.id) {
        before = li;
        break;
      }
    }
    this.bubblesEl.insertBefore(bubble.li, before);
    return bubble;
  }

  renderBubble(bubble) {
    const m = bubble.data;
    const inbound = m.direction === "inbound";
    const { li } = bubble;
    li.className = `bubble ${inbound ? "bubble-in" : "bubble-out"}`;
    li.dataset.direction = inbound ? "inbound" : "outbound";
    li.dataset.status = m.status || "";
    const parts = [];
    if (m.text) parts.push(el("p", { class: "bubble-text" }, m.text));
    else if (m.content_erased_at) parts.push(el("p", { class: "bubble-text muted" }, "(text not stored)"));
    const urls = Array.isArray(m.media_urls) ? m.media_urls : [];
    if (urls.length) {
      parts.push(
        el(
          "ul",
          { class: "bubble-media", "aria-label": "Attachments" },
          urls.map((url) => {
            const href = safeHref(url);
            // Links only: the server never fetches media, and neither does this page.
            return el(
              "li",
              {},
              href
                ? el("a", { href, target: "_blank", rel: "noopener noreferrer", class: "break" }, String(url))
                : el("span", { class: "break muted", title: "not an http(s) link" }, String(url)),
            );
          }),
        ),
      );
    }
    if (!parts.length) parts.push(el("p", { class: "bubble-text muted" }, "(no text)"));
    const meta = [timeEl(m.created_at)];
    if (!inbound) {
      meta.push(badge(m.status));
      if (m.error_code) meta.push(el("span", { class: "error-code", title: m.error_meaning || null }, `error ${m.error_code}`));
    }
    const link = el("a", { href: `#/messages/${m.id}`, class: "mono bubble-id" }, `#${m.id}`);
    link.setAttribute("aria-label", `Message ${m.id}`);
    meta.push(link);
    li.replaceChildren(
      el("span", { class: "visually-hidden" }, inbound ? "They wrote: " : "You wrote: "),
      ...parts,
      el("p", { class: "bubble-meta" }, ...meta),
    );
  }

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // --- replying -----------------------------------------------------------------------------

  async reply() {
    if (this.sending || !this.number) return;
    const text = this.replyText.value;
    if (!text.trim()) {
      this.replyErrors.replaceChildren(el("li", {}, "Type a message first."));
      this.replyText.setAttribute("aria-invalid", "true");
      this.replyText.focus();
      return;
    }
    const number = this.number;
    const body = { to: [number], type: "sms", text };
    if (this.thread && this.thread.our_number) body.from = this.thread.our_number;
    const serialized = JSON.stringify(body);
    // One key per reply; the very same reply sent again (after a network error) reuses it.
    if (this.idempotency.body !== serialized) this.idempotency = { key: randomKey(), body: serialized };
    this.sending = true;
    this.replyButton.disabled = true;
    this.replyResult.className = "send-result";
    this.replyResult.textContent = "Sending…";
    this.replyErrors.replaceChildren();
    this.replyText.removeAttribute("aria-invalid");
    let answer;
    try {
      answer = await api("/api/messages", {
        method: "POST",
        body,
        headers: { "Idempotency-Key": this.idempotency.key },
      });
    } catch (err) {
      if (number === this.number) this.showReplyError(err);
      return;
    } finally {
      this.sending = false;
      this.replyButton.disabled = false;
    }
    this.idempotency = { key: null, body: null };
    if (number !== this.number) return;
    const now = new Date().toISOString();
    for (const created of (answer && answer.messages) || []) {
      if (this.bubbles.has(created.id)) continue; // its frame came first and placed it
      const seen = this.lastStatus.get(created.id);
      this.addMessage({
        id: created.id,
        direction: "outbound",
        origin: "api",
        to: created.to || number,
        from: body.from || null,
        status: seen ? seen.status : created.status || "accepted",
        error_code: seen ? seen.error_code ?? null : null,
        text,
        type: "sms",
        media_urls: [],
        created_at: now,
        updated_at: now,
      });
    }
    this.replyText.value = "";
    this.replyResult.className = "send-result send-result-ok";
    this.replyResult.textContent = "Sent to the outbox.";
  }

  showReplyError(err) {
    this.replyResult.className = "send-result send-result-error";
    if (err.status === 422 && err.problems.length) {
      this.replyResult.textContent = "Not sent: see the reason above.";
      this.replyErrors.replaceChildren(
        ...err.problems.map((p) => {
          const li = el("li", { dataset: { reason: p.reason || "" } });
          if (p.value) li.append(el("strong", { class: "mono" }, maskNumber(p.value)), ": ");
          li.append(p.message || p.reason || "invalid");
          return li;
        }),
      );
      this.replyText.setAttribute("aria-invalid", "true");
      this.replyText.focus();
    } else if (err.status === 0) {
      this.replyResult.textContent = "Not sent: the server cannot be reached. Sending again is safe.";
    } else {
      this.replyResult.textContent = `Not sent: ${err.message}`;
    }
  }

  // --- live ---------------------------------------------------------------------------------

  /** A message of a thread, from a frame, a fetch or a reply: into its thread and the list. */
  addMessage(message) {
    if (!threaded(message)) return;
    const number = remoteOf(message);
    if (!number) return;
    const entry = this.items.get(digits(number));
    const ours = message.direction === "inbound" ? message.to : message.from;
    this.upsertItem(
      { number: entry ? entry.data.number : number, our_number: ours || null, last_message: message, opted_out: entry ? entry.data.opted_out : undefined },
      "sorted",
    );
    if (this.number && digits(this.number) === digits(number)) {
      const follow = this.nearEnd();
      this.upsertBubble(message);
      if (follow) this.scrollToEnd();
    }
  }

  /** A frame of /ws (status or message), applied once the first page is in. */
  frame(frame) {
    if (!this.started) return;
    if (!this.loaded) {
      this.buffer.push(frame);
      return;
    }
    if (frame.type === "message") {
      this.addMessage({
        id: frame.message_id,
        message_uuid: frame.message_uuid ?? null,
        direction: frame.direction || "inbound",
        origin: "inbound",
        from: frame.from,
        to: frame.to,
        text: frame.text ?? null,
        media_urls: Array.isArray(frame.media_urls) ? frame.media_urls : [],
        type: Array.isArray(frame.media_urls) && frame.media_urls.length ? "mms" : "sms",
        status: frame.status || "received",
        created_at: frame.at,
        updated_at: frame.at,
      });
      if ((frame.direction || "inbound") === "inbound" && this.number && digits(frame.from) === digits(this.number)) {
        this.recheckOptOut(this.number);
      }
      return;
    }
    if (frame.type !== "status") return;
    this.lastStatus.set(frame.message_id, frame);
    if (this.lastStatus.size > 500) this.lastStatus.delete(this.lastStatus.keys().next().value);
    if (this.number && !this.threadLoaded) this.threadBuffer.push(frame);
    const bubble = this.applyStatus(frame);
    for (const entry of this.items.values()) {
      const last = entry.data.last_message;
      if (last && last.id === frame.message_id) {
        last.status = frame.status;
        this.renderItem(entry);
      }
    }
    // A message's first status is its creation: a send from elsewhere (the form, the API, the
    // CLI), or a received message streamed as a status change. Fetch it to place it.
    if (frame.previous_status == null && !bubble && typeof frame.message_id === "number") {
      this.unknown.add(frame.message_id);
      this.pump();
    }
  }

  /** A status frame onto its bubble, if shown; returns the bubble. */
  applyStatus(frame) {
    const bubble = this.bubbles.get(frame.message_id);
    if (bubble) {
      Object.assign(bubble.data, {
        status: frame.status,
        error_code: frame.error_code ?? null,
        updated_at: frame.at || bubble.data.updated_at,
      });
      if (frame.message_uuid) bubble.data.message_uuid = frame.message_uuid;
      this.renderBubble(bubble);
    }
    return bubble;
  }

  flush() {
    const frames = this.buffer;
    this.buffer = [];
    for (const frame of frames) this.frame(frame);
  }

  pump() {
    if (this.inflight || this.unknown.size === 0) return;
    const ids = [...this.unknown].slice(0, FETCH_BATCH);
    for (const id of ids) this.unknown.delete(id);
    this.inflight = true;
    api(`/api/messages?ids=${ids.join(",")}&limit=${ids.length}`)
      .then((page) => {
        for (const message of page.messages || []) {
          if (!threaded(message)) continue;
          if (!Array.isArray(message.media_urls)) message.media_urls = [];
          this.addMessage(message);
        }
      })
      .catch(() => {
        // Unreachable: the next reload shows the truth.
      })
      .finally(() => {
        this.inflight = false;
        this.pump();
      });
  }
}
