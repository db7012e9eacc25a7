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
    if (name === "exports") { loadExports(); }
    if (name === "holds") { loadHolds(); }
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

async function unlock(ev) {
    ev.preventDefault();
    $("unlock-error").textContent = "";
    $("unlock-result").textContent = "";
    const body = {};
    body[$("unlock-kind").value] = $("unlock-name").value.trim();
    const res = await api("unlock", { method: "POST", body: body });
    if (res.status !== 200) { failed("unlock-error", res); return; }
    const d = res.doc;
    const who = d.login !== undefined ? "login " + d.login : "address " + d.address;
    $("unlock-result").textContent = d.failures === 0
        ? "No refused sign-ins were counted for " + who + "."
        : "Cleared " + d.failures + " refused sign-ins of " + who
          + (d.locked_for > 0 ? ", locked for " + d.locked_for + " s more." : ".");
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

/* exports: background jobs with a progress bar and a download link */

let exportsTimer = null;

function size(n) {
    if (n >= 1048576) { return (n / 1048576).toFixed(1) + " MB"; }
    if (n >= 1024) { return (n / 1024).toFixed(1) + " kB"; }
    return n + " B";
}

async function startExport(ev) {
    ev.preventDefault();
    $("exports-error").textContent = "";
    const body = { format: $("export-format").value };
    const user = $("export-user").value.trim();
    const room = $("export-room").value.trim();
    const since = localToMs($("export-since").value);
    const until = localToMs($("export-until").value);
    if (user) { body.user = user; }
    if (room) { body.room = room; }
    if (since) { body.since = Number(since); }
    if (until) { body.until = Number(until); }
    const res = await api("exports", { method: "POST", body: body });
    if (res.status !== 202) { failed("exports-error", res); return; }
    loadExports();
}

async function loadExports() {
    clearTimeout(exportsTimer);
    if ($("exports-view").hidden) { return; }
    const res = await api("exports");
    if (res.status !== 200) { failed("exports-error", res); return; }
    const body = $("exports-results").tBodies[0];
    body.replaceChildren();
    let running = false;
    for (const j of res.doc.exports) {
        const tr = el("tr");
        tr.dataset.id = j.id;
        tr.dataset.state = j.state;
        const filters = Object.entries(j.params || {})
            .filter(([k]) => k !== "id" && k !== "format")
            .map(([k, v]) => k + "=" + (k === "since" || k === "until" ? utc(v) : v))
            .join(", ");
        const bar = el("progress");
        bar.max = Math.max(j.total, 1);
        bar.value = j.state === "done" ? bar.max : j.done;
        const pct = j.total ? Math.floor(100 * j.done / j.total) : (j.state === "done" ? 100 : 0);
        const prog = el("td");
        prog.append(bar, el("span", " " + j.done + " / " + j.total + " (" + pct + "%)"));
        const act = el("td");
        if (j.state === "done") {
            const a = el("a", "Download");
            a.href = "api/download?id=" + encodeURIComponent(j.id);
            a.className = "download";
            a.setAttribute("download", j.file || "export.zip");
            act.append(a);
        } else if (j.state === "failed") {
            act.append(el("span", j.error || "failed", "error"));
        }
        tr.append(el("td", utc(j.created)), el("td", j.user), el("td", j.format),
                  el("td", filters), el("td", j.state, "state"), prog,
                  el("td", j.state === "done" ? size(j.size) : ""), act);
        body.append(tr);
        if (j.state === "running") { running = true; }
    }
    if (running) { exportsTimer = setTimeout(loadExports, 1000); }
}

/* legal holds and retention policies */

function jidList(v) {
    return v.split(",").map((s) => s.trim()).filter((s) => s);
}

async function createHold(ev) {
    ev.preventDefault();
    $("holds-error").textContent = "";
    const body = { action: "create", matter: $("hold-matter").value.trim(),
                   custodians: jidList($("hold-custodians").value),
                   rooms: jidList($("hold-rooms").value) };
    const d = $("hold-description").value.trim();
    const since = localToMs($("hold-since").value);
    const until = localToMs($("hold-until").value);
    if (d) { body.description = d; }
    if (since) { body.since = Number(since); }
    if (until) { body.until = Number(until); }
    const res = await api("holds", { method: "POST", body: body });
    if (res.status !== 200) { refusedWhy("holds-error", res); return; }
    loadHolds();
}

function refusedWhy(where, res) {
    $(where).textContent = "Refused: " + (res.doc.reason || res.doc.error || res.status);
}

async function changePolicy(body) {
    $("holds-error").textContent = "";
    const res = await api("retention", { method: "POST", body: body });
    if (res.status !== 200) { refusedWhy("holds-error", res); return; }
    loadHolds();
}

async function loadHolds() {
    const res = await api("holds");
    if (res.status !== 200) { failed("holds-error", res); return; }
    const d = res.doc;
    $("retention-profile").textContent = "Compliance profile: " + d.profile +
        " (floors: messages " + d.messages_floor_days + " days, sign-ins " +
        d.signins_floor_days + " days; -1 or 0: none)";
    const hb = $("holds-results").tBodies[0];
    hb.replaceChildren();
    const usTime = (v) => (v ? utc(Number(v) / 1000) : "");
    for (const h of d.holds) {
        const tr = el("tr");
        tr.dataset.matter = h.matter;
        const act = el("td");
        if (!h.released_at) {
            const b = el("button", "Release");
            b.type = "button";
            b.className = "release";
            b.addEventListener("click", async () => {
                const r = await api("holds", { method: "POST",
                    body: { action: "release", matter: h.matter } });
                if (r.status !== 200) { refusedWhy("holds-error", r); }
                loadHolds();
            });
            act.append(b);
        }
        tr.append(el("td", h.matter), el("td", h.custodians || ""), el("td", h.rooms || ""),
                  el("td", usTime(h.since_us)), el("td", usTime(h.until_us)),
                  el("td", h.created_at + " by " + h.created_by),
                  el("td", h.released_at ? "released " + h.released_at + " by " +
                     h.released_by : "active"), act);
        hb.append(tr);
    }
    const pb = $("policies-results").tBodies[0];
    pb.replaceChildren();
    for (const p of d.policies) {
        const tr = el("tr");
        const b = el("button", "Remove");
        b.type = "button";
        b.addEventListener("click", () => changePolicy({ action: "remove",
            scope: p.scope, target: p.target }));
        const td = el("td");
        td.append(b);
        tr.append(el("td", p.scope), el("td", p.target), el("td", p.messages_days),
                  el("td", p.signins_days), td);
        pb.append(tr);
    }
}

function setPolicy(ev) {
    ev.preventDefault();
    const body = { action: "set", scope: $("policy-scope").value,
                   messages_days: Number($("policy-messages").value),
                   signins_days: Number($("policy-signins").value) };
    const t = $("policy-target").value.trim();
    if (body.scope !== "global") { body.target = t; }
    changePolicy(body);
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
    $("unlock-form").addEventListener("submit", unlock);
    $("status-refresh").addEventListener("click", loadStatus);
    $("export-form").addEventListener("submit", startExport);
    $("hold-form").addEventListener("submit", createHold);
    $("policy-form").addEventListener("submit", setPolicy);
    for (const b of document.querySelectorAll("#tabs button")) {
        b.addEventListener("click", () => showView(b.dataset.view));
    }
    const me = await api("me");
    if (me.status === 200) { showApp(me.doc); } else { showSignin(); }
});
