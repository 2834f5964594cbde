// The live table: GET /api/messages (filters, "load more"), then kept current by /ws frames.
import { api } from "./api.js";
import { STATUSES, badge, el, maskNumber, timeEl } from "./format.js";

const PAGE_SIZE = 50;
const FETCH_BATCH = 50; // unknown messages fetched in one list query
const RELOAD_OVER = 25; // more unknown messages than this waiting: reload the first page instead
const MAX_ROWS = 1000; // a tab left open for days keeps at most this many rows
const MAX_UUIDS = 2000;

function digits(value) {
  return String(value || "").replace(/\D/g, "");
}

/** The number the Number column shows: the recipient of ours, the sender of a received one. */
function otherParty(message) {
  return message.direction === "inbound" ? message.from : message.to;
}

export class MessageTable {
  constructor() {
    this.body = document.getElementById("messages-body");
    this.table = document.getElementById("messages");
    this.empty = document.getElementById("messages-empty");
    this.error = document.getElementById("list-error");
    this.countEl = document.getElementById("messages-count");
    this.moreButton = document.getElementById("load-more");
    this.filterForm = document.getElementById("filters");
    this.statusSelect = document.getElementById("filter-status");
    this.numberInput = document.getElementById("filter-number");
    this.textInput = document.getElementById("filter-text");

    this.rows = new Map(); // id → {data, tr}
    this.nextCursor = null;
    this.loaded = false; // first page in: frames are applied (before: buffered)
    this.buffer = [];
    this.generation = 0;
    this.unknown = new Set(); // ids to fetch
    this.inflight = new Set();
    // MessageUUID → the local id the newest frame gave it. A callback faster than the send's
    // answer makes a placeholder message that the sent one later adopts (and the placeholder id
    // disappears): a frame naming another id for a known UUID retires the placeholder's row.
    this.uuidOwner = new Map();
    this.filters = { status: "", number: "", q: "" };
    this.filterTimer = 0;
    this.trimmed = false;

    for (const status of STATUSES) {
      this.statusSelect.append(el("option", { value: status }, status));
    }
    this.filterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.filtersChanged(0);
    });
    this.statusSelect.addEventListener("change", () => this.filtersChanged(0));
    this.numberInput.addEventListener("input", () => this.filtersChanged(300));
    this.textInput.addEventListener("input", () => this.filtersChanged(300));
    this.moreButton.addEventListener("click", () => this.loadMore());
    this.body.addEventListener("click", (event) => {
      // The whole row opens the detail (the id cell holds the real, focusable link).
      if (event.target.closest("a, button")) return;
      const tr = event.target.closest("tr[data-message-id]");
      if (tr && !window.getSelection().toString()) location.hash = `#/messages/${tr.dataset.messageId}`;
    });
  }

  filtersChanged(delay) {
    clearTimeout(this.filterTimer);
    this.filterTimer = setTimeout(() => {
      const next = {
        status: this.statusSelect.value,
        number: this.numberInput.value.trim(),
        q: this.textInput.value.trim(),
      };
      if (JSON.stringify(next) === JSON.stringify(this.filters)) return;
      this.filters = next;
      this.reload();
    }, delay);
  }

  query(cursor) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const { status, number, q } = this.filters;
    if (status) params.set("status", status);
    // "+1 (415) 555-0100" → +14155550100; the other party, as the Number column shows it.
    if (number && digits(number)) params.set("number", `+${digits(number)}`);
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    return `/api/messages?${params}`;
  }

  /** (Re)load the first page; frames that arrive meanwhile are applied afterwards. */
  async reload() {
    const generation = ++this.generation;
    this.loaded = false;
    this.table.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api(this.query(null));
    } catch (err) {
      if (generation !== this.generation) return;
      this.showError(err);
      this.table.removeAttribute("aria-busy");
      this.loaded = true; // frames still update what is shown
      this.flushBuffer();
      return;
    }
    if (generation !== this.generation) return;
    this.hideError();
    this.rows.clear();
    this.trimmed = false;
    this.body.replaceChildren();
    for (const message of page.messages || []) this.upsert(message, "bottom");
    this.nextCursor = page.next_cursor || null;
    this.table.removeAttribute("aria-busy");
    this.loaded = true;
    this.flushBuffer();
    this.refreshChrome();
  }

  async loadMore() {
    if (!this.nextCursor) return;
    const generation = this.generation;
    this.moreButton.disabled = true;
    try {
      const page = await api(this.query(this.nextCursor));
      if (generation !== this.generation) return;
      for (const message of page.messages || []) {
        if (!this.rows.has(message.id)) this.upsert(message, "bottom");
      }
      this.nextCursor = page.next_cursor || null;
      this.hideError();
    } catch (err) {
      this.showError(err);
    } finally {
      this.moreButton.disabled = false;
      this.refreshChrome();
    }
  }

  showError(err) {
    this.error.textContent =
      err.status === 401
        ? "An API key is needed to list messages."
        : `Messages could not be loaded: ${err.message}`;
    this.error.hidden = false;
  }

  hideError() {
    this.error.hidden = true;
    this.error.textContent = "";
  }

  matches(message) {
    const { status, number, q } = this.filters;
    if (status && message.status !== status) return false;
    if (digits(number) && digits(otherParty(message)) !== digits(number)) return false;
    if (q) {
      const needle = q.toLowerCase();
      const hay = `${message.text || ""}\n${message.message_uuid || ""}`.toLowerCase();
      if (!hay.includes(needle)) return false;
    }
    return true;
  }

  /** Messages just created by the send form (POST answer), before any frame about them. */
  addCreated(created, request) {
    const now = new Date().toISOString();
    for (const item of created) {
      if (this.rows.has(item.id)) continue;
      const message = {
        id: item.id,
        to: item.to,
        status: item.status,
        type: request.type,
        text: request.text,
        message_uuid: null,
        created_at: now,
        updated_at: now,
      };
      if (this.matches(message)) this.upsert(message, "sorted");
    }
    this.refreshChrome();
  }

  /** A status frame from /ws. */
  applyFrame(frame) {
    if (!this.loaded) {
      this.buffer.push(frame);
      return;
    }
    if (frame.merged_from != null && frame.merged_from !== frame.message_id) {
      // A send adopted the placeholder a fast callback had made: that id no longer exists.
      const gone = this.rows.get(frame.merged_from);
      if (gone) {
        gone.tr.remove();
        this.rows.delete(frame.merged_from);
        this.refreshChrome();
      }
    }
    if (frame.message_uuid) {
      const before = this.uuidOwner.get(frame.message_uuid);
      this.uuidOwner.set(frame.message_uuid, frame.message_id);
      if (this.uuidOwner.size > MAX_UUIDS) this.uuidOwner.delete(this.uuidOwner.keys().next().value);
      if (before !== undefined && before !== frame.message_id) this.retire(before, frame.message_uuid);
    }
    const row = this.rows.get(frame.message_id);
    if (!row) {
      this.fetchUnknown(frame.message_id);
      return;
    }
    const data = row.data;
    const errorChanged = (frame.error_code || null) !== (data.error_code || null);
    data.status = frame.status;
    data.error_code = frame.error_code ?? null;
    if (frame.message_uuid) data.message_uuid = frame.message_uuid;
    if (frame.at) data.updated_at = frame.at;
    if (errorChanged) data.error_meaning = null;
    if (!this.matches(data)) {
      row.tr.remove();
      this.rows.delete(data.id);
      this.refreshChrome();
      return;
    }
    this.render(row, true);
    if (errorChanged && data.error_code) this.fetchUnknown(data.id, true); // for its meaning
  }

  /** Drop the row of a placeholder message that another message adopted. */
  retire(id, uuid) {
    const row = this.rows.get(id);
    if (!row || row.data.message_uuid !== uuid) return;
    row.tr.remove();
    this.rows.delete(id);
    this.refreshChrome();
  }

  adopted(message) {
    const owner = message.message_uuid ? this.uuidOwner.get(message.message_uuid) : undefined;
    return owner !== undefined && owner !== message.id;
  }

  flushBuffer() {
    const frames = this.buffer;
    this.buffer = [];
    for (const frame of frames) this.applyFrame(frame);
  }

  fetchUnknown(id, refresh = false) {
    if (typeof id !== "number" || this.inflight.has(id)) return;
    if (!refresh && this.rows.has(id)) return;
    this.unknown.add(id);
    if (this.unknown.size > RELOAD_OVER) {
      // A burst (a big send, or a long disconnection): one list query beats many fetches.
      this.unknown.clear();
      this.reload();
      return;
    }
    this.pump();
  }

  pump() {
    // One list query for every message this table lacks (not one GET each): ids that are gone
    // by then (a placeholder merged into the message we sent) are simply absent, not a 404.
    if (this.inflight.size > 0 || this.unknown.size === 0) return;
    const ids = [...this.unknown].slice(0, FETCH_BATCH);
    for (const id of ids) {
      this.unknown.delete(id);
      this.inflight.add(id);
    }
    const generation = this.generation;
    api(`/api/messages?ids=${ids.join(",")}&limit=${ids.length}`)
      .then((page) => {
        if (generation !== this.generation) return;
        for (const message of page.messages) {
          if (!this.matches(message) || this.adopted(message)) continue;
          const existing = this.rows.get(message.id);
          if (existing) {
            Object.assign(existing.data, message);
            this.render(existing, false);
          } else {
            this.upsert(message, "sorted");
          }
        }
        this.refreshChrome();
      })
      .catch(() => {
        // Unreachable: the next reload shows the truth.
      })
      .finally(() => {
        for (const id of ids) this.inflight.delete(id);
        this.pump();
      });
  }

  upsert(message, where) {
    let row = this.rows.get(message.id);
    if (row) {
      Object.assign(row.data, message);
      this.render(row, false);
      return row;
    }
    const data = { ...message };
    delete data.events;
    delete data.parts;
    if (where === "sorted" && !this.placeable(data.id)) return null; // it belongs to a later page
    row = { data, tr: this.createRow(data) };
    this.rows.set(data.id, row);
    if (where === "sorted") {
      // Newest first by id, whatever order changes arrive in: a message of an older send that
      // just started to match the filters goes where the list query would have put it.
      this.body.insertBefore(row.tr, this.firstOlderThan(data.id));
      row.tr.classList.add("row-new");
      this.trim();
    } else {
      this.body.append(row.tr);
    }
    this.render(row, false);
    return row;
  }

  /** The first row (in table order) with a smaller id than `id`, or null for "at the end". */
  firstOlderThan(id) {
    for (const tr of this.body.children) {
      if (Number(tr.dataset.messageId) < id) return tr;
    }
    return null;
  }

  /**
   * Whether a message not yet shown can be placed now. Older than every row while more pages
   * wait behind "Load more" (or after trimming), it would sit above rows of those pages: it
   * comes with its own page instead.
   */
  placeable(id) {
    const last = this.body.lastElementChild;
    if (!last || id > Number(last.dataset.messageId)) return true;
    return !this.nextCursor && !this.trimmed;
  }

  trim() {
    while (this.rows.size > MAX_ROWS) {
      const last = this.body.lastElementChild;
      if (!last) break;
      this.rows.delete(Number(last.dataset.messageId));
      last.remove();
      this.nextCursor = null; // the page boundary is gone: older messages need a new query
      this.trimmed = true;
    }
  }

  createRow(data) {
    const tr = el("tr", { dataset: { messageId: String(data.id) } });
    const link = el("a", { href: `#/messages/${data.id}`, class: "mono" }, `#${data.id}`);
    link.setAttribute("aria-label", `Message ${data.id}`);
    tr.append(
      el("td", { class: "cell-id", dataset: { label: "Message" } }, link),
      el("td", { class: "cell-to mono", dataset: { label: "Number" } }),
      el("td", { class: "cell-status", dataset: { label: "Status" } }),
      el("td", { class: "cell-type", dataset: { label: "Type" } }),
      el("td", { class: "cell-text", dataset: { label: "Text" } }),
      el("td", { class: "cell-created", dataset: { label: "Created" } }),
      el("td", { class: "cell-updated", dataset: { label: "Last change" } }),
    );
    return tr;
  }

  render(row, flash) {
    const { data, tr } = row;
    const [, toCell, statusCell, typeCell, textCell, createdCell, updatedCell] = tr.children;
    tr.dataset.status = data.status;
    // Ours are sent to a number; a received message names its sender (our number is its `to`).
    const inbound = data.direction === "inbound";
    tr.dataset.direction = inbound ? "inbound" : "outbound";
    toCell.replaceChildren(
      ...(inbound ? [el("span", { class: "direction direction-inbound" }, "from ")] : []),
      maskNumber(otherParty(data)),
    );
    const status = [badge(data.status)];
    if (data.error_code) {
      status.push(
        el(
          "span",
          { class: "error-code", title: data.error_meaning || null },
          `error ${data.error_code}`,
          data.error_meaning ? el("span", { class: "visually-hidden" }, `: ${data.error_meaning}`) : null,
        ),
      );
    }
    statusCell.replaceChildren(...status);
    typeCell.textContent = (data.type || "—").toUpperCase();
    const text = data.text || "";
    // STORE_MESSAGE_TEXT=false: the text was erased once sent, say so rather than "—".
    const missing = data.content_erased_at ? el("span", { class: "muted" }, "(not stored)") : "—";
    textCell.replaceChildren(el("span", { class: "truncate", title: text || null }, text || missing));
    createdCell.replaceChildren(timeEl(data.created_at));
    updatedCell.replaceChildren(timeEl(data.updated_at || data.created_at));
    if (flash) {
      tr.classList.remove("row-flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("row-flash");
    }
  }

  refreshChrome() {
    const n = this.rows.size;
    this.empty.hidden = n > 0 || !this.error.hidden;
    const filtered = this.filters.status || this.filters.number || this.filters.q;
    this.empty.textContent = filtered
      ? "No messages match these filters."
      : "No messages yet. Send one with the form.";
    this.countEl.textContent = n
      ? `${n} message${n === 1 ? "" : "s"} shown${this.trimmed ? " (the newest; filter to see older ones)" : ""}`
      : "";
    this.moreButton.hidden = !this.nextCursor;
  }
}
