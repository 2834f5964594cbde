// Pure helpers: statuses, masking, times, text encoding. No DOM access except `el`.

export const STATUSES = [
  "accepted",
  "unknown", // the send's outcome at Plivo is undecided: an operator adopts a UUID or resends
  "queued",
  "sent",
  "delivered",
  "undelivered",
  "failed",
  "rejected",
  "read",
  "received",
];
export const FINAL = new Set(["delivered", "undelivered", "failed", "rejected", "read"]);

/** Create an element; text always goes through textContent (never innerHTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const STATUS_TITLES = {
  unknown: "Plivo's answer was unclear and no lookup could decide: adopt its MessageUUID or send again",
};

/** A status badge: colour from the status, and the status as text (never colour alone). */
export function badge(status) {
  const known = STATUSES.includes(status) ? status : "other";
  return el(
    "span",
    { class: `badge badge-${known}`, title: STATUS_TITLES[status], dataset: { status: status ?? "" } },
    status ?? "—",
  );
}

/** '+14155550101' → '+1415•••0101': a country-code-ish prefix and the last 4 digits. */
export function maskNumber(number) {
  if (!number) return "—";
  const text = String(number);
  const plus = text.startsWith("+") ? "+" : "";
  const digits = text.replace(/^\+/, "");
  if (!/^\d+$/.test(digits)) return text; // a sender id or short code: nothing to hide
  if (digits.length <= 6) return plus + digits;
  const keep = digits.length >= 10 ? 4 : 2;
  return `${plus}${digits.slice(0, keep)}•••${digits.slice(-4)}`;
}

export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

const fullFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "medium",
});

export function fullTime(value) {
  const date = parseTime(value);
  return date ? fullFormat.format(date) : "—";
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function relativeTime(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return "—";
  const seconds = Math.round((now - date.getTime()) / 1000);
  if (seconds < 0) return seconds > -5 ? "just now" : "in the future";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** A <time> showing a relative time, with the full timestamp as title; refreshed by tick(). */
export function timeEl(value) {
  const date = parseTime(value);
  if (!date) return el("span", { class: "muted" }, "—");
  return el(
    "time",
    { datetime: date.toISOString(), title: fullTime(value), dataset: { relative: "" } },
    relativeTime(value),
  );
}

/** Refresh every relative <time> under `root`. */
export function refreshRelativeTimes(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll("time[data-relative]")) {
    const text = relativeTime(node.getAttribute("datetime"), now);
    if (node.textContent !== text) node.textContent = text;
  }
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  const trim = (n, digits) => String(Number(n.toFixed(digits)));
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${trim(value, value < 10 ? 1 : 0)} s`;
  if (value < 3600) return `${trim(value / 60, 1)} min`;
  if (value < 172800) return `${trim(value / 3600, 1)} h`;
  return `${trim(value / 86400, 1)} d`;
}

const percentFormat = new Intl.NumberFormat(undefined, {
  style: "percent",
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const countFormat = new Intl.NumberFormat();

export function percent(rate) {
  return rate === null || rate === undefined ? "—" : percentFormat.format(rate);
}

export function count(value) {
  return value === null || value === undefined ? "—" : countFormat.format(value);
}

// GSM 03.38 basic set and extension table (an extension character costs 2 septets); the same
// tables as the server (messages/phone.py), so the live readout matches what validate answers.
const GSM_BASIC = new Set(
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
);
const GSM_EXTENDED = new Set("^{}\\[~]|€\f");

/** How the text will be encoded and split: {encoding, length, segments, perSegment, unicode}. */
export function textInfo(text) {
  const chars = Array.from(text);
  const unicode = [...new Set(chars.filter((ch) => !GSM_BASIC.has(ch) && !GSM_EXTENDED.has(ch)))];
  let length;
  let single;
  let part;
  let encoding;
  if (unicode.length === 0) {
    length = chars.reduce((sum, ch) => sum + (GSM_EXTENDED.has(ch) ? 2 : 1), 0);
    [single, part, encoding] = [160, 153, "GSM-7"];
  } else {
    length = text.length; // UTF-16 code units, as Plivo counts UCS-2
    [single, part, encoding] = [70, 67, "UCS-2"];
  }
  const segments = length === 0 ? 0 : length <= single ? 1 : Math.ceil(length / part);
  return { encoding, length, segments, perSegment: segments > 1 ? part : single, unicode };
}

/** Split the recipients field: commas, semicolons and new lines separate numbers. */
export function splitRecipients(value) {
  return value
    .split(/[,;\n]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Random Idempotency-Key; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function randomKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
