// The intake help widget: one script tag, no framework, in a Shadow DOM of its own.
//   <script src="http://127.0.0.1:8002/sdk/v1/widget.js" data-app-key="demo-widget" async></script>
//   IntakeWidget.identify({ userId, userHash })   // or ({ jwt }); before or after it loads
// Tabs: FAQ, 我的工单 (tickets: list, detail, new with a photo, rating), 在线客服 (live chat).
// Every customer or agent text is set as text, never as HTML; FAQ articles come cleaned.
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script || window.IntakeWidget && window.IntakeWidget.loaded) return;
  const base = new URL(script.src).origin;
  const appKey = script.dataset.appKey;
  const TEXT = {
    zh: { faq: "常见问题", tickets: "我的工单", chat: "在线客服", search: "搜索问题，例如 退货",
      send: "发送", newTicket: "提交工单", submit: "提交", text: "请描述您的问题", photo: "照片",
      reference: "工单编号", back: "返回", rate: "请为本次服务评分", thanks: "感谢您的评价",
      sending: "发送中", sent: "已发送", read: "已读", empty: "暂无内容", offline: "网络已断开，恢复后自动发送",
      status: { received: "已提交", new: "待处理", open: "处理中", pending: "等待您回复",
        on_hold: "挂起", resolved: "已解决", closed: "已关闭" }, open: "打开客服", close: "关闭" },
    en: { faq: "FAQ", tickets: "My tickets", chat: "Chat", search: "Search, e.g. returns",
      send: "Send", newTicket: "New ticket", submit: "Submit", text: "Describe your problem",
      photo: "Photo", reference: "Reference", back: "Back", rate: "Rate our service",
      thanks: "Thank you", sending: "sending", sent: "sent", read: "read", empty: "Nothing yet",
      offline: "Offline: sent when back", status: { received: "received", new: "new",
        open: "open", pending: "waiting for you", on_hold: "on hold", resolved: "resolved",
        closed: "closed" }, open: "Open help", close: "Close" },
  };
  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; font-family: system-ui, "PingFang SC", "Microsoft YaHei", sans-serif; }
    .launcher { position: fixed; right: 16px; bottom: 16px; z-index: 2147483000; border: 0;
      border-radius: 28px; padding: 14px 18px; color: #fff; background: var(--c); cursor: pointer;
      font-size: 15px; box-shadow: 0 4px 16px rgba(0,0,0,.25); }
    .badge { display: inline-block; min-width: 20px; margin-left: 6px; padding: 1px 6px;
      border-radius: 10px; background: #dc2626; font-size: 12px; }
    .badge[hidden] { display: none; }
    .panel { position: fixed; right: 16px; bottom: 80px; z-index: 2147483000; width: 360px;
      max-width: calc(100vw - 32px); height: 560px; max-height: calc(100vh - 100px);
      display: flex; flex-direction: column; background: #fff; color: #111; border-radius: 12px;
      box-shadow: 0 8px 32px rgba(0,0,0,.3); overflow: hidden; font-size: 14px; }
    .panel[hidden] { display: none; }
    header { background: var(--c); color: #fff; padding: 12px 14px; display: flex;
      justify-content: space-between; align-items: center; font-size: 16px; }
    header button { background: none; border: 0; color: #fff; font-size: 20px; cursor: pointer; }
    [role=tablist] { display: flex; border-bottom: 1px solid #ddd; }
    [role=tab] { flex: 1; padding: 10px 4px; border: 0; background: #f6f6f6; cursor: pointer;
      font-size: 14px; color: #111; }
    [role=tab][aria-selected=true] { background: #fff; border-bottom: 2px solid var(--c); font-weight: 600; }
    [role=tabpanel] { flex: 1; overflow: auto; padding: 10px; }
    [role=tabpanel][hidden] { display: none; }
    input, textarea, select { width: 100%; padding: 8px; margin: 4px 0 8px; border: 1px solid #bbb;
      border-radius: 6px; font-size: 14px; color: #111; background: #fff; }
    button.primary { background: var(--c); color: #fff; border: 0; border-radius: 6px;
      padding: 8px 14px; cursor: pointer; font-size: 14px; }
    button.link { background: none; border: 0; color: var(--c); cursor: pointer; padding: 4px 0; font-size: 14px; }
    :focus-visible { outline: 2px solid #f59e0b; outline-offset: 2px; }
    ul { list-style: none; margin: 0; padding: 0; }
    li.item { padding: 8px 4px; border-bottom: 1px solid #eee; cursor: pointer; }
    .muted { color: #555; font-size: 12px; }
    .msg { margin: 6px 0; padding: 8px 10px; border-radius: 10px; max-width: 85%; white-space: pre-wrap; word-break: break-word; }
    .msg.customer { background: #e0ecff; margin-left: auto; }
    .msg.agent { background: #f1f1f1; }
    .chatlog { min-height: 300px; }
    .composer { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #ddd; }
    .composer input { margin: 0; }
    .stars button { font-size: 22px; background: none; border: 0; cursor: pointer; color: #f59e0b; }
    mark { background: #fde68a; }`;

  let client = null, chat = null, identity = null, config = null, ui = null, t = TEXT.zh;
  const host = document.createElement("div");
  host.id = "intake-widget";
  const root = host.attachShadow({ mode: "open" });
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  };

  async function start() {
    const sdk = await import(`${base}/sdk/v1/intake-sdk.js`);
    const storage = safeStorage();
    client = new sdk.IntakeClient({ baseUrl: base, appKey, storage, identify: async () => identity });
    config = await client.config();
    t = (config.locale || "zh").toLowerCase().startsWith("en") ? TEXT.en : TEXT.zh;
    build();
    document.body.append(host);
  }

  function safeStorage() {
    try { localStorage.setItem("intake:probe", "1"); localStorage.removeItem("intake:probe"); return localStorage; }
    catch (e) { return undefined; }
  }

  function build() {
    const style = el("style", { text: CSS });
    const badge = el("span", { class: "badge", hidden: true, "aria-label": "unread" });
    const launcher = el("button", { class: "launcher", "aria-expanded": "false",
      "aria-controls": "intake-panel", onclick: () => toggle() }, el("span", { text: config.title }), badge);
    const tabs = el("div", { role: "tablist", "aria-label": config.title });
    const panel = el("section", { class: "panel", id: "intake-panel", hidden: true,
      role: "dialog", "aria-label": config.title },
      el("header", {}, el("span", { text: config.title }),
        el("button", { "aria-label": t.close, text: "×", onclick: () => toggle(false) })),
      tabs);
    root.host.style.setProperty("--c", config.colour);
    const sections = {};
    const names = { faq: t.faq, tickets: t.tickets, chat: t.chat };
    for (const name of config.tabs) {
      const tab = el("button", { role: "tab", id: `tab-${name}`, "aria-controls": `pane-${name}`,
        "aria-selected": "false", text: names[name], onclick: () => select(name),
        onkeydown: (e) => arrow(e, name) });
      tabs.append(tab);
      sections[name] = el("div", { role: "tabpanel", id: `pane-${name}`, "aria-labelledby": `tab-${name}`, hidden: true });
      panel.append(sections[name]);
    }
    root.append(style, launcher, panel);
    ui = { launcher, panel, badge, tabs, sections, current: null };
    renderFaq(sections.faq);
    select(config.tabs[0]);
  }

  function arrow(event, name) {
    const order = config.tabs, i = order.indexOf(name);
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const next = order[(i + (event.key === "ArrowRight" ? 1 : order.length - 1)) % order.length];
      select(next);
      root.getElementById(`tab-${next}`).focus();
    }
  }

  function toggle(open) {
    const show = open === undefined ? ui.panel.hidden : open;
    ui.panel.hidden = !show;
    ui.launcher.setAttribute("aria-expanded", String(show));
    if (show) { ensureChat(); refreshTickets(); }
  }

  function select(name) {
    for (const [other, pane] of Object.entries(ui.sections)) {
      pane.hidden = other !== name;
      root.getElementById(`tab-${other}`).setAttribute("aria-selected", String(other === name));
    }
    ui.current = name;
    if (name === "tickets") { delete ui.sections.tickets.dataset.detail; refreshTickets(); }
    if (name === "chat") { ensureChat(); renderChat(); }
  }

  // -- FAQ ------------------------------------------------------------------------------------
  function renderFaq(pane) {
    if (!pane) return;
    const results = el("ul", { "aria-live": "polite" });
    const input = el("input", { type: "search", placeholder: t.search, "aria-label": t.search });
    const form = el("form", { role: "search", onsubmit: async (e) => {
      e.preventDefault();
      results.replaceChildren();
      if (!input.value.trim()) return;
      const { items } = await client.searchFaq(input.value);
      if (!items.length) results.append(el("li", { class: "muted", text: t.empty }));
      for (const hit of items) {
        const snippet = el("div", { class: "muted" });
        snippet.innerHTML = hit.snippet; // escaped by the server, only <mark> added
        results.append(el("li", { class: "item", tabindex: "0", onclick: () => openArticle(pane, hit.id),
          onkeydown: (ev) => { if (ev.key === "Enter") openArticle(pane, hit.id); } },
        el("div", { text: hit.title }), snippet));
      }
    } }, input);
    pane.replaceChildren(form, results);
  }

  async function openArticle(pane, id) {
    const article = await client.article(id);
    const body = el("div");
    body.innerHTML = article.html; // cleaned by the server (markdown-it, raw HTML off, nh3)
    pane.replaceChildren(el("button", { class: "link", text: `← ${t.back}`, onclick: () => renderFaq(pane) }),
      el("h3", { text: article.title }), body);
  }

  // -- tickets --------------------------------------------------------------------------------
  async function refreshTickets() {
    const pane = ui.sections.tickets;
    if (!pane || ui.current !== "tickets" || pane.dataset.detail) return;
    const list = el("ul");
    const page = await client.tickets().catch(() => ({ items: [] }));
    let unread = 0;
    for (const ticket of page.items) {
      unread += ticket.unread;
      const label = `${ticket.number ? "#" + ticket.number + " " : ""}${ticket.subject || ticket.reference}`;
      list.append(el("li", { class: "item", tabindex: "0", "data-ticket": ticket.id,
        onclick: () => openTicket(ticket.id), onkeydown: (e) => { if (e.key === "Enter") openTicket(ticket.id); } },
      el("div", { text: label }),
      el("div", { class: "muted ticket-status", text: `${ticket.reference} · ${t.status[ticket.status] || ticket.status}${ticket.unread ? " · " + ticket.unread : ""}` })));
    }
    if (!page.items.length) list.append(el("li", { class: "muted", text: t.empty }));
    setBadge(unread);
    pane.replaceChildren(el("button", { class: "primary", text: t.newTicket, onclick: () => newTicket(pane) }), list);
  }

  function newTicket(pane) {
    pane.dataset.detail = "new";
    const fields = (config.ticket_fields || []).map((f) => {
      const id = `field-${f.name}`;
      const input = f.type === "select"
        ? el("select", { id, name: f.name, required: f.required }, el("option", { value: "", text: "—" }),
          ...f.options.map((o) => el("option", { value: o.value, text: o.label })))
        : el("input", { id, name: f.name, required: f.required, type: f.type === "number" ? "number" : f.type === "date" ? "date" : "text" });
      return [el("label", { for: id, text: f.label || f.name }), input];
    }).flat();
    const text = el("textarea", { id: "ticket-text", rows: "4", required: true });
    const photo = el("input", { id: "ticket-photo", type: "file", accept: (config.uploads.allowed_types || []).join(",") });
    const status = el("p", { role: "status" });
    const form = el("form", { onsubmit: async (e) => {
      e.preventDefault();
      const values = {};
      for (const f of config.ticket_fields || []) { const v = form.elements[f.name].value; if (v) values[f.name] = v; }
      try {
        const ticket = await client.submitTicket({ text: text.value, fields: values, files: photo.files.length ? [photo.files[0]] : [] });
        status.textContent = `${t.reference}: ${ticket.reference}`;
        status.className = "reference";
        form.querySelector("button[type=submit]").disabled = true;
      } catch (error) { status.textContent = error.message; }
    } }, ...fields, el("label", { for: "ticket-text", text: t.text }), text,
    el("label", { for: "ticket-photo", text: t.photo }), photo,
    el("button", { class: "primary", type: "submit", text: t.submit }), status);
    pane.replaceChildren(back(pane), form);
  }

  function back(pane) {
    return el("button", { class: "link", text: `← ${t.back}`, onclick: () => { delete pane.dataset.detail; refreshTickets(); } });
  }

  async function openTicket(id) {
    const pane = ui.sections.tickets;
    pane.dataset.detail = id;
    const ticket = await client.ticket(id);
    const log = el("div", { class: "chatlog" });
    let last = 0;
    for (const m of ticket.messages) { log.append(bubble(m)); last = Math.max(last, m.seq); }
    if (last) client.markRead(id, last).catch(() => {});
    const parts = [back(pane), el("h3", { text: `${ticket.number ? "#" + ticket.number + " " : ""}${ticket.subject || ""}` }),
      el("p", { class: "muted ticket-status", text: `${ticket.reference} · ${t.status[ticket.status] || ticket.status}` }), log];
    if (ticket.status === "resolved" || ticket.status === "closed") {
      const stars = el("div", { class: "stars", role: "group", "aria-label": t.rate });
      for (let n = 1; n <= 5; n++) {
        stars.append(el("button", { "aria-label": String(n), text: n <= (ticket.satisfaction && ticket.satisfaction.score || 0) ? "★" : "☆",
          onclick: async () => { await client.rate(id, n, ""); stars.after(el("p", { role: "status", text: t.thanks })); } }));
      }
      parts.push(el("p", { text: t.rate }), stars);
    }
    pane.replaceChildren(...parts);
  }

  function bubble(m) {
    return el("div", { class: `msg ${m.direction}`, "data-seq": String(m.seq || ""), text: m.text });
  }

  function setBadge(n) { ui.badge.hidden = !n; ui.badge.textContent = String(n || ""); }

  // -- chat -----------------------------------------------------------------------------------
  let chatTicket = null;
  const chatLog = [];
  function ensureChat() {
    if (chat || !client) return;
    chatTicket = client._get("chat_ticket");
    chat = client.chat();
    chat.on("message", (frame) => {
      refreshTickets();
      if (frame.ticket_id !== chatTicket) return; // another ticket's: shown under 我的工单
      chatLog.push({ ...frame.message, ticket_id: frame.ticket_id });
      if (ui.current === "chat" && !ui.panel.hidden) client.markRead(frame.ticket_id, frame.seq).catch(() => {});
      renderChat();
    });
    chat.on("ticket", () => { refreshTickets(); const d = ui.sections.tickets.dataset.detail; if (d && d !== "new") openTicket(d); });
    chat.on("status", () => renderChat());
  }

  function renderChat() {
    const pane = ui && ui.sections.chat;
    if (!pane) return;
    const log = el("div", { class: "chatlog", "aria-live": "polite" }, el("div", { class: "msg agent", text: config.greeting }));
    for (const m of chatLog) {
      const node = bubble(m);
      if (m.direction === "customer" && m.state) node.append(el("div", { class: "muted", text: t[m.state] }));
      log.append(node);
    }
    const input = el("input", { id: "chat-input", "aria-label": t.send, autocomplete: "off" });
    const form = el("form", { class: "composer", onsubmit: (e) => {
      e.preventDefault();
      const text = input.value;
      if (!text.trim()) return;
      input.value = "";
      const mine = { direction: "customer", text, state: "sending", seq: 0 };
      chatLog.push(mine);
      renderChat();
      chat.send(text, chatTicket ? { ticketId: chatTicket } : {}).then((ack) => {
        if (!chatTicket) { chatTicket = ack.ticket_id; client._set("chat_ticket", chatTicket); }
        mine.state = "sent"; mine.seq = ack.seq; renderChat();
      });
    } }, input, el("button", { class: "primary", type: "submit", text: t.send }));
    const note = chat && chat.status !== "live" ? el("p", { class: "muted", role: "status", text: t.offline }) : null;
    pane.replaceChildren(log, note, form);
    const focus = root.activeElement && root.activeElement.id === "chat-input";
    if (focus || ui.current === "chat") input.focus({ preventScroll: true });
  }

  let openWhenReady = false;
  const api = {
    loaded: true,
    identify(who) {
      identity = who || null;
      if (!client) return;
      if (chat) chat.close();
      chat = null; chatLog.length = 0; chatTicket = null;
      client._drop("chat_ticket");
      client.session = null;
      client._chat = null;
      ensureChat();
      refreshTickets();
    },
    open() { if (ui) toggle(true); else openWhenReady = true; },
    async logout() {
      identity = null;
      if (chat) chat.close();
      chat = null; chatLog.length = 0; chatTicket = null;
      if (client) { client._drop("chat_ticket"); await client.logout(); }
      if (ui) { renderChat(); refreshTickets(); }
    },
  };
  if (window.IntakeWidget && window.IntakeWidget.identity) identity = window.IntakeWidget.identity;
  window.IntakeWidget = api;
  const run = () => start().then(() => { if (openWhenReady) toggle(true); })
    .catch((e) => console.error("intake widget", e));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run); else run();
})();
