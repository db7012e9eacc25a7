/*
 * The admin console (admin/web, served at /admin/) in Debian's headless
 * Chromium, driven by playwright-core (docs/console.md):
 *
 *   erin (compliance) signs in, searches for --keyword, opens the
 *   conversation of the hit and sees the messages around it, bodies
 *   with HTML in them shown as text (no script runs);
 *   frank (admin) opens Sessions, finds alice's session --resource and
 *   kicks it; the row goes away; with --unlock ADDRESS he clears that
 *   client address's refused XMPP sign-ins there;
 *   erin then exports alice's conversations as Actiance XML from the
 *   Exports view: the job's progress bar reaches done and the zip is
 *   downloaded into the first --out directory (console-export.zip);
 *   bob (no console role) is refused at sign-in;
 *   grace (auditor) sees no export or hold views, and the API refuses
 *   her export and hold calls (403) even when her page makes them.
 *
 *   node tests/browser/console.mjs --base http://127.0.0.1:PORT/admin/ \
 *       --out DIR [--out DIR2] --keyword WORD --resource RES \
 *       [--markup TEXT] [--unlock ADDRESS]
 *
 * Every request must stay on the page's origin.  Prints one JSON line
 * (the result) on stdout; exits 1 on failure, after screenshots and the
 * page HTML of the failing state.  tests/integration/
 * test_console_browser.py runs it under pytest.
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
        keyword: { type: 'string' },
        resource: { type: 'string' },
        markup: { type: 'string', default: '' },
        unlock: { type: 'string', default: '' },
        domain: { type: 'string', default: 'example.com' },
        timeout: { type: 'string', default: '30000' },
    },
});

if (!opt.base || !opt.keyword || !opt.resource || opt.out.length === 0) {
    console.error('usage: console.mjs --base URL --out DIR --keyword W '
                  + '--resource R');
    process.exit(2);
}

const base = new URL(opt.base);
const timeout = Number(opt.timeout);
const t0 = Date.now();
const result = { ok: false, screenshots: [], foreign: [], errors: [],
                 steps: [] };

function step(name) {
    result.steps.push({ name, ms: Date.now() - t0 });
    console.error(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}`);
}

function sameOrigin(url) {
    const u = new URL(url);
    return u.protocol === 'data:' || u.origin === base.origin;
}

async function browser(name) {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(),
                                             `conclave-console-${name}-`));
    const ctx = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        viewport: { width: 1280, height: 800 },
        ignoreHTTPSErrors: true,
        acceptDownloads: true,
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(timeout);
    page.on('request', (r) => {
        if (!sameOrigin(r.url())) {
            result.foreign.push(`${name}: ${r.url()}`);
        }
    });
    page.on('pageerror', (e) => result.errors.push(`${name}: ${e.message}`));
    page.on('console', (m) => {
        if (m.type() === 'error' || process.env.DEBUG) {
            console.error(`${name} console.${m.type()}: `
                          + m.text().slice(0, 500));
        }
    });
    return { name, ctx, page, profile };
}

async function screenshot(u, tag) {
    for (const dir of opt.out) {
        fs.mkdirSync(dir, { recursive: true });
        const file = path.join(dir, `console-${tag}.png`);
        await u.page.screenshot({ path: file, fullPage: true });
        result.screenshots.push(file);
    }
}

async function signIn(u, user, password) {
    await u.page.goto(base.href);
    await u.page.waitForSelector('#signin-form', { state: 'visible' });
    await u.page.fill('#signin-user', user);
    await u.page.fill('#signin-password', password);
    await u.page.click('#signin-submit');
}

async function erinSearches() {
    const u = await browser('erin');
    users.push(u);
    await signIn(u, 'erin', 'erin-pw');
    await u.page.waitForSelector('#search-view', { state: 'visible' });
    step('erin signed in; the search view is hers');
    result.erin_roles = await u.page.textContent('#who-roles');

    await u.page.fill('#search-q', opt.keyword);
    await u.page.click('#search-submit');
    const row = u.page.locator('#search-results tbody tr',
                               { hasText: opt.keyword }).first();
    await row.waitFor({ state: 'visible' });
    result.hit = await row.locator('td').allTextContents();
    step('erin found the message by keyword');
    await screenshot(u, 'erin-search');

    await row.locator('button.open').click();
    await u.page.waitForSelector('#conversation li.anchor',
                                 { state: 'visible' });
    result.conversation = await u.page.locator('#conversation li .body')
        .allTextContents();
    result.conversation_title = await u.page.textContent(
        '#conversation-title');
    step('erin opened the conversation');
    if (opt.markup) {
        await u.page.getByText(opt.markup, { exact: true }).first()
            .waitFor({ state: 'visible' });
    }
    /* the <script> and onerror in bodies never ran */
    result.xss = await u.page.evaluate(() => window.__xss === undefined
                                             ? null : window.__xss);
    result.injected = await u.page.evaluate(
        () => document.querySelectorAll('#conversation script, '
                                        + '#conversation img').length);
    await screenshot(u, 'erin-conversation');
}

