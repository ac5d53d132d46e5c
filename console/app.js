// latchkey web console. Plain JavaScript, no dependencies, no build step.
// Served under a strict Content-Security-Policy: no inline scripts, styles or
// handlers, so everything is wired up here with addEventListener and classes.
'use strict';

(() => {
  const TOKEN_STORAGE = 'latchkey.token';
  const KEYS_PAGE = 50;
  const AUDIT_PAGE = 100;

  const ROLE_LABELS = {
    global_admin: 'Global Admin',
    global_viewer: 'Global Viewer',
    cloud_account_viewer: 'Cloud Account Viewer',
  };
  const STATUS_LABELS = {
    active: 'Active',
    suspended: 'Suspended',
    revoked: 'Revoked',
    expired: 'Expired',
  };
  const SIGNING_STATE_LABELS = {
    next: 'Next',
    active: 'Active',
    previous: 'Previous',
    retired: 'Retired',
  };

  const $ = (id) => document.getElementById(id);

  // Session state. The token lives in sessionStorage; roles are decoded from
  // its payload for display only (the server enforces them).
  const state = {
    token: null,
    claims: null,
    isAdmin: false,
    keys: new Map(), // id -> key object currently in the table
    keysCursor: null,
    keysRequest: 0,
    auditAfter: null,
    auditLoaded: false,
    signingLoaded: false,
    tab: 'keys',
  };

  // ---------------------------------------------------------------- helpers

  /** Create an element: h('td', {class: 'x'}, child, 'text', ...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  /** YYYY-MM-DD of a Date, in UTC. */
  function utcDate(d) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  }

  /** "YYYY-MM-DD HH:MM UTC" for an RFC 3339 string. */
  function formatTime(value) {
    if (!value) return '';
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    return `${utcDate(d)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
  }

  /** A <time> element, or a dash when the value is missing. */
  function timeEl(value, empty = '—') {
    if (!value) return h('span', { class: 'muted' }, empty);
    const d = new Date(value);
    const iso = Number.isNaN(d.getTime()) ? String(value) : d.toISOString();
    if (Number.isNaN(d.getTime())) return h('time', null, String(value));
    // Date on one line, time of day (UTC) under it.
    return h(
      'time',
      { datetime: iso, title: iso },
      utcDate(d),
      h('span', { class: 'time-of-day' }, ` ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`),
    );
  }

  function roleLabel(role) {
    return ROLE_LABELS[role] || role;
  }

  function actorLabel(actor) {
    if (actor === null || actor === undefined) return '—';
    if (typeof actor === 'string') return actor;
    if (typeof actor === 'object') return actor.name || actor.id || JSON.stringify(actor);
    return String(actor);
  }

  /** Six calendar months from now, as the server computes the default. */
  function sixMonthsFromNow() {
    const d = new Date();
    const day = d.getUTCDate();
    d.setUTCDate(1);
    d.setUTCMonth(d.getUTCMonth() + 6);
    const last = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
    d.setUTCDate(Math.min(day, last));
    return d;
  }

  /** Decode a JWT's payload (base64url JSON). Display only: no verification. */
  function decodeJwtPayload(token) {
    const parts = String(token).split('.');
    if (parts.length !== 3) return null;
    try {
      let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      while (b64.length % 4) b64 += '=';
      const bin = atob(b64);
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === 'object' ? claims : null;
    } catch {
      return null;
    }
  }

  /** Download file name: APIKey-<name>-<YYYY-MM-DD>.key (today, UTC). */
  function keyFileName(name, date = new Date()) {
    // Characters that no file system accepts in a name are replaced by "_".
    // eslint-disable-next-line no-control-regex
    const safe = String(name).replace(/[\u0000-\u001f\u007f/\\:*?"<>|]/g, '_');
    return `APIKey-${safe}-${utcDate(date)}.key`;
  }

  // ---------------------------------------------------------------- API

  /** Sentence case for display: the API's details start in lower case. */
  function sentence(text) {
    const s = String(text);
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  class ApiError extends Error {
    constructor(status, problem) {
      const p = problem && typeof problem === 'object' ? problem : {};
      const detail = sentence(
        p.detail || p.title || (status ? `The server answered with status ${status}.` : 'Request failed.'),
      );
      super(detail);
      this.status = status;
      this.problem = p;
      this.detail = detail;
      this.errors = Array.isArray(p.errors) ? p.errors : [];
      this.handled = false;
    }
  }

  /**
   * Call the latchkey API. Resolves with the parsed JSON body (or null for an
   * empty one); rejects with an ApiError carrying the problem+json document.
   * A 401 while signed in ends the session (the key was revoked, suspended or
   * expired) and marks the error as handled.
   */
  async function api(method, path, body, token = state.token) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, {
        title: 'Network error',
        detail: 'Could not reach the latchkey server. Check the connection and try again.',
      });
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new ApiError(res.status, data);
      if (res.status === 401 && state.token && token === state.token) {
        err.handled = true;
        endSession(`You were signed out: ${err.detail}`);
      }
      throw err;
    }
    return data;
  }

  function keyPath(id, suffix = '') {
    return `/v1/keys/${encodeURIComponent(id)}${suffix}`;
  }

  // ---------------------------------------------------------------- field errors

  /** Show a message in a <p class="field-error"> and mark its control invalid. */
  function setFieldError(control, errorEl, message) {
    errorEl.textContent = message;
    if (control) control.setAttribute('aria-invalid', 'true');
  }

  function clearFormErrors(root) {
    for (const el of root.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    for (const el of root.querySelectorAll('.notice-error')) {
      el.textContent = '';
      el.hidden = true;
    }
  }

  function showNotice(el, message) {
    el.textContent = message;
    el.hidden = !message;
  }

  /**
   * Put a server error next to the controls it is about. `fields` maps an
   * API field name to [control, errorElement]. Anything unmatched goes to
   * the form-level notice. Returns the first control that got an error.
   */
  function showApiError(err, fields, notice, fallbackField) {
    let first = null;
    const unmatched = [];
    const place = (field, message) => {
      const base = String(field || '').split(/[.[]/)[0];
      const target = fields[base];
      if (!target) return false;
      const [control, errorEl, label] = target();
      // The API's field messages follow the field's name ("is already
      // taken…"): lead them with the label the person sees instead.
      const text = label && /^[a-z]/.test(message) ? `${label} ${message}` : message;
      const prev = errorEl.textContent;
      setFieldError(control, errorEl, prev ? `${prev} ${text}` : text);
      // Focus goes to the first invalid control in page order.
      if (control && (!first || first.compareDocumentPosition(control) & Node.DOCUMENT_POSITION_PRECEDING)) {
        first = control;
      }
      return true;
    };
    for (const e of err.errors) {
      const message = e.message || err.detail;
      if (!place(e.field, message)) unmatched.push(e.field ? `${e.field}: ${message}` : message);
    }
    if (!err.errors.length && fallbackField && place(fallbackField, err.detail)) {
      // placed next to the field
    } else if (!err.errors.length || unmatched.length) {
      const text = unmatched.length && err.errors.length ? `${err.detail} ${unmatched.join(' ')}` : err.detail;
      showNotice(notice, text);
    }
    return first;
  }

  // ---------------------------------------------------------------- dialogs

  function openDialog(dialog, opener) {
    dialog.opener = opener || document.activeElement;
    dialog.showModal();
  }

  function wireDialogs() {
    for (const dialog of document.querySelectorAll('dialog')) {
      for (const btn of dialog.querySelectorAll('[data-close]')) {
        btn.addEventListener('click', () => dialog.close());
      }
      dialog.addEventListener('close', () => {
        const opener = dialog.opener;
        dialog.opener = null;
        if (opener && opener.isConnected && !document.querySelector('dialog[open]')) {
          opener.focus();
        }
      });
    }
  }

  // ---------------------------------------------------------------- views

  function showView(name) {
    $('signin-view').hidden = name !== 'signin';
    $('loading-view').hidden = name !== 'loading';
    $('app-view').hidden = name !== 'app';
    $('session').hidden = name !== 'app';
  }

  function showSignIn(message) {
    showView('signin');
    const input = $('signin-key');
    input.value = '';
    $('signin-error').textContent = message || '';
    if (message) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
    input.focus();
  }

  // ---------------------------------------------------------------- session

  async function signIn(token) {
    // Validate by asking for one key: 401 = not a valid key, 403 = valid key
    // whose roles may not use the console (a Cloud Account Viewer).
    await api('GET', '/v1/keys?limit=1', undefined, token);
    const claims = decodeJwtPayload(token) || {};
    const roles = Array.isArray(claims.roles) ? claims.roles : [];
    state.token = token;
    state.claims = claims;
    state.isAdmin = roles.includes('global_admin');
    sessionStorage.setItem(TOKEN_STORAGE, token);
    enterApp();
  }

  function endSession(message) {
    sessionStorage.removeItem(TOKEN_STORAGE);
    state.token = null;
    state.claims = null;
    state.isAdmin = false;
    state.keys.clear();
    state.keysCursor = null;
    state.auditLoaded = false;
    state.signingLoaded = false;
    for (const d of document.querySelectorAll('dialog[open]')) {
      d.opener = null;
      d.close();
    }
    $('once-token').value = '';
    $('keys-body').replaceChildren();
    $('audit-body').replaceChildren();
    $('signing-body').replaceChildren();
    $('keys-admin-tools').replaceChildren();
    const actionsHead = $('keys-actions-head');
    if (actionsHead) actionsHead.remove();
    $('keys-q').value = '';
    $('keys-status').value = '';
    showSignIn(message);
  }

  function enterApp() {
    const roles = Array.isArray(state.claims.roles) ? state.claims.roles : [];
    const who = $('session-who');
    who.replaceChildren(
      'Signed in as ',
      h('strong', null, state.claims.name || state.claims.sub || 'unknown key'),
      ` (${roles.map(roleLabel).join(', ') || 'no roles'})`,
    );
    if (!state.isAdmin) who.append(h('span', { class: 'badge badge-readonly' }, 'Read-only'));

    // Mutating controls exist only for admins.
    const tools = $('keys-admin-tools');
    tools.replaceChildren();
    const oldHead = $('keys-actions-head');
    if (oldHead) oldHead.remove();
    if (state.isAdmin) {
      const add = h('button', { type: 'button', id: 'add-open', class: 'btn btn-primary' }, 'Add access key');
      add.addEventListener('click', () => openAddDialog(add));
      tools.append(add);
      $('keys-head').append(h('th', { scope: 'col', id: 'keys-actions-head' }, 'Actions'));
    }

    showView('app');
    selectTab(tabFromHash(), false);
    loadKeys();
  }

  function wireSession() {
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const input = $('signin-key');
      const errorEl = $('signin-error');
      const token = input.value.trim();
      errorEl.textContent = '';
      input.removeAttribute('aria-invalid');
      if (!token) {
        setFieldError(input, errorEl, 'Paste an access key to sign in.');
        input.focus();
        return;
      }
      const submit = $('signin-submit');
      submit.disabled = true;
      try {
        await signIn(token);
        input.value = '';
        if (state.tab === 'keys') $('keys-title').focus();
      } catch (err) {
        const message = err instanceof ApiError ? err.detail : 'Sign-in failed.';
        setFieldError(input, errorEl, message);
        input.focus();
        input.select();
      } finally {
        submit.disabled = false;
      }
    });
    $('signout').addEventListener('click', () => endSession(''));
  }

  // ---------------------------------------------------------------- tabs

  const TABS = ['keys', 'audit', 'signing'];
  const TAB_HASH = { keys: '#keys', audit: '#audit', signing: '#signing-keys' };

  function tabFromHash() {
    const found = Object.entries(TAB_HASH).find(([, hash]) => hash === location.hash);
    return found ? found[0] : 'keys';
  }

  function selectTab(name, focusTab) {
    state.tab = name;
    for (const t of TABS) {
      const tab = $(`tab-${t}`);
      const selected = t === name;
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(`panel-${t}`).hidden = !selected;
      if (selected && focusTab) tab.focus();
    }
    if (location.hash !== TAB_HASH[name]) history.replaceState(null, '', TAB_HASH[name]);
    if (name === 'audit' && !state.auditLoaded) loadAudit(false);
    if (name === 'signing' && !state.signingLoaded) loadSigningKeys();
  }

  function wireTabs() {
    for (const t of TABS) {
      const tab = $(`tab-${t}`);
      tab.addEventListener('click', () => selectTab(t, true));
      tab.addEventListener('keydown', (ev) => {
        const i = TABS.indexOf(t);
        let next = null;
        if (ev.key === 'ArrowRight') next = TABS[(i + 1) % TABS.length];
        else if (ev.key === 'ArrowLeft') next = TABS[(i + TABS.length - 1) % TABS.length];
        else if (ev.key === 'Home') next = TABS[0];
        else if (ev.key === 'End') next = TABS[TABS.length - 1];
        if (next) {
          ev.preventDefault();
          selectTab(next, true);
        }
      });
    }
  }

  // ---------------------------------------------------------------- keys table

  function accountsCell(accounts) {
    if (!Array.isArray(accounts) || accounts.length === 0) return h('span', { class: 'muted' }, '—');
    if (accounts.length === 1 && accounts[0] === '*') return h('span', null, 'All accounts');
    const shown = accounts.slice(0, 3);
    const rest = accounts.length - shown.length;
    return h(
      'ul',
      { class: 'plain', title: rest ? accounts.join(', ') : null },
      shown.map((a) => h('li', null, h('code', null, a))),
      rest ? h('li', { class: 'muted' }, `+${rest} more`) : null,
    );
  }

  function keyActions(key) {
    // Visible text is short; the accessible name says what and which key.
    const btn = (action, text, verb, cls = 'btn btn-small') =>
      h(
        'button',
        { type: 'button', class: cls, dataset: { action, id: key.id }, 'aria-label': `${verb} ${key.name}`, title: verb },
        text,
      );
    const buttons = [];
    if (key.status !== 'revoked') {
      buttons.push(btn('edit', 'Edit', 'Edit description'));
      buttons.push(btn('renew', 'Renew', 'Renew'));
      if (key.status === 'active') buttons.push(btn('suspend', 'Suspend', 'Suspend'));
      if (key.status === 'suspended') buttons.push(btn('resume', 'Resume', 'Resume'));
      buttons.push(btn('remove', 'Remove', 'Remove', 'btn btn-small btn-danger-quiet'));
    }
    return h(
      'td',
      { class: 'row-actions' },
      buttons.length ? h('div', { class: 'btn-group' }, buttons) : h('span', { class: 'muted' }, '—'),
      h('p', { class: 'field-error row-error', id: `row-error-${key.id}`, role: 'alert' }),
    );
  }

  function keyRow(key) {
    const createdBy = key.created_by;
    const roles = Array.isArray(key.roles) ? key.roles : [];
    const tr = h(
      'tr',
      { dataset: { id: key.id, status: key.status } },
      h(
        'th',
        { scope: 'row', class: 'key-name' },
        h('span', { class: 'name' }, key.name),
        key.description ? h('span', { class: 'description' }, key.description) : null,
      ),
      h('td', { class: 'roles' }, h('ul', { class: 'plain' }, roles.map((r) => h('li', null, roleLabel(r))))),
      h('td', { class: 'accounts' }, accountsCell(key.accounts)),
      h(
        'td',
        { class: 'created' },
        timeEl(key.created_at),
        createdBy ? h('span', { class: 'by muted' }, `by ${actorLabel(createdBy)}`) : null,
      ),
      h('td', { class: 'expires' }, timeEl(key.expires_at)),
      h('td', { class: 'last-used' }, key.last_used_at ? timeEl(key.last_used_at) : h('span', null, 'Never')),
      h(
        'td',
        { class: 'status' },
        h('span', { class: `status-badge status-${key.status}` }, STATUS_LABELS[key.status] || key.status),
      ),
    );
    if (state.isAdmin) tr.append(keyActions(key));
    return tr;
  }

  function keysFilter() {
    return {
      q: $('keys-q').value.trim(),
      status: $('keys-status').value,
    };
  }

  function updateKeysCount() {
    const n = state.keys.size;
    const more = Boolean(state.keysCursor);
    let text = n === 1 ? 'Showing 1 key' : `Showing ${n} keys`;
    if (more) text += '; more are available';
    $('keys-count').textContent = n || more ? `${text}.` : '';
    $('keys-more').hidden = !more;
  }

  async function loadKeys(append = false) {
    const request = ++state.keysRequest;
    const params = new URLSearchParams();
    const { q, status } = keysFilter();
    if (status) params.set('status', status);
    if (q) params.set('q', q);
    params.set('limit', String(KEYS_PAGE));
    if (append && state.keysCursor) params.set('cursor', state.keysCursor);
    const errorEl = $('keys-error');
    const more = $('keys-more');
    more.disabled = true;
    try {
      const page = await api('GET', `/v1/keys?${params}`);
      if (request !== state.keysRequest) return; // a newer search superseded this one
      showNotice(errorEl, '');
      const body = $('keys-body');
      if (!append) {
        state.keys.clear();
        body.replaceChildren();
      }
      const items = (page && Array.isArray(page.items)) ? page.items : [];
      for (const key of items) {
        if (state.keys.has(key.id)) continue;
        state.keys.set(key.id, key);
        body.append(keyRow(key));
      }
      state.keysCursor = page && page.next_cursor ? page.next_cursor : null;
      if (state.keys.size === 0) {
        const cols = $('keys-head').children.length;
        const text = q || status ? 'No access keys match this search.' : 'No access keys yet.';
        body.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: cols }, text)));
      }
      updateKeysCount();
    } catch (err) {
      if (request !== state.keysRequest || err.handled) return;
      showNotice(errorEl, err.detail);
    } finally {
      more.disabled = false;
    }
  }

  /** Replace one row in place with a fresh key object. */
  function replaceRow(key, focusAction) {
    state.keys.set(key.id, key);
    const old = $('keys-body').querySelector(`tr[data-id="${CSS.escape(key.id)}"]`);
    const row = keyRow(key);
    if (old) old.replaceWith(row);
    else $('keys-body').prepend(row);
    const target =
      (focusAction && row.querySelector(`button[data-action="${focusAction}"]`)) ||
      row.querySelector('button[data-action]') ||
      null;
    if (target) target.focus();
    else {
      row.querySelector('th').tabIndex = -1;
      row.querySelector('th').focus();
    }
    return row;
  }

  function rowError(id, message) {
    const el = $(`row-error-${id}`);
    if (el) el.textContent = message;
  }

  function wireKeys() {
    let debounce = null;
    $('keys-filter').addEventListener('submit', (ev) => {
      ev.preventDefault();
      clearTimeout(debounce);
      loadKeys();
    });
    $('keys-q').addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => loadKeys(), 300);
    });
    $('keys-status').addEventListener('change', () => loadKeys());
    $('keys-refresh').addEventListener('click', () => loadKeys());
    $('keys-more').addEventListener('click', () => loadKeys(true));

    $('keys-body').addEventListener('click', (ev) => {
      const btn = ev.target.closest('button[data-action]');
      if (!btn || !state.isAdmin) return;
      const key = state.keys.get(btn.dataset.id);
      if (!key) return;
      rowError(key.id, '');
      switch (btn.dataset.action) {
        case 'edit':
          openEditDialog(key, btn);
          break;
        case 'renew':
          openRenewDialog(key, btn);
          break;
        case 'suspend':
        case 'resume':
          setSuspended(key, btn, btn.dataset.action);
          break;
        case 'remove':
          openRemoveDialog(key, btn);
          break;
        default:
          break;
      }
    });
  }

  async function setSuspended(key, btn, action) {
    btn.disabled = true;
    try {
      const updated = await api('POST', keyPath(key.id, `/${action}`));
      replaceRow(updated, action === 'suspend' ? 'resume' : 'suspend');
    } catch (err) {
      if (err.handled) return;
      btn.disabled = false;
      rowError(key.id, err.detail);
    }
  }

  // ---------------------------------------------------------------- expiry period

  /** Wire a period <select> with its custom-days field and hint. */
  function wirePeriod(prefix) {
    const select = $(`${prefix}-period`);
    const daysField = $(`${prefix}-days-field`);
    const days = $(`${prefix}-days`);
    const hint = $(`${prefix}-period-hint`);
    const update = () => {
      const v = select.value;
      daysField.hidden = v !== 'custom';
      let until = null;
      if (v === 'default') until = sixMonthsFromNow();
      else if (v === 'custom') {
        const n = Number(days.value);
        if (Number.isInteger(n) && n > 0 && n < 100000) until = new Date(Date.now() + n * 86400000);
      } else until = new Date(Date.now() + Number(v) * 86400000);
      hint.textContent = until ? `Expires on ${utcDate(until)} (UTC).` : '';
    };
    select.addEventListener('change', () => {
      update();
      if (select.value === 'custom') days.focus();
    });
    days.addEventListener('input', update);
    return {
      reset() {
        select.value = 'default';
        days.value = '';
        update();
      },
      /** {days} (undefined = server default) or {error, control, errorEl}. */
      read() {
        const v = select.value;
        if (v === 'default') return { days: undefined };
        if (v !== 'custom') return { days: Number(v) };
        const raw = days.value.trim();
        const n = Number(raw);
        if (!raw || !Number.isInteger(n) || n < 1) {
          return { error: 'Enter a whole number of days, 1 or more.', control: days, errorEl: $(`${prefix}-days-error`) };
        }
        return { days: n };
      },
      /** [control, errorEl] for server errors about expires_in_days. */
      target() {
        return select.value === 'custom'
          ? [days, $(`${prefix}-days-error`), 'Days until expiry']
          : [select, $(`${prefix}-period-error`), 'Expiration period'];
      },
    };
  }

  // ---------------------------------------------------------------- add access key

  let addPeriod = null;
  let roleSeq = 0;
  const ROLE_ORDER = ['global_admin', 'global_viewer', 'cloud_account_viewer'];

  function roleRows() {
    return [...$('add-roles-list').querySelectorAll('.role-row')];
  }

  function addRoleRow(focus) {
    const n = ++roleSeq;
    const id = `add-role-${n}`;
    const select = h(
      'select',
      { id, class: 'role-select', 'aria-describedby': 'add-roles-error' },
      h('option', { value: '' }, 'Choose a role…'),
      ROLE_ORDER.map((r) => h('option', { value: r }, roleLabel(r))),
    );
    const label = h('label', { for: id, class: 'role-label' });
    const remove = h('button', { type: 'button', class: 'btn btn-quiet btn-small role-remove' }, 'Remove');
    const row = h('div', { class: 'role-row' }, label, select, remove);
    select.addEventListener('change', updateRoles);
    remove.addEventListener('click', () => {
      const rows = roleRows();
      const i = rows.indexOf(row);
      row.remove();
      updateRoles();
      const left = roleRows();
      const next = left[Math.min(i, left.length - 1)];
      if (next) next.querySelector('select').focus();
    });
    $('add-roles-list').append(row);
    updateRoles();
    if (focus) select.focus();
  }

  function updateRoles() {
    const rows = roleRows();
    rows.forEach((row, i) => {
      const label = row.querySelector('.role-label');
      label.textContent = `Role ${i + 1}`;
      const remove = row.querySelector('.role-remove');
      remove.hidden = rows.length < 2;
      remove.setAttribute('aria-label', `Remove role ${i + 1}`);
    });
    $('add-role-more').hidden = rows.length >= ROLE_ORDER.length;
    const chosen = rows.map((r) => r.querySelector('select').value);
    $('add-accounts-field').hidden = !chosen.includes('cloud_account_viewer');
  }

  function parseAccounts(text) {
    const seen = new Set();
    const out = [];
    for (const part of text.split(/[\s,;]+/)) {
      const a = part.trim();
      if (a && !seen.has(a)) {
        seen.add(a);
        out.push(a);
      }
    }
    return out;
  }

  function openAddDialog(opener) {
    const form = $('add-form');
    form.reset();
    clearFormErrors(form);
    $('add-roles-list').replaceChildren();
    addRoleRow(false);
    addPeriod.reset();
    $('add-accounts').disabled = false;
    updateRoles();
    openDialog($('add-dialog'), opener);
    $('add-name').focus();
  }

  function wireAdd() {
    addPeriod = wirePeriod('add');
    $('add-role-more').addEventListener('click', () => addRoleRow(true));
    $('add-all-accounts').addEventListener('change', (ev) => {
      $('add-accounts').disabled = ev.target.checked;
    });

    $('add-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const form = ev.target;
      clearFormErrors(form);
      const nameEl = $('add-name');
      const descEl = $('add-description');
      const accountsEl = $('add-accounts');
      const allEl = $('add-all-accounts');
      const invalid = [];
      const fail = (control, errorEl, message) => {
        setFieldError(control, errorEl, message);
        invalid.push(control);
      };

      const name = nameEl.value.trim();
      if (!name) fail(nameEl, $('add-name-error'), 'Enter a name.');

      const expiry = addPeriod.read();
      if (expiry.error) fail(expiry.control, expiry.errorEl, expiry.error);

      const selects = roleRows().map((r) => r.querySelector('select'));
      const roles = [];
      for (const s of selects) {
        if (!s.value) {
          fail(s, $('add-roles-error'), 'Choose a role for every role row, or remove the empty row.');
          break;
        }
        if (roles.includes(s.value)) {
          fail(s, $('add-roles-error'), `${roleLabel(s.value)} is chosen more than once.`);
          break;
        }
        roles.push(s.value);
      }

      let accounts;
      if (roles.includes('cloud_account_viewer')) {
        if (allEl.checked) accounts = ['*'];
        else {
          accounts = parseAccounts(accountsEl.value);
          if (!accounts.length) {
            fail(accountsEl, $('add-accounts-error'), 'Enter at least one account ID, or check “All accounts”.');
          }
        }
      }

      if (invalid.length) {
        invalid[0].focus();
        return;
      }

      const body = { name, roles };
      const description = descEl.value.trim();
      if (description) body.description = description;
      if (accounts) body.accounts = accounts;
      if (expiry.days !== undefined) body.expires_in_days = expiry.days;

      const submit = $('add-submit');
      submit.disabled = true;
      try {
        const result = await api('POST', '/v1/keys', body);
        $('add-dialog').opener = null;
        $('add-dialog').close();
        showOnce(result, 'created');
      } catch (err) {
        if (err.handled) return;
        const first = showApiError(
          err,
          {
            name: () => [nameEl, $('add-name-error'), 'Name'],
            description: () => [descEl, $('add-description-error'), 'Description'],
            roles: () => [selects[0] || null, $('add-roles-error'), 'Roles'],
            accounts: () => [allEl.checked ? allEl : accountsEl, $('add-accounts-error'), 'Accounts'],
            expires_in_days: () => addPeriod.target(),
          },
          $('add-error'),
          err.status === 409 ? 'name' : null,
        );
        if (first) first.focus();
      } finally {
        submit.disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- show-once window

  const once = { name: '', token: '', confirmed: false, kind: 'created', keyId: null };

  function showOnce(result, kind) {
    const key = (result && result.key) || {};
    once.name = key.name || '';
    once.token = (result && result.token) || '';
    once.kind = kind;
    once.keyId = key.id || null;
    once.confirmed = false;
    $('once-title').textContent = kind === 'renewed' ? 'Access key renewed' : 'Access key created';
    $('once-name').value = once.name;
    $('once-token').value = once.token;
    $('once-status').textContent = '';
    $('once-expires').textContent = key.expires_at ? `This token expires on ${formatTime(key.expires_at)}.` : '';
    const dialog = $('once-dialog');
    dialog.opener = null;
    dialog.showModal();
    $('once-copy-token').focus();
  }

  async function copyText(text, what, fallbackEl) {
    const status = $('once-status');
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = `${what} copied to the clipboard.`;
    } catch {
      status.textContent = `Could not copy automatically. The ${what.toLowerCase()} is selected: copy it with Ctrl+C (⌘C).`;
      fallbackEl.focus();
      fallbackEl.select();
    }
  }

  function finishOnce() {
    once.confirmed = true;
    $('once-confirm').close();
    $('once-dialog').close();
  }

  function afterOnceClosed() {
    $('once-token').value = '';
    once.token = '';
    const id = once.keyId;
    if (once.kind === 'created') {
      // New keys are listed newest first: reload so it appears in place.
      loadKeys().then(() => {
        const row = id && $('keys-body').querySelector(`tr[data-id="${CSS.escape(id)}"]`);
        const target = (row && row.querySelector('button[data-action]')) || $('add-open');
        if (target) target.focus();
      });
    } else {
      const row = id && $('keys-body').querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      const target = (row && row.querySelector('button[data-action="renew"]')) || $('add-open');
      if (target) target.focus();
    }
  }

  function wireOnce() {
    const dialog = $('once-dialog');
    const confirm = $('once-confirm');
    $('once-copy-name').addEventListener('click', () => copyText(once.name, 'Name', $('once-name')));
    $('once-copy-token').addEventListener('click', () => copyText(once.token, 'Token', $('once-token')));
    $('once-download').addEventListener('click', () => {
      const fileName = keyFileName(once.name);
      // The file holds the token followed by a single newline.
      const blob = new Blob([`${once.token}\n`], { type: 'application/octet-stream' });
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: fileName, class: 'visually-hidden' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      $('once-status').textContent = `Downloaded ${fileName}.`;
    });
    $('once-close').addEventListener('click', () => confirm.showModal());
    dialog.addEventListener('cancel', (ev) => {
      // Escape: ask before closing, as for the Close button.
      ev.preventDefault();
      if (!confirm.open) confirm.showModal();
    });
    dialog.addEventListener('close', () => {
      if (!state.token) return; // signed out while it was open
      if (!once.confirmed) {
        // Closed without confirmation (e.g. a repeated Escape): keep it open.
        dialog.showModal();
        if (!confirm.open) confirm.showModal();
        return;
      }
      afterOnceClosed();
    });
    $('once-confirm-back').addEventListener('click', () => {
      confirm.close();
      $('once-copy-token').focus();
    });
    $('once-confirm-close').addEventListener('click', finishOnce);
  }

  // ---------------------------------------------------------------- edit description

  let editKey = null;

  function openEditDialog(key, opener) {
    editKey = key;
    const form = $('edit-form');
    clearFormErrors(form);
    $('edit-key-name').textContent = key.name;
    $('edit-description').value = key.description || '';
    openDialog($('edit-dialog'), opener);
    $('edit-description').focus();
  }

  function wireEdit() {
    $('edit-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const form = ev.target;
      clearFormErrors(form);
      const descEl = $('edit-description');
      const submit = $('edit-submit');
      submit.disabled = true;
      try {
        const updated = await api('PATCH', keyPath(editKey.id), { description: descEl.value.trim() });
        const dialog = $('edit-dialog');
        dialog.opener = null;
        dialog.close();
        replaceRow(updated, 'edit');
      } catch (err) {
        if (err.handled) return;
        const first = showApiError(
          err,
          { description: () => [descEl, $('edit-description-error'), 'Description'] },
          $('edit-error'),
          err.status === 422 ? 'description' : null,
        );
        if (first) first.focus();
      } finally {
        submit.disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- renew

  let renewKey = null;
  let renewPeriod = null;

  function openRenewDialog(key, opener) {
    renewKey = key;
    const form = $('renew-form');
    form.reset();
    clearFormErrors(form);
    renewPeriod.reset();
    $('renew-key-name').textContent = key.name;
    openDialog($('renew-dialog'), opener);
    $('renew-period').focus();
  }

  function wireRenew() {
    renewPeriod = wirePeriod('renew');
    $('renew-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const form = ev.target;
      clearFormErrors(form);
      const expiry = renewPeriod.read();
      if (expiry.error) {
        setFieldError(expiry.control, expiry.errorEl, expiry.error);
        expiry.control.focus();
        return;
      }
      const body = {};
      if (expiry.days !== undefined) body.expires_in_days = expiry.days;
      const revokeEl = $('renew-revoke');
      if (revokeEl.checked) body.revoke_previous = true;
      const submit = $('renew-submit');
      submit.disabled = true;
      try {
        const result = await api('POST', keyPath(renewKey.id, '/renew'), body);
        const dialog = $('renew-dialog');
        dialog.opener = null;
        dialog.close();
        if (result && result.key) replaceRow(result.key, 'renew');
        showOnce(result, 'renewed');
      } catch (err) {
        if (err.handled) return;
        const first = showApiError(
          err,
          {
            expires_in_days: () => renewPeriod.target(),
            revoke_previous: () => [revokeEl, $('renew-revoke-error'), 'Revoke previous'],
          },
          $('renew-error'),
        );
        if (first) first.focus();
      } finally {
        submit.disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- remove

  let removeKey = null;

  function openRemoveDialog(key, opener) {
    removeKey = key;
    showNotice($('remove-error'), '');
    $('remove-key-name').textContent = key.name;
    openDialog($('remove-dialog'), opener);
  }

  function wireRemove() {
    $('remove-confirm').addEventListener('click', async () => {
      const btn = $('remove-confirm');
      btn.disabled = true;
      showNotice($('remove-error'), '');
      const key = removeKey;
      try {
        await api('DELETE', keyPath(key.id));
        let updated;
        try {
          updated = await api('GET', keyPath(key.id));
        } catch (err) {
          if (err.handled) return;
          updated = { ...key, status: 'revoked' };
        }
        const dialog = $('remove-dialog');
        dialog.opener = null;
        dialog.close();
        replaceRow(updated);
      } catch (err) {
        if (err.handled) return;
        showNotice($('remove-error'), err.detail);
      } finally {
        btn.disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- audit log

  function detailsCell(details) {
    if (details === null || details === undefined) return h('span', { class: 'muted' }, '—');
    if (typeof details !== 'object') return h('code', null, String(details));
    const entries = Object.entries(details);
    if (!entries.length) return h('span', { class: 'muted' }, '—');
    return h(
      'dl',
      { class: 'details' },
      entries.map(([k, v]) => [
        h('dt', null, k),
        h('dd', null, typeof v === 'string' ? v : JSON.stringify(v)),
      ]),
    );
  }

  function targetCell(target) {
    if (target === null || target === undefined || target === '') return h('span', { class: 'muted' }, '—');
    const text = typeof target === 'string' ? target : JSON.stringify(target);
    const key = typeof target === 'string' ? state.keys.get(target) : null;
    if (key) return h('span', { title: text }, key.name, h('span', { class: 'muted id' }, ` ${text}`));
    return h('code', null, text);
  }

  function auditRow(entry) {
    return h(
      'tr',
      null,
      h('td', { class: 'num' }, String(entry.seq)),
      h('td', null, timeEl(entry.time)),
      h('td', null, actorLabel(entry.actor)),
      h('td', null, h('code', { class: `action${String(entry.action).startsWith('auth.') ? ' action-auth' : ''}` }, entry.action)),
      h('td', { class: 'target' }, targetCell(entry.target)),
      h('td', null, detailsCell(entry.details)),
    );
  }

  async function loadAudit(append) {
    const params = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (append && state.auditAfter !== null) params.set('after', String(state.auditAfter));
    const more = $('audit-more');
    more.disabled = true;
    try {
      const page = await api('GET', `/v1/audit?${params}`);
      showNotice($('audit-error'), '');
      const body = $('audit-body');
      if (!append) body.replaceChildren();
      const items = (page && Array.isArray(page.items)) ? page.items : [];
      for (const entry of items) body.append(auditRow(entry));
      state.auditAfter = page && page.next_after !== null && page.next_after !== undefined ? page.next_after : null;
      state.auditLoaded = true;
      const n = body.querySelectorAll('tr:not(.empty)').length;
      if (!n) body.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'No audit entries yet.')));
      $('audit-count').textContent = n ? `Showing ${n} ${n === 1 ? 'entry' : 'entries'}, oldest first.` : '';
      more.hidden = state.auditAfter === null;
    } catch (err) {
      if (err.handled) return;
      showNotice($('audit-error'), err.detail);
    } finally {
      more.disabled = false;
    }
  }

  // ---------------------------------------------------------------- signing keys

  async function loadSigningKeys() {
    try {
      const page = await api('GET', '/v1/signing-keys');
      showNotice($('signing-error'), '');
      const items = (page && Array.isArray(page.items)) ? page.items : [];
      const body = $('signing-body');
      body.replaceChildren(
        ...items.map((k) =>
          h(
            'tr',
            null,
            h('td', null, h('code', { class: 'kid' }, k.kid)),
            h('td', null, k.alg),
            h('td', null, h('span', { class: `status-badge signing-${k.state}` }, SIGNING_STATE_LABELS[k.state] || k.state)),
            h('td', null, timeEl(k.created_at)),
            h('td', null, timeEl(k.activates_at)),
            h('td', null, timeEl(k.retired_at)),
          ),
        ),
      );
      if (!items.length) body.append(h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'No signing keys.')));
      state.signingLoaded = true;
    } catch (err) {
      if (err.handled) return;
      showNotice($('signing-error'), err.detail);
    }
  }

  function wireOtherPanels() {
    $('audit-more').addEventListener('click', () => loadAudit(true));
    $('audit-refresh').addEventListener('click', () => loadAudit(false));
    $('signing-refresh').addEventListener('click', () => loadSigningKeys());
  }

  // ---------------------------------------------------------------- start

  async function start() {
    wireDialogs();
    wireSession();
    wireTabs();
    wireKeys();
    wireAdd();
    wireOnce();
    wireEdit();
    wireRenew();
    wireRemove();
    wireOtherPanels();

    const saved = sessionStorage.getItem(TOKEN_STORAGE);
    if (!saved) {
      showSignIn('');
      return;
    }
    showView('loading');
    try {
      await signIn(saved);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_STORAGE);
      showSignIn(err instanceof ApiError ? err.detail : 'Sign-in failed.');
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
