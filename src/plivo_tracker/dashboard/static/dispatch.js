// The "sending is paused" banner: GET /api/dispatch every 10 s and whenever the live connection
// (re)connects; "Resume sending" posts /api/dispatch/resume. Shown above every view.
import { ApiError, api, getApiKey } from "./api.js";
import { el, fullTime, parseTime, timeEl } from "./format.js";

const POLL_MS = 10_000;

const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

/** "15:04:12" as a <time>, the full date and time as its title. */
function clockTime(value) {
  const date = parseTime(value);
  if (!date) return null;
  return el("time", { datetime: date.toISOString(), title: fullTime(value) }, clockFormat.format(date));
}

export class DispatchBanner {
  constructor() {
    this.root = document.getElementById("dispatch");
    this.state = null; // the last answer of GET /api/dispatch
    this.shownKey = null; // what the banner shows now, to leave an unchanged banner alone
    this.seq = 0;
    this.timer = 0;
    this.busy = false;
    this.error = "";
    this.refusedKey = undefined; // the API key a 401 answered: no polling with it again
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => {
      if (!document.hidden) this.refresh();
    }, POLL_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  }

  /** Read the state now; `force` also after a 401 (the connection is authorised again). */
  async refresh({ force = false } = {}) {
    if (!force && this.refusedKey !== undefined && this.refusedKey === getApiKey()) return;
    const seq = ++this.seq;
    let state;
    try {
      state = await api("/api/dispatch");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) this.refusedKey = getApiKey();
      return; // keep what is shown: the connection indicator tells about an unreachable server
    }
    if (seq !== this.seq) return; // a newer answer is on its way
    this.refusedKey = undefined;
    this.apply(state);
  }

  apply(state) {
    this.state = state && typeof state === "object" ? state : { paused: false };
    const paused = Boolean(this.state.paused);
    this.root.dataset.dispatch = paused ? "paused" : "running";
    if (!paused) this.error = "";
    this.render();
  }

  async resume() {
    if (this.busy) return;
    const hadFocus = this.root.contains(document.activeElement);
    this.busy = true;
    this.error = "";
    this.render();
    this.seq += 1; // an older poll's answer must not bring the banner back
    let state = null;
    try {
      state = await api("/api/dispatch/resume", { method: "POST", body: {} });
    } catch (err) {
      this.error = `Sending could not be resumed: ${err.message}`;
    }
    this.busy = false;
    if (state) {
      this.apply(state);
      if (!state.paused) this.announce("Sending resumed.");
    } else {
      this.render();
    }
    // The button is gone with the banner: give focus back to the page, not to <body>.
    if (hadFocus && !this.root.contains(document.activeElement)) {
      document.getElementById("main").focus({ preventScroll: true });
    }
    this.refresh();
  }

  announce(text) {
    const note = this.root.querySelector(".dispatch-note");
    if (note) note.textContent = text;
  }

  render() {
    const s = this.state || { paused: false };
    const key = JSON.stringify([s.paused, s.paused_by, s.reason, s.since, s.next_probe_at, s.probes, this.busy, this.error]);
    if (key === this.shownKey) return; // an unchanged banner is not re-announced
    this.shownKey = key;
    const note = el("span", { class: "visually-hidden dispatch-note" });
    if (!s.paused) {
      const old = this.root.querySelector(".dispatch-note");
      if (old && old.textContent) note.textContent = old.textContent;
      this.root.replaceChildren(note);
      return;
    }
    const auto = s.paused_by === "auto";
    const who = auto
      ? el("p", { class: "dispatch-who", dataset: { pausedBy: "auto" } },
          "Plivo refused the account or address — sending is paused and retried automatically; next check at ",
          clockTime(s.next_probe_at) || "the next probe",
          s.probes ? ` (${s.probes} check${s.probes === 1 ? "" : "s"} so far)` : "",
          ".",
        )
      : el("p", { class: "dispatch-who", dataset: { pausedBy: s.paused_by || "operator" } }, "Sending paused by an operator.");
    const since = parseTime(s.since)
      ? el("p", { class: "dispatch-since" }, "Paused since ", timeEl(s.since), ". New messages wait in the outbox until sending resumes.")
      : null;
    const button = el(
      "button",
      { type: "button", class: "button dispatch-resume", id: "dispatch-resume", "aria-disabled": this.busy ? "true" : null },
      this.busy ? "Resuming…" : "Resume sending",
    );
    button.addEventListener("click", () => this.resume());
    const banner = el("section", { id: "dispatch-banner", class: "dispatch-banner", "aria-labelledby": "dispatch-title" },
      el("span", { class: "dispatch-icon", "aria-hidden": "true" }, "!"),
      el("div", { class: "dispatch-text" },
        el("h2", { id: "dispatch-title", class: "dispatch-title" }, "Sending is paused"),
        who,
        s.reason ? el("p", { class: "dispatch-reason" }, el("span", { class: "dispatch-label" }, "Reason: "), el("span", { id: "dispatch-reason" }, s.reason)) : null,
        since,
        this.error ? el("p", { class: "dispatch-error", role: "alert" }, this.error) : null,
      ),
      el("div", { class: "dispatch-actions" }, button),
    );
    const focused = document.activeElement && document.activeElement.id === "dispatch-resume";
    this.root.replaceChildren(banner, note);
    if (focused) button.focus();
  }
}
