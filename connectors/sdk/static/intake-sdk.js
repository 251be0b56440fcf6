// The intake SDK: help, tickets and live chat for apps, web pages and programs.
// One plain ES module, no build step and no dependencies. It uses only fetch, FormData, Blob
// and WebSocket, touches no DOM at import, and runs in browsers, Electron, React Native and
// Node.js 20+ (`node --experimental-websocket`). The protocol it speaks is documented in
// /sdk/v1/openapi.json and /sdk/v1/asyncapi.json.

const RETRY_IDENTITY = new Set(["token_expired", "session_expired"]);

class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(key) { return this.map.has(key) ? this.map.get(key) : null; }
  setItem(key, value) { this.map.set(key, String(value)); }
  removeItem(key) { this.map.delete(key); }
}

export class IntakeError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
    this.fields = (body && body.fields) || {};
    this.retryAfter = body && body.retryAfter;
  }
}

function newId() {
  if (globalThis.crypto && globalThis.crypto.randomUUID) return globalThis.crypto.randomUUID();
  return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
  });
}

export class IntakeClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl   where the SDK service listens, e.g. http://127.0.0.1:8002
   * @param {string} options.appKey    the app's public key
   * @param {Function} [options.identify]  async () => ({userId, userHash}) | ({jwt}) | null
   * @param {object} [options.storage] like localStorage (getItem, setItem, removeItem)
   */
  constructor({ baseUrl, appKey, identify = async () => null, storage, fetch, WebSocket } = {}) {
    if (!baseUrl || !appKey) throw new Error("IntakeClient needs baseUrl and appKey");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.appKey = appKey;
    this.identify = identify;
    this.storage = storage || new MemoryStorage();
    this._fetch = fetch || globalThis.fetch.bind(globalThis);
    this._WebSocket = WebSocket || globalThis.WebSocket;
    this.session = null;
    this._opening = null;
  }

  get base() { return `${this.baseUrl}/sdk/v1/apps/${encodeURIComponent(this.appKey)}`; }
  _key(name) { return `intake:${this.appKey}:${name}`; }
  _get(name) { return this.storage.getItem(this._key(name)); }
  _set(name, value) { this.storage.setItem(this._key(name), value); }
  _drop(name) { this.storage.removeItem(this._key(name)); }

  async _openSession() {
    const who = await this.identify();
    const body = {};
    if (who && who.jwt) body.jwt = who.jwt;
    else if (who && who.userId) {
      body.user = { id: who.userId };
      for (const k of ["name", "email", "phone"]) if (who[k]) body.user[k] = who[k];
      if (who.userHash) body.user_hash = who.userHash;
    }
    const device = this._get("device_token");
    if (device) body.device_token = device;
    else if (!body.jwt && !body.user_hash) body.anonymous = true;
    let response = await this._fetch(`${this.base}/sessions`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    if (response.status === 401 && device && !body.jwt && !body.user_hash) {
      this._drop("device_token"); // spent or unknown: a new device
      delete body.device_token;
      body.anonymous = true;
      response = await this._fetch(`${this.base}/sessions`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    }
    const answer = await response.json().catch(() => ({}));
    if (response.status !== 201) throw new IntakeError(response.status, answer);
    if (answer.device_token) this._set("device_token", answer.device_token);
    const owner = answer.user && answer.user.verified ? `user:${answer.user.id}` : "device";
    const previous = this._get("owner");
    if (previous !== null && previous !== owner) { // another person here: nothing of theirs
      this._drop("cursor");
      this._drop("outbox");
    }
    this._set("owner", owner);
    this.session = answer;
    return answer;
  }

  async token() {
    if (!this.session) {
      this._opening = this._opening || this._openSession().finally(() => { this._opening = null; });
      await this._opening;
    }
    return this.session.session_token;
  }

  async _call(method, path, body, { retried = false, form = null } = {}) {
    const headers = { authorization: `Bearer ${await this.token()}` };
    const init = { method, headers };
    if (form) init.body = form;
    else if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this._fetch(`${this.base}${path}`, init);
    const text = await response.text();
    const answer = text ? JSON.parse(text) : null;
    if (response.status === 401 && !retried && answer && RETRY_IDENTITY.has(answer.error)) {
      this.session = null; // the app's token callback runs again, once
      return this._call(method, path, body, { retried: true, form });
    }
    if (response.status >= 400) {
      const error = new IntakeError(response.status, answer);
      const wait = response.headers.get("retry-after");
      if (wait) error.retryAfter = Number(wait);
      throw error;
    }
    return answer;
  }

  config() { return this._fetch(`${this.base}/config`).then((r) => r.json()); }

  async upload(file, filename) {
    const form = new FormData();
    form.append("file", file, filename || (file && file.name) || "attachment");
    return this._call("POST", "/uploads", undefined, { form });
  }

  async submitTicket({ subject, text, fields, files = [], clientMsgId } = {}) {
    const attachments = [];
    for (const file of files) attachments.push((await this.upload(file)).upload_id);
    return this._call("POST", "/tickets", {
      client_msg_id: clientMsgId || newId(), subject, text, fields, attachments,
    });
  }

  tickets(cursor) { return this._call("GET", `/tickets${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`); }
  ticket(id) { return this._call("GET", `/tickets/${encodeURIComponent(id)}`); }
  markRead(id, seq) { return this._call("POST", `/tickets/${encodeURIComponent(id)}/read`, { seq }); }
  rate(id, score, comment) {
    return this._call("POST", `/tickets/${encodeURIComponent(id)}/satisfaction`, { score, comment });
  }

  async searchFaq(q, limit = 10) {
    const url = `${this.base}/faq/search?q=${encodeURIComponent(q)}&limit=${limit}`;
    const response = await this._fetch(url);
    const answer = await response.json();
    if (response.status >= 400) throw new IntakeError(response.status, answer);
    return answer;
  }

  async article(id) {
    const response = await this._fetch(`${this.base}/faq/articles/${encodeURIComponent(id)}`);
    const answer = await response.json();
    if (response.status >= 400) throw new IntakeError(response.status, answer);
    return answer;
  }

  chat() {
    if (!this._chat) this._chat = new Chat(this);
    this._chat.connect();
    return this._chat;
  }

  async logout() {
    if (this._chat) this._chat.close();
    this._chat = null;
    if (this.session) {
      await this._call("DELETE", "/sessions/current").catch(() => {});
    }
    this.session = null;
    for (const name of ["cursor", "outbox", "owner", "device_token"]) this._drop(name);
  }
}

export class Chat {
  constructor(client) {
    this.client = client;
    this.handlers = {};
    this.ws = null;
    this.closed = false;
    this.attempt = 0;
    this.waiting = new Map(); // client_msg_id → {resolve, reject}
    this.status = "idle";
    this._wakeUp = () => { if (this.status !== "live") this._reconnectNow(); };
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._wakeUp);
      if (globalThis.document) globalThis.document.addEventListener("visibilitychange", this._wakeUp);
    }
  }

  on(event, handler) { (this.handlers[event] = this.handlers[event] || []).push(handler); return this; }
  _emit(event, value) { for (const h of this.handlers[event] || []) { try { h(value); } catch (e) { /* the app's */ } } }
  _setStatus(status) { if (this.status !== status) { this.status = status; this._emit("status", status); } }

  get cursor() { return Number(this.client._get("cursor") || 0); }
  set cursor(seq) { if (seq > this.cursor) this.client._set("cursor", String(seq)); }
  get outbox() { return JSON.parse(this.client._get("outbox") || "[]"); }
  set outbox(items) { this.client._set("outbox", JSON.stringify(items)); }

  /** Resolves with the ack once the message is durable; kept and resent while offline. */
  send(text, { ticketId, attachments } = {}) {
    const frame = { type: "message", client_msg_id: newId(), text };
    if (ticketId) frame.ticket_id = ticketId;
    if (attachments) frame.attachments = attachments;
    this.outbox = [...this.outbox, frame];
    const acked = new Promise((resolve, reject) => this.waiting.set(frame.client_msg_id, { resolve, reject }));
    if (this.status === "live") this._send(frame);
    return acked;
  }

  typing(ticketId, state) { if (this.status === "live") this._send({ type: "typing", ticket_id: ticketId, state }); }
  read(ticketId, seq) { if (this.status === "live") this._send({ type: "read", ticket_id: ticketId, seq }); }

  _send(frame) { try { this.ws.send(JSON.stringify(frame)); } catch (e) { /* resent on reconnect */ } }

  async connect() {
    if (this.ws || this.closed) return;
    this._setStatus("connecting");
    let token;
    try { token = await this.client.token(); } catch (e) { this._emit("error", e); return this._later(); }
    const url = this.client.base.replace(/^http/, "ws") + "/ws";
    const ws = new this.client._WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: "hello", session_token: token };
      if (this.cursor) hello.after = this.cursor;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (event) => this._frame(JSON.parse(typeof event.data === "string" ? event.data : String(event.data)));
    ws.onclose = (event) => {
      if (this.ws === ws) this.ws = null;
      if (event.code === 4401) this.client.session = null; // a new session next time
      this._setStatus("offline");
      if (!this.closed && event.code !== 4429) this._later();
    };
    ws.onerror = () => {};
  }

  _frame(frame) {
    switch (frame.type) {
      case "welcome": break;
      case "synced":
        this.attempt = 0;
        this.cursor = frame.seq;
        this._setStatus("live");
        for (const queued of this.outbox) this._send(queued); // unsent ones, same ids
        break;
      case "reset":
        this.client._drop("cursor");
        this._emit("reset", frame);
        break;
      case "ack": {
        this.outbox = this.outbox.filter((f) => f.client_msg_id !== frame.client_msg_id);
        if (frame.seq) this.cursor = frame.seq;
        const waiter = this.waiting.get(frame.client_msg_id);
        if (waiter) { this.waiting.delete(frame.client_msg_id); waiter.resolve(frame); }
        break;
      }
      case "message.created":
        this.cursor = frame.seq;
        this._emit("message", frame);
        break;
      case "ticket.updated":
        this.cursor = frame.seq;
        this._emit("ticket", frame);
        break;
      case "error": {
        const waiter = frame.client_msg_id && this.waiting.get(frame.client_msg_id);
        if (frame.code === "rate_limited" || frame.code === "unavailable") {
          setTimeout(() => { const f = this.outbox.find((x) => x.client_msg_id === frame.client_msg_id); if (f && this.status === "live") this._send(f); }, frame.retry_after_ms || 1000);
        } else if (waiter) {
          this.outbox = this.outbox.filter((f) => f.client_msg_id !== frame.client_msg_id);
          this.waiting.delete(frame.client_msg_id);
          waiter.reject(Object.assign(new Error(frame.message), { code: frame.code }));
        }
        this._emit("error", frame);
        break;
      }
      default: this._emit(frame.type, frame);
    }
  }

  _later() {
    if (this.closed || this._timer) return;
    const delay = Math.min(30000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this._timer = setTimeout(() => { this._timer = null; this.connect(); }, delay);
  }

  _reconnectNow() {
    if (this._timer) { clearTimeout(this._timer); this._timer = null; }
    if (!this.ws) this.connect();
  }

  close() {
    this.closed = true;
    if (this._timer) clearTimeout(this._timer);
    if (typeof globalThis.removeEventListener === "function") globalThis.removeEventListener("online", this._wakeUp);
    if (globalThis.document) globalThis.document.removeEventListener("visibilitychange", this._wakeUp);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this._setStatus("closed");
  }
}
