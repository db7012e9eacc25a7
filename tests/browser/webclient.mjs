/*
 * The bundled web client (converse.js, build/webclient) in Debian's
 * headless Chromium, driven by playwright-core: two users sign in through
 * the page, alice starts a chat with bob and sends a message, and bob's
 * page shows it.  Screenshots of both pages go to every --out directory.
 *
 *   node tests/browser/webclient.mjs --base http://127.0.0.1:PORT/ \
 *       --out DIR [--out DIR2] --message TEXT \
 *       --alice alice:alice-pw --bob bob@example.com:bob-pw
 *
 * alice signs in with her bare user name (converse adds default_domain),
 * bob with his full address.  Every request and WebSocket the pages make
 * must go to the page's own origin: the appliance fetches nothing from
 * the internet.  Prints one JSON line (the result) on stdout; exits 1 on
 * failure, after screenshots and the page HTML of the failing state.
 * Tests/integration/test_web_client.py runs it under pytest.
 *
 * --config JSON is merged into conclave-config.js as served, the way an
 * administrator edits that file (branding, endpoints).  The result names
 * the settings conclave.js gave converse, the brand shown on the sign-in
 * page, and every BOSH request each page made.
 */

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const CHROMIUM = process.env.CONCLAVE_CHROMIUM || '/usr/bin/chromium';

/* PLATFORM.md 7: never a downloaded browser, never its first-run work */
const CHROMIUM_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync',
];

const { values: opt } = parseArgs({
    options: {
        base: { type: 'string' },
        out: { type: 'string', multiple: true, default: [] },
        message: { type: 'string' },
        alice: { type: 'string', default: 'alice:alice-pw' },
        bob: { type: 'string', default: 'bob@example.com:bob-pw' },
        peer: { type: 'string', default: 'bob@example.com' },
        domain: { type: 'string', default: 'example.com' },
        timeout: { type: 'string', default: '30000' },
        config: { type: 'string' },
    },
});

if (!opt.base || !opt.message || opt.out.length === 0) {
    console.error('usage: webclient.mjs --base URL --out DIR --message TEXT');
    process.exit(2);
}

const base = new URL(opt.base);
const timeout = Number(opt.timeout);
const t0 = Date.now();
const result = { ok: false, screenshots: [], foreign: [], websockets: [],
                 bosh: [], errors: [], steps: [] };

