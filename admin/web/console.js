/*
 * Conclave admin console (docs/console.md).  Plain JavaScript, no
 * library, nothing from the network but this server's /admin/api/.
 * Every value from the server is put into the page as text
 * (textContent), never as HTML: message bodies are evidence, not markup.
 */
"use strict";

const state = { me: null, csrf: null, search: null, lastSearch: [] };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
}

function utc(ms) {
    return ms === null || ms === undefined ? "" :
        new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
}

async function api(name, opts) {
    opts = opts || {};
    const init = { method: opts.method || "GET", credentials: "same-origin",
                   headers: {} };
    if (init.method !== "GET") {
        init.headers["Content-Type"] = "application/json";
        init.headers["X-CSRF-Token"] = state.csrf || "";
        init.body = JSON.stringify(opts.body || {});
    }
    let url = "api/" + name;
    if (opts.query) {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(opts.query)) {
            if (v !== undefined && v !== null && v !== "") { q.set(k, v); }
        }
        const s = q.toString();
        if (s) { url += "?" + s; }
    }
    const r = await fetch(url, init);
    let doc = {};
    try { doc = await r.json(); } catch (e) { doc = {}; }
    if (r.status === 401 && name !== "signin") { showSignin(); }
    return { status: r.status, doc: doc };
}

function showSignin(message) {
    state.me = null;
    $("who").hidden = true;
    $("tabs").hidden = true;
    for (const v of document.querySelectorAll(".view")) { v.hidden = true; }
    $("signin-view").hidden = false;
    $("signin-error").textContent = message || "";
}

function hasRole(roles) {
    return state.me && state.me.roles.some((r) => roles.includes(r));
}

function showApp(me) {
    state.me = me;
    state.csrf = me.csrf;
    $("signin-view").hidden = true;
    $("who").hidden = false;
    $("who-user").textContent = me.user + "@" + me.domain;
    $("who-roles").textContent = "(" + me.roles.join(", ") + ")";
    $("tabs").hidden = false;
    let first = null;
    for (const b of document.querySelectorAll("#tabs button")) {
        b.hidden = !hasRole(b.dataset.roles.split(" "));
        if (!b.hidden && !first) { first = b.dataset.view; }
    }
    if (first) { showView(first); }
}

function showView(name) {
    for (const v of document.querySelectorAll(".view")) {
        v.hidden = v.id !== name + "-view";
    }
    for (const b of document.querySelectorAll("#tabs button")) {
        b.classList.toggle("active", b.dataset.view === name);
    }
    if (name === "audit") { loadAudit(); }
    if (name === "sessions") { loadSessions(); }
    if (name === "status") { loadStatus(); }
}

function failed(where, res) {
    $(where).textContent = "Refused: " + (res.doc.error || res.status);
}

/* sign-in */

async function signin(ev) {
    ev.preventDefault();
    $("signin-error").textContent = "";
    const res = await api("signin", { method: "POST", body: {
        user: $("signin-user").value, password: $("signin-password").value } });
    $("signin-password").value = "";
    if (res.status === 200) { showApp(res.doc); return; }
    showSignin(res.status === 429 ? "Too many failed sign-ins; try later." :
               "Sign-in refused.");
}

async function signout() {
    await api("signout", { method: "POST" });
    showSignin("Signed out.");
}

/* search */

function localToMs(v) { return v ? String(new Date(v).getTime()) : ""; }

async function search(ev, more) {
    if (ev) { ev.preventDefault(); }
    $("search-error").textContent = "";
    if (!more) {
        state.search = {
            user: $("search-user").value.trim(), peer: $("search-peer").value.trim(),
            room: $("search-room").value.trim(), q: $("search-q").value.trim(),
            since: localToMs($("search-since").value),
            until: localToMs($("search-until").value) };
        $("search-results").tBodies[0].replaceChildren();
        state.lastSearch = [];
    }
    const res = await api("search", { query: state.search });
    if (res.status !== 200) { failed("search-error", res); return; }
    const body = $("search-results").tBodies[0];
    for (const m of res.doc.results) {
        state.lastSearch.push(m);
        const tr = el("tr");
        tr.dataset.id = m.id;
        tr.append(el("td", utc(m.ts)), el("td", m.from), el("td", m.to),
                  el("td", m.body, "body"));
        const open = el("button", "Open");
        open.type = "button";
        open.className = "open";
        open.addEventListener("click", () => openConversation(m.id));
        const td = el("td");
        td.append(open);
        tr.append(td);
        body.append(tr);
    }
    if (res.doc.results.length === 0 && !more) {
        $("search-error").textContent = "No messages found.";
    }
    state.search.cursor = res.doc.next || null;
    $("search-more").hidden = !res.doc.next;
}

async function openConversation(id) {
    const res = await api("conversation", { query: { id: id } });
    if (res.status !== 200) { failed("search-error", res); return; }
    const c = res.doc.conversation;
    $("conversation-title").textContent = c.room ? c.to :
        c.from + " \u2194 " + c.to;
    const list = $("conversation");
    list.replaceChildren();
    const later = {};
    for (const m of res.doc.results) {
        if (m.replaces) { later[m.replaces] = "edited later"; }
        if (m.retracts) { later[m.retracts] = "retracted later"; }
    }
    for (const m of res.doc.results) {
        const li = el("li");
        li.dataset.id = m.id;
        if (m.id === id) { li.classList.add("anchor"); }
        const meta = el("div", utc(m.ts) + "  " + m.from + " \u2192 " + m.to,
                        "meta");
        if (m.replaces) {
            meta.append(el("span", "correction of " + m.replaces, "flag"));
        }
        if (m.retracts) {
            meta.append(el("span", "retraction of " + m.retracts,
                           "flag retracted"));
        }
        if (m.stanza_id && later[m.stanza_id]) {
            meta.append(el("span", later[m.stanza_id], "flag"));
        }
        li.append(meta, el("div", m.body, "body"));
        list.append(li);
    }
    for (const v of document.querySelectorAll(".view")) { v.hidden = true; }
    $("conversation-view").hidden = false;
}

