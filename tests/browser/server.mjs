// Starts a real `latchkey serve` on a free port with a fresh data directory,
// waits for /healthz, reads the bootstrap admin token, and stops it again.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

export async function startServer() {
  // LATCHKEY_BIN (relative to the working directory), else the debug build
  // in CARGO_TARGET_DIR or the workspace's target/.
  const bin = process.env.LATCHKEY_BIN
    ? resolve(process.env.LATCHKEY_BIN)
    : process.env.CARGO_TARGET_DIR
      ? resolve(process.env.CARGO_TARGET_DIR, 'debug', 'latchkey')
      : resolve(here, '../../target/debug/latchkey');
  if (!existsSync(bin)) {
    throw new Error(`latchkey binary not found at ${bin}: build it (cargo build) or set LATCHKEY_BIN`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-browser-'));
  const tokenFile = join(dir, 'bootstrap.token');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const args = [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--data-dir', join(dir, 'data'),
    '--keys-dir', join(dir, 'keys'),
    '--bootstrap-token-file', tokenFile,
  ];
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  let log = '';
  const keep = (chunk) => {
    log += chunk.toString();
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((res) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      res(exited);
    });
  });
  // Never leave the server behind, even if the test process dies.
  const killOnExit = () => {
    if (!exited) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  async function stop() {
    process.off('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      const done = await Promise.race([exitPromise, sleep(5000).then(() => null)]);
      if (!done) {
        child.kill('SIGKILL');
        await exitPromise;
      }
    }
    await rm(dir, { recursive: true, force: true });
  }

  try {
    // Bounded wait for liveness: 150 tries, 200 ms apart (30 s).
    let healthy = false;
    for (let i = 0; i < 150 && !healthy; i++) {
      if (exited) break;
      try {
        const res = await fetch(`${base}/healthz`);
        healthy = res.ok;
      } catch {
        // not listening yet
      }
      if (!healthy) await sleep(200);
    }
    if (!healthy) {
      throw new Error(
        `latchkey did not become healthy at ${base}/healthz` +
          (exited ? ` (it exited: ${JSON.stringify(exited)})` : '') +
          `\n--- server output ---\n${log}`,
      );
    }
    let token = '';
    for (let i = 0; i < 50 && !token; i++) {
      try {
        token = (await readFile(tokenFile, 'utf8')).trim();
      } catch {
        // not written yet
      }
      if (!token) await sleep(100);
    }
    if (!token) throw new Error(`no bootstrap token in ${tokenFile}\n--- server output ---\n${log}`);
    return { base, token, dir, stop, log: () => log };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Call the API directly (not through the browser). */
export async function apiCall(base, token, method, path, body) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, headers: res.headers, json, text };
}
