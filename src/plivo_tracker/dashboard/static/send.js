// The send form: validated as you type (POST /api/messages/validate), sent with an
// Idempotency-Key (POST /api/messages).
import { api } from "./api.js";
import { el, randomKey, splitRecipients, textInfo } from "./format.js";

const VALIDATE_DELAY_MS = 300;
// Form-level problems name the option they are about.
const OPTION_LABELS = {
  message_expiry: "Expires after",
  log: "What Plivo keeps",
  trackable: "Track link clicks",
  dlt_entity_id: "DLT entity ID",
  dlt_template_id: "DLT template ID",
  dlt_template_category: "DLT template category",
};

function fieldOf(problem) {
  if (problem.field) return problem.field;
  const loc = Array.isArray(problem.loc) ? problem.loc.filter((p) => p !== "body") : [];
  return loc.length ? String(loc[0]) : "";
}

export class SendForm {
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.form = document.getElementById("send-form");
    this.to = document.getElementById("to");
    this.text = document.getElementById("text");
    this.media = document.getElementById("media-urls");
    this.mediaField = document.getElementById("media-field");
    this.textInfo = document.getElementById("text-info");
    this.button = document.getElementById("send-button");
    this.result = document.getElementById("send-result");
    this.lists = {
      to: document.getElementById("to-errors"),
      text: document.getElementById("text-errors"),
      media_urls: document.getElementById("media-errors"),
      form: document.getElementById("form-errors"),
    };
    this.touched = { to: false, text: false, media_urls: false };
    this.submitted = false;
    this.problems = [];
    this.seq = 0;
    this.timer = 0;
    this.idempotency = { key: null, body: null };
    this.sending = false;

