// plivo-tracker dashboard: hash routes (#/, #/messages/<id>, #/conversations[/<number>],
// #/stats), the live connection and
// the API key prompt. Plain ES modules, no build step; every server string goes through
// textContent.
import { getApiKey, onUnauthorized, setApiKey } from "./api.js";
import { DetailView } from "./detail.js";
import { DispatchBanner } from "./dispatch.js";
import { ConversationsView } from "./conversations.js";
import { refreshRelativeTimes } from "./format.js";
import { LiveStream } from "./live.js";
import { MessageTable } from "./messages.js";
import { SendForm } from "./send.js";
import { StatsView } from "./stats.js";

let listStarted = false;
function startList() {
  if (listStarted) return;
  listStarted = true;
  table.reload();
}

const STATE_LABELS = { live: "live", reconnecting: "reconnecting…", offline: "offline" };

const table = new MessageTable();
const detail = new DetailView();
const stats = new StatsView();
const dispatch = new DispatchBanner();
const conversations = new ConversationsView();
new SendForm({ onCreated: (created, request) => table.addCreated(created, request) });

// --- connection indicator -------------------------------------------------------------------
const indicator = document.getElementById("connection");
const reconnectButton = document.getElementById("reconnect-button");

function showConnection(state, detailText) {
  indicator.dataset.connectionState = state;
  let label = STATE_LABELS[state] || state;
  if (state === "reconnecting" && detailText === "connecting…") label = "connecting…";
  indicator.querySelector(".connection-label").textContent = label;
  indicator.querySelector(".connection-detail").textContent = detailText ? `: ${detailText}` : "";
  indicator.title = detailText ? `${label}: ${detailText}` : `${label}: changes appear as they happen`;
  reconnectButton.hidden = state !== "offline" || live.needsKey;
}

const live = new LiveStream({
  getKey: getApiKey,
  onState: showConnection,
  onFrame: (frame) => {
    if (frame.type === "status") {
      table.applyFrame(frame);
      detail.frame(frame);
    } else if (frame.type === "message") {
      // A received message: the table lists it like any new message (fetched by id).
      table.applyFrame({ ...frame, type: "status", previous_status: null, error_code: null });
    }
    conversations.frame(frame);
  },
  onReady: (fresh) => {
    // (Re)connected: whether sending is paused may have changed meanwhile.
    dispatch.refresh({ force: true });
    // A subscription without `since` starts "now": the list must be read after it to miss
    // nothing. (A resumption with `since` replays what was missed instead.)
    if (!fresh) return;
    if (listStarted) table.reload();
    else startList();
    conversations.refresh();
  },
  onUnauthorized: () => askForKey(),
});
reconnectButton.addEventListener("click", () => live.reconnectNow());

// --- API key ------------------------------------------------------------------------------------
const keyDialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyButton = document.getElementById("key-button");

function askForKey() {
  keyButton.hidden = false;
  if (keyDialog.open) return;
  keyInput.value = getApiKey() || "";
  keyDialog.showModal();
}

onUnauthorized(askForKey);
keyButton.hidden = !getApiKey();
keyButton.addEventListener("click", askForKey);
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    keyInput.setAttribute("aria-invalid", "true");
    keyInput.focus();
    return;
  }
  keyInput.removeAttribute("aria-invalid");
  setApiKey(key);
  keyDialog.close();
  keyButton.hidden = false;
  reloadEverything();
});
document.getElementById("key-cancel").addEventListener("click", () => keyDialog.close());
document.getElementById("key-forget").addEventListener("click", () => {
  setApiKey(null);
  keyInput.value = "";
  keyDialog.close();
});

function reloadEverything() {
  live.reconnectNow();
  table.reload();
  conversations.refresh();
  dispatch.refresh({ force: true });
  route();
}

// --- routes ---------------------------------------------------------------------------------------
const views = [...document.querySelectorAll("[data-view]")];
const navLinks = [...document.querySelectorAll("[data-nav]")];
let currentView = null;

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (path === "/" || path === "") return { view: "live" };
  if (path === "/stats") return { view: "stats", window: params.get("window") || "24h" };
  const convo = path.match(/^\/conversations(?:\/([^/]+))?\/?$/);
  if (convo) {
    let number = null;
    try {
      number = convo[1] ? decodeURIComponent(convo[1]) : null;
    } catch {
      return { view: "missing" };
    }
    return { view: "conversations", number };
  }
  const match = path.match(/^\/messages\/([^/]+)$/);
  if (match) return { view: "detail", ref: decodeURIComponent(match[1]) };
  return { view: "missing" };
}

function route() {
  const next = parseHash();
  const changed = next.view !== currentView;
  for (const view of views) view.hidden = view.dataset.view !== next.view;
  for (const link of navLinks) {
    const current = link.dataset.nav === next.view || (link.dataset.nav === "live" && next.view === "detail");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (next.view !== "detail") detail.hide();
  if (next.view !== "stats") stats.hide();
  if (next.view !== "conversations") conversations.hide();
  if (next.view === "conversations") {
    document.title = "Conversations · plivo-tracker";
    conversations.show(next.number); // a thread sets its own title
  }
  if (next.view === "live") document.title = "Live · plivo-tracker";
  if (next.view === "stats") {
    document.title = "Stats · plivo-tracker";
    stats.show(next.window);
  }
  if (next.view === "missing") document.title = "Not found · plivo-tracker";
  if (next.view === "detail") {
    document.title = `Message ${next.ref} · plivo-tracker`;
    const first = detail.ref !== next.ref;
    detail.show(next.ref).then(() => {
      if (first && currentView === "detail") detail.focusHeading();
    });
    if (first && changed) window.scrollTo(0, 0);
  }
  // Move focus to the new view for keyboard and screen-reader users (not on the first load).
  if (changed && currentView !== null && next.view !== "detail") {
    const target = document.querySelector(`[data-view="${next.view}"] h1, [data-view="${next.view}"] h2`);
    if (target) {
      if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
      target.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  }
  currentView = next.view;
}

window.addEventListener("hashchange", route);
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault(); // #main is not a route
  document.getElementById("main").focus();
});

// Relative times ("12 s ago") stay fresh (only the text that changed is touched).
setInterval(() => {
  if (!document.hidden) refreshRelativeTimes();
}, 1_000);

// Start: the WebSocket first, then the list once the stream is ready (or after a second without
// it); frames are buffered until the first page is in.
route();
live.start();
dispatch.start();
setTimeout(startList, 1_000);
