// The full check of a latchkey access key, with `jose` and
// `@sd-jwt/jwt-status-list`: what the Rust `latchkey-verifier` crate does,
// minus the push stream.
//
// 1. Reads the issuer's RFC 8414 metadata once (its `issuer` must be the
//    configured one) and the JWKS at `jwks_uri`. Each JWK fixes its own
//    algorithm from `kty`/`crv` (and `alg` when present): Ed25519 -> EdDSA,
//    P-256 -> ES256, RSA -> RS256. The token header's `alg` must agree with
//    the key its `kid` names and is never what picks the algorithm, so `none`
//    and HS256 are refused.
// 2. `jwtVerify` checks the signature with that key and only that algorithm,
//    then `typ` = `at+jwt`, `iss`, `aud`, `exp`/`nbf` with a small leeway on
//    an injectable clock; then the roles/accounts rule of the contract.
// 3. Looks the token up in its Token Status List: fetched with
//    `Accept: application/statuslist+jwt`, verified with the issuer's JWKS
//    (`typ` = `statuslist+jwt`, `sub` = the list URL, `exp`), cached for its
//    `ttl` (or `Cache-Control: max-age`). When a list cannot be re-fetched the
//    cached one serves while younger than `staleness` seconds; after that,
//    and for a list never fetched, tokens on it are refused
//    (`status_unavailable`).
//
// Revocations reach a poller within the list's `ttl`; a service that must
// learn of them within milliseconds uses the Rust crate (it follows
// `/v1/status/stream`).
import { StatusList } from '@sd-jwt/jwt-status-list';
import { decodeProtectedHeader, errors, importJWK, jwtVerify } from 'jose';

export const DEFAULT_LEEWAY = 30;
export const DEFAULT_STALENESS = 300;
const JWKS_COOLDOWN = 30;
const MAX_TOKEN_BYTES = 8 * 1024;
const FORBIDDEN_HEADERS = ['jku', 'x5u', 'jwk', 'x5c', 'crit'];
const ROLES = new Set(['global_admin', 'global_viewer', 'cloud_account_viewer']);
const LIST_MEDIA_TYPE = 'application/statuslist+jwt';
const VALID = 0;
const SUSPENDED = 2;

/** Why a token was refused: `code` is stable (the Rust crate's codes), `message` safe to show. */
export class Refused extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const unavailable = () =>
  new Refused('status_unavailable', 'the access key status cannot be checked right now');

/** The one algorithm a JWK may verify, from its `kty`/`crv`; null if unusable. */
export function algorithmOf(jwk) {
  if ((jwk.use ?? 'sig') !== 'sig') return null;
  let alg = null;
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') alg = 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') alg = 'ES256';
  if (jwk.kty === 'RSA') alg = 'RS256';
  return alg !== null && (jwk.alg ?? alg) === alg ? alg : null;
}

/** A verified key with the access policy of contract section 1. */
export class VerifiedKey {
  constructor(claims) {
    this.id = claims.sub;
    this.name = claims.name;
    this.roles = [...claims.roles];
    this.accounts = claims.accounts ? [...claims.accounts] : null;
    this.expiresAt = claims.exp;
    this.jti = claims.jti;
  }
  isAdmin() {
    return this.roles.includes('global_admin');
  }
  canReadAll() {
    return this.isAdmin() || this.roles.includes('global_viewer');
  }
  canRead(account) {
    if (this.canReadAll()) return true;
    if (!account || !this.roles.includes('cloud_account_viewer')) return false;
    return (this.accounts ?? []).some((a) => a === '*' || a === account);
  }
  canWrite(_account) {
    return this.isAdmin();
  }
  /** Reads (GET, HEAD) within the key's scope; writes (POST, PUT, PATCH, DELETE) need global_admin. */
  allows(method, account) {
    const m = method.toUpperCase();
    if (m === 'GET' || m === 'HEAD') return this.canRead(account);
    if (['POST', 'PUT', 'PATCH', 'DELETE'].includes(m)) return this.canWrite(account);
    return false;
  }
}