function step(name) {
    result.steps.push({ name, ms: Date.now() - t0 });
    console.error(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}`);
}

/* same scheme family, host and port as the page */
function sameOrigin(url) {
    const u = new URL(url);
    if (u.protocol === 'data:' || u.protocol === 'blob:') {
        return true;
    }
    return u.host === base.host
        && (u.protocol === base.protocol
            || u.protocol === (base.protocol === 'https:' ? 'wss:' : 'ws:'));
}

async function user(name, spec) {
    const i = spec.indexOf(':');
    const profile = fs.mkdtempSync(path.join(os.tmpdir(),
                                             `conclave-chromium-${name}-`));
    const ctx = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        viewport: { width: 1280, height: 800 },
        ignoreHTTPSErrors: true,
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(timeout);
    const watch = (url) => {
        if (!sameOrigin(url)) {
            result.foreign.push(`${name}: ${url}`);
        }
    };
    page.on('request', (r) => {
        watch(r.url());
        if (new URL(r.url()).pathname === '/http-bind') {
            result.bosh.push(`${name}: ${r.method()}`);
        }
    });
    if (opt.config) {
        /* the administrator's edit of conclave-config.js */
        await ctx.route('**/conclave-config.js', async (route) => {
            const resp = await route.fetch();
            const body = await resp.text() + '\nObject.assign('
                + `window.conclaveConfig, ${opt.config});\n`;
            await route.fulfill({ response: resp, body });
        });
    }
    page.on('websocket', (ws) => {
        watch(ws.url());
        result.websockets.push(`${name}: ${ws.url()}`);
    });
    page.on('pageerror', (e) => result.errors.push(`${name}: ${e.message}`));
    page.on('console', (m) => {
        if (['error', 'warning'].includes(m.type()) || process.env.DEBUG) {
            console.error(`${name} console.${m.type()}: `
                          + m.text().slice(0, 500));
        }
    });
    const login = spec.slice(0, i);
    return { name, login, password: spec.slice(i + 1), ctx, page, profile,
             jid: login.includes('@') ? login : `${login}@${opt.domain}` };
}

async function signIn(u) {
    await u.page.goto(base.href);
    await u.page.waitForSelector('#converse-login-jid');
    await u.page.waitForSelector('.conclave-brand .brand-name__text');
    /* the brand as the sign-in page shows it */
    result.brand = await u.page.evaluate(() => {
        const name = document.querySelector(
            '.conclave-brand .brand-name__text');
        const logo = document.querySelector(
            '.conclave-brand img.conclave-logo');
        return { title: document.title,
                 name: name && name.textContent.trim(),
                 logo: logo && logo.src };
    });
    await u.page.fill('#converse-login-jid', u.login);
    await u.page.fill('#converse-login-password', u.password);
    await u.page.click('converse-login-form [type=submit]');
    await u.page.waitForSelector('#converse-roster');
    /* what conclave.js found through host-meta */
    result.websocket_url = await u.page.evaluate(
        () => window.conclaveSettings.websocket_url);
    result.settings = await u.page.evaluate(() => ({
        websocket_url: window.conclaveSettings.websocket_url,
        bosh_service_url: window.conclaveSettings.bosh_service_url,
        muc_domain: window.conclaveSettings.muc_domain,
        default_domain: window.conclaveSettings.default_domain }));
    step(`${u.name} signed in as ${u.login}`);
}

/* the roster's menu: "Start a new chat", then the address */
async function startChat(u, jid) {
    await u.page.click('.dropdown--contacts .dropdown-toggle');
    await u.page.click('.dropdown--contacts a.new-chat');
    await u.page.fill('converse-new-chat-modal input[name=jid]', jid);
    await u.page.click('converse-new-chat-modal [type=submit]');
    const textarea = `converse-chat[jid="${jid}"] .chat-textarea`;
    await u.page.waitForSelector(textarea, { state: 'visible' });
    step(`${u.name} opened a chat with ${jid}`);
    return textarea;
}

async function screenshot(u, tag) {
    for (const dir of opt.out) {
        fs.mkdirSync(dir, { recursive: true });
        const file = path.join(dir, `${tag}.png`);
        await u.page.screenshot({ path: file });
        result.screenshots.push(file);
    }
}

async function dumpState(users) {
    for (const u of users) {
        try {
            await screenshot(u, `failed-${u.name}`);
            fs.writeFileSync(path.join(opt.out[0], `failed-${u.name}.html`),
                             await u.page.content());
        } catch (e) {
            result.errors.push(`${u.name}: no failure screenshot: ${e}`);
        }
    }
}

const users = [];

try {
    const alice = await user('alice', opt.alice);
    users.push(alice);
    const bob = await user('bob', opt.bob);
    users.push(bob);
    step('chromium up');

    await Promise.all([signIn(alice), signIn(bob)]);

    const textarea = await startChat(alice, opt.peer);
    await alice.page.fill(textarea, opt.message);
    await alice.page.press(textarea, 'Enter');
    await alice.page.getByText(opt.message, { exact: true })
        .first().waitFor({ state: 'visible' });
    step('alice sent the message');

    /* the sender shows up in bob's roster with an unread count ... */
    const sender = bob.page.locator('.roster-contacts a.open-chat'
                                    + `[data-jid="${alice.jid}"]`).first();
    await bob.page.locator('.roster-contacts .msgs-indicator').first()
        .waitFor({ state: 'visible' });
    step(`bob's roster shows a new message from ${alice.jid}`);

    /* ... and a click opens the chat, where the message is */
    await sender.click();
    await bob.page.getByText(opt.message, { exact: true })
        .first().waitFor({ state: 'visible' });
    step('bob\'s page shows the message');

    await screenshot(alice, 'alice');
    await screenshot(bob, 'bob');

    if (result.foreign.length) {
        throw new Error('requests to another origin: '
                        + result.foreign.join(', '));
    }
    result.ok = true;

} catch (e) {
    result.errors.push(String(e && e.stack || e));
    await dumpState(users);

} finally {
    for (const u of users) {
        await u.ctx.close().catch(() => {});
        fs.rmSync(u.profile, { recursive: true, force: true });
    }
    result.ms = Date.now() - t0;
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exitCode = result.ok ? 0 : 1;
}