/* sign-in history */

let signinsCursor = null;

async function signins(ev, more) {
    if (ev) { ev.preventDefault(); }
    $("signins-error").textContent = "";
    if (!more) { signinsCursor = null; $("signins-results").tBodies[0].replaceChildren(); }
    const res = await api("signins", { query: {
        user: $("signins-user").value.trim(), cursor: signinsCursor } });
    if (res.status !== 200) { failed("signins-error", res); return; }
    const body = $("signins-results").tBodies[0];
    for (const s of res.doc.results) {
        const tr = el("tr");
        const err = s.error ? (s.error.code || "") +
            (s.error.description ? ": " + s.error.description : "") : "";
        tr.append(el("td", utc(s.ts)), el("td", s.status), el("td", s.ip),
                  el("td", s.transport), el("td", err));
        body.append(tr);
    }
    signinsCursor = res.doc.next || null;
    $("signins-more").hidden = !res.doc.next;
}

/* the console's own audit trail */

let auditCursor = null;

async function loadAudit(more) {
    $("audit-error").textContent = "";
    if (!more) { auditCursor = null; $("audit-results").tBodies[0].replaceChildren(); }
    const res = await api("audit", { query: { cursor: auditCursor } });
    if (res.status !== 200) { failed("audit-error", res); return; }
    const body = $("audit-results").tBodies[0];
    for (const a of res.doc.results) {
        const tr = el("tr");
        const details = JSON.stringify(a.params || {}) +
            (a.error ? " " + JSON.stringify(a.error) : "");
        tr.append(el("td", utc(a.ts)), el("td", a.user), el("td", a.ip),
                  el("td", a.action), el("td", a.status),
                  el("td", details, "body"));
        body.append(tr);
    }
    auditCursor = res.doc.next || null;
    $("audit-more").hidden = !res.doc.next;
}

/* operations */

async function loadSessions() {
    $("sessions-error").textContent = "";
    const res = await api("sessions");
    if (res.status !== 200) { failed("sessions-error", res); return; }
    const body = $("sessions-results").tBodies[0];
    body.replaceChildren();
    for (const s of res.doc.sessions) {
        const tr = el("tr");
        tr.dataset.jid = s.jid;
        tr.dataset.session = s.session;
        const kick = el("button", "Kick");
        kick.type = "button";
        kick.className = "kick";
        kick.addEventListener("click", async () => {
            const r = await api("kick", { method: "POST",
                                          body: { jid: s.jid, worker_pid: s.worker_pid,
                                                  session: s.session } });
            if (r.status !== 200) { failed("sessions-error", r); }
            setTimeout(loadSessions, 500);
        });
        const td = el("td");
        td.append(kick);
        tr.append(el("td", s.jid), el("td", s.resource), el("td", s.ip),
                  el("td", s.transport), el("td", s.worker_pid),
                  el("td", utc(s.since * 1000)), td);
        body.append(tr);
    }
}

async function loadStatus() {
    $("status-error").textContent = "";
    const res = await api("status");
    if (res.status !== 200) { failed("status-error", res); return; }
    const dl = $("status-summary");
    dl.replaceChildren();
    const d = res.doc;
    const pairs = [["Online sessions", d.sessions], ["Server time", utc(d.time * 1000)]];
    if (d.database_this_worker) {
        pairs.push(["Database requests (this worker)", d.database_this_worker.requests]);
        pairs.push(["Database timeouts (this worker)", d.database_this_worker.timeouts]);
    }
    for (const [k, v] of pairs) { dl.append(el("dt", k), el("dd", v)); }
    const body = $("status-audit").tBodies[0];
    body.replaceChildren();
    for (const j of d.audit || []) {
        const tr = el("tr");
        tr.append(el("td", j.journal), el("td", j.worker_pid), el("td", j.last_seq),
                  el("td", j.shipped_seq), el("td", j.backlog_records),
                  el("td", j.lag_seconds), el("td", j.mariadb_ok ? "ok" : "down"));
        body.append(tr);
    }
}

/* start */

document.addEventListener("DOMContentLoaded", async () => {
    $("signin-form").addEventListener("submit", signin);
    $("signout").addEventListener("click", signout);
    $("search-form").addEventListener("submit", (e) => search(e, false));
    $("search-more").addEventListener("click", () => search(null, true));
    $("conversation-back").addEventListener("click", () => showView("search"));
    $("signins-form").addEventListener("submit", (e) => signins(e, false));
    $("signins-more").addEventListener("click", () => signins(null, true));
    $("audit-refresh").addEventListener("click", () => loadAudit(false));
    $("audit-more").addEventListener("click", () => loadAudit(true));
    $("sessions-refresh").addEventListener("click", loadSessions);
    $("status-refresh").addEventListener("click", loadStatus);
    for (const b of document.querySelectorAll("#tabs button")) {
        b.addEventListener("click", () => showView(b.dataset.view));
    }
    const me = await api("me");
    if (me.status === 200) { showApp(me.doc); } else { showSignin(); }
});
