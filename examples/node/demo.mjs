// A tiny `node:http` service protected by latchkey access keys.
//
//   LATCHKEY_ISSUER=http://127.0.0.1:8080 node demo.mjs     # listens on 127.0.0.1:8000
//   curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/accounts/acct-1/data
//
// GET /accounts/{account}/data is allowed for global admins and viewers and
// for cloud-account viewers of that account; POST needs global_admin.
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { createVerifier, latchkey } from './src/index.mjs';

export const accountOf = (req) => /^\/accounts\/([^/]+)\/data$/.exec(new URL(req.url, 'http://x').pathname)?.[1];

export function build(verifier) {
  const guard = latchkey(verifier, { accountOf });
  return (req, res) =>
    guard(req, res, (err) => {
      if (err) {
        res.writeHead(500).end();
        return;
      }
      const account = accountOf(req);
      const { id, name, roles, accounts } = req.latchkey;
      const body = account
        ? { account, method: req.method, key: { id, name, roles, accounts } }
        : { error: 'not_found' };
      res.writeHead(account ? 200 : 404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const verifier = await createVerifier(process.env.LATCHKEY_ISSUER, process.env.LATCHKEY_AUDIENCE ?? 'latchkey');
  const port = Number(process.env.PORT ?? 8000);
  createServer(build(verifier)).listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
}
