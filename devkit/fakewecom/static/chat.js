// The fake WeCom chat: act as a member, push callbacks, show the app's replies as they arrive.
// Bot mode (an AI bot chosen in the app list): the fake polls the bot's stream and the answer
// grows in place until it is finished.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), member = $("member"), app = $("app"), status = $("status");
  const records = new Map(); // "c<seq>" callbacks, "m<seq>" message/send records, "b<seq>" bot
  let since = 0, botSince = 0;
  const bot = () => (app.value.startsWith("bot:") ? app.value.slice(4) : null);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body),
    });
    return response.json();
  }

  function push(fields) {
    const body = {app: app.value, from: member.value, ...fields};
    post("/fake/callbacks", body).then((record) => {
      if (record.seq) upsert("c", record);
      else status.textContent = record.error || "push refused";
    }).catch(() => { status.textContent = "fake WeCom unreachable"; });
  }

  function botPost(path, fields) {
    post(path, {bot: bot(), from: member.value, ...fields}).then((record) => {
      if (record.seq) upsert("b", record);
      else status.textContent = record.error || "bot message refused";
    }).catch(() => { status.textContent = "fake WeCom unreachable"; });
  }

  function time(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function callbackBubble(r) {
    const isEvent = r.kind === "event";
    const text = isEvent ? `⚡ ${r.event}${r.event_key ? " " + r.event_key : ""}`
      : r.kind === "location" ? "📍 location" : r.kind === "image" ? "🖼 image" : r.content;
    let meta = "sending…";
    const last = r.attempts[r.attempts.length - 1];
    if (r.ok === true) meta = r.attempts.length > 1 ? `✓ after ${r.attempts.length} attempts` : "✓";
    else if (r.ok === false) meta = `✗ not delivered (${last ? last.error || "HTTP " + last.status : "?"})`;
    const node = el("div", `bubble ${isEvent ? "event" : "mine"}${r.ok === false ? " failed" : ""}`);
    node.append(el("span", "body", text), el("span", "meta", `${time(r.time)} ${meta}`));
    return node;
  }

  function cardBody(card, node) {
    const title = (card.main_title && card.main_title.title) || card.sub_title_text || card.card_type;
    node.append(el("span", "title", title));
    if (card.main_title && card.main_title.desc) node.append(el("span", "body", card.main_title.desc));
    const buttons = el("span", "buttons");
    for (const b of card.button_list || []) {
      const button = el("button", "card-button", b.text);
      button.type = "button";
      button.onclick = () => push({type: "event", event: "template_card_event", event_key: b.key,
        task_id: card.task_id, card_type: card.card_type});
      buttons.append(button);
    }
    if (buttons.childElementCount) node.append(buttons);
  }

  function messageBody(body, node) {
    const type = body.msgtype, part = body[type] || {};
    if (type === "text" || type === "markdown") node.append(el("span", "body", part.content));
    else if (type === "textcard") {
      node.append(el("span", "title", part.title), el("span", "body", part.description));
      const link = el("a", "", part.btntxt || "详情");
      link.href = part.url; link.target = "_blank"; link.rel = "noopener";
      node.append(link);
    } else if (type === "news" || type === "mpnews") {
      for (const a of part.articles || []) node.append(el("span", "title", a.title));
    } else if (type === "template_card") cardBody(part, node);
    else node.append(el("span", "body", `[${type}]`));
  }

  function messageBubble(r, who) {
    let fate = "", cls = "";
    if (r.status === "rejected" || r.status === "faulted") { fate = `errcode ${r.errcode}`; cls = "rejected"; }
    else if (r.status === "suppressed") { fate = "suppressed (duplicate check)"; cls = "suppressed"; }
    else if (r.dropped.includes(who)) { fate = "dropped (over 30/min or 1000/h)"; cls = "dropped"; }
    if (r.recalled) { fate = "recalled"; cls = "recalled"; }
    if (r.card_update) fate += (fate ? " · " : "") + "card updated";
    const node = el("div", `bubble reply ${cls}`.trim());
    if (typeof r.body === "object" && r.body) messageBody(r.body, node);
    else node.append(el("span", "body", String(r.body)));
    node.append(el("span", "meta", `${time(r.time)} ${fate}`.trim()));
    return node;
  }

  function botBubbles(r) {
    const node = el("div", "pair");
    const asked = r.kind === "enter_chat" ? el("div", "bubble event", "⚡ enter_chat")
      : el("div", "bubble mine", r.content);
    node.append(asked);
    if (r.status === "no_reply") return node;
    let meta = "streaming…", cls = "bubble reply streaming";
    if (r.status === "finished") { meta = `✓ finished after ${r.polls} polls`; cls = "bubble reply"; }
    else if (r.status === "answered") { meta = "✓ welcome"; cls = "bubble reply"; }
    else if (r.status === "failed") { meta = `✗ ${r.error}`; cls = "bubble reply rejected"; }
    else if (r.status === "gave_up") { meta = "✗ not finished within 6 min"; cls = "bubble reply rejected"; }
    const answer = el("div", cls);
    answer.append(el("span", "body", r.answer || "…"), el("span", "meta", meta));
    node.append(answer);
    for (const body of r.responses || []) { // active replies through the response_url
      const reply = el("div", "bubble reply");
      messageBody(body, reply);
      reply.append(el("span", "meta", "via response_url"));
      node.append(reply);
    }
    return node;
  }

  function concerns(kind, r) {
    const who = member.value;
    if (kind === "b") return bot() === r.bot && r.from === who;
    if (bot()) return false;
    if (r.app !== app.value) return false;
    if (kind === "c") return r.from_user === who;
    if (r.recipients.includes(who)) return true;
    const touser = (r.body && typeof r.body.touser === "string") ? r.body.touser : "";
    return r.status !== "suppressed" && touser.toLowerCase().split("|").includes(who);
  }

  function render(kind, r) {
    const key = kind + r.seq;
    const old = document.querySelector(`[data-key="${key}"]`);
    if (!concerns(kind, r)) { if (old) old.remove(); return; }
    const node = kind === "c" ? callbackBubble(r) : kind === "b" ? botBubbles(r)
      : messageBubble(r, member.value);
    node.dataset.key = key;
    node.dataset.seq = r.seq;
    if (old) { old.replaceWith(node); return; }
    const after = [...log.children].find((child) => Number(child.dataset.seq) > r.seq);
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.insertBefore(node, after || null);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function upsert(kind, r) {
    records.set(kind + r.seq, [kind, r]);
    render(kind, r);
  }

  function rerender() {
    log.replaceChildren();
    for (const [kind, r] of records.values()) render(kind, r);
    log.scrollTop = log.scrollHeight;
  }

  async function poll() {
    try {
      const [m, c, b] = await Promise.all([
        fetch(`/fake/messages?since=${since}`).then((r) => r.json()),
        fetch(`/fake/callbacks?since=${since}`).then((r) => r.json()),
        fetch(`/fake/bot/messages?since=${botSince}`).then((r) => r.json()),
      ]);
      for (const r of c.callbacks) upsert("c", r);
      for (const r of m.messages) upsert("m", r);
      for (const r of b.messages) upsert("b", r);
      since = Math.max(m.last, c.last);
      botSince = b.last;
      status.textContent = "";
    } catch (e) {
      status.textContent = "fake WeCom unreachable";
    }
    setTimeout(poll, bot() ? 250 : 500);
  }

  async function start() {
    const info = await (await fetch("/fake/apps")).json();
    for (const m of info.members) member.append(new Option(m, m));
    for (const a of info.apps) app.append(new Option(`${a.name} (${a.agent_id})`, a.name));
    const bots = await (await fetch("/fake/bots")).json();
    for (const name of bots.bots) app.append(new Option(`${name} (AI bot)`, `bot:${name}`));
    const modes = () => {
      for (const id of ["enter-agent", "event-key", "click", "location", "image-pick"]) {
        $(id).hidden = !!bot();
      }
      $("enter-chat").hidden = !bot();
      rerender();
    };
    member.onchange = rerender;
    app.onchange = modes;
    modes();
    $("composer").onsubmit = (event) => {
      event.preventDefault();
      const text = $("text").value;
      if (!text.trim()) return;
      $("text").value = "";
      if (bot()) botPost("/fake/bot/messages", {content: text});
      else push({type: "text", content: text});
    };
    $("enter-agent").onclick = () => push({type: "event", event: "enter_agent"});
    $("enter-chat").onclick = () => botPost("/fake/bot/enter", {});
    $("click").onclick = () => push({type: "event", event: "click", event_key: $("event-key").value});
    $("location").onclick = () => push({type: "event", event: "LOCATION",
      latitude: 39.9042, longitude: 116.4074, precision: 30});
    $("image").onchange = () => {  // the fake keeps the file; its media/get serves the MediaId
      const file = $("image").files[0];
      if (!file) return;
      const reader = new FileReader();
      reader.onload = () => push({type: "image", filename: file.name,
        image: String(reader.result).split(",", 2)[1]});
      reader.readAsDataURL(file);
      $("image").value = "";
    };
    poll();
  }

  start();
})();
