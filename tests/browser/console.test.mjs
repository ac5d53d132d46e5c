// End-to-end tests of the latchkey web console: a real `latchkey serve`, a
// real headless Chromium, and assertions on what a person sees.
//
//   LATCHKEY_BIN   path to the latchkey binary (default $CARGO_TARGET_DIR/debug/latchkey,
//                  else ../../target/debug/latchkey)
//   CHROMIUM_PATH  path to Chromium (default /usr/bin/chromium)
//
// The tests share one server and run in order: each flow builds on the last.
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { apiCall, startServer } from './server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(here, '..', '..', 'docs', 'console');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const KEY_NAME = 'billing-reader';
const ACCOUNTS = ['111111111111', '222222222222'];
const GARBAGE = 'not-a-real-access-key';

/** Retry an async assertion until it passes or the time is up. */
async function eventually(fn, timeout = 10_000) {
  const end = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await sleep(100);
    }
  }
}

/** UTC YYYY-MM-DD, `days` from now. */
function utcDay(days = 0) {
  return new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);
}

/** The console shows the server's `detail` in sentence case. */
function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function decodePayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

describe('latchkey web console', () => {
  let server;
  let browser;
  let context;
  let page;
  let token; // the billing-reader token currently in force
  let downloaded; // the content of the downloaded .key file
  const pageProblems = [];

  const api = (method, path, body, tok = server.token) => apiCall(server.base, tok, method, path, body);

  async function newPage(ctx) {
    const p = await ctx.newPage();
    p.setDefaultTimeout(10_000);
    p.on('pageerror', (err) => pageProblems.push(`page error: ${err.message}`));
    p.on('console', (msg) => {
      const text = msg.text();
      // Chromium logs every 4xx response as "Failed to load resource"; those are expected.
      if (msg.type() === 'error' && !text.includes('Failed to load resource')) pageProblems.push(`console: ${text}`);
    });
    return p;
  }

  async function signIn(p, key) {
    await p.goto(server.base + '/');
    await p.getByLabel('Access key', { exact: true }).fill(key);
    await p.getByRole('button', { name: 'Sign in' }).click();
  }

  function row(p, name) {
    return p.locator('#keys-body tr').filter({ has: p.locator('th .name', { hasText: new RegExp(`^${name}$`) }) });
  }

  async function cellText(r, cls) {
    return (await r.locator(`td.${cls}`).innerText()).trim();
  }

  /** Close the show-once window through its confirmation. */
  async function closeShowOnce(p) {
    await p.getByRole('button', { name: 'Close', exact: true }).click();
    await p.getByRole('button', { name: 'Close window' }).click();
    await p.locator('#once-dialog').waitFor({ state: 'hidden' });
  }

  before(async () => {
    server = await startServer();
    browser = await launchChromium();
    context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1360, height: 860 } });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
    page = await newPage(context);
    await mkdir(SHOTS, { recursive: true });
  });

  // Flows that start from the plain table call this first: if an earlier flow
  // failed with a dialog open, reload (the session survives a reload) so one
  // failure does not cascade.
  async function noDialogOpen() {
    if ((await page.locator('dialog[open]').count()) > 0) {
      await page.reload();
      await page.locator('#app-view').waitFor();
    }
  }

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      if (server) await server.stop();
    }
  });

  it('serves the console and its assets under the content security policy', async () => {
    const res = await fetch(server.base + '/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /text\/html/);
    const csp = res.headers.get('content-security-policy') || '';
    assert.match(csp, /script-src 'self'/, `CSP header: ${csp}`);
    const html = await res.text();
    assert.match(html, /\/console\/app\.js/);
    for (const [file, type] of [['app.js', /javascript/], ['app.css', /text\/css/]]) {
      const asset = await fetch(`${server.base}/console/${file}`);
      assert.equal(asset.status, 200, file);
      assert.match(asset.headers.get('content-type') || '', type, file);
    }
  });

  it('refuses a bad key with the server’s message', async () => {
    const direct = await api('GET', '/v1/keys?limit=1', undefined, GARBAGE);
    assert.equal(direct.status, 401);
    assert.ok(direct.json && direct.json.detail, 'the 401 has a problem+json detail');

    await signIn(page, GARBAGE);
    const error = page.locator('#signin-error');
    await eventually(async () => assert.equal((await error.innerText()).trim(), sentence(direct.json.detail)));
    assert.ok(await page.getByRole('heading', { name: 'Sign in to latchkey' }).isVisible());
    assert.equal(await page.getByLabel('Access key', { exact: true }).getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('latchkey.token')), null);
  });

  it('refuses a Cloud Account Viewer key with the server’s 403 message and stays signed out', async () => {
    const created = await api('POST', '/v1/keys', {
      name: 'script-reader',
      roles: ['cloud_account_viewer'],
      accounts: ['333333333333'],
    });
    assert.equal(created.status, 201, created.text);
    const direct = await api('GET', '/v1/keys?limit=1', undefined, created.json.token);
    assert.equal(direct.status, 403);

    await signIn(page, created.json.token);
    await eventually(async () => assert.equal((await page.locator('#signin-error').innerText()).trim(), sentence(direct.json.detail)));
    assert.ok(await page.locator('#signin-view').isVisible());
    assert.ok(!(await page.locator('#app-view').isVisible()));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('latchkey.token')), null);
  });

  it('signs in with the bootstrap admin key and keeps the session across a reload', async () => {
    await signIn(page, server.token);
    await row(page, 'bootstrap-admin').waitFor();
    const who = await page.locator('#session-who').innerText();
    assert.match(who, /bootstrap-admin/);
    assert.match(who, /Global Admin/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('latchkey.token')), server.token);
    assert.ok(await page.getByRole('button', { name: 'Add access key' }).isVisible());

    await page.reload();
    await row(page, 'bootstrap-admin').waitFor();
    assert.ok(await page.getByRole('button', { name: 'Sign out' }).isVisible());
  });

  it('creates a Cloud Account Viewer key for two accounts and shows its token once', async () => {
    await page.getByRole('button', { name: 'Add access key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add access key' });
    await dialog.waitFor();
    // Six months is preselected.
    assert.equal(await dialog.getByLabel('Expiration period').inputValue(), 'default');
    assert.equal(
      (await dialog.getByLabel('Expiration period').locator('option:checked').innerText()).trim(),
      '6 months',
    );

    await dialog.getByLabel('Name').fill(KEY_NAME);
    await dialog.getByLabel('Description').fill('Nightly billing export');
    await dialog.getByLabel('Expiration period').selectOption({ label: '90 days' });

    // "Add another role" adds a second role row, which can be removed again.
    await dialog.getByRole('button', { name: 'Add another role' }).click();
    assert.ok(await dialog.getByLabel('Role 2', { exact: true }).isVisible());
    await dialog.getByRole('button', { name: 'Remove role 2' }).click();
    assert.equal(await dialog.getByLabel('Role 2', { exact: true }).count(), 0);

    // The accounts field appears only for Cloud Account Viewer.
    assert.ok(!(await dialog.getByLabel('Account IDs').isVisible()));
    await dialog.getByLabel('Role 1', { exact: true }).selectOption({ label: 'Cloud Account Viewer' });
    await dialog.getByLabel('Account IDs').fill(`${ACCOUNTS[0]},\n${ACCOUNTS[1]}`);
    await page.screenshot({ path: join(SHOTS, 'add-dialog.png') });

    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    const once = page.getByRole('dialog', { name: 'Access key created' });
    await once.waitFor();
    assert.match(await once.innerText(), /cannot be shown again/);
    assert.equal(await once.getByLabel('Name').inputValue(), KEY_NAME);
    token = await once.getByLabel('Token (JWT)').inputValue();
    assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const claims = decodePayload(token);
    assert.equal(claims.name, KEY_NAME);
    assert.deepEqual(claims.roles, ['cloud_account_viewer']);
    assert.deepEqual(claims.accounts, ACCOUNTS);
    await page.screenshot({ path: join(SHOTS, 'show-once.png') });
  });

  it('copies the name and the token to the clipboard', async () => {
    const once = page.getByRole('dialog', { name: 'Access key created' });
    await once.getByRole('button', { name: 'Copy token' }).click();
    await eventually(async () => assert.match(await page.locator('#once-status').innerText(), /Token copied/));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);

    await once.getByRole('button', { name: 'Copy name' }).click();
    await eventually(async () => assert.match(await page.locator('#once-status').innerText(), /Name copied/));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), KEY_NAME);
  });

  it('downloads the token as APIKey-<name>-<date>.key', async () => {
    const once = page.getByRole('dialog', { name: 'Access key created' });
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      once.getByRole('button', { name: 'Download' }).click(),
    ]);
    assert.equal(download.suggestedFilename(), `APIKey-${KEY_NAME}-${utcDay()}.key`);
    downloaded = await readFile(await download.path(), 'utf8');
    assert.equal(downloaded, `${token}\n`);
  });

  it('asks for confirmation before closing the token window', async () => {
    // Escape asks too, and Escape again goes back to the token.
    const once = page.getByRole('dialog', { name: 'Access key created' });
    await page.keyboard.press('Escape');
    await page.getByRole('alertdialog', { name: 'Close this window?' }).waitFor();
    await page.keyboard.press('Escape');
    await page.getByRole('alertdialog', { name: 'Close this window?' }).waitFor({ state: 'hidden' });
    assert.ok(await once.isVisible());

    await page.getByRole('button', { name: 'Close', exact: true }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Close this window?' });
    await confirm.waitFor();
    assert.match(await confirm.innerText(), /cannot be shown again/);
    await confirm.getByRole('button', { name: 'Go back' }).click();
    await confirm.waitFor({ state: 'hidden' });
    assert.ok(await page.getByRole('dialog', { name: 'Access key created' }).isVisible());

    await closeShowOnce(page);
    assert.equal(await page.locator('#once-token').inputValue(), '', 'the token is cleared from the page');
  });

  it('lists the new key with its roles, accounts, expiry, “Never” used and Active status', async () => {
    await noDialogOpen();
    const r = row(page, KEY_NAME);
    await r.waitFor();
    assert.match(await r.locator('th').innerText(), /Nightly billing export/);
    assert.equal(await cellText(r, 'roles'), 'Cloud Account Viewer');
    const accounts = await cellText(r, 'accounts');
    for (const a of ACCOUNTS) assert.match(accounts, new RegExp(a));
    assert.match(await cellText(r, 'created'), new RegExp(utcDay()));
    assert.match(await cellText(r, 'created'), /by bootstrap-admin/);
    assert.match(await cellText(r, 'expires'), new RegExp(utcDay(90)));
    assert.equal(await cellText(r, 'last-used'), 'Never');
    assert.equal(await cellText(r, 'status'), 'Active');
    await page.screenshot({ path: join(SHOTS, 'keys-table.png'), fullPage: true });
  });

  it('the downloaded token is accepted by the server, and “Last used” then shows a time', async () => {
    await noDialogOpen();
    // A valid key whose role is too weak for the admin API: 403, not 401.
    const withFile = await api('GET', '/v1/keys', undefined, downloaded.trim());
    assert.equal(withFile.status, 403, withFile.text);
    const withGarbage = await api('GET', '/v1/keys', undefined, GARBAGE);
    assert.equal(withGarbage.status, 401);
    // That request authenticated the key to latchkey itself, which counts as a use (contract §2).

    await page.getByRole('button', { name: 'Refresh' }).click();
    await eventually(async () => assert.match(await cellText(row(page, KEY_NAME), 'last-used'), new RegExp(`^${utcDay()}\\s+\\d\\d:\\d\\d UTC$`)));
  });

  it('shows server errors next to the field that caused them', async () => {
    await noDialogOpen();
    await page.getByRole('button', { name: 'Add access key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add access key' });
    await dialog.waitFor();

    // Client-side: Cloud Account Viewer needs accounts or "All accounts".
    await dialog.getByLabel('Name').fill('needs-accounts');
    await dialog.getByLabel('Role 1', { exact: true }).selectOption({ label: 'Cloud Account Viewer' });
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    assert.match(await page.locator('#add-accounts-error').innerText(), /account/i);
    await dialog.getByLabel('All accounts').check();
    assert.ok(await dialog.getByLabel('Account IDs').isDisabled());

    // 409: the name is taken (case-insensitively) — shown at the name field.
    await dialog.getByLabel('Name').fill(KEY_NAME.toUpperCase());
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    const nameError = page.locator('#add-name-error');
    await eventually(async () => assert.notEqual((await nameError.innerText()).trim(), ''));
    assert.equal(await dialog.getByLabel('Name').getAttribute('aria-invalid'), 'true');
    const conflict = await api('POST', '/v1/keys', { name: KEY_NAME.toUpperCase(), roles: ['global_viewer'] });
    assert.equal(conflict.status, 409);
    const expected = (conflict.json.errors || []).find((e) => e.field === 'name')?.message || conflict.json.detail;
    assert.match(await nameError.innerText(), new RegExp(expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i'));

    // 422 on expires_in_days: shown next to the custom days input.
    await dialog.getByLabel('Name').fill('too-long-lived');
    await dialog.getByLabel('Expiration period').selectOption({ label: 'Custom…' });
    await dialog.getByLabel('Days until expiry').fill('100000');
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    const daysError = page.locator('#add-days-error');
    await eventually(async () => assert.notEqual((await daysError.innerText()).trim(), ''));
    assert.equal((await nameError.innerText()).trim(), '', 'the old name error is gone');

    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await row(page, 'too-long-lived').count(), 0);
  });

  it('edits the description', async () => {
    await noDialogOpen();
    await page.getByRole('button', { name: `Edit description ${KEY_NAME}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Edit description' });
    await dialog.waitFor();
    assert.equal(await dialog.getByLabel('Description').inputValue(), 'Nightly billing export');
    await dialog.getByLabel('Description').fill('Nightly billing export (finance team)');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await eventually(async () =>
      assert.match(await row(page, KEY_NAME).locator('th').innerText(), /Nightly billing export \(finance team\)/),
    );
  });

  it('renews the key, shows the new token once and revokes the previous one', async () => {
    await noDialogOpen();
    const previous = token;
    await page.getByRole('button', { name: `Renew ${KEY_NAME}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Renew access key' });
    await dialog.waitFor();
    await dialog.getByLabel('New expiration period').selectOption({ label: '1 year' });
    await dialog.getByLabel('Revoke the previous token').check();
    await dialog.getByRole('button', { name: 'Renew', exact: true }).click();

    const once = page.getByRole('dialog', { name: 'Access key renewed' });
    await once.waitFor();
    assert.match(await once.innerText(), /cannot be shown again/);
    assert.equal(await once.getByLabel('Name').inputValue(), KEY_NAME);
    token = await once.getByLabel('Token (JWT)').inputValue();
    assert.notEqual(token, previous);
    assert.equal(decodePayload(token).sub, decodePayload(previous).sub, 'same key, new token');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      once.getByRole('button', { name: 'Download' }).click(),
    ]);
    assert.equal(download.suggestedFilename(), `APIKey-${KEY_NAME}-${utcDay()}.key`);
    assert.equal(await readFile(await download.path(), 'utf8'), `${token}\n`);
    await closeShowOnce(page);

    await eventually(async () => assert.match(await cellText(row(page, KEY_NAME), 'expires'), new RegExp(utcDay(365))));
    assert.equal((await api('GET', '/v1/keys', undefined, token)).status, 403, 'new token valid');
    assert.equal((await api('GET', '/v1/keys', undefined, previous)).status, 401, 'previous token revoked');
  });

  it('suspends and resumes the key', async () => {
    await noDialogOpen();
    const r = row(page, KEY_NAME);
    await page.getByRole('button', { name: `Suspend ${KEY_NAME}` }).click();
    await eventually(async () => assert.equal(await cellText(r, 'status'), 'Suspended'));
    assert.ok(await page.getByRole('button', { name: `Resume ${KEY_NAME}` }).isVisible());
    assert.equal(await page.getByRole('button', { name: `Suspend ${KEY_NAME}` }).count(), 0);
    assert.equal((await api('GET', '/v1/keys', undefined, token)).status, 401, 'suspended token refused');

    await page.getByRole('button', { name: `Resume ${KEY_NAME}` }).click();
    await eventually(async () => assert.equal(await cellText(r, 'status'), 'Active'));
    assert.ok(await page.getByRole('button', { name: `Suspend ${KEY_NAME}` }).isVisible());
    assert.equal((await api('GET', '/v1/keys', undefined, token)).status, 403, 'resumed token valid again');
  });

  it('removes the key after a confirmation that says it cannot be undone', async () => {
    await noDialogOpen();
    const r = row(page, KEY_NAME);
    await page.getByRole('button', { name: `Remove ${KEY_NAME}` }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Remove access key' });
    await confirm.waitFor();
    assert.match(await confirm.innerText(), /cannot be undone/);
    assert.match(await confirm.innerText(), new RegExp(KEY_NAME));
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await confirm.waitFor({ state: 'hidden' });
    assert.equal(await cellText(r, 'status'), 'Active');

    await page.getByRole('button', { name: `Remove ${KEY_NAME}` }).click();
    await confirm.getByRole('button', { name: 'Remove', exact: true }).click();
    await confirm.waitFor({ state: 'hidden' });
    await eventually(async () => assert.equal(await cellText(r, 'status'), 'Revoked'));
    assert.equal(await r.getByRole('button').count(), 0, 'a revoked key has no actions');
    assert.equal((await api('GET', '/v1/keys', undefined, token)).status, 401, 'revoked token refused');
  });

  it('filters by status and searches by name on the server', async () => {
    await noDialogOpen();
    await page.getByLabel('Status', { exact: true }).selectOption({ label: 'Revoked' });
    await eventually(async () => {
      const names = await page.locator('#keys-body th .name').allInnerTexts();
      assert.deepEqual(names, [KEY_NAME]);
    });
    await page.getByLabel('Status', { exact: true }).selectOption({ label: 'Active' });
    await eventually(async () => {
      const names = await page.locator('#keys-body th .name').allInnerTexts();
      assert.ok(names.includes('bootstrap-admin'));
      assert.ok(!names.includes(KEY_NAME));
    });
    await page.getByLabel('Status', { exact: true }).selectOption({ label: 'All statuses' });
    await page.getByLabel('Search by name').fill('billing');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await eventually(async () =>
      assert.deepEqual(await page.locator('#keys-body th .name').allInnerTexts(), [KEY_NAME]),
    );
    await page.getByLabel('Search by name').fill('no-such-key-anywhere');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await eventually(async () => assert.match(await page.locator('#keys-body').innerText(), /No access keys match/));
    await page.getByLabel('Search by name').fill('');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await row(page, 'bootstrap-admin').waitFor();
  });

  it('pages through many keys with “Load more keys”', async () => {
    await noDialogOpen();
    const names = Array.from({ length: 60 }, (_, i) => `bulk-${String(i).padStart(3, '0')}`);
    for (const name of names) {
      const res = await api('POST', '/v1/keys', { name, roles: ['global_viewer'], expires_in_days: 30 });
      assert.equal(res.status, 201, res.text);
    }
    await page.getByLabel('Search by name').fill('bulk-');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await eventually(async () => assert.equal(await page.locator('#keys-body tr').count(), 50));
    assert.match(await page.locator('#keys-count').innerText(), /Showing 50 keys; more are available/);
    // Newest first.
    assert.equal(await page.locator('#keys-body th .name').first().innerText(), 'bulk-059');
    await page.getByRole('button', { name: 'Load more keys' }).click();
    await eventually(async () => assert.equal(await page.locator('#keys-body tr').count(), 60));
    assert.ok(await page.getByRole('button', { name: 'Load more keys' }).isHidden());
    const shown = await page.locator('#keys-body th .name').allInnerTexts();
    assert.deepEqual([...shown].sort(), names);
    await page.getByLabel('Search by name').fill('');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await eventually(async () =>
      assert.equal(await page.locator('#keys-count').innerText(), 'Showing 50 keys; more are available.'),
    );
  });

  it('shows the audit log and the signing keys', async () => {
    await noDialogOpen();
    await page.getByRole('tab', { name: 'Audit log' }).click();
    const audit = page.getByRole('tabpanel', { name: 'Audit log' });
    await audit.locator('#audit-body tr').first().waitFor();
    const text = await audit.innerText();
    assert.match(text, /key\.create/);
    const rows = await audit.locator('#audit-body tr').count();
    assert.ok(rows >= 5, `${rows} audit rows`);
    const more = audit.getByRole('button', { name: 'Load more' });
    if (await more.isVisible()) {
      await more.click();
      await eventually(async () => assert.ok((await audit.locator('#audit-body tr').count()) > rows));
    }

    await page.getByRole('tab', { name: 'Signing keys' }).click();
    const signing = page.getByRole('tabpanel', { name: 'Signing keys' });
    await signing.locator('#signing-body tr').first().waitFor();
    const first = signing.locator('#signing-body tr').first();
    assert.match(await first.innerText(), /EdDSA/);
    assert.match(await signing.innerText(), /Active/);
    assert.ok(!(await page.getByRole('button', { name: /rotate/i }).count()));

    await page.getByRole('tab', { name: 'Access keys' }).click();
    await page.locator('#panel-keys').waitFor();
  });

  it('a global viewer sees everything read-only, with no mutating controls', async () => {
    const created = await api('POST', '/v1/keys', { name: 'auditor', roles: ['global_viewer'] });
    assert.equal(created.status, 201, created.text);
    const viewerContext = await browser.newContext({ viewport: { width: 1360, height: 860 } });
    try {
      const v = await newPage(viewerContext);
      await signIn(v, created.json.token);
      await v.locator('#app-view').waitFor();
      await v.getByLabel('Search by name').fill(KEY_NAME);
      await v.getByRole('button', { name: 'Search', exact: true }).click();
      const r = row(v, KEY_NAME);
      await r.waitFor();
      assert.equal(await cellText(r, 'status'), 'Revoked');
      const who = await v.locator('#session-who').innerText();
      assert.match(who, /auditor/);
      assert.match(who, /Global Viewer/);
      assert.match(who, /Read-only/);

      const buttonNames = async () =>
        (await v.getByRole('button').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label') || e.textContent.trim())));
      const forbidden = /^(Add access key|Edit description|Renew|Suspend|Resume|Remove)/;
      assert.deepEqual((await buttonNames()).filter((n) => forbidden.test(n)), []);
      assert.equal(await v.locator('#keys-body button').count(), 0);
      assert.equal(await v.getByRole('columnheader', { name: 'Actions' }).count(), 0);
      assert.equal(await v.locator('#add-open').count(), 0, 'no Add button in the page at all');

      await v.getByRole('tab', { name: 'Audit log' }).click();
      await v.locator('#audit-body tr').first().waitFor();
      assert.match(await v.locator('#audit-body').innerText(), /key\.create/);
      await v.getByRole('tab', { name: 'Signing keys' }).click();
      await v.locator('#signing-body tr').first().waitFor();
      assert.deepEqual((await buttonNames()).filter((n) => forbidden.test(n) || /rotate/i.test(n)), []);
    } finally {
      await viewerContext.close();
    }
  });

  it('signs out and forgets the key', async () => {
    await noDialogOpen();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to latchkey' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('latchkey.token')), null);
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in to latchkey' }).waitFor();
    assert.equal(await page.locator('#keys-body tr').count(), 0);
  });

  it('logged no script errors or CSP violations', () => {
    assert.deepEqual(pageProblems, []);
  });
});
