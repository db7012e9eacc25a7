#!/usr/bin/env node
// JSON-lines driver for real third-party XMPP-over-WebSocket (RFC 7395)
// clients, so the Python integration tests can steer one client
// interactively.
//
//   node tests/lib/xmppdriver.mjs --lib xmpp|stanza [--trace] [--modules DIR]
//
// stdin:  one JSON command per line.  stdout: one JSON event per line.
// Anything else (library chatter, debug logs) goes to stderr.
//
//   --lib xmpp     npm "@xmpp/client" (0.13.x CommonJS or 0.14.x ESM)
//   --lib stanza   npm "stanza" (12.x)
//   --trace        also emit {"ev":"raw","dir":"in"|"out","data":...} for
//                  every WebSocket frame (same as "trace":true in connect)
//   --modules DIR  resolve the npm packages from DIR/node_modules instead of
//                  the node_modules above this file (i.e. the repo root's)
//
// Commands (see tests/lib/xmppclient.py for the Python side):
//   {"cmd":"connect","url":"ws://127.0.0.1:PORT/xmpp-websocket",
//    "domain":"example.com","username":"alice","password":"pw",
//    "resource":opt,"insecure":opt bool (wss:// with a self-signed cert),
//    "mechanism":opt "PLAIN"|"SCRAM-SHA-1"|... (force one SASL mechanism),
//    "sm":opt bool (false: hide XEP-0198 from the library, default true),
//    "deflate":opt bool (false: do not offer permessage-deflate),
//    "timeout":opt seconds (default 10), "trace":opt bool}
//     -> {"ev":"online","jid":"alice@example.com/res"}
//      | {"ev":"error","phase":"auth","condition":"not-authorized",...}
//      | {"ev":"error","phase":"connect"|"bind"|"timeout",...}
//   {"cmd":"presence","to","type","priority","show","status","id"}   (all opt)
//   {"cmd":"message","to","body","id","type","thread","subject"}
//   {"cmd":"ping","to","id"}         -> iq-result | iq-error
//   {"cmd":"disco_info","to","id","node"} -> disco_info | iq-error
//   {"cmd":"iq","type":"get"|"set","to","id","xml":"<query xmlns=.../>"}
//                                    -> iq-result (with "xml") | iq-error
//   {"cmd":"raw","xml":"<message .../>"}     written as one WebSocket frame
//   {"cmd":"disconnect"}  <close/> + WebSocket close, then {"ev":"offline"}
//   {"cmd":"kill","rst":opt bool}  drop the TCP connection (FIN, or RST with
//                         "rst":true) without <close/> or a WebSocket close
//                         frame, then exit the process
//   {"cmd":"drop","timeout":opt}  (stanza only) drop the connection like
//                         "kill" but stay: the library reconnects and
//                         resumes its XEP-0198 stream (a new WebSocket)
//                         -> {"ev":"resumed","jid","resumed":true|false}
//                            (false: the server refused, a new session)
//                          | {"ev":"error","phase":"resume",...}
//   {"cmd":"exit"}        exit the process (no protocol goodbye)
// Every command may carry "tag"; sends are acknowledged with
// {"ev":"sent","cmd":...,"id":...,"tag":...}.
//
// Events for incoming stanzas (every one carries "xml"):
//   {"ev":"message","from","to","type","id","body","error","xml"}
//   {"ev":"presence","from","to","type","id","show","priority","status","error","xml"}
//   {"ev":"stanza","kind":"iq","from","to","type","id","error","xml"}
// Stream level: {"ev":"stream-error","condition","text"}, {"ev":"offline",
// "by":"client"|"server"}, {"ev":"error","phase":"xml"|"cmd"|...}.
// Missing attributes are null in every event.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";
import readline from "node:readline";
import { randomUUID } from "node:crypto";

// ---------------------------------------------------------------- output

// Libraries sometimes console.log(); stdout belongs to the protocol.
for (const k of ["log", "info", "debug", "warn"]) {
  console[k] = (...a) => console.error(...a);
}