function keyFromClaims(claims) {
  const { roles, accounts } = claims;
  const invalid = (what) => new Refused('invalid_claims', `the access key claims are invalid (${what})`);
  if (!Array.isArray(roles) || roles.length === 0 || !roles.every((r) => ROLES.has(r))) throw invalid('roles');
  if (roles.includes('cloud_account_viewer') !== (accounts !== undefined)) throw invalid('accounts');
  if (accounts !== undefined && (!Array.isArray(accounts) || accounts.length === 0 ||
      !accounts.every((a) => typeof a === 'string' && a !== ''))) throw invalid('accounts');
  const ref = claims.status?.status_list;
  if (!Number.isSafeInteger(ref?.idx) || ref.idx < 0 || typeof ref.uri !== 'string') throw invalid('status');
  return new VerifiedKey(claims);
}

/** jose's errors, as the Rust crate's reasons. */
function refusalOf(err) {
  if (err instanceof errors.JWTExpired) return new Refused('expired', 'the access key has expired');
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return new Refused('bad_signature', 'the access key signature is invalid');
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    const byClaim = {
      typ: ['wrong_type', 'the token is not an access key (wrong type)'],
      iss: ['wrong_issuer', 'the access key was issued by a different issuer'],
      aud: ['wrong_audience', 'the access key is not intended for this audience'],
      nbf: ['not_yet_valid', 'the access key is not valid yet'],
    }[err.claim];
    if (byClaim && err.reason !== 'missing') return new Refused(...byClaim);
  }
  return new Refused('malformed', 'the access key is malformed');
}

function maxAge(headers) {
  const m = /max-age=(\d+)/.exec(headers.get('cache-control') ?? '');
  return m ? Number(m[1]) : null;
}

/**
 * Builds a verifier for one issuer and audience; fetches the metadata and JWKS first.
 * `clock()` returns Unix seconds (inject a fixed one in tests); `fetch` is the
 * WHATWG fetch (inject one to simulate an outage).
 */
