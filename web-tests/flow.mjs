// End-to-end test of the notes web page, driving Debian's headless Chromium through
// playwright-core (no browser download). Locators follow api/web/UI.md (roles and accessible
// names only). Usage: node web-tests/flow.mjs http://127.0.0.1:PORT OUTDIR MAILDIR (the
// server's MAIL_DIR, where the mails it sent are read).
//
// Fails (exit 1, one "FAIL:" line) on the first failed check, on any console error or page error
// outside an expectHttpError() window, on any request to another origin, and on any serious or
// critical axe-core finding.
import { readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const [baseArg, outArg, mailArg] = process.argv.slice(2);
if (!baseArg || !outArg || !mailArg) {
  console.error('usage: node web-tests/flow.mjs http://127.0.0.1:PORT OUTDIR MAILDIR');
  process.exit(2);
}
const mailDir = path.resolve(mailArg);
const base = new URL(baseArg);
const origin = base.origin;
const outDir = path.resolve(outArg);
mkdirSync(outDir, { recursive: true });

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const DESKTOP = { width: 1280, height: 800 };
const NARROW = { width: 360, height: 740 };
const PAGE_SIZE = 20;
const TOTAL_NOTES = 120;
const run = Date.now().toString(36);
const userA = { email: `ada-${run}@example.com`, name: 'Ada', password: 'correct horse battery' };
const userB = { email: `bob-${run}@example.com`, name: '', password: 'another horse battery' };

// ---------------------------------------------------------------------------------------------
// Checks and failure

class Failure extends Error {}
let passed = 0;
function fail(message) {
  throw new Failure(message);
}
function check(condition, message) {
  if (!condition) fail(message);
}
function ok(message) {
  passed += 1;
  console.log(`ok ${passed} - ${message}`);
}
const show = (v) => JSON.stringify(v);

/** Poll `fn` until it returns a truthy value; fail with `what` (and the last value) on timeout. */
async function until(fn, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) fail(`${what} (timed out after ${timeout} ms${last && last.seen !== undefined ? `; saw ${show(last.seen)}` : ''})`);
    await sleep(100);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// First-load size and headers (outside the browser)

function rawGet(url) {
  return new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? https : http;
    const req = lib.get(url, { headers: { 'Accept-Encoding': 'gzip' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const sent = Buffer.concat(chunks);
        const enc = res.headers['content-encoding'] || '';
        let body = sent;
        if (enc === 'gzip') body = zlib.gunzipSync(sent);
        else if (enc === 'br') body = zlib.brotliDecompressSync(sent);
        else if (enc === 'deflate') body = zlib.inflateSync(sent);
        resolve({ status: res.statusCode, headers: res.headers, sent: sent.length, raw: body.length, body: body.toString('utf8'), enc });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url} timed out`)));
  });
}

async function firstLoadReport() {
  const page = await rawGet(`${origin}/`);
  check(page.status === 200, `GET / answered ${page.status}`);
  check(/text\/html/.test(page.headers['content-type'] || ''), `GET / content-type is ${show(page.headers['content-type'])}`);
  const csp = page.headers['content-security-policy'];
  check(csp, 'GET / has no Content-Security-Policy header');
  check(!/unsafe-inline|unsafe-eval|\*/.test(csp.replace(/'self'/g, '')), `the CSP allows more than the own origin: ${csp}`);
  const rows = [{ path: '/', ...page }];
  const seen = new Set(['/']);
  const queue = [...page.body.matchAll(/(?:src|href)\s*=\s*"([^"]+)"/g)].map((m) => m[1]);
  while (queue.length) {
    const ref = queue.shift();
    const u = new URL(ref, `${origin}/`);
    if (u.origin !== origin) fail(`the page references another origin: ${ref}`);
    if (!/\.(css|js|mjs|svg)$/.test(u.pathname) || seen.has(u.pathname)) continue;
    seen.add(u.pathname);
    const r = await rawGet(u.href);
    check(r.status === 200, `GET ${u.pathname} answered ${r.status}`);
    const cc = r.headers['cache-control'] || '';
    check(cc.includes('max-age=31536000'), `GET ${u.pathname}: Cache-Control is ${show(cc)}, expected max-age=31536000`);
    rows.push({ path: u.pathname, ...r });
    if (u.pathname.endsWith('.css')) {
      for (const m of r.body.matchAll(/url\(\s*["']?([^"')]+)["']?\s*\)/g)) if (!m[1].startsWith('data:')) queue.push(new URL(m[1], u).href);
    }
  }
  check(rows.some((r) => r.path.endsWith('.js')) && rows.some((r) => r.path.endsWith('.css')), `GET / references no script or no style: ${show(rows.map((r) => r.path))}`);
  console.log('first load (Accept-Encoding: gzip):');
  for (const r of rows) console.log(`  ${r.path.padEnd(36)} ${String(r.raw).padStart(7)} B raw ${String(r.sent).padStart(7)} B sent${r.enc ? ` (${r.enc})` : ''}`);
  const raw = rows.reduce((a, r) => a + r.raw, 0);
  const sent = rows.reduce((a, r) => a + r.sent, 0);
  console.log(`  ${'total'.padEnd(36)} ${String(raw).padStart(7)} B raw ${String(sent).padStart(7)} B sent`);
  ok(`first load: ${rows.length} files, ${raw} B raw, ${sent} B sent; assets cached a year; / has a CSP`);
  return { raw, sent, files: rows.length };
}

// ---------------------------------------------------------------------------------------------
// Browser, console, requests

let browser;
let page;
const consoleErrors = []; // unexpected ones
const foreignRequests = [];
let httpErrorWindow = null; // { statuses, seen: [] } while a step provokes an API error on purpose

function watch(p) {
  p.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const m = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(text);
    if (m && httpErrorWindow && httpErrorWindow.statuses.includes(Number(m[1]))) {
      httpErrorWindow.seen.push(Number(m[1]));
      console.log(`  allowed console error (provoked on purpose): ${text}`);
      return;
    }
    const loc = msg.location();
    consoleErrors.push(`console error: ${text}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
  });
  p.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));
}

function noteRequest(req) {
  const url = req.url();
  if (url.startsWith('data:')) return;
  let o;
  try {
    o = new URL(url).origin;
  } catch {
    o = url;
  }
  if (o !== origin) foreignRequests.push(`${req.method()} ${url}`);
}

/** Fail now if anything unexpected reached the console or another origin. */
function assertClean(where) {
  if (consoleErrors.length) fail(`${where}: ${consoleErrors.join(' | ')}`);
  if (foreignRequests.length) fail(`${where}: request(s) to another origin: ${foreignRequests.join(' | ')}`);
}

