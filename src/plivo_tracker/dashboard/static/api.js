// HTTP calls to /api with the stored API key; a 401 asks for a key (see app.js).

const KEY_STORAGE = "plivo-tracker.api-key";

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.problems = Array.isArray(details.problems) ? details.problems : [];
    this.details = details;
  }
}

const listeners = new Set();
let memoryKey = null;

/** Called with no arguments whenever the server answers 401 (or the WebSocket closes 4401). */
export function onUnauthorized(callback) {
  listeners.add(callback);
}

export function unauthorized() {
  for (const callback of listeners) callback();
}

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || null;
  } catch {
    return null; // storage disabled
  }
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lives as long as the page
  }
  memoryKey = key || null;
}

function currentKey() {
  return getApiKey() ?? memoryKey;
}

/** fetch() a JSON API path; resolves with the parsed body, rejects with ApiError. */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal };
  const key = currentKey();
  if (key) init.headers["X-API-Key"] = key;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const { code, message, ...details } = error;
    if (response.status === 401) unauthorized();
    throw new ApiError(
      response.status,
      code || `http_${response.status}`,
      message || `The server answered ${response.status}.`,
      details,
    );
  }
  return data;
}
