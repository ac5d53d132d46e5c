// Starts a real `latchkey serve` for the tests: a free loopback port, a
// throwaway data directory, and the bootstrap admin token read from
// `--bootstrap-token-file`. The binary is $LATCHKEY_BIN (default: the
// workspace's target/debug/latchkey).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const STATUS_LIST_TTL = 300;
const here = dirname(fileURLToPath(import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

export async function startIssuer() {
  const bin = process.env.LATCHKEY_BIN
    ? resolve(process.env.LATCHKEY_BIN)
    : resolve(here, '../../../target/debug/latchkey');
  if (!existsSync(bin)) {
    throw new Error(`latchkey binary not found at ${bin}: build it (cargo build --bin latchkey) or set LATCHKEY_BIN`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-node-example-'));
  const tokenFile = join(dir, 'bootstrap.token');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { ...process.env, LATCHKEY_LOG: 'warn' };
  delete env.LATCHKEY_CONFIG;
  const child = spawn(bin, [
    'serve', '--listen', `127.0.0.1:${port}`, '--issuer', url,
    '--data-dir', join(dir, 'data'), '--keys-dir', join(dir, 'keys'),
    '--bootstrap-token-file', tokenFile, '--status-list-ttl-secs', String(STATUS_LIST_TTL),
  ], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let log = '';
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((res) => child.on('exit', (code, signal) => res((exited = { code, signal }))));
  const killOnExit = () => exited || child.kill('SIGKILL');
  process.on('exit', killOnExit);

  async function stop() {
    process.off('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      if (!(await Promise.race([exit, sleep(5000).then(() => null)]))) {
        child.kill('SIGKILL');
        await exit;
      }
    }
    await rm(dir, { recursive: true, force: true });
  }

  try {
    let adminToken = '';
    // At most 30 s: 150 tries, 200 ms apart.
    for (let i = 0; i < 150 && !adminToken && !exited; i++) {
      try {
        const healthy = (await fetch(`${url}/healthz`)).ok;
        if (healthy) adminToken = (await readFile(tokenFile, 'utf8').catch(() => '')).trim();
      } catch {
        // not listening yet
      }
      if (!adminToken) await sleep(200);
    }
    if (!adminToken) {
      throw new Error(`latchkey did not become ready at ${url}${exited ? ` (it exited: ${JSON.stringify(exited)})` : ''}\n${log}`);
    }
    async function api(method, path, body, token = adminToken) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    }
    async function createKey(name, roles, extra = {}) {
      const { status, json } = await api('POST', '/v1/keys', { name, roles, ...extra });
      if (status !== 201) throw new Error(`creating ${name}: ${status} ${JSON.stringify(json)}`);
      return json; // { key, token }
    }
    return { url, adminToken, api, createKey, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
