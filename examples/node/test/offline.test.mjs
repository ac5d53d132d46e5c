// The checks no live issuer can be made to fail: a token from another issuer
// signed by a trusted key, a wrong `typ`, JWKs whose parameters disagree, bad
// status lists. An in-memory issuer signs with its own Ed25519 key and serves
// its documents through the verifier's injectable `fetch`.
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { beforeEach, describe, test } from 'node:test';
import { StatusList } from '@sd-jwt/jwt-status-list';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { algorithmOf, createVerifier, Refused } from '../src/index.mjs';

const ISS = 'https://issuer.example';
const LIST = `${ISS}/v1/status/0`;
const NOW = 1_750_000_000;
const lstOf = (bytes) => deflateSync(Buffer.from(bytes), { level: 9 }).toString('base64url');

async function fakeIssuer() {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const self = {
    jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' }] },
    statuses: new Uint8Array(4), // 16 entries, all valid
    listClaims: {},
    listTyp: 'statuslist+jwt',
    sign: (claims, typ, key = privateKey, alg = 'EdDSA') =>
      new SignJWT(claims).setProtectedHeader({ alg, kid: 'k1', typ }).sign(key),
    token: ({ typ = 'at+jwt', idx = 3, ...overrides } = {}) => {
      const claims = {
        iss: ISS, sub: 'id-1', client_id: 'id-1', aud: 'latchkey', iat: NOW, nbf: NOW, exp: NOW + 3600,
        jti: 'jti-1', name: 'k', roles: ['global_viewer'], status: { status_list: { idx, uri: LIST } }, ...overrides,
      };
      return self.sign(Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined)), typ);
    },
    fetch: async (url) => {
      const documents = {
        [`${ISS}/.well-known/oauth-authorization-server`]: JSON.stringify({ issuer: ISS, jwks_uri: `${ISS}/jwks` }),
        [`${ISS}/jwks`]: JSON.stringify(self.jwks),
        [LIST]: await self.sign({
          sub: LIST, iat: NOW - 10, exp: NOW + 600, ttl: 300,
          status_list: { bits: 2, lst: lstOf(self.statuses) }, ...self.listClaims,
        }, self.listTyp),
      };
      if (!(url in documents)) return new Response('', { status: 404 });
      return new Response(documents[url], { headers: { 'Cache-Control': 'public, max-age=300' } });
    },
  };
  return self;
}

describe('the status list reader', () => {
  test("decodes the draft's two-bit example", () => {
    // draft-ietf-oauth-status-list, "Status List in JSON Format", bits = 2.
    const list = StatusList.decompressStatusList('eNo76fITAAPfAgc', 2);
    assert.deepEqual(list.statusList, [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]);
  });
});

