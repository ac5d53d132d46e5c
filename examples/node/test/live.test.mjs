// The middleware against a live latchkey: keys made through the HTTP API,
// then checked the way a downstream service would. Time comes from a clock
// the tests move, so expiry and the list's `ttl` are tested without waiting.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { build } from '../demo.mjs';
import { createVerifier, Refused } from '../src/index.mjs';
import { STATUS_LIST_TTL, startIssuer } from './issuer.mjs';

/** Unix seconds that only move when a test says so. */
function fixedClock(now = Date.now() / 1000) {
  const clock = () => now;
  clock.advance = (s) => {
    now += s;
  };
  return clock;
}

const b64 = (buf) => Buffer.from(buf).toString('base64url');
const unb64 = (s) => JSON.parse(Buffer.from(s, 'base64url').toString());

let issuer;
before(async () => {
  issuer = await startIssuer();
});
after(async () => {
  await issuer?.stop();
});

const verifier = (options = {}, audience = 'latchkey') =>
  createVerifier(issuer.url, audience, { clock: fixedClock(), ...options });

async function assertRefused(v, token, code) {
  await assert.rejects(v.verify(token), (err) => {
    assert.ok(err instanceof Refused, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** Serves the demo app with `v` on a free loopback port for the length of `fn`. */
async function withDemo(v, fn) {
  const server = createServer(build(v));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    return await fn(async (method, path, token) => {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(`${base}${path}`, { method, headers });
      return { status: res.status, auth: res.headers.get('www-authenticate'), body: await res.json() };
    });
  } finally {
    await new Promise((r) => server.close(r));
  }
}

describe('against a live issuer', () => {
  test('a valid key reaches the app with its identity, and the policy applies', async () => {
    const { key, token } = await issuer.createKey('node-viewer', ['cloud_account_viewer'], {
      accounts: ['acct-1', 'acct-7'],
    });
    await withDemo(await verifier(), async (call) => {
      let res = await call('GET', '/accounts/acct-1/data', token);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.key, {
        id: key.id, name: 'node-viewer', roles: ['cloud_account_viewer'], accounts: ['acct-1', 'acct-7'],
      });
      res = await call('GET', '/accounts/acct-2/data', token);
      assert.equal(res.status, 403);
      assert.equal(res.body.error, 'forbidden');
      assert.match(res.auth, /error="insufficient_scope"/);
      assert.equal((await call('POST', '/accounts/acct-1/data', token)).status, 403);
      res = await call('POST', '/accounts/acct-2/data', issuer.adminToken);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.key.roles, ['global_admin']);
      res = await call('GET', '/accounts/acct-1/data');
      assert.equal(res.status, 401);
      assert.equal(res.body.error, 'missing');
      assert.equal(res.auth, 'Bearer');
    });
  });

  test('a revoked key is refused once the list is re-fetched', async () => {
    const { key, token } = await issuer.createKey('node-revoked', ['global_viewer']);
    const clock = fixedClock();
    const v = await verifier({ clock });
    assert.equal((await v.verify(token)).id, key.id);
    assert.equal((await issuer.api('DELETE', `/v1/keys/${key.id}`)).status, 204);
    // A poller keeps its list for `ttl`: the revocation is not seen yet...
    assert.equal((await v.verify(token)).name, 'node-revoked');
    // ...and is once the list is due again.
    clock.advance(STATUS_LIST_TTL + 1);
    await assertRefused(v, token, 'revoked');
    await withDemo(v, async (call) => {
      const res = await call('GET', '/accounts/a/data', token);
      assert.equal(res.status, 401);
      assert.equal(res.body.error, 'revoked');
      assert.match(res.auth, /error="invalid_token"/);
    });
    // A verifier that starts now sees it at once.
    await assertRefused(await verifier(), token, 'revoked');
  });

  test('a suspended key is refused, and passes again once resumed', async () => {
    const { key, token } = await issuer.createKey('node-suspended', ['global_viewer']);
    const clock = fixedClock();
    const v = await verifier({ clock });
    await v.verify(token);
    assert.equal((await issuer.api('POST', `/v1/keys/${key.id}/suspend`)).status, 200);
    clock.advance(STATUS_LIST_TTL + 1);
    await assertRefused(v, token, 'suspended');
    assert.equal((await issuer.api('POST', `/v1/keys/${key.id}/resume`)).status, 200);
    // (A fresh verifier on the real time: moving `clock` on by another ttl
    // would put it past the `exp` of every list the issuer signs now.)
    assert.equal((await (await verifier()).verify(token)).id, key.id);
  });

  test('an expired key is refused on a fixed clock', async () => {
    const { token } = await issuer.createKey('node-expiring', ['global_viewer'], { expires_in_days: 1 });
    const { expiresAt } = await (await verifier()).verify(token);
    assert.ok(Math.abs(expiresAt - (Date.now() / 1000 + 86400)) <= 60);
    // Past exp and the 30 s leeway.
    await assertRefused(await verifier({ clock: fixedClock(expiresAt + 31) }), token, 'expired');
  });

  test('a key for another audience is refused', async () => {
    const { token } = await issuer.createKey('node-audience', ['global_viewer']);
    await assertRefused(await verifier({}, 'billing-api'), token, 'wrong_audience');
  });

  test('a verifier for another issuer URL refuses to start', async () => {
    await assert.rejects(createVerifier(issuer.url.replace('127.0.0.1', 'localhost'), 'latchkey'), /names the issuer/);
  });

  test('alg none, HS256 and a tampered payload are refused', async () => {
    const { token } = await issuer.createKey('node-forged', ['global_viewer']);
    const v = await verifier();
    const [h, p, sig] = token.split('.');
    const header = unb64(h);
    const forged = b64(JSON.stringify({ ...unb64(p), roles: ['global_admin'] }));
    const none = b64(JSON.stringify({ ...header, alg: 'none' }));
    await assertRefused(v, `${none}.${forged}.`, 'unsupported_algorithm');
    // HS256 keyed with the issuer's public key (the classic confusion attack).
    const jwks = await (await fetch(v.jwksUri)).json();
    const publicX = jwks.keys.find((k) => k.kid === header.kid).x;
    const hs = b64(JSON.stringify({ ...header, alg: 'HS256' }));
    const mac = createHmac('sha256', publicX).update(`${hs}.${forged}`).digest();
    await assertRefused(v, `${hs}.${forged}.${b64(mac)}`, 'unsupported_algorithm');
    await assertRefused(v, `${h}.${forged}.${sig}`, 'bad_signature');
  });

  test('fails closed when the status list cannot be fetched', async () => {
    const { token } = await issuer.createKey('node-outage', ['global_viewer']);
    let outage = true;
    const fetchThrough = (url, init) => {
      if (outage && url.includes('/v1/status/')) return Promise.reject(new TypeError('fetch failed (simulated outage)'));
      return fetch(url, init);
    };
    // Never fetched: refused.
    await assertRefused(await verifier({ fetch: fetchThrough }), token, 'status_unavailable');
    // Fetched once: the cached list serves until it is `staleness` old, then not.
    // (The bound is below the list's own `exp`, at least 1.5 ttl away.)
    outage = false;
    const clock = fixedClock();
    const v = await verifier({ clock, fetch: fetchThrough, staleness: STATUS_LIST_TTL + 100 });
    await v.verify(token);
    outage = true;
    clock.advance(STATUS_LIST_TTL + 1);
    assert.equal((await v.verify(token)).name, 'node-outage');
    clock.advance(100);
    await assertRefused(v, token, 'status_unavailable');
    // The issuer is back: the next check re-fetches and passes.
    outage = false;
    assert.equal((await v.verify(token)).name, 'node-outage');
  });
});
