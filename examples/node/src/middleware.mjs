// Middleware for Express, Connect and plain `node:http`: `(req, res, next)`.
//
// Refuses a request without a valid access key with 401 and
// `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750) and puts the
// verified key on `req.latchkey`. Given `accountOf(req)`, it also applies the
// policy of contract section 1 and refuses what the key may not do with 403
// (`error="insufficient_scope"`).
import { Refused } from './verifier.mjs';

function deny(res, status, code, message) {
  const error = status === 403 ? 'insufficient_scope' : 'invalid_token';
  const safe = message.replace(/["\\\p{Cc}]/gu, '');
  const body = JSON.stringify({ error: code, detail: message });
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    // RFC 6750 section 3.1: no error code when no credentials were sent.
    'WWW-Authenticate': code === 'missing' ? 'Bearer' : `Bearer error="${error}", error_description="${safe}"`,
  });
  res.end(body);
}

export function latchkey(verifier, { accountOf } = {}) {
  return async function latchkeyMiddleware(req, res, next) {
    const match = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!match) return deny(res, 401, 'missing', 'send Authorization: Bearer <access key>');
    let key;
    try {
      key = await verifier.verify(match[1]);
    } catch (err) {
      if (!(err instanceof Refused)) return next?.(err);
      return deny(res, 401, err.code, err.message);
    }
    const account = accountOf?.(req);
    if (account != null && !key.allows(req.method, account)) {
      return deny(res, 403, 'forbidden', `this key may not ${req.method} account ${JSON.stringify(account)}`);
    }
    req.latchkey = key;
    return next?.();
  };
}