async function erinExports() {
    const u = users.find((x) => x.name === 'erin');
    result.erin_tabs = await u.page.locator('#tabs button:visible')
        .allTextContents();
    await u.page.click('#tabs button[data-view=exports]');
    await u.page.waitForSelector('#export-form', { state: 'visible' });
    await u.page.selectOption('#export-format', 'actiance');
    await u.page.fill('#export-user', 'alice');
    await u.page.click('#export-submit');
    const row = u.page.locator('#exports-results tbody tr').first();
    await row.waitFor({ state: 'visible' });
    step('erin started an Actiance export');
    await u.page.locator('#exports-results tbody tr[data-state=done]')
        .first().waitFor({ state: 'visible' });
    const done = u.page.locator('#exports-results tbody tr[data-state=done]')
        .first();
    result.export_row = await done.locator('td').allTextContents();
    result.export_progress = await done.locator('progress').evaluate(
        (p) => [p.value, p.max]);
    step('the progress bar reached done');
    await screenshot(u, 'erin-export');

    const [download] = await Promise.all([
        u.page.waitForEvent('download'),
        done.locator('a.download').click(),
    ]);
    const file = path.join(opt.out[0], 'console-export.zip');
    await download.saveAs(file);
    result.export_zip = file;
    result.export_name = download.suggestedFilename();
    step('erin downloaded the zip');
}

async function graceIsReadOnly() {
    const u = await browser('grace');
    users.push(u);
    await signIn(u, 'grace', 'grace-pw');
    await u.page.waitForSelector('#search-view', { state: 'visible' });
    result.grace_tabs = await u.page.locator('#tabs button:visible')
        .allTextContents();
    /* her own page calls the API the buttons would have used */
    result.grace_api = await u.page.evaluate(async () => {
        const me = await (await fetch('api/me')).json();
        const out = {};
        for (const [name, body] of [
            ['exports', { format: 'csv' }],
            ['holds', { action: 'create', matter: 'm', custodians: ['bob'] }],
            ['retention', { action: 'remove', scope: 'global' }]]) {
            const r = await fetch('api/' + name, { method: 'POST',
                headers: { 'Content-Type': 'application/json',
                           'X-CSRF-Token': me.csrf },
                body: JSON.stringify(body) });
            out[name] = [r.status, (await r.json()).error];
        }
        const d = await fetch('api/exports');
        out.list = [d.status, (await d.json()).error];
        return out;
    });
    step('grace sees no export or hold views and the API refuses her');
    await screenshot(u, 'grace-readonly');
}

async function frankKicks() {
    const u = await browser('frank');
    users.push(u);
    await signIn(u, 'frank', 'frank-pw');
    await u.page.waitForSelector('#tabs', { state: 'visible' });
    result.frank_tabs = await u.page.locator('#tabs button:visible')
        .allTextContents();
    await u.page.click('#tabs button[data-view=sessions]');
    const row = u.page.locator(
        `#sessions-results tr[data-jid="alice@${opt.domain}"]`,
        { hasText: opt.resource }).first();
    await row.waitFor({ state: 'visible' });
    result.session_row = await row.locator('td').allTextContents();
    step('frank sees alice\'s live session');
    await screenshot(u, 'frank-sessions');

    await row.locator('button.kick').click();
    await row.waitFor({ state: 'detached' });
    step('frank kicked it; the row is gone');
    await screenshot(u, 'frank-kicked');

    if (opt.unlock) {
        await u.page.selectOption('#unlock-kind', 'address');
        await u.page.fill('#unlock-name', opt.unlock);
        await u.page.click('#unlock-form button[type=submit]');
        await u.page.waitForFunction(() =>
            document.getElementById('unlock-result').textContent
            || document.getElementById('unlock-error').textContent);
        result.unlock_text = await u.page.textContent('#unlock-result');
        step('frank cleared the address\'s refused sign-ins');
    }
}

async function bobIsRefused() {
    const u = await browser('bob');
    users.push(u);
    await signIn(u, 'bob', 'bob-pw');
    await u.page.getByText('Sign-in refused.').waitFor({ state: 'visible' });
    result.bob_tabs_hidden = await u.page.locator('#tabs').isHidden();
    step('bob was refused');
    await screenshot(u, 'bob-refused');
}

const users = [];

try {
    await erinSearches();
    await erinExports();
    await frankKicks();
    await bobIsRefused();
    await graceIsReadOnly();
    if (result.foreign.length) {
        throw new Error('requests to another origin: '
                        + result.foreign.join(', '));
    }
    result.ok = true;

} catch (e) {
    result.errors.push(String(e && e.stack || e));
    for (const u of users) {
        try {
            await screenshot(u, `failed-${u.name}`);
            fs.writeFileSync(path.join(opt.out[0],
                                       `console-failed-${u.name}.html`),
                             await u.page.content());
        } catch (e2) {
            result.errors.push(`${u.name}: no failure screenshot: ${e2}`);
        }
    }

} finally {
    for (const u of users) {
        await u.ctx.close().catch(() => {});
        fs.rmSync(u.profile, { recursive: true, force: true });
    }
}

console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