function emit(obj) {
  // Pipes are synchronous on Linux, so each line is flushed when written.
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function log(...a) {
  if (process.env.XMPPDRIVER_DEBUG) console.error("[xmppdriver]", ...a);
}

// ---------------------------------------------------------------- args

function parseArgs(argv) {
  const o = { lib: null, trace: false, modules: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--lib") o.lib = argv[++i];
    else if (a.startsWith("--lib=")) o.lib = a.slice(6);
    else if (a === "--trace") o.trace = true;
    else if (a === "--modules") o.modules = argv[++i];
    else if (a.startsWith("--modules=")) o.modules = a.slice(10);
    else {
      console.error(`xmppdriver: unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (o.lib === "xmpp.js" || o.lib === "@xmpp/client") o.lib = "xmpp";
  if (o.lib !== "xmpp" && o.lib !== "stanza") {
    console.error("usage: xmppdriver.mjs --lib xmpp|stanza [--trace] [--modules DIR]");
    process.exit(2);
  }
  return o;
}

const ARGS = parseArgs(process.argv.slice(2));
const MODULES_BASE = ARGS.modules || process.env.XMPPDRIVER_MODULES || null;
// createRequire walks up node_modules directories from the given file:
// by default from this file, i.e. /work/main/tests/lib -> /work/main.
const req = createRequire(
  MODULES_BASE
    ? path.join(path.resolve(MODULES_BASE), "package.json")
    : import.meta.url,
);

async function importPkg(spec) {
  const resolved = req.resolve(spec);
  return import(pathToFileURL(resolved).href);
}

function pkgVersion(name) {
  try {
    return req(`${name}/package.json`).version;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- WebSocket

// Both libraries open their WebSocket through this subclass of npm "ws":
// it adds TLS options, frame tracing and a handle for "kill".
let WS;
try {
  WS = req("ws");
} catch (err) {
  console.error("[xmppdriver] cannot load npm ws:", err?.message);
  emit({ ev: "error", phase: "load", text: String(err?.message || err) });
  process.exit(1);
}
const wsState = { current: null, insecure: false, deflate: true, trace: ARGS.trace, lastIn: null, lastError: null };

class DriverWebSocket extends WS {
  constructor(address, protocols, options = {}) {
    options = { ...options };
    if (wsState.insecure) options.rejectUnauthorized = false;
    if (!wsState.deflate) options.perMessageDeflate = false;
    super(address, protocols, options);
    wsState.current = this;
    // Registered before the library's own listener, so while the library
    // parses a frame (synchronously) wsState.lastIn is that frame's text.
    this.on("message", (data) => {
      wsState.lastIn = data.toString("utf8");
      if (wsState.trace) emit({ ev: "raw", dir: "in", data: wsState.lastIn });
    });
    this.on("error", (err) => {
      wsState.lastError = err?.message || String(err);
      log("websocket error", wsState.lastError);
    });
    this.on("close", (code, reason) => {
      log("websocket closed", code, reason?.toString());
      if (wsState.trace)
        emit({ ev: "raw", dir: "ws-close", code, reason: reason ? reason.toString() : "" });
    });
  }

  send(data, ...rest) {
    if (wsState.trace) emit({ ev: "raw", dir: "out", data: String(data) });
    return super.send(data, ...rest);
  }
}

// ---------------------------------------------------------------- helpers

const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_PING = "urn:xmpp:ping";
const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
const NS_SM = "urn:xmpp:sm:3";

const nz = (v) => (v === undefined || v === "" ? null : v);
const str = (v) => (v === undefined || v === null ? null : String(v));

function escapeXml(s) {
  return String(s)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => {
      const e = new Error(`${what} timed out after ${ms} ms`);
      e.isTimeout = true;
      reject(e);
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Pick a SASL mechanism: the forced one if given, else the library's choice.
function restrictMechanisms(offered, forced) {
  if (!forced) return offered;
  return offered.filter((m) => m.toUpperCase() === forced.toUpperCase());
}

// ---------------------------------------------------------------- @xmpp/client

class XmppJsAdapter {
  constructor(events) {
    this.ev = events;
    this.x = null;
    this.mod = null;
    this.version = pkgVersion("@xmpp/client");
    this.rawOf = new WeakMap();
  }

  async load() {
    // @xmpp/client 0.14 uses the global WebSocket (node 20 has none without
    // --experimental-websocket); 0.13 reads globalThis.WebSocket at load time.
    globalThis.WebSocket = DriverWebSocket;
    const m = await importPkg("@xmpp/client");
    this.mod = m.client ? m : m.default;
    this.xml = this.mod.xml;
    // @xmpp/xml has a stream parser only: wrap the fragment in a root
    // element and collect the root's children.
    const xmlPkg = await importPkg("@xmpp/xml");
    const Parser = xmlPkg.Parser ?? xmlPkg.default?.Parser;
    this.parseXml = (text) => {
      const p = new Parser();
      const out = [];
      let error = null;
      p.on("element", (el) => out.push(el));
      p.on("error", (e) => (error = e));
      p.write(`<x>${text}</x>`);
      if (error) throw error;
      return out;
    };
  }

  async connect(opts) {
    const { client, xml } = this.mod;
    const major14 = !/^0\.1[0-3]\./.test(this.version || "");
    if (!major14 && !opts.mechanism) {
      // @xmpp/sasl 0.13 calls mech.response() synchronously, but npm
      // sasl-scram-sha-1 >= 1.3 (what ^1.3.0 resolves to) returns a Promise
      // for the final message: 0.13 then sends an empty <response/> and the
      // server answers <malformed-request/>.  Use PLAIN with 0.13.
      opts = { ...opts, mechanism: "PLAIN" };
    }
    const params = {
      service: opts.url,
      domain: opts.domain,
      username: opts.username,
      password: opts.password,
      resource: opts.resource ?? undefined,
      timeout: Math.max(2000, opts.timeoutMs),
    };
    const creds = { username: opts.username, password: opts.password };
    if (major14) {
      // 0.14 refuses PLAIN unless the socket is wss:// or loopback; the tests
      // need PLAIN over plain ws:// anywhere, and optionally a forced mechanism.
      const userAgent = xml("user-agent", { id: randomUUID() });
      params.credentials = async (authenticate, mechanisms) => {
        const usable = restrictMechanisms(mechanisms, opts.mechanism);
        if (usable.length === 0) throw new Error(`SASL mechanism ${opts.mechanism} not offered`);
        await authenticate(creds, usable[0], userAgent);
      };
    } else if (opts.mechanism) {
      // 0.13 calls credentials(authenticate, mechanism) with the first
      // mechanism both sides know; the offer is trimmed below.
      params.credentials = async (authenticate) => {
        await authenticate(creds);
      };
    }
    const x = client(params);
    this.x = x;
    x.reconnect.stop(); // no auto-reconnect
    if (!major14 && opts.mechanism) {
      const forced = opts.mechanism.toUpperCase();
      x.prependListener("element", (el) => {
        if (!el.is?.("features", "http://etherx.jabber.org/streams")) return;
        const mechs = el.getChild("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl");
        if (mechs)
          mechs.children = mechs.children.filter(
            (c) => typeof c === "string" || c.text().toUpperCase() === forced,
          );
      });
    }
    if (opts.sm === false) {
      // Hide XEP-0198 from the library (it has no switch for it).
      x.prependListener("element", (el) => {
        if (el.is?.("features", "http://etherx.jabber.org/streams")) {
          el.children = el.children.filter(
            (c) => typeof c === "string" || !(c.attrs && c.attrs.xmlns === NS_SM),
          );
        }
      });
    }

    x.on("error", (err) => {
      log("xmpp error", err?.name, err?.condition, err?.message);
      if (err?.name === "StreamError") {
        this.ev.streamError(err.condition, err.text || null, wsState.lastIn ?? err.element?.toString() ?? null);
      } else if (err?.name === "XMLError" || /XMLError/.test(err?.name || "")) {
        this.ev.error({ phase: "xml", text: err.message });
      } else if (this.ev.isOnline()) {
        this.ev.error({ phase: "runtime", text: String(err?.message || err) });
      }
    });
    x.on("status", (s) => log("status", s));
    x.on("disconnect", () => this.ev.offline());
    x.on("stanza", (el) => this.ev.stanza(this.normalize(el)));

    try {
      const jid = await withTimeout(x.start(), opts.timeoutMs, "connect");
      return String(jid);
    } catch (err) {
      throw this.classify(err);
    }
  }

  classify(err) {
    if (err?.isTimeout) return { phase: "timeout", condition: "timeout", text: err.message };
    if (err?.name === "SASLError")
      return { phase: "auth", condition: err.condition || null, text: err.text || null };
    if (err?.name === "StreamError")
      return { phase: "stream", condition: err.condition, text: err.text || null };
    if (err?.name === "StanzaError")
      return { phase: "bind", condition: err.condition, text: err.text || null };
    if (err?.code === "ECONNERROR" || /WebSocket/.test(err?.message || ""))
      return { phase: "connect", condition: null, text: err.message };
    return { phase: "connect", condition: err?.condition ?? null, text: String(err?.message || err) };
  }

  normalize(el) {
    const a = el.attrs || {};
    const out = {
      kind: el.name,
      from: nz(a.from),
      to: nz(a.to),
      type: nz(a.type),
      id: nz(a.id),
      error: null,
      // the frame as received (see DriverWebSocket), like the stanza adapter
      xml: wsState.lastIn ?? el.toString(),
    };
    this.rawOf.set(el, out.xml);
    const err = el.getChild("error");
    if (err) {
      const cond = err.getChildElements().find((c) => c.name !== "text" && c.attrs.xmlns === NS_STANZAS);
      out.error = cond ? cond.name : null;
      out.error_type = nz(err.attrs.type);
      out.error_text = nz(err.getChildText("text", NS_STANZAS));
    }
    if (el.name === "message") {
      out.body = el.getChildText("body");
      out.subject = el.getChildText("subject");
      out.thread = el.getChildText("thread");
    } else if (el.name === "presence") {
      out.show = el.getChildText("show");
      const p = el.getChildText("priority");
      out.priority = p === null || p === undefined ? null : Number(p);
      out.status = el.getChildText("status");
    }
    return out;
  }

  async presence(c) {
    const { xml } = this.mod;
    const attrs = { to: c.to ?? undefined, type: c.type ?? undefined, id: c.id ?? undefined };
    const kids = [];
    if (c.show) kids.push(xml("show", {}, c.show));
    if (c.status) kids.push(xml("status", {}, c.status));
    if (c.priority !== undefined && c.priority !== null) kids.push(xml("priority", {}, String(c.priority)));
    await this.x.send(xml("presence", attrs, ...kids));
    return c.id ?? null;
  }

  async message(c) {
    const { xml } = this.mod;
    const attrs = { to: c.to ?? undefined, type: c.type ?? undefined, id: c.id ?? undefined };
    const kids = [];
    if (c.subject !== undefined && c.subject !== null) kids.push(xml("subject", {}, c.subject));
    if (c.body !== undefined && c.body !== null) kids.push(xml("body", {}, c.body));
    if (c.thread) kids.push(xml("thread", {}, c.thread));
    await this.x.send(xml("message", attrs, ...kids));
    return c.id ?? null;
  }

  async iqRequest(type, to, id, payload, timeoutMs) {
    const { xml } = this.mod;
    const iq = xml("iq", { type, to: to ?? undefined, id }, payload);
    try {
      const res = await this.x.iqCaller.request(iq, timeoutMs);
      return { ok: true, stanza: res, xml: this.rawOf.get(res) ?? res.toString() };
    } catch (err) {
      if (err?.name === "StanzaError")
        return { ok: false, condition: err.condition, type: err.type ?? null, text: err.text || null, xml: this.rawOf.get(err.element?.parent) ?? err.element?.parent?.toString?.() ?? null };
      if (err?.name === "TimeoutError" || /timeout/i.test(err?.message || ""))
        return { ok: false, condition: "timeout", type: null, text: err.message };
      return { ok: false, condition: "send-failed", type: null, text: String(err?.message || err) };
    }
  }

  async ping(c, timeoutMs) {
    const { xml } = this.mod;
    const r = await this.iqRequest("get", c.to, c.id, xml("ping", { xmlns: NS_PING }), timeoutMs);
    return r;
  }

  async discoInfo(c, timeoutMs) {
    const { xml } = this.mod;
    const r = await this.iqRequest(
      "get", c.to, c.id, xml("query", { xmlns: NS_DISCO_INFO, node: c.node ?? undefined }), timeoutMs,
    );
    if (!r.ok) return r;
    const q = r.stanza.getChild("query", NS_DISCO_INFO);
    r.identities = q
      ? q.getChildren("identity").map((i) => ({
          category: nz(i.attrs.category), type: nz(i.attrs.type), name: nz(i.attrs.name),
        }))
      : [];
    r.features = q ? q.getChildren("feature").map((f) => f.attrs.var) : [];
    return r;
  }

  async iq(c, timeoutMs) {
    const payload = c.xml ? this.parseXml(c.xml) : [];
    return this.iqRequest(c.type || "get", c.to, c.id, payload, timeoutMs);
  }

  async raw(xmlText) {
    await this.x.write(xmlText);
  }

  async disconnect(timeoutMs) {
    // stop(): <close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>, wait for
    // the server's <close/>, then a WebSocket close frame (1000).
    await withTimeout(this.x.stop(), timeoutMs, "disconnect");
  }
}

// ---------------------------------------------------------------- stanza

class StanzaAdapter {
  constructor(events) {
    this.ev = events;
    this.c = null;
    this.version = pkgVersion("stanza");
    this.rawOf = new WeakMap();
  }

  async load() {
    // stanza takes its WebSocket class from its node platform module.
    const platform = req("stanza/platform/node");
    platform.WebSocket = DriverWebSocket;
    this.mod = req("stanza");
  }

  async connect(opts) {
    const c = this.mod.createClient({
      jid: `${opts.username}@${opts.domain}`,
      server: opts.domain,
      resource: opts.resource ?? undefined,
      credentials: { username: opts.username, password: opts.password },
      transports: { websocket: opts.url, bosh: false },
      transportPreferenceOrder: ["websocket"],
      autoReconnect: false,
      useStreamManagement: opts.sm !== false,
      timeout: Math.ceil(opts.timeoutMs / 1000),
    });
    this.c = c;
    if (opts.mechanism) {
      const orig = c.sasl.createMechanism.bind(c.sasl);
      c.sasl.createMechanism = (names) => orig(restrictMechanisms(names, opts.mechanism));
    }

    // Keep the raw frame of each incoming top-level element: RFC 7395 puts
    // exactly one element in each WebSocket message, and stanza parses the
    // frame synchronously in the socket's message handler.
    c.on("stream:data", (json) => {
      if (json && typeof json === "object" && wsState.lastIn !== null) this.rawOf.set(json, wsState.lastIn);
    });

    let saslFailure = null;
    let negotiationFailure = null;
    c.on("sasl", (s) => {
      if (s.type === "failure") saslFailure = s;
    });
    c.on("streamError", (e) => {
      this.ev.streamError(e.condition || null, e.text || null, this.rawOf.get(e) ?? null);
    });
    c.on("stream:error", (e, err) => {
      // stanza emits this both for real errors it detects itself (invalid
      // XML from the server) and as a synthetic policy-violation when stream
      // feature negotiation fails; the server's <stream:error/> arrives as
      // "streamError" above.
      log("stanza stream:error", e, err?.message);
      if (e?.condition === "invalid-xml") {
        this.ev.error({ phase: "xml", text: err?.message || "invalid XML from server" });
      } else if (/Failed to negotiate/.test(e?.text || "")) {
        negotiationFailure = e.text;
      }
    });
    c.on("message", (m) => this.ev.stanza(this.normalize("message", m)));
    c.on("presence", (p) => this.ev.stanza(this.normalize("presence", p)));
    c.on("iq", (q) => this.ev.stanza(this.normalize("iq", q)));
    c.on("disconnected", () => this.ev.offline());

    const result = new Promise((resolve, reject) => {
      c.once("session:started", () => resolve(String(c.jid)));
      c.once("auth:failed", () => {
        reject({
          phase: "auth",
          condition: saslFailure?.condition ?? null,
          text: saslFailure?.text ?? null,
        });
      });
      c.once("disconnected", () => {
        // let auth:failed win if both fire
        setImmediate(() =>
          reject({
            phase: negotiationFailure ? (/bind/i.test(negotiationFailure) ? "bind" : "stream") : "connect",
            condition: null,
            text:
              negotiationFailure ||
              (wsState.lastError ? `WebSocket error: ${wsState.lastError}` : null) ||
              "connection closed before the session started",
          }),
        );
      });
    });
    c.connect();
    try {
      return await withTimeout(result, opts.timeoutMs, "connect");
    } catch (err) {
      if (err?.isTimeout) throw { phase: "timeout", condition: "timeout", text: err.message };
      throw err;
    }
  }

  // XEP-0198 6 (resumption): cut() drops the connection without a
  // goodbye; stanza keeps its stream state (sm.hibernate) and, asked to
  // connect again, sends <resume/> with its h.
  async resumeAfterDrop(cut, timeoutMs) {
    const c = this.c;
    const gone = new Promise((resolve) => c.once("disconnected", resolve));
    cut();
    await withTimeout(gone, timeoutMs, "disconnect");
    const back = new Promise((resolve) => {
      c.once("stream:management:resumed", () => resolve(true));
      c.once("session:started", () => resolve(false));
    });
    c.connect();
    const resumed = await withTimeout(back, timeoutMs, "resume");
    return { resumed, jid: String(c.jid) };
  }

  normalize(kind, s) {
    const out = {
      kind,
      from: nz(s.from),
      to: nz(s.to),
      type: nz(s.type),
      id: nz(s.id),
      error: s.error ? nz(s.error.condition) : null,
      xml: this.rawOf.get(s) ?? this.c.stanzas.export(kind, s)?.toString() ?? null,
    };
    if (s.error) {
      out.error_type = nz(s.error.type);
      out.error_text = nz(s.error.text);
    }
    if (kind === "message") {
      out.body = s.body ?? null;
      out.subject = s.subject ?? null;
      out.thread = s.thread ?? null;
    } else if (kind === "presence") {
      out.show = s.show ?? null;
      // stanza's schema defaults priority to 0; report only what was sent
      out.priority = /<priority[\s>]/.test(out.xml || "") ? (s.priority ?? null) : null;
      out.status = s.status ?? null;
    }
    return out;
  }

  async presence(c) {
    const data = {};
    for (const k of ["to", "type", "show", "status", "priority"]) {
      if (c[k] !== undefined && c[k] !== null) data[k] = c[k];
    }
    if (c.id) data.id = c.id;
    // sendPresence() always adds an id (stanza generates one).
    const id = this.c.sendPresence(data);
    await this.drain();
    return id;
  }

  async message(c) {
    const data = {};
    for (const k of ["to", "type", "body", "subject", "thread"]) {
      if (c[k] !== undefined && c[k] !== null) data[k] = c[k];
    }
    if (c.id) data.id = c.id;
    // sendMessage() always adds an id and a XEP-0359 <origin-id/>.
    const id = this.c.sendMessage(data);
    await this.drain();
    return id;
  }

  async drain() {
    const q = this.c.outgoingDataQueue;
    if (q && typeof q.idle === "function" && !q.idle()) await q.drain();
  }

  async iqRequest(data, timeoutMs) {
    try {
      const res = await withTimeout(this.c.sendIQ(data), timeoutMs + 1000, "iq");
      return { ok: true, stanza: res, xml: this.rawOf.get(res) ?? null };
    } catch (err) {
      if (err?.isTimeout) return { ok: false, condition: "timeout", type: null, text: err.message };
      if (err && err.type === "error")
        return {
          ok: false,
          condition: err.error?.condition ?? null,
          type: err.error?.type ?? null,
          text: err.error?.text ?? null,
          xml: this.rawOf.get(err) ?? null,
        };
      return { ok: false, condition: "send-failed", type: null, text: String(err?.message || err) };
    }
  }

  async ping(c, timeoutMs) {
    const data = { type: "get", ping: true, id: c.id };
    if (c.to) data.to = c.to;
    return this.iqRequest(data, timeoutMs);
  }

  async discoInfo(c, timeoutMs) {
    const data = { type: "get", id: c.id, disco: { type: "info" } };
    if (c.node) data.disco.node = c.node;
    if (c.to) data.to = c.to;
    const r = await this.iqRequest(data, timeoutMs);
    if (!r.ok) return r;
    const d = r.stanza.disco || {};
    r.identities = (d.identities || []).map((i) => ({
      category: nz(i.category), type: nz(i.type), name: nz(i.name),
    }));
    r.features = d.features || [];
    return r;
  }

  async iq(c, timeoutMs) {
    // stanza has no way to send an arbitrary XML payload through sendIQ():
    // write the frame raw and match the reply by id.
    const type = c.type || "get";
    const attrs = [`type="${escapeXml(type)}"`, `id="${escapeXml(c.id)}"`];
    if (c.to) attrs.push(`to="${escapeXml(c.to)}"`);
    const frame = `<iq xmlns="jabber:client" ${attrs.join(" ")}>${c.xml || ""}</iq>`;
    const event = `iq:id:${c.id}`;
    let h;
    const reply = new Promise((resolve) => {
      h = (iq) => {
        if (iq.type !== "result" && iq.type !== "error") return;
        this.c.off(event, h);
        resolve(iq);
      };
      this.c.on(event, h);
    });
    await this.raw(frame);
    try {
      const iq = await withTimeout(reply, timeoutMs, "iq");
      if (iq.type === "result") return { ok: true, stanza: iq, xml: this.rawOf.get(iq) ?? null };
      return {
        ok: false,
        condition: iq.error?.condition ?? null,
        type: iq.error?.type ?? null,
        text: iq.error?.text ?? null,
        xml: this.rawOf.get(iq) ?? null,
      };
    } catch (err) {
      this.c.off(event, h);
      return { ok: false, condition: "timeout", type: null, text: err.message };
    }
  }

  async raw(xmlText) {
    const t = this.c.transport;
    if (!t) throw new Error("not connected");
    await new Promise((resolve, reject) => t.write(xmlText, "utf8", (e) => (e ? reject(e) : resolve())));
  }

  async disconnect(timeoutMs) {
    // disconnect(): <close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>,
    // wait up to 1 s for the server's <close/>, then a WebSocket close frame.
    const off = new Promise((resolve) => this.c.once("disconnected", resolve));
    await this.c.disconnect();
    await withTimeout(off, timeoutMs, "disconnect");
  }
}

// ---------------------------------------------------------------- driver

const state = {
  adapter: null,
  phase: "idle", // idle | connecting | online | closing | offline
  offlineSent: false,
  pendingOffline: null,
  streamError: null, // the server's <stream:error/>, once received
  closingByClient: false,
};

const events = {
  isOnline: () => state.phase === "online",
  stanza(s) {
    const { kind, ...rest } = s;
    if (kind === "message" || kind === "presence") emit({ ev: kind, ...rest });
    else emit({ ev: "stanza", kind, ...rest });
  },
  streamError(condition, text, xml) {
    state.streamError = { condition: condition ?? null, text: text ?? null };
    emit({ ev: "stream-error", condition: condition ?? null, text: text ?? null, xml: xml ?? null });
  },
  error(e) {
    emit({ ev: "error", ...e });
  },
  offline() {
    // a "drop": the library is about to resume the stream
    if (state.dropping) return;
    if (state.offlineSent) return;
    if (state.phase === "idle") return;
    // After a <stream:error/> the server ends the stream, whatever the
    // library does next (@xmpp/client answers with <close/>, stanza waits).
    const by = state.closingByClient && !state.streamError ? "client" : "server";
    if (state.phase === "connecting") {
      // the connect handler reports its error first, then this
      state.pendingOffline = by;
      return;
    }
    state.offlineSent = true;
    state.phase = "offline";
    // defer so that a pending error/stream-error is written first
    setImmediate(() => emit({ ev: "offline", by }));
  },
};

let adapterPromise = null;
function getAdapter() {
  adapterPromise ??= (async () => {
    const a = ARGS.lib === "xmpp" ? new XmppJsAdapter(events) : new StanzaAdapter(events);
    await a.load();
    state.adapter = a;
    return a;
  })();
  return adapterPromise;
}

function requireOnline(c) {
  if (state.phase !== "online") {
    emit({ ev: "error", phase: "cmd", cmd: c.cmd, tag: c.tag ?? null, text: `not online (${state.phase})` });
    return false;
  }
  return true;
}

function timeoutOf(c, dflt = 10) {
  const t = Number(c.timeout ?? dflt);
  return Math.max(100, Math.round((Number.isFinite(t) ? t : dflt) * 1000));
}

let iqCounter = 0;
const newId = (p) => `${p}${++iqCounter}-${randomUUID().slice(0, 8)}`;

const handlers = {
  async connect(c) {
    if (state.phase !== "idle") {
      emit({ ev: "error", phase: "cmd", cmd: "connect", text: `already used (${state.phase}); start a new driver` });
      return;
    }
    const a = await getAdapter();
    const url = c.url;
    const username = c.username;
    let domain = c.domain;
    if (!domain) domain = new URL(url).hostname;
    wsState.insecure = !!c.insecure;
    wsState.deflate = c.deflate !== false;
    if (c.trace) wsState.trace = true;
    state.phase = "connecting";
    try {
      const jid = await a.connect({
        url, domain, username, password: c.password, resource: c.resource ?? null,
        mechanism: c.mechanism ?? null, sm: c.sm, timeoutMs: timeoutOf(c),
      });
      state.phase = "online";
      emit({ ev: "online", jid, tag: c.tag ?? null });
    } catch (err) {
      let e = err && err.phase ? err : { phase: "connect", condition: null, text: String(err?.message || err) };
      if (state.streamError && (e.phase === "connect" || e.phase === "stream"))
        e = { phase: "stream", ...state.streamError };
      emit({ ev: "error", phase: e.phase, condition: e.condition ?? null, text: e.text ?? null, tag: c.tag ?? null });
      if (state.pendingOffline) {
        // the connection is already gone (closed by the server/network)
        state.phase = "closing";
        events.offline();
        return;
      }
      // Give up on this connection the way an application would: close it.
      state.closingByClient = true;
      if (state.phase !== "offline") {
        state.phase = "closing";
        try {
          await a.disconnect(3000);
        } catch (e2) {
          log("disconnect after failure:", e2?.message);
        }
        const ws = wsState.current;
        if (ws && ws.readyState !== WS.CLOSED) ws.terminate();
        events.offline();
      }
    }
  },

  async presence(c) {
    if (!requireOnline(c)) return;
    const id = await state.adapter.presence(c);
    emit({ ev: "sent", cmd: "presence", id: id ?? null, tag: c.tag ?? null });
  },

  async message(c) {
    if (!requireOnline(c)) return;
    const id = await state.adapter.message(c);
    emit({ ev: "sent", cmd: "message", id: id ?? null, tag: c.tag ?? null });
  },

  async raw(c) {
    if (state.phase !== "online" && state.phase !== "connecting") return requireOnline(c);
    await state.adapter.raw(c.xml);
    emit({ ev: "sent", cmd: "raw", id: null, tag: c.tag ?? null });
  },

  async ping(c) {
    if (!requireOnline(c)) return;
    const id = c.id ?? newId("ping");
    const r = await state.adapter.ping({ ...c, id }, timeoutOf(c));
    iqReport(c, id, r);
  },

  async disco_info(c) {
    if (!requireOnline(c)) return;
    const id = c.id ?? newId("disco");
    const r = await state.adapter.discoInfo({ ...c, id }, timeoutOf(c));
    if (r.ok)
      emit({ ev: "disco_info", id, from: nz(r.stanza?.from ?? r.stanza?.attrs?.from), identities: r.identities, features: r.features, xml: r.xml ?? null, tag: c.tag ?? null });
    else iqReport(c, id, r);
  },

  async iq(c) {
    if (!requireOnline(c)) return;
    const id = c.id ?? newId("iq");
    const r = await state.adapter.iq({ ...c, id }, timeoutOf(c));
    iqReport(c, id, r);
  },

  async disconnect(c) {
    if (state.phase === "offline") {
      emit({ ev: "offline", by: "already" });
      return;
    }
    if (state.phase !== "online" && state.phase !== "connecting") return requireOnline(c);
    state.closingByClient = true;
    state.phase = "closing";
    try {
      await state.adapter.disconnect(timeoutOf(c, 5));
    } catch (err) {
      log("disconnect:", err?.message);
      const ws = wsState.current;
      if (ws && ws.readyState !== WS.CLOSED) ws.terminate();
    }
    events.offline();
  },

  async kill(c) {
    const ws = wsState.current;
    if (ws) {
      const sock = ws._socket;
      if (c.rst && sock && typeof sock.resetAndDestroy === "function") sock.resetAndDestroy();
      else if (sock) sock.destroy();
      else ws.terminate();
    }
    process.exit(0);
  },

  async drop(c) {
    if (!requireOnline(c)) return;
    const a = state.adapter;
    if (typeof a.resumeAfterDrop !== "function") {
      emit({ ev: "error", phase: "cmd", cmd: "drop", text: `not supported with ${ARGS.lib}` });
      return;
    }
    state.dropping = true;
    state.phase = "resuming";
    try {
      const r = await a.resumeAfterDrop(() => {
        const sock = wsState.current?._socket;
        if (sock) sock.destroy();
        else wsState.current?.terminate();
      }, timeoutOf(c));
      state.phase = "online";
      emit({ ev: "resumed", jid: r.jid, resumed: r.resumed, tag: c.tag ?? null });
    } catch (err) {
      state.phase = "online";
      emit({ ev: "error", phase: "resume", text: String(err?.message || err), tag: c.tag ?? null });
    } finally {
      state.dropping = false;
    }
  },

  async exit() {
    process.exit(0);
  },
};

function iqReport(c, id, r) {
  if (r.ok) emit({ ev: "iq-result", id, xml: r.xml ?? null, tag: c.tag ?? null });
  else
    emit({
      ev: "iq-error", id, condition: r.condition ?? null, type: r.type ?? null,
      text: r.text ?? null, xml: r.xml ?? null, tag: c.tag ?? null,
    });
}

const inflight = new Set();
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  line = line.trim();
  if (!line) return;
  let c;
  try {
    c = JSON.parse(line);
  } catch (err) {
    emit({ ev: "error", phase: "cmd", text: `bad JSON: ${err.message}` });
    return;
  }
  const h = handlers[c.cmd];
  if (!h) {
    emit({ ev: "error", phase: "cmd", cmd: c.cmd ?? null, text: "unknown command" });
    return;
  }
  const p = Promise.resolve()
    .then(() => h(c))
    .catch((err) => {
      log(err?.stack || err);
      emit({ ev: "error", phase: "cmd", cmd: c.cmd, tag: c.tag ?? null, text: String(err?.message || err) });
    })
    .finally(() => inflight.delete(p));
  inflight.add(p);
});
rl.on("close", async () => {
  // Python closed stdin (or went away): let commands already under way
  // finish (a "disconnect" just before EOF), for at most 5 s, then exit.
  log("stdin closed, exiting");
  const pending = [...inflight];
  if (pending.length) {
    await Promise.race([Promise.allSettled(pending), new Promise((r) => setTimeout(r, 5000))]);
  }
  process.exit(0);
});

process.on("unhandledRejection", (err) => {
  log("unhandled rejection:", err?.stack || err);
});
process.on("uncaughtException", (err) => {
  console.error("[xmppdriver] uncaught:", err?.stack || err);
  emit({ ev: "error", phase: "internal", text: String(err?.message || err) });
});

// Load the library before announcing "ready", so a missing package fails
// here and connect() does not pay for the import.
getAdapter().then(
  (a) => emit({ ev: "ready", lib: ARGS.lib, version: a.version, node: process.version }),
  (err) => {
    console.error("[xmppdriver] cannot load the library:", err?.stack || err);
    emit({ ev: "error", phase: "load", text: String(err?.message || err) });
    process.exit(1);
  },
);