    this.to.addEventListener("input", () => {
      this.touched.to = true;
      this.scheduleValidate();
    });
    this.text.addEventListener("input", () => {
      this.updateTextInfo();
      this.scheduleValidate();
    });
    this.text.addEventListener("blur", () => {
      if (this.text.value) this.touched.text = true;
      this.renderProblems();
    });
    this.media.addEventListener("input", () => this.scheduleValidate());
    this.media.addEventListener("blur", () => {
      this.touched.media_urls = true;
      this.renderProblems();
    });
    for (const radio of this.form.elements.type) {
      radio.addEventListener("change", () => {
        this.mediaField.hidden = this.type() !== "mms";
        this.scheduleValidate();
      });
    }
    document.getElementById("send-options").addEventListener("input", () => this.scheduleValidate());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.updateTextInfo();
  }

  type() {
    return this.form.elements.type.value || "sms";
  }

  body() {
    const body = { to: splitRecipients(this.to.value), type: this.type(), text: this.text.value || null };
    if (body.type === "mms") {
      const urls = this.media.value.split(/[\s,]+/).filter(Boolean);
      if (urls.length) body.media_urls = urls;
    }
    Object.assign(body, this.options());
    return body;
  }

  /** Plivo's send options the user set (only those: the server's defaults stay defaults). */
  options() {
    const f = this.form.elements;
    const out = {};
    const expiry = f.message_expiry.value.trim();
    if (expiry) out.message_expiry = Number(expiry);
    if (f.log.value) out.log = f.log.value;
    if (f.trackable.checked) out.trackable = true;
    for (const name of ["dlt_entity_id", "dlt_template_id", "dlt_template_category"]) {
      const value = f[name].value.trim();
      if (value) out[name] = value;
    }
    return out;
  }

  updateTextInfo() {
    const info = textInfo(this.text.value);
    const unit = info.encoding === "GSM-7" ? "characters" : "UTF-16 units";
    const parts = [`${info.length} ${info.length === 1 ? unit.replace(/s$/, "") : unit}`];
    if (info.segments > 0) {
      const left = info.segments * info.perSegment - info.length;
      parts.push(`${info.segments} segment${info.segments === 1 ? "" : "s"}`);
      parts.push(`${left} left`);
    }
    let encoding = info.encoding;
    if (info.unicode.length) {
      const shown = info.unicode.slice(0, 5).join(" ");
      encoding += ` (because of ${shown}${info.unicode.length > 5 ? " …" : ""})`;
    }
    parts.push(encoding);
    this.textInfo.textContent = parts.join(" · ");
    this.textInfo.dataset.encoding = info.encoding;
    this.textInfo.dataset.segments = String(info.segments);
    this.textInfo.classList.toggle("text-info-unicode", info.unicode.length > 0);
  }

  scheduleValidate() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.validate(), VALIDATE_DELAY_MS);
  }

  /** Ask the server; resolves with its answer, or null when it could not say. */
  async validate() {
    clearTimeout(this.timer);
    const seq = ++this.seq;
    const body = this.body();
    let answer;
    try {
      answer = await api("/api/messages/validate", { method: "POST", body });
    } catch (err) {
      if (seq !== this.seq) return null;
      if (err.status === 422) {
        this.problems = err.problems;
        this.renderProblems();
        return { valid: false, problems: err.problems };
      }
      return null; // unreachable or not supported: the send itself will say
    }
    if (seq !== this.seq) return null;
    this.problems = Array.isArray(answer.problems) ? answer.problems : [];
    this.renderProblems();
    return answer;
  }

  /** Show the problems the user should see now; returns how many are shown. */
  renderProblems() {
    const shown = { to: [], text: [], media_urls: [], form: [] };
    for (const problem of this.problems) {
      const field = fieldOf(problem);
      if (field === "to") {
        // A bad number is shown as soon as it is typed; "no recipient" only once sending.
        if (problem.index !== undefined && problem.index !== null ? this.touched.to || this.submitted : this.submitted) {
          shown.to.push(problem);
        }
      } else if (field === "text" || field === "media_urls") {
        if (this.touched[field] || this.submitted) shown[field].push(problem);
      } else if (this.submitted) {
        shown.form.push(problem);
      }
    }
    for (const [field, list] of Object.entries(this.lists)) {
      list.replaceChildren(
        ...shown[field].map((p) => {
          const li = el("li", {});
          if (p.value !== undefined && p.value !== null && p.value !== "") {
            li.append(el("strong", { class: "mono" }, p.value), ": ");
          } else if (field === "form" && fieldOf(p)) {
            li.append(el("strong", {}, OPTION_LABELS[fieldOf(p)] || fieldOf(p)), ": ");
          }
          li.append(p.message || "invalid");
          return li;
        }),
      );
    }
    const inputs = { to: this.to, text: this.text, media_urls: this.media };
    for (const [field, input] of Object.entries(inputs)) {
      if (shown[field].length) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
    return Object.values(shown).reduce((n, list) => n + list.length, 0);
  }

  firstInvalid() {
    return [this.to, this.media, this.text].find((input) => input.getAttribute("aria-invalid") === "true");
  }

  async submit() {
    if (this.sending) return;
    this.submitted = true;
    this.sending = true;
    this.button.disabled = true;
    this.result.className = "send-result";
    this.result.textContent = "Checking…";
    try {
      const check = await this.validate();
      if ((check && check.valid === false) || this.renderProblems() > 0) {
        this.result.className = "send-result send-result-error";
        this.result.textContent = "Not sent: fix the problems shown above.";
        (this.firstInvalid() || this.button).focus();
        return;
      }
      await this.send();
    } finally {
      this.sending = false;
      this.button.disabled = false;
    }
  }

  async send() {
    const body = this.body();
    const serialized = JSON.stringify(body);
    // One key per submission; a retry of the very same body (after a network error) reuses it,
    // so the server answers it from its idempotency record instead of sending twice.
    if (this.idempotency.body !== serialized) this.idempotency = { key: randomKey(), body: serialized };
    this.result.textContent = "Sending…";
    let answer;
    try {
      answer = await api("/api/messages", {
        method: "POST",
        body,
        headers: { "Idempotency-Key": this.idempotency.key },
      });
    } catch (err) {
      this.result.className = "send-result send-result-error";
      if (err.status === 422 && err.problems.length) {
        this.problems = err.problems;
        this.renderProblems();
        this.result.textContent = "Not sent: fix the problems shown above.";
        (this.firstInvalid() || this.button).focus();
      } else if (err.status === 0) {
        this.result.textContent = "Not sent: the server cannot be reached. Sending again is safe.";
      } else {
        this.result.textContent = `Not sent: ${err.message}`;
      }
      return;
    }
    this.idempotency = { key: null, body: null };
    const created = (answer && answer.messages) || [];
    this.result.className = "send-result send-result-ok";
    this.result.replaceChildren(
      `Queued ${created.length} message${created.length === 1 ? "" : "s"}: `,
      ...created.flatMap((m, i) => [
        i ? ", " : "",
        el("a", { href: `#/messages/${m.id}`, class: "mono", dataset: { createdId: String(m.id) } }, `#${m.id}`),
      ]),
    );
    this.onCreated(created, body);
    // Ready for the next message to the same recipients.
    this.text.value = "";
    this.submitted = false;
    this.touched.text = false;
    this.problems = [];
    this.renderProblems();
    this.updateTextInfo();
  }
}
