#!/usr/bin/env node
// JSON-lines driver for strophe.js over BOSH (XEP-0124/XEP-0206), with the
// same protocol as xmppdriver.mjs for the commands it shares, so
// tests/lib/xmppclient.py's NodeClient("strophe") drives it:
//
//   node tests/lib/boshdriver.mjs --lib strophe
//
// Commands: connect (url = http://HOST:PORT/http-bind), presence, message,
// raw, disconnect, exit.  Events: ready, online, error, message, presence,
// stanza, sent, offline.  strophe.js's node build brings its own DOM
// (@xmldom/xmldom); BOSH also needs an XMLHttpRequest, which node lacks:
// npm xhr2 provides it.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import readline from "node:readline";

for (const k of ["log", "info", "debug", "warn"]) {
  console[k] = (...a) => console.error(...a);
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const req = createRequire(import.meta.url);

const { Strophe, $msg, $pres } = await import(
  pathToFileURL(req.resolve("strophe.js")).href);

// xhr2 has no responseXML, and strophe.js 5.0.0 reads only that (its
// fallback parses responseText but drops the result): parse it here with
// the DOMParser that strophe's node build installs.
const XHR2 = req("xhr2");
globalThis.XMLHttpRequest = class extends XHR2 {
  get responseXML() {
    if (this.readyState !== 4 || !this.responseText) return null;
    return new globalThis.DOMParser().parseFromString(this.responseText,
                                                      "text/xml");
  }
};

let conn = null;
let online = false;

function attr(el, name) {
  const v = el.getAttribute(name);
  return v === "" || v === undefined ? null : v;
}

function text(el, name) {
  const c = el.getElementsByTagName(name);
  return c.length ? c[0].textContent : null;
}

function errorCondition(el) {
  const e = el.getElementsByTagName("error");
  if (!e.length) return null;
  for (let n = e[0].firstChild; n; n = n.nextSibling) {
    if (n.nodeType === 1 && n.tagName !== "text") return n.tagName;
  }
  return null;
}

function onStanza(el) {
  const kind = el.tagName;
  const base = {
    from: attr(el, "from"), to: attr(el, "to"), type: attr(el, "type"),
    id: attr(el, "id"), error: errorCondition(el), xml: Strophe.serialize(el),
  };
  if (kind === "message") {
    emit({ ev: "message", ...base, body: text(el, "body") });
  } else if (kind === "presence") {
    emit({ ev: "presence", ...base, show: text(el, "show"),
           priority: text(el, "priority"), status: text(el, "status") });
  } else {
    emit({ ev: "stanza", kind, ...base });
  }
  return true;
}

const STATUS = Object.fromEntries(
  Object.entries(Strophe.Status).map(([k, v]) => [v, k]));

function connect(c) {
  // no protocol option and an http:// URL: the BOSH transport
  conn = new Strophe.Connection(c.url, {});
  conn.rawInput = (d) => { if (c.trace) emit({ ev: "raw", dir: "in", data: d }); };
  conn.rawOutput = (d) => { if (c.trace) emit({ ev: "raw", dir: "out", data: d }); };
  conn.addHandler((el) => onStanza(el), null, "message");
  conn.addHandler((el) => onStanza(el), null, "presence");
  conn.addHandler((el) => onStanza(el), null, "iq");
  const jid = `${c.username}@${c.domain}` + (c.resource ? `/${c.resource}` : "");
  const timer = setTimeout(() => {
    if (!online) emit({ ev: "error", phase: "timeout", tag: c.tag ?? null });
  }, (c.timeout || 10) * 1000);
  conn.connect(jid, c.password, (status, condition) => {
    const name = STATUS[status];
    if (process.env.BOSHDRIVER_DEBUG) console.error("status", name, condition);
    if (status === Strophe.Status.CONNECTED) {
      clearTimeout(timer);
      online = true;
      emit({ ev: "online", jid: conn.jid, tag: c.tag ?? null });
    } else if (status === Strophe.Status.AUTHFAIL) {
      clearTimeout(timer);
      emit({ ev: "error", phase: "auth", condition: condition || "not-authorized" });
    } else if (status === Strophe.Status.CONNFAIL
               || status === Strophe.Status.ERROR) {
      clearTimeout(timer);
      emit({ ev: "error", phase: "connect", condition: condition || name });
    } else if (status === Strophe.Status.DISCONNECTED) {
      const by = online && !conn._driverClosing ? "server" : "client";
      online = false;
      emit({ ev: "offline", by, condition: condition || null });
    }
  }, c.wait || 10, 1);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let c;
  try {
    c = JSON.parse(line);
  } catch {
    emit({ ev: "error", phase: "cmd", text: "bad json" });
    return;
  }
  const tag = c.tag ?? null;
  try {
    switch (c.cmd) {
      case "connect":
        connect(c);
        break;
      case "presence": {
        const p = $pres(Object.fromEntries(
          ["to", "type", "id"].filter((k) => c[k]).map((k) => [k, c[k]])));
        if (c.show) p.c("show").t(c.show).up();
        if (c.priority !== undefined && c.priority !== null)
          p.c("priority").t(String(c.priority)).up();
        if (c.status) p.c("status").t(c.status).up();
        conn.send(p);
        emit({ ev: "sent", cmd: "presence", id: c.id ?? null, tag });
        break;
      }
      case "message": {
        const id = c.id || conn.getUniqueId("m");
        const m = $msg({ to: c.to, type: c.type || "chat", id });
        if (c.body !== undefined && c.body !== null) m.c("body").t(c.body);
        conn.send(m);
        emit({ ev: "sent", cmd: "message", id, tag });
        break;
      }
      case "raw":
        conn.send(Strophe.xmlHtmlNode(c.xml).documentElement);
        emit({ ev: "sent", cmd: "raw", id: null, tag });
        break;
      case "disconnect":
        if (!online) {
          emit({ ev: "offline", by: "already" });
          break;
        }
        conn._driverClosing = true;
        conn.disconnect("bye");
        break;
      case "exit":
      case "kill":
        process.exit(0);
        break;
      default:
        emit({ ev: "error", phase: "cmd", text: `unknown command ${c.cmd}`, tag });
    }
  } catch (err) {
    emit({ ev: "error", phase: "cmd", text: String(err?.stack || err), tag });
  }
});
rl.on("close", () => process.exit(0));

emit({ ev: "ready", lib: "strophe", version: req("strophe.js/package.json").version,
       node: process.version });