export async function createVerifier(issuer, audience, options = {}) {
  const {
    leeway = DEFAULT_LEEWAY,
    staleness = DEFAULT_STALENESS,
    clock = () => Date.now() / 1000,
    fetch = globalThis.fetch,
  } = options;
  issuer = issuer.replace(/\/+$/, '');

  async function get(url, accept) {
    return fetch(url, { headers: { Accept: accept }, signal: AbortSignal.timeout(5000) });
  }
  async function getJson(url) {
    const res = await get(url, 'application/json');
    if (res.status !== 200) throw new Error(`${url} answered ${res.status}`);
    return res.json();
  }

  // RFC 8414 section 3: the well-known suffix goes between the host and any path.
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname;
  const metadata = await getJson(`${u.origin}/.well-known/oauth-authorization-server${path}`);
  if (metadata.issuer !== issuer) {
    throw new Error(`the metadata names the issuer ${JSON.stringify(metadata.issuer)}, not ${JSON.stringify(issuer)}`);
  }
  const jwksUri = metadata.jwks_uri;

  let keys = new Map(); // kid -> { key, alg }
  let jwksFetchedAt = -Infinity;
  async function refreshKeys() {
    jwksFetchedAt = clock();
    const next = new Map();
    for (const jwk of (await getJson(jwksUri)).keys ?? []) {
      const alg = algorithmOf(jwk);
      if (!alg || !jwk.kid) continue;
      try {
        next.set(jwk.kid, { key: await importJWK(jwk, alg), alg });
      } catch {
        // A key this runtime cannot import verifies nothing.
      }
    }
    keys = next;
  }
  async function keyFor(kid) {
    if (!keys.has(kid) && clock() - jwksFetchedAt >= JWKS_COOLDOWN) {
      // Perhaps a newly published key: re-read the JWKS, at most every 30 s.
      await refreshKeys().catch(() => {});
    }
    const found = keys.get(kid);
    if (!found) throw new Refused('unknown_key', 'the access key was signed by an unknown key');
    return found;
  }
  await refreshKeys();

  const lists = new Map(); // uri -> { list, iat, exp, fetchedAt, freshUntil }
  const inFlight = new Map(); // uri -> Promise of the refresh

  async function fetchList(uri, cached, now) {
    try {
      const res = await get(uri, LIST_MEDIA_TYPE);
      if (res.status !== 200) return cached;
      const token = (await res.text()).trim();
      const { key, alg } = await keyFor(decodeProtectedHeader(token).kid);
      const { payload } = await jwtVerify(token, key, {
        algorithms: [alg],
        typ: 'statuslist+jwt',
        subject: uri,
        requiredClaims: ['iat'],
        currentDate: new Date(now * 1000),
      });
      if (payload.status_list?.bits !== 2 || typeof payload.status_list.lst !== 'string') return cached;
      const list = StatusList.decompressStatusList(payload.status_list.lst, 2);
      if (cached && payload.iat < cached.iat) return cached; // never go back to an older list
      const ttl = (Number.isSafeInteger(payload.ttl) && payload.ttl > 0 ? payload.ttl : maxAge(res.headers)) || 60;
      const fresh = { list, iat: payload.iat, exp: payload.exp, fetchedAt: now, freshUntil: now + ttl };
      lists.set(uri, fresh);
      return fresh;
    } catch {
      return cached; // unreachable, unsigned, expired, undecodable: keep what we had
    }
  }

  /** The token's 2-bit entry, from a cached list or a fresh fetch; fails closed. */
  async function statusOf(uri, idx) {
    if (!uri.startsWith(`${issuer}/`)) throw unavailable(); // never fetch outside the issuer
    const now = clock();
    let cached = lists.get(uri);
    if (!cached || now >= cached.freshUntil) {
      if (!inFlight.has(uri)) {
        inFlight.set(uri, fetchList(uri, cached, now).finally(() => inFlight.delete(uri)));
      }
      cached = await inFlight.get(uri);
    }
    const usable = cached && now - cached.fetchedAt <= staleness && (cached.exp === undefined || now < cached.exp);
    if (!usable || idx >= cached.list.statusList.length) throw unavailable();
    return cached.list.getStatus(idx);
  }

  /** Every check of contract section 8; resolves to a VerifiedKey or rejects with Refused. */
  async function verify(token) {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_BYTES) {
      throw new Refused('too_large', 'the access key is too large');
    }
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new Refused('malformed', 'the access key is malformed');
    }
    const forbidden = FORBIDDEN_HEADERS.find((name) => name in header);
    if (forbidden) {
      throw new Refused('forbidden_header', `the access key header contains the forbidden parameter \`${forbidden}\``);
    }
    const { key, alg } = await keyFor(header.kid);
    if (header.alg !== alg) {
      throw new Refused('unsupported_algorithm', 'the access key uses an unsupported signing algorithm');
    }
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(token, key, {
        algorithms: [alg],
        typ: 'at+jwt',
        issuer,
        audience,
        clockTolerance: leeway,
        currentDate: new Date(clock() * 1000),
        requiredClaims: ['sub', 'exp', 'nbf', 'jti', 'status'],
      }));
    } catch (err) {
      throw refusalOf(err);
    }
    const verified = keyFromClaims(claims);
    const status = await statusOf(claims.status.status_list.uri, claims.status.status_list.idx);
    if (status === SUSPENDED) throw new Refused('suspended', 'the access key is suspended');
    if (status !== VALID) throw new Refused('revoked', 'the access key has been revoked');
    return verified;
  }

  return { verify, issuer, audience, jwksUri };
}
