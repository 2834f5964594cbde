// The WebSocket /ws client: resumes with ?since=<last event id>, backs off, watches heartbeats.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const HEARTBEAT_MS = 15_000; // the server's default LIVE_HEARTBEAT_SECONDS
const DEAD_AFTER_MS = 2 * HEARTBEAT_MS; // no frame at all for this long: the connection is dead
const OFFLINE_AFTER_ATTEMPTS = 5; // ~15 s of failed attempts: say "offline" (and keep trying)

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_BAD_REQUEST = 4400;
export const CLOSE_TOO_SLOW = 4408;

/**
 * States: "reconnecting" (connecting, or trying again), "live" (the server said `ready`),
 * "offline" (the browser is offline, the server has been unreachable for a while, or an API key
 * is needed). Attempts go on in the background in every state but the last.
 */
export class LiveStream {
  constructor({ onFrame, onReady, onState, getKey, onUnauthorized, deadAfterMs = DEAD_AFTER_MS }) {
    this.onFrame = onFrame;
    this.onReady = onReady;
    this.onState = onState;
    this.getKey = getKey;
    this.onUnauthorized = onUnauthorized;
    this.deadAfterMs = deadAfterMs;
    this.ws = null;
    this.lastId = null;
    this.attempts = 0;
    this.everLive = false;
    this.needsKey = false;
    this.retryTimer = 0;
    this.watchdog = 0;
    this.state = null;
    this.detail = "";
    this.retryAt = 0;
    this.fresh = true;
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => {
      if (this.state !== "live") this.setState("offline", "your browser is offline");
    });
  }

  start() {
    this.setState("reconnecting", "connecting…");
    this.connect();
  }

  /** Forget the backoff and connect again now (after an API key was entered, or on demand). */
  reconnectNow() {
    this.needsKey = false;
    this.attempts = 0;
    this.drop();
    this.setState("reconnecting", this.everLive ? "reconnecting…" : "connecting…");
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    if (this.lastId !== null) params.set("since", String(this.lastId));
    const query = params.toString();
    return `${scheme}//${location.host}/ws${query ? `?${query}` : ""}`;
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.needsKey) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.fresh = this.lastId === null; // no `since`: a new subscription, not a resumption
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      const key = this.getKey();
      // The key goes in the first message, never in the URL (URLs end up in logs).
      if (key) ws.send(JSON.stringify({ type: "auth", api_key: key }));
      this.armWatchdog();
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      this.armWatchdog();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.closed(event.code);
    });
  }

  handle(frame) {
    if (!frame || typeof frame !== "object") return;
    // Status changes and received messages share one id sequence (docs/live-api.md).
    if (frame.type === "status" || frame.type === "message") {
      if (typeof frame.id === "number") {
        if (this.lastId !== null && frame.id <= this.lastId) return; // already applied
        this.lastId = frame.id;
      }
      this.onFrame(frame);
    } else if (frame.type === "ready") {
      // A server with another LIVE_HEARTBEAT_SECONDS may say so; otherwise assume the default.
      if (typeof frame.heartbeat_seconds === "number" && frame.heartbeat_seconds > 0) {
        this.deadAfterMs = 2 * frame.heartbeat_seconds * 1000;
        this.armWatchdog();
      }
      if (typeof frame.last_id === "number" && (this.lastId === null || frame.last_id > this.lastId)) {
        this.lastId = frame.last_id;
      }
      this.attempts = 0;
      this.everLive = true;
      this.setState("live", "");
      this.onReady(this.fresh);
    } else if (frame.type === "error") {
      this.detail = frame.message || frame.code || "server error";
    }
  }

  closed(code) {
    this.ws = null;
    clearTimeout(this.watchdog);
    if (code === CLOSE_UNAUTHORIZED) {
      this.needsKey = true;
      this.setState("offline", "an API key is required");
      this.onUnauthorized();
      return;
    }
    if (code === CLOSE_FORBIDDEN) {
      // This page's origin is not allowed: trying again changes nothing (Reconnect is offered).
      this.setState("offline", this.detail || "the server refused this page's origin");
      return;
    }
    if (code === CLOSE_BAD_REQUEST) this.lastId = null; // e.g. a `since` it cannot take: start over
    if (code === CLOSE_TOO_SLOW) {
      // We read too slowly and the server dropped us; nothing is lost when we resume at once.
      this.setState("reconnecting", "catching up…");
      this.connect();
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    this.attempts += 1;
    const exp = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (this.attempts - 1));
    const delay = Math.round(exp * (0.5 + Math.random() / 2)); // jitter: 50–100 %
    this.retryAt = Date.now() + delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    const offline = !navigator.onLine || this.attempts > OFFLINE_AFTER_ATTEMPTS;
    const again = `trying again in ${Math.max(1, Math.round(delay / 1000))} s`;
    if (offline) {
      this.setState("offline", navigator.onLine ? `server unreachable, ${again}` : "your browser is offline");
    } else {
      this.setState("reconnecting", again);
    }
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      // Two heartbeats missed: the connection is dead even if the socket has not noticed yet.
      this.drop();
      this.scheduleRetry();
    }, this.deadAfterMs);
  }

  /** Detach from the current socket and close it (its close event is then ignored). */
  drop() {
    clearTimeout(this.watchdog);
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000, "client reconnects");
    else if (ws && ws.readyState === WebSocket.CONNECTING) {
      // Closing a connecting socket makes the browser log a warning: close it once it opens.
      ws.addEventListener("open", () => ws.close(1000, "client reconnects"));
    }
  }

  setState(state, detail) {
    const changed = state !== this.state || detail !== this.detail;
    this.state = state;
    this.detail = detail;
    if (changed) this.onState(state, detail);
  }
}