describe('the verifier, offline', () => {
  let issuer;
  let now;
  beforeEach(async () => {
    issuer = await fakeIssuer();
    now = NOW;
  });
  const verifier = (options = {}) => createVerifier(ISS, 'latchkey', { clock: () => now, fetch: issuer.fetch, ...options });
  async function refused(token, v) {
    try {
      await (v ?? (await verifier())).verify(await token);
    } catch (err) {
      assert.ok(err instanceof Refused, String(err));
      return err.code;
    }
    assert.fail('the token was accepted');
  }

  test('a good token passes and each status maps to its reason', async () => {
    assert.equal((await (await verifier()).verify(await issuer.token())).id, 'id-1');
    for (const [value, code] of [[1, 'revoked'], [2, 'suspended'], [3, 'revoked']]) {
      issuer.statuses[0] = value << 6; // entry 3
      assert.equal(await refused(issuer.token()), code);
    }
    assert.equal(await refused(issuer.token({ idx: 16 })), 'status_unavailable');
  });

  test('claims that break a rule', async () => {
    assert.equal(await refused(issuer.token({ iss: 'https://other.example' })), 'wrong_issuer');
    assert.equal(await refused(issuer.token({ aud: ['a', 'b'] })), 'wrong_audience');
    assert.equal((await (await verifier()).verify(await issuer.token({ aud: ['a', 'latchkey'] }))).id, 'id-1');
    assert.equal(await refused(issuer.token({ typ: 'JWT' })), 'wrong_type');
    assert.equal(await refused(issuer.token({ nbf: NOW + 31 })), 'not_yet_valid');
    assert.equal(await refused(issuer.token({ exp: NOW - 31 })), 'expired');
    assert.equal((await (await verifier()).verify(await issuer.token({ exp: NOW - 29 }))).id, 'id-1');
    assert.equal(await refused(issuer.token({ accounts: ['a'] })), 'invalid_claims');
    assert.equal(await refused(issuer.token({ roles: ['cloud_account_viewer'] })), 'invalid_claims');
    assert.equal(await refused(issuer.token({ roles: ['root'] })), 'invalid_claims');
    assert.equal(await refused(issuer.token({ status: undefined })), 'malformed');
  });

  test('policy', async () => {
    const v = await verifier();
    const viewer = await v.verify(await issuer.token({ roles: ['cloud_account_viewer'], accounts: ['a1'] }));
    assert.deepEqual(
      [viewer.allows('GET', 'a1'), viewer.allows('HEAD', 'a2'), viewer.allows('DELETE', 'a1'), viewer.allows('OPTIONS', 'a1')],
      [true, false, false, false],
    );
    const admin = await v.verify(await issuer.token({ roles: ['global_admin'] }));
    assert.ok(admin.canWrite('a1') && admin.canRead('any'));
  });

  test('the JWK, not the header, fixes the algorithm', async () => {
    assert.equal(algorithmOf({ kty: 'OKP', crv: 'Ed25519' }), 'EdDSA');
    assert.equal(algorithmOf({ kty: 'EC', crv: 'P-256' }), 'ES256');
    assert.equal(algorithmOf({ kty: 'RSA', alg: 'RS256' }), 'RS256');
    for (const unusable of [
      { kty: 'OKP', crv: 'Ed25519', alg: 'ES256' }, { kty: 'EC', crv: 'P-384' }, { kty: 'oct' },
      { kty: 'RSA', use: 'enc' }, { kty: 'RSA', alg: 'PS256' },
    ]) {
      assert.equal(algorithmOf(unusable), null, JSON.stringify(unusable));
    }
    const other = await generateKeyPair('ES256');
    assert.equal(await refused(issuer.sign({ iss: ISS }, 'at+jwt', other.privateKey, 'ES256')), 'unsupported_algorithm');
    issuer.jwks.keys[0].alg = 'ES256';
    assert.equal(await refused(issuer.token()), 'unknown_key');
  });

  test('bad status lists fail closed', async () => {
    const token = await issuer.token();
    for (const change of [
      { claims: { sub: `${ISS}/v1/status/1` } },
      { claims: { exp: NOW } },
      { claims: { status_list: { bits: 1, lst: lstOf([0]) } } },
      { typ: 'JWT' },
    ]) {
      issuer.listClaims = change.claims ?? {};
      issuer.listTyp = change.typ ?? 'statuslist+jwt';
      assert.equal(await refused(token), 'status_unavailable', JSON.stringify(change));
    }
    const outside = issuer.token({ status: { status_list: { idx: 0, uri: 'https://evil.example/l' } } });
    assert.equal(await refused(outside), 'status_unavailable');
  });

  test('an older list never replaces a newer one', async () => {
    const v = await verifier({ staleness: 1000 });
    issuer.statuses[0] = 1 << 6; // entry 3 revoked, iat NOW - 10
    assert.equal(await refused(issuer.token(), v), 'revoked');
    // A cache serves an older list (iat NOW - 100) saying entry 3 is valid.
    issuer.statuses[0] = 0;
    issuer.listClaims = { iat: NOW - 100 };
    now += 301;
    assert.equal(await refused(issuer.token(), v), 'revoked');
  });
});