async function step(name, fn) {
  await fn();
  assertClean(name);
  ok(name);
}

/**
 * Run `fn`, which provokes an API answer with one of `statuses` on purpose: Chromium's
 * "Failed to load resource: … status of NNN" console errors are allowed during it (only those).
 */
async function expectHttpError(statuses, fn, { optional = false } = {}) {
  const responses = [];
  const onResponse = (r) => {
    if (r.url().startsWith(origin) && r.status() >= 400) responses.push(r.status());
  };
  page.on('response', onResponse);
  httpErrorWindow = { statuses, seen: [] };
  try {
    await fn();
    if (optional) {
      // The page may refuse the input itself, without asking the API.
      await sleep(1_000);
      if (!responses.length) return false;
    }
    await until(() => responses.length > 0, `expected an API answer ${statuses.join('/')}; none came`, 5_000);
    check(responses.every((s) => statuses.includes(s)), `expected API answers ${statuses.join('/')}, got ${show(responses)}`);
    // The console message comes asynchronously: give it a moment so it lands inside the window.
    await until(() => httpErrorWindow.seen.length >= responses.length || null, 'console report of the error', 1_500).catch(() => {});
    return true;
  } finally {
    page.off('response', onResponse);
    httpErrorWindow = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Locators (UI.md)

const signInForm = () => page.getByRole('form', { name: 'Sign in', exact: true });
const signUpForm = () => page.getByRole('form', { name: 'Create an account', exact: true });
const addForm = () => page.getByRole('form', { name: 'Add a note', exact: true });
const notesList = () => page.getByRole('list', { name: 'Notes', exact: true });
const items = () => notesList().getByRole('listitem');
const exactly = (text) => new RegExp(`^\\s*${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);
const itemWithText = (text) => items().filter({ has: page.locator('p.note-text', { hasText: exactly(text) }) });
const itemById = (id) => notesList().locator(`:scope > li[data-id="${id}"]`);
async function idOf(text) {
  const item = itemWithText(text);
  await visible(item, `the note ${JSON.stringify(text)}`);
  const id = await item.getAttribute('data-id');
  check(id && /^[0-9]+$/.test(id), `the item of ${JSON.stringify(text)} has data-id ${JSON.stringify(id)}`);
  return id;
}
const pager = () => page.getByRole('navigation', { name: 'Pages', exact: true });
const nextButton = () => pager().getByRole('button', { name: 'Next', exact: true });
const previousButton = () => pager().getByRole('button', { name: 'Previous', exact: true });
const signOutButton = () => page.getByRole('button', { name: 'Sign out', exact: true });
const statusRegion = () => page.getByRole('status');
const searchForm = () => page.getByRole('search');
const searchBox = () => searchForm().getByRole('searchbox', { name: 'Search notes', exact: true });
// What a search found: its own polite live region, not the role="status" one.
const searchSummary = () => page.locator('[aria-live="polite"]:not([role="status"])');

async function visible(locator, what, timeout = 10_000) {
  try {
    await locator.waitFor({ state: 'visible', timeout });
  } catch {
    fail(`${what} is not visible (locator: ${locator})`);
  }
}
async function gone(locator, what, timeout = 10_000) {
  try {
    await locator.waitFor({ state: 'hidden', timeout });
  } catch {
    fail(`${what} is still visible (locator: ${locator})`);
  }
}

async function signedIn(email) {
  await visible(page.getByText(`Signed in as ${email}`), `"Signed in as ${email}"`);
  await visible(signOutButton(), 'the Sign out button');
  await visible(addForm(), 'the "Add a note" form');
}
async function signedOut() {
  await visible(signInForm(), 'the "Sign in" form');
  await visible(signUpForm(), 'the "Create an account" form');
}

async function session() {
  const raw = await page.evaluate(() => localStorage.getItem('notes.session'));
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch {
    fail(`localStorage notes.session is not JSON: ${raw}`);
  }
}

/** Call the JSON API from inside the page (same origin), with the page's own token. */
async function apiInPage(method, p, body) {
  return page.evaluate(
    async ({ method, p, body }) => {
      const s = JSON.parse(localStorage.getItem('notes.session'));
      const headers = { Authorization: `Bearer ${s.token}` };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const r = await fetch(p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : null };
    },
    { method, p, body },
  );
}

/** Call the API from this process (no console in play), for checks the page must not see. */
async function apiFromNode(method, p, token) {
  const r = await fetch(`${origin}${p}`, { method, headers: token ? { Authorization: `Bearer ${token}` } : {} });
  await r.arrayBuffer();
  return r.status;
}

async function itemTexts() {
  return notesList().locator(':scope > li p.note-text').allInnerTexts();
}

/** Wait until the list shows `expected` texts in this order. */
async function listIs(expected, what) {
  await until(async () => {
    const seen = await itemTexts();
    return { ok: show(seen) === show(expected), seen };
  }, `${what}: expected the list ${show(expected)}`);
}

// ---------------------------------------------------------------------------------------------
// axe-core

async function axe(where) {
  const loaded = await page.evaluate(() => typeof window.axe === 'object');
  if (!loaded) {
    // Evaluated over CDP, which the page's CSP does not govern (addScriptTag would be refused).
    await page.evaluate(axeSource);
    check(await page.evaluate(() => typeof window.axe === 'object' && typeof window.axe.run === 'function'), 'axe-core did not load in the page');
  }
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return {
      rules: r.passes.length + r.violations.length + r.incomplete.length + r.inapplicable.length,
      violations: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
      })),
    };
  });
  check(result.rules > 20, `axe-core ran only ${result.rules} rules (${where})`);
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = result.violations.filter((v) => !bad.includes(v));
  for (const v of minor) console.log(`  note: axe ${v.impact} ${v.id} (${where}): ${v.help} — ${v.nodes.map((n) => n.target).join(', ')}`);
  if (bad.length) {
    for (const v of bad) {
      console.log(`  axe ${v.impact} ${v.id}: ${v.help}`);
      for (const n of v.nodes) console.log(`    ${n.target}: ${(n.summary || '').replace(/\s+/g, ' ')}`);
    }
    fail(`axe-core: ${bad.length} serious/critical violation(s) ${where}: ${bad.map((v) => v.id).join(', ')}`);
  }
  ok(`axe-core: no serious or critical violation ${where} (${result.rules} rules)`);
}

async function axeBothWidths(where) {
  await page.setViewportSize(DESKTOP);
  await axe(`${where}, desktop`);
  await page.setViewportSize(NARROW);
  await axe(`${where}, 360 px`);
  await page.setViewportSize(DESKTOP);
}

async function noHorizontalScroll(where) {
  await page.setViewportSize({ width: 320, height: 740 });
  await sleep(100);
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.setViewportSize(DESKTOP);
  check(w <= 320, `${where}: horizontal scroll at 320 px wide (scrollWidth ${w})`);
  ok(`no horizontal scroll at 320 px wide ${where} (scrollWidth ${w})`);
}

// ---------------------------------------------------------------------------------------------
// Mail the server sent (`.eml` files under its MAIL_DIR)

/** A quoted-printable body as text (soft line breaks joined, `=XX` decoded). */
function unquote(text) {
  const joined = text.replace(/=\r?\n/g, '');
  const bytes = joined.replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/** The token of the newest mail to `email` with a `/#{fragment}=TOKEN` link not in `skip`. */
async function tokenFromMail(email, fragment, skip = new Set()) {
  const to = new RegExp(`^To: ${email.replace(/[.+]/g, '\\$&')}\\s*$`, 'mi');
  const found = await until(() => {
    let files = [];
    try {
      files = readdirSync(mailDir).filter((f) => f.endsWith('.eml')).sort().reverse();
    } catch {
      return null;
    }
    for (const file of files) {
      const raw = readFileSync(path.join(mailDir, file), 'utf8');
      const split = raw.search(/\r?\n\r?\n/);
      const head = raw.slice(0, split);
      if (!to.test(head)) continue;
      const rest = raw.slice(split).trim();
      const body = /quoted-printable/i.test(head) ? unquote(rest) : rest;
      const link = new RegExp(`/#${fragment}=([0-9a-f]+)`).exec(body);
      if (link && !skip.has(link[1])) return { token: link[1] };
    }
    return null;
  }, `a mail to ${email} with a #${fragment}= link in ${mailDir}`);
  return found.token;
}

// ---------------------------------------------------------------------------------------------
// The flow

async function reloadSignedIn(email) {
  await page.reload();
  await signedIn(email);
}

async function fieldError(form, label, what) {
  const field = form.getByLabel(label, { exact: true });
  await until(async () => (await field.getAttribute('aria-invalid')) === 'true' || { ok: false, seen: await field.getAttribute('aria-invalid') }, `${what}: the ${label} field is not aria-invalid="true"`);
  const error = await field.evaluate((el) => {
    const ids = (el.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
    const errs = ids.map((id) => document.getElementById(id)).filter((e) => e && e.classList.contains('field-error'));
    return errs.map((e) => ({ text: e.textContent.trim(), shown: !!(e.offsetWidth || e.offsetHeight) && !e.hidden }));
  });
  check(error.length === 1 && error[0].shown && error[0].text, `${what}: expected one visible p.field-error tied to ${label} by aria-describedby, saw ${show(error)}`);
  return error[0].text;
}

async function signUp(user) {
  const form = signUpForm();
  await form.getByLabel('E-mail', { exact: true }).fill(user.email);
  await form.getByLabel('Name (optional)', { exact: true }).fill(user.name);
  await form.getByLabel('Password', { exact: true }).fill(user.password);
  await form.getByRole('button', { name: 'Create account', exact: true }).click();
}

async function signIn(user) {
  const form = signInForm();
  await form.getByLabel('E-mail', { exact: true }).fill(user.email);
  await form.getByLabel('Password', { exact: true }).fill(user.password);
  await form.getByRole('button', { name: 'Sign in', exact: true }).click();
}

async function signOut() {
  await signOutButton().click();
  await signedOut();
  check((await session()) === null, 'after Sign out, localStorage notes.session is still set');
}

async function addNote(text) {
  await addForm().getByLabel('New note', { exact: true }).fill(text);
  await addForm().getByRole('button', { name: 'Add', exact: true }).click();
  await visible(itemWithText(text), `the new note ${show(text)}`);
  await until(async () => (await statusRegion().innerText()).includes('Note added.') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not say "Note added."');
}

/** Type `query` in the search box and submit it: with Enter, or else the Search button. */
async function search(query, { enter = false } = {}) {
  await searchBox().fill(query);
  if (enter) await searchBox().press('Enter');
  else await searchForm().getByRole('button', { name: 'Search', exact: true }).click();
}

/** Wait until the search's live region says something matching `pattern` (/^$/: nothing). */
async function summaryIs(pattern, what) {
  await until(async () => {
    const text = (await searchSummary().innerText()).trim();
    return { ok: pattern.test(text), seen: text };
  }, `${what}: the search summary does not match ${pattern}`);
}

/** Wait until the list shows `expected` texts in any order (results rank by the API's measure). */
async function resultsAre(expected, what) {
  await until(async () => {
    const seen = await itemTexts();
    return { ok: show([...seen].sort()) === show([...expected].sort()), seen };
  }, `${what}: expected the results ${show(expected)} in some order`);
}

/** The text of the item showing `text`, the words in its <mark>s, and what comes before the first. */
async function marksOf(text) {
  const p = itemWithText(text).locator('p.note-text');
  await visible(p, `the result ${show(text)}`);
  return p.evaluate((el) => {
    const marks = [...el.querySelectorAll('mark')];
    let before = null;
    if (marks.length) {
      const range = document.createRange();
      range.setStart(el, 0);
      range.setEndBefore(marks[0]);
      before = range.toString();
    }
    return { text: el.textContent, marks: marks.map((m) => m.textContent), before };
  });
}

/** The plain list is back: its first page (Oldest first), no search summary, Order usable. */
async function plainListBack(expected, what) {
  await listIs(expected, what);
  await summaryIs(/^$/, what);
  check((await currentPageNumber()) === 1, `${what}: the pager says ${show(await pager().innerText())}`);
  check(await page.getByLabel('Order', { exact: true }).isEnabled(), `${what}: Order is still disabled`);
}

async function currentPageNumber() {
  const t = await pager().innerText();
  const m = /Page (\d+)/.exec(t);
  return m ? Number(m[1]) : null;
}

/** Click a pager button and wait until the page number is `n` and the list has settled. */
async function goToPage(button, n, previousTexts) {
  await button.click();
  await until(async () => {
    const num = await currentPageNumber();
    const texts = await itemTexts();
    return { ok: num === n && show(texts) !== show(previousTexts), seen: { page: num, first: texts[0] } };
  }, `after ${await button.innerText()}: expected "Page ${n}" and a new list`);
  await sleep(150); // let a late render land before reading it
  return itemTexts();
}

async function main() {
  console.log(`web flow against ${origin}, screenshots in ${outDir}`);
  const size = await firstLoadReport();

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: DESKTOP });
  context.on('request', noteRequest);
  page = await context.newPage();
  page.setDefaultTimeout(10_000);
  watch(page);

  // --- signed out -------------------------------------------------------------------------
  await step('signed out: the "Sign in" and "Create an account" forms are shown', async () => {
    const r = await page.goto(`${origin}/`);
    check(r && r.status() === 200, `GET / in the browser answered ${r && r.status()}`);
    await signedOut();
    check((await session()) === null, 'a fresh page already has a session in localStorage');
  });

  await step('keyboard: Tab reaches E-mail, Password and the Sign in button in order; focus is visible', async () => {
    const form = signInForm();
    const targets = [
      await form.getByLabel('E-mail', { exact: true }).elementHandle(),
      await form.getByLabel('Password', { exact: true }).elementHandle(),
      await form.getByRole('button', { name: 'Sign in', exact: true }).elementHandle(),
    ];
    const order = [];
    const path = [];
    let focusStyle = null;
    for (let i = 0; i < 40 && order.length < 3; i++) {
      if (i > 0 || (await page.evaluate(() => document.activeElement === document.body || !document.activeElement))) await page.keyboard.press('Tab');
      const info = await page.evaluate((els) => {
        const a = document.activeElement;
        const cs = getComputedStyle(a);
        return {
          index: els.indexOf(a),
          desc: `${a.tagName.toLowerCase()}${a.id ? '#' + a.id : ''}`,
          outline: `${cs.outlineStyle} ${cs.outlineWidth}`,
          outlineOn: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0,
          shadow: cs.boxShadow,
        };
      }, targets);
      path.push(info.desc);
      if (info.index === order.length) order.push(info.index);
      if (info.index === 2) focusStyle = info;
    }
    check(order.length === 3, `Tab did not reach E-mail, Password and Sign in of the "Sign in" form in order; focus went ${path.join(' → ')}`);
    check(focusStyle.outlineOn || (focusStyle.shadow && focusStyle.shadow !== 'none'), `the focused Sign in button shows no focus indicator (outline ${focusStyle.outline}, box-shadow ${focusStyle.shadow})`);
    console.log(`  tab path: ${path.join(' → ')}; focused button: outline ${focusStyle.outline}, box-shadow ${focusStyle.shadow}`);
  });

  await axeBothWidths('signed out');
  await noHorizontalScroll('signed out');

  // --- user A: sign up, sign out, errors, sign in -----------------------------------------
  let tokenA;
  await step('sign up user A through "Create an account" (signs in)', async () => {
    await signUp(userA);
    await signedIn(userA.email);
    const s = await session();
    check(s && s.token && s.user && s.user.email === userA.email, `localStorage notes.session after sign-up: ${show(s)}`);
    tokenA = s.token;
    await visible(page.getByText('No notes here yet.', { exact: true }), 'the "No notes here yet." paragraph for a new user');
  });

  await step('sign out (token revoked, session removed from localStorage)', async () => {
    await signOut();
    check((await apiFromNode('GET', '/users/me', tokenA)) === 401, 'the signed-out token is still accepted by GET /users/me');
  });

  await step('an API error appears next to its field: sign up again with the same e-mail → 409 next to E-mail', async () => {
    const form = signUpForm();
    await expectHttpError([409], () => signUp({ ...userA, email: userA.email.toUpperCase() }));
    const text = await fieldError(form, 'E-mail', 'repeated sign-up');
    console.log(`  E-mail error: ${show(text)}`);
    await signedOut();
  });

  await step('a 7-character password → an error next to Password (422 from the API, or the page\'s own check)', async () => {
    const form = signUpForm();
    const provoked = await expectHttpError([422], () => signUp({ email: `short-${run}@example.com`, name: '', password: 'short12' }), { optional: true });
    const text = await fieldError(form, 'Password', 'short password');
    console.log(`  Password error${provoked ? ' (422 from the API)' : ' (checked by the page, no request)'}: ${show(text)}`);
    await signedOut();
  });

  await step('a wrong password → 401, an alert at the end of the "Sign in" form', async () => {
    await expectHttpError([401], () => signIn({ ...userA, password: 'not the password' }));
    const alert = signInForm().getByRole('alert');
    await visible(alert, 'the alert of the "Sign in" form');
    const text = (await alert.innerText()).trim();
    check(text.length > 0, 'the sign-in alert is empty');
    console.log(`  Sign in alert: ${show(text)}`);
  });

  await step('sign in user A through "Sign in"', async () => {
    await signIn(userA);
    await signedIn(userA.email);
    const s = await session();
    check(s && s.token && s.token !== tokenA, 'sign-in did not store a new token');
    tokenA = s.token;
  });

  // --- three notes: add, done, edit, delete -----------------------------------------------
  const first = ['Buy oat milk', 'Call the plumber about the kitchen tap', 'Read chapter 3'];
  await step('add three notes through "Add a note"', async () => {
    for (const t of first) await addNote(t);
    await listIs(first, 'after adding three notes');
    check((await addForm().getByLabel('New note', { exact: true }).inputValue()) === '', 'the New note text area is not cleared after Add');
  });

  await step('mark one done (checkbox), persisted across a reload', async () => {
    const done = itemWithText(first[1]).getByRole('checkbox', { name: 'Done', exact: true });
    check(!(await done.isChecked()), 'a new note is already checked Done');
    const saved = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().startsWith(`${origin}/notes/`));
    await done.check();
    check((await saved).status() === 200, 'PATCH for Done did not answer 200');
    await reloadSignedIn(userA.email);
    await visible(itemWithText(first[1]), 'the done note after reload');
    check(await itemWithText(first[1]).getByRole('checkbox', { name: 'Done', exact: true }).isChecked(), 'after reload the note is not checked Done');
    check(!(await itemWithText(first[0]).getByRole('checkbox', { name: 'Done', exact: true }).isChecked()), 'after reload another note is checked Done');
  });

  await step('edit: Escape cancels', async () => {
    const item = itemById(await idOf(first[2]));
    await item.getByRole('button', { name: 'Edit', exact: true }).click();
    const area = item.getByRole('textbox', { name: 'Note text', exact: true });
    await visible(area, 'the "Note text" text area');
    check(await area.evaluate((el) => el === document.activeElement), 'Edit did not move focus to the "Note text" text area');
    check((await area.inputValue()) === first[2], `the "Note text" area holds ${JSON.stringify(await area.inputValue())}`);
    await area.fill('this edit is cancelled');
    await area.press('Escape');
    await gone(page.getByRole('textbox', { name: 'Note text', exact: true }), 'the "Note text" text area after Escape');
    await listIs(first, 'after Escape');
  });

  const edited = 'Read chapters 3 and 4';
  let editedId;
  await step('axe-core with an item in edit mode', async () => {
    editedId = await idOf(first[2]);
    const item = itemById(editedId);
    await item.getByRole('button', { name: 'Edit', exact: true }).click();
    await visible(item.getByRole('textbox', { name: 'Note text', exact: true }), 'the "Note text" text area');
    await axeBothWidths('signed in, an item in edit mode');
  });

  await step('edit one (Save), text kept across a reload', async () => {
    const item = itemById(editedId);
    const area = item.getByRole('textbox', { name: 'Note text', exact: true });
    await area.fill(edited);
    const saved = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().startsWith(`${origin}/notes/`));
    await item.getByRole('button', { name: 'Save', exact: true }).click();
    check((await saved).status() === 200, 'PATCH for Save did not answer 200');
    await listIs([first[0], first[1], edited], 'after Save');
    await reloadSignedIn(userA.email);
    await listIs([first[0], first[1], edited], 'after Save and reload');
  });

  await step('an empty edit → 422 next to the "Note text" area', async () => {
    const item = itemById(editedId);
    await item.getByRole('button', { name: 'Edit', exact: true }).click();
    const area = item.getByRole('textbox', { name: 'Note text', exact: true });
    await area.fill('');
    const provoked = await expectHttpError([422], () => item.getByRole('button', { name: 'Save', exact: true }).click(), { optional: true });
    const text = await fieldError(item, 'Note text', 'empty edit');
    console.log(`  Note text error${provoked ? ' (422 from the API)' : ' (checked by the page, no request)'}: ${show(text)}`);
    await area.press('Escape');
    await listIs([first[0], first[1], edited], 'after cancelling the empty edit');
  });

  await step('delete one: "Delete this note?", focus on Keep; Keep keeps, "Yes, delete" deletes (kept gone after reload)', async () => {
    const item = itemById(await idOf(first[0]));
    await item.getByRole('button', { name: 'Delete', exact: true }).click();
    await visible(item.getByText('Delete this note?'), '"Delete this note?" in the item');
    const keep = item.getByRole('button', { name: 'Keep', exact: true });
    await until(async () => keep.evaluate((el) => el === document.activeElement), 'focus did not move to Keep');
    await keep.click();
    await gone(item.getByText('Delete this note?'), '"Delete this note?" after Keep');
    await listIs([first[0], first[1], edited], 'after Keep');

    await item.getByRole('button', { name: 'Delete', exact: true }).click();
    const deleted = page.waitForResponse((r) => r.request().method() === 'DELETE' && r.url().startsWith(`${origin}/notes/`));
    await item.getByRole('button', { name: 'Yes, delete', exact: true }).click();
    check((await deleted).status() === 204, 'DELETE did not answer 204');
    await listIs([first[1], edited], 'after Yes, delete');
    await until(async () => (await statusRegion().innerText()).includes('Note deleted.') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not say "Note deleted."');
    await reloadSignedIn(userA.email);
    await listIs([first[1], edited], 'after delete and reload');
  });

  // --- two tabs of one user: changes show live ---------------------------------------------
  await step('a second tab of the same user sees the first tab\'s add, done and delete without a reload, and the first sees the second\'s', async () => {
    const other = await context.newPage();
    other.setDefaultTimeout(10_000);
    watch(other);
    await other.goto(base.href);
    await visible(other.getByText(`Signed in as ${userA.email}`), 'the second tab signed in');
    const otherList = () => other.getByRole('list', { name: 'Notes', exact: true });
    const otherItem = (text) => otherList().getByRole('listitem').filter({ has: other.locator('p.note-text', { hasText: exactly(text) }) });
    await visible(otherItem(edited), 'the existing note in the second tab');
    let loads = 0;
    other.on('load', () => { loads += 1; });

    const text = 'Written in the first tab';
    await addNote(text);
    await visible(otherItem(text), 'the first tab\'s new note in the second tab, without a reload');

    await otherItem(text).getByRole('checkbox', { name: 'Done', exact: true }).check();
    await until(async () => itemWithText(text).getByRole('checkbox', { name: 'Done', exact: true }).isChecked(), 'the second tab\'s Done is not shown in the first');

    const id = await idOf(text);
    const r = await apiInPage('DELETE', `/notes/${id}`);
    check(r.status === 204, `DELETE answered ${r.status}`);
    await gone(otherItem(text), 'the deleted note in the second tab');
    await gone(itemWithText(text), 'the deleted note in the first tab');
    check(loads === 0, `the second tab reloaded ${loads} time(s)`);
    await other.close();
  });

  await step('a live reload gives way to a note opened while it was on its way: the edit stays open, the new note shows after Escape', async () => {
    // A note added elsewhere makes the page read its list again; the page's GET /notes is held
    // until a note has been opened for editing, so the answer lands on an open note.
    let held = false;
    let release;
    const released = new Promise((resolve) => { release = resolve; });
    const handler = async (route) => {
      if (route.request().method() !== 'GET') return route.fallback();
      held = true;
      await released;
      return route.continue();
    };
    const listUrl = (url) => url.pathname === '/notes';
    await page.route(listUrl, handler);
    try {
      const text = 'Written while a note is open';
      const r = await apiInPage('POST', '/notes', { text });
      check(r.status === 201, `POST /notes answered ${r.status}`);
      await until(() => held, 'the page did not read its list again after a note was added elsewhere');
      const item = itemById(editedId);
      await item.getByRole('button', { name: 'Edit', exact: true }).click();
      const area = item.getByRole('textbox', { name: 'Note text', exact: true });
      await visible(area, 'the "Note text" text area');
      await area.fill('typed while the list was on its way');
      const answered = page.waitForResponse((res) => res.request().method() === 'GET' && new URL(res.url()).pathname === '/notes');
      release();
      check((await answered).status() === 200, 'the held GET /notes did not answer 200');
      await page.unroute(listUrl, handler);
      // Longer than the page's 150 ms between reload tries, a few times over.
      await sleep(1_000);
      check(await area.isVisible(), 'the list read again while a note was open closed it');
      check((await area.inputValue()) === 'typed while the list was on its way', `the open note's text area holds ${show(await area.inputValue())}`);
      await area.press('Escape');
      await listIs([first[1], edited, text], 'after Escape: the note added elsewhere');
      check((await apiInPage('DELETE', `/notes/${r.body.id}`)).status === 204, 'DELETE of the note added elsewhere');
      await listIs([first[1], edited], 'after deleting the note added elsewhere');
    } finally {
      release();
      await page.unroute(listUrl, handler);
    }
  });

  // --- 120 notes, paging ------------------------------------------------------------------
  const bulkCount = TOTAL_NOTES - 2;
  const bulk = Array.from({ length: bulkCount }, (_, i) => `Bulk note ${String(i + 1).padStart(3, '0')}`);
  const all = [first[1], edited, ...bulk];
  await step(`create ${bulkCount} more notes through POST /notes/bulk (${TOTAL_NOTES} in all)`, async () => {
    const r = await apiInPage('POST', '/notes/bulk', bulk.map((text) => ({ text })));
    check(r.status === 201 && Array.isArray(r.body) && r.body.length === bulkCount, `POST /notes/bulk answered ${r.status} ${show(r.body).slice(0, 200)}`);
    await reloadSignedIn(userA.email);
    await until(async () => ({ ok: (await itemTexts()).length === PAGE_SIZE, seen: (await itemTexts()).length }), `the first page does not show ${PAGE_SIZE} notes`);
  });

  const pages = [];
  await step(`page through with Next until it is disabled: ${TOTAL_NOTES} distinct notes, ${PAGE_SIZE} a page`, async () => {
    check((await currentPageNumber()) === 1, `the pager does not say "Page 1": ${show(await pager().innerText())}`);
    check(await previousButton().isDisabled(), 'Previous is enabled on page 1');
    pages.push(await itemTexts());
    while (await nextButton().isEnabled()) {
      check(pages.length < 20, 'Next is still enabled after 20 pages');
      pages.push(await goToPage(nextButton(), pages.length + 1, pages[pages.length - 1]));
    }
    const sizes = pages.map((p) => p.length);
    const flat = pages.flat();
    console.log(`  pages: ${sizes.join(' + ')} = ${flat.length}`);
    check(sizes.slice(0, -1).every((n) => n === PAGE_SIZE) && sizes[sizes.length - 1] >= 1 && sizes[sizes.length - 1] <= PAGE_SIZE, `page sizes ${show(sizes)}: expected ${PAGE_SIZE} on each page but the last (1..${PAGE_SIZE}); an empty last page means Next was enabled with no next page`);
    check(new Set(flat).size === flat.length, 'a note appears on two pages');
    check(flat.length === TOTAL_NOTES, `${flat.length} notes seen, expected ${TOTAL_NOTES}`);
    check(show(flat) === show(all), `notes not in "Oldest first" order: first ${show(flat.slice(0, 3))}, last ${show(flat.slice(-3))}`);
    check((await currentPageNumber()) === pages.length, `the pager says ${show(await pager().innerText())} on page ${pages.length}`);
    check(await previousButton().isEnabled(), 'Previous is disabled on the last page');
  });

  await step('Previous once shows the page before', async () => {
    const texts = await goToPage(previousButton(), pages.length - 1, pages[pages.length - 1]);
    check(show(texts) === show(pages[pages.length - 2]), `Previous shows ${show(texts.slice(0, 2))}…, expected ${show(pages[pages.length - 2].slice(0, 2))}…`);
    check(await nextButton().isEnabled(), 'Next is disabled after Previous');
  });

  await step('Order "Newest first": the first item is the newest note, back on page 1', async () => {
    await page.getByLabel('Order', { exact: true }).selectOption({ label: 'Newest first' });
    const expected = [...all].reverse().slice(0, PAGE_SIZE);
    await listIs(expected, 'Newest first');
    check((await currentPageNumber()) === 1, `after changing Order the pager says ${show(await pager().innerText())}`);
    const texts = await goToPage(nextButton(), 2, expected);
    check(show(texts) === show([...all].reverse().slice(PAGE_SIZE, 2 * PAGE_SIZE)), `Newest first, page 2 shows ${show(texts.slice(0, 2))}…`);
  });

  await step('Show "Done" lists only the done note; "Open" excludes it', async () => {
    await page.getByLabel('Show', { exact: true }).selectOption({ label: 'Done' });
    await listIs([first[1]], 'Show Done');
    await page.getByLabel('Show', { exact: true }).selectOption({ label: 'Open' });
    await until(async () => {
      const t = await itemTexts();
      return { ok: t.length === PAGE_SIZE && !t.includes(first[1]) && t[0] === all[all.length - 1], seen: t.slice(0, 2) };
    }, 'Show Open (newest first): expected 20 open notes, the newest first');
    await page.getByLabel('Show', { exact: true }).selectOption({ label: 'All' });
    await page.getByLabel('Order', { exact: true }).selectOption({ label: 'Oldest first' });
    await listIs(all.slice(0, PAGE_SIZE), 'Show All, Oldest first');
  });

  // --- search ----------------------------------------------------------------------------
  // Emoji (two UTF-16 units each, a ZWJ sequence of seven) and accents before the matched word:
  // marks in the right place prove the page reads the API's offsets as code points.
  const party = '🎉🎉 Party: bring the lemonade 🍋';
  const creme = 'Crème brûlée, then lemonade for Zoë';
  const stand = 'Zoë’s 👩🏽‍🍳 stand sells LEMONADE and cake';
  const lemon = 'Lemon cake recipe';
  await step('search "lemonade" (Enter): the three notes with the word, marked after emoji and accents', async () => {
    const r = await apiInPage('POST', '/notes/bulk', [party, creme, stand, lemon].map((text) => ({ text })));
    check(r.status === 201, `POST /notes/bulk answered ${r.status} ${show(r.body).slice(0, 200)}`);
    await search('lemonade', { enter: true });
    await resultsAre([party, creme, stand], 'search "lemonade"');
    console.log(`  results, best first: ${show(await itemTexts())}`);
    for (const [text, word] of [[party, 'lemonade'], [creme, 'lemonade'], [stand, 'LEMONADE']]) {
      const seen = await marksOf(text);
      const expected = { text, marks: [word], before: text.slice(0, text.indexOf(word)) };
      check(show(seen) === show(expected), `the result ${show(text)}: expected ${show(expected)}, saw ${show(seen)}`);
    }
    await summaryIs(/^3 notes match “lemonade”, best first\.$/, 'search "lemonade"');
    check(await page.getByLabel('Order', { exact: true }).isDisabled(), 'Order is enabled while searching (results are best first)');
    check(await nextButton().isDisabled() && await previousButton().isDisabled(), 'the pager is enabled for one page of results');
    check(!(await page.getByText('No notes here yet.', { exact: true }).isVisible()), '"No notes here yet." shows with results');
    check(await searchBox().evaluate((el) => el === document.activeElement), 'focus left the search box');
  });

  await axeBothWidths('signed in, search results shown');
  await noHorizontalScroll('signed in, search results shown');
  await step('screenshot: 360 px wide, search results', async () => {
    const narrow = path.join(outDir, 'web-search-360.png');
    await page.setViewportSize(NARROW);
    await sleep(100);
    await page.screenshot({ path: narrow, fullPage: true });
    await page.setViewportSize(DESKTOP);
    console.log(`  screenshot: ${narrow}`);
  });

  const standEdited = 'Zoë’s 👩🏽‍🍳 stand sells lemonade, cake and tea';
  await step('from the results: Done (marks kept), Show "Done", Edit (whole new text), Delete', async () => {
    const done = itemWithText(creme).getByRole('checkbox', { name: 'Done', exact: true });
    const saved = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().startsWith(`${origin}/notes/`));
    await done.check();
    check((await saved).status() === 200, 'PATCH for Done did not answer 200');
    await until(async () => (await itemWithText(creme).getByRole('checkbox', { name: 'Done', exact: true }).isChecked()) || null, 'the result is not checked Done');
    check(show((await marksOf(creme)).marks) === show(['lemonade']), 'Done lost the marks of the result');
    await page.getByLabel('Show', { exact: true }).selectOption({ label: 'Done' });
    await resultsAre([creme], 'search "lemonade", Show Done');
    await summaryIs(/^1 note matches “lemonade”, best first\.$/, 'search "lemonade", Show Done');
    await page.getByLabel('Show', { exact: true }).selectOption({ label: 'All' });
    await resultsAre([party, creme, stand], 'search "lemonade", Show All');

    const item = itemById(await idOf(stand));
    await item.getByRole('button', { name: 'Edit', exact: true }).click();
    const area = item.getByRole('textbox', { name: 'Note text', exact: true });
    check((await area.inputValue()) === stand, `editing a result starts from ${show(await area.inputValue())}, not the note's text`);
    await area.fill(standEdited);
    await item.getByRole('button', { name: 'Save', exact: true }).click();
    await resultsAre([party, creme, standEdited], 'after editing a result');
    check(show((await marksOf(standEdited)).marks) === '[]', 'an edited result still shows the old marks');

    const gone1 = itemById(await idOf(party));
    await gone1.getByRole('button', { name: 'Delete', exact: true }).click();
    const deleted = page.waitForResponse((r) => r.request().method() === 'DELETE' && r.url().startsWith(`${origin}/notes/`));
    await gone1.getByRole('button', { name: 'Yes, delete', exact: true }).click();
    check((await deleted).status() === 204, 'DELETE of a result did not answer 204');
    await resultsAre([creme, standEdited], 'after deleting a result');
    await summaryIs(/^2 notes match “lemonade”, best first\.$/, 'after deleting a result');
  });

  await step('search "zebra": "No notes match" in the live region, no items', async () => {
    await search('zebra');
    await summaryIs(/^No notes match “zebra”\.$/, 'search "zebra"');
    await resultsAre([], 'search "zebra"');
    check(!(await page.getByText('No notes here yet.', { exact: true }).isVisible()), '"No notes here yet." shows for a search');
  });

  await step('search "-x" (nothing to look for) → 422 next to the search box; emptying the box brings the list back', async () => {
    await expectHttpError([422], () => search('-x'));
    const text = await fieldError(searchForm(), 'Search notes', 'search "-x"');
    console.log(`  Search notes error: ${show(text)}`);
    await summaryIs(/^No notes match “zebra”\.$/, 'after a refused query the results stay');
    await searchBox().fill('');
    await plainListBack(all.slice(0, PAGE_SIZE), 'after emptying the search box');
    check((await searchBox().getAttribute('aria-invalid')) === null, 'the search box is still aria-invalid after emptying it');
    check(!(await searchForm().locator('.field-error').count()), 'the search error is still shown after emptying the box');
  });

  await step('a long note: the result is the API\'s excerpt, "…" where it is cut, the word marked', async () => {
    const long = `${'Some words before the match. '.repeat(12)}Tune the xylophone 🎵 soon. ${'Some words after the match. '.repeat(12)}`.trim();
    const r = await apiInPage('POST', '/notes', { text: long });
    check(r.status === 201, `POST /notes answered ${r.status}`);
    await search('xylophone');
    await summaryIs(/^1 note matches “xylophone”, best first\.$/, 'search "xylophone"');
    const seen = await notesList().locator(':scope > li p.note-text').evaluate((el) => ({
      text: el.textContent,
      marks: [...el.querySelectorAll('mark')].map((m) => m.textContent),
    }));
    console.log(`  excerpt: ${show(seen.text)}`);
    check(show(seen.marks) === show(['xylophone']), `the excerpt marks ${show(seen.marks)}`);
    check(seen.text.startsWith('…') && seen.text.endsWith('…') && seen.text.length < long.length, 'the excerpt is not shown as one, "…" at both ends');
    check(long.includes(seen.text.slice(1, -1)), 'the excerpt is not a part of the note');
  });

  const bulkNewestFirst = [...bulk].reverse();
  await step(`search "bulk": ${bulkCount} results, ${PAGE_SIZE} a page through Link: rel="next", each once, ties newest first; Escape: the list`, async () => {
    await search('bulk');
    await summaryIs(/^Page 1: 20 notes matching “bulk”, best first, more on the next page\.$/, 'search "bulk"');
    const results = [await itemTexts()];
    while (await nextButton().isEnabled()) {
      check(results.length < 20, 'Next is still enabled after 20 pages of results');
      results.push(await goToPage(nextButton(), results.length + 1, results[results.length - 1]));
    }
    const sizes = results.map((p) => p.length);
    const flat = results.flat();
    console.log(`  result pages: ${sizes.join(' + ')} = ${flat.length}`);
    check(new Set(flat).size === flat.length, 'a result appears on two pages');
    check(show(flat) === show(bulkNewestFirst), `results not every bulk note once, newest first (equal rank): first ${show(flat.slice(0, 3))}, last ${show(flat.slice(-3))}`);
    await summaryIs(new RegExp(`^Page ${results.length}: ${sizes[sizes.length - 1]} notes matching “bulk”, best first\\.$`), 'last page of "bulk"');
    const back = await goToPage(previousButton(), results.length - 1, results[results.length - 1]);
    check(show(back) === show(results[results.length - 2]), 'Previous does not show the page of results before');
    await searchBox().press('Escape');
    check((await searchBox().inputValue()) === '', 'Escape left text in the search box');
    await plainListBack(all.slice(0, PAGE_SIZE), 'after Escape');
    await until(async () => (await statusRegion().innerText()).includes('Search closed') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not say the search closed');
  });

  await step('exactly 20 matches: one page (a Next that finds no more leaves page 1 as the last)', async () => {
    const ride = Array.from({ length: PAGE_SIZE }, (_, i) => `Zeppelin ride ${i + 1}`);
    const r = await apiInPage('POST', '/notes/bulk', ride.map((text) => ({ text })));
    check(r.status === 201, `POST /notes/bulk answered ${r.status}`);
    await search('zeppelin', { enter: true });
    await resultsAre(ride, 'search "zeppelin"');
    if (await nextButton().isEnabled()) {
      console.log('  the full page links on: Next, to an empty page');
      await nextButton().click();
      await until(async () => (await nextButton().isDisabled()) || null, 'Next is still enabled after an empty page of results');
      await until(() => searchBox().evaluate((el) => el === document.activeElement), 'focus did not go to the search box with no pager button left');
    }
    await summaryIs(/^20 notes match “zeppelin”, best first\.$/, 'search "zeppelin"');
    check((await currentPageNumber()) === 1 && (await itemTexts()).length === PAGE_SIZE, `after Next: ${show(await pager().innerText())}, ${(await itemTexts()).length} items`);
    await searchBox().press('Escape');
    await plainListBack(all.slice(0, PAGE_SIZE), 'after Escape');
  });

  await step('screenshots: desktop (1280×800) and 360 px wide, signed in with notes, full page', async () => {
    const desktop = path.join(outDir, 'web-desktop.png');
    const narrow = path.join(outDir, 'web-360.png');
    await page.setViewportSize(DESKTOP);
    await page.screenshot({ path: desktop, fullPage: true });
    await page.setViewportSize(NARROW);
    await sleep(100);
    await page.screenshot({ path: narrow, fullPage: true });
    await page.setViewportSize(DESKTOP);
    console.log(`  screenshot: ${desktop}`);
    console.log(`  screenshot: ${narrow}`);
  });

  await axeBothWidths('signed in, with notes');
  await noHorizontalScroll('signed in, with notes');

  // --- user B sees nothing of A's -----------------------------------------------------------
  const someNoteOfA = (await apiInPage('GET', '/notes?limit=1')).body[0];
  await step('sign out user A', async () => {
    await signOut();
    check((await apiFromNode('GET', '/notes', tokenA)) === 401, 'the signed-out token of A still reads /notes');
  });

  await step('user B signs up and sees none of A\'s notes ("No notes here yet.", GET /notes = [])', async () => {
    await signUp(userB);
    await signedIn(userB.email);
    await visible(page.getByText('No notes here yet.', { exact: true }), 'the "No notes here yet." paragraph for user B');
    check((await items().count()) === 0, `user B's list has ${await items().count()} item(s)`);
    const r = await apiInPage('GET', '/notes');
    check(r.status === 200 && show(r.body) === '[]', `GET /notes as B answered ${r.status} ${show(r.body).slice(0, 200)}`);
    const s = await session();
    check((await apiFromNode('GET', `/notes/${someNoteOfA.id}`, s.token)) === 404, `B reading A's note ${someNoteOfA.id} did not get 404`);
    check(!(await page.getByText(first[1], { exact: true }).count()), 'A\'s note text is on B\'s page');
  });

  // --- the address, and a forgotten password, through the mails -----------------------------
  await step('user B sees "not verified"; the sign-up mail\'s link verifies the address and leaves the address bar', async () => {
    const notice = page.getByText(`Your address ${userB.email} is not verified yet`);
    await visible(notice, 'the unverified-address notice');
    const token = await tokenFromMail(userB.email, 'verify-email');
    await page.goto(`${origin}/#verify-email=${token}`);
    await until(async () => (await statusRegion().innerText()).includes('your e-mail address is verified') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not confirm the verification');
    check(!page.url().includes(token), `the token is still in the address bar: ${page.url()}`);
    await gone(notice, 'the unverified-address notice');
  });

  const newPasswordB = 'a freshly reset passphrase';
  await step('forgot password: B asks for a link, opens it, sets a new password and signs in with it', async () => {
    await signOut();
    await page.getByRole('button', { name: 'Forgot password?', exact: true }).click();
    const forgot = page.getByRole('form', { name: 'Reset your password', exact: true });
    await visible(forgot, 'the "Reset your password" form');
    await forgot.getByLabel('E-mail', { exact: true }).fill(userB.email);
    await forgot.getByRole('button', { name: 'Send the link', exact: true }).click();
    await until(async () => (await statusRegion().innerText()).includes('a link to set a new password is on its way') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not say the link is on its way');
    const token = await tokenFromMail(userB.email, 'reset-password');
    await page.goto(`${origin}/#reset-password=${token}`);
    const reset = page.getByRole('form', { name: 'Choose a new password', exact: true });
    await visible(reset, 'the "Choose a new password" form');
    check(!page.url().includes(token), `the reset token is still in the address bar: ${page.url()}`);
    await axe('the "Choose a new password" form');
    await reset.getByLabel('New password', { exact: true }).fill(newPasswordB);
    await reset.getByRole('button', { name: 'Set the password', exact: true }).click();
    await until(async () => (await statusRegion().innerText()).includes('Your password is changed') || { ok: false, seen: await statusRegion().innerText() }, 'the status region does not say the password changed');
    await signIn({ ...userB, password: newPasswordB });
    await signedIn(userB.email);
  });

  assertClean('end of the flow');
  console.log(`web flow passed: sign-up/in/out, 3 notes added/done/edited/deleted, ${TOTAL_NOTES} notes paged, search (marks by code point, 422, paged results), isolation, axe (0 serious/critical), first load ${size.raw} B raw / ${size.sent} B sent; screenshots ${path.join(outDir, 'web-desktop.png')} ${path.join(outDir, 'web-360.png')}`);
  console.log(`web: ${passed} passed, 0 failed`);
}

try {
  await main();
  await browser?.close();
} catch (e) {
  if (page) {
    const shot = path.join(outDir, 'web-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).then(() => console.log(`  screenshot at failure: ${shot}`)).catch(() => {});
  }
  if (consoleErrors.length && !(e instanceof Failure && e.message.includes(consoleErrors[0]))) console.log(`  console errors so far: ${consoleErrors.join(' | ')}`);
  console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  console.log(`web: ${passed} passed, 1 failed`);
  await browser?.close().catch(() => {});
  process.exit(1);
}
