// hangar's web terminal: sign in with an API key, list/create/end sessions,
// and a terminal (xterm.js) attached over the wire protocol, with claim
// progress, resize, copy/paste, automatic lossless reconnect, read-only share
// links and a status line.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { Api, ApiError } from './api.js';
import { Link } from './link.js';

const KEY_STORAGE = 'hangar.apiKey';
const $ = (id) => document.getElementById(id);

const app = {
  api: null,
  tenant: '', // the signed-in key's tenant name, always on show
  link: null,
  term: null,
  fit: null,
  session: null,
  role: 'rw',
  timers: [],
};

// Test and debugging hook: the browser test drops the WebSocket through it.
window.hangar = {
  get link() { return app.link; },
  get term() { return app.term; },
  dropConnection() { if (app.link) app.link.drop(); },
  screenText() {
    const t = app.term;
    if (!t) return '';
    const buf = t.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i).translateToString(true));
    return lines.join('\n');
  },
  // logicalLines joins the rows a long line wrapped onto, as the program
  // wrote it: a line drawn for another width shows up garbled here.
  logicalLines() {
    const t = app.term;
    if (!t) return [];
    const buf = t.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) {
      const l = buf.getLine(i);
      if (l.isWrapped && lines.length) lines[lines.length - 1] += l.translateToString(false);
      else lines.push(l.translateToString(false));
    }
    return lines.map((l) => l.trimEnd());
  },
};

function show(view) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== view;
}

function clearTimers() {
  app.timers.forEach((t) => clearInterval(t));
  app.timers = [];
}

function setTopbar() {
  const right = $('topbar-right');
  right.textContent = '';
  if (app.api) {
    // Always say whose tenant this page acts for: a link may have signed it in.
    const who = document.createElement('span');
    who.id = 'signed-in-as';
    who.textContent = `signed in as ${app.tenant} `;
    right.append(who);
    const b = document.createElement('button');
    b.className = 'small';
    b.textContent = 'sign out';
    b.onclick = () => { sessionStorage.removeItem(KEY_STORAGE); location.href = '/'; };
    right.append(b);
  }
}

// ---- sign in ---------------------------------------------------------------

async function signIn(key) {
  const api = new Api(key);
  const me = await api.whoami(); // a 401 here means a bad key
  app.api = api;
  app.tenant = me.name;
  sessionStorage.setItem(KEY_STORAGE, key);
  setTopbar();
}

function showSignIn(msg) {
  show('signin');
  $('signin-error').textContent = msg || '';
  $('signin-key').focus();
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const key = $('signin-key').value.trim();
  if (!key) return;
  try {
    await signIn(key);
    $('signin-key').value = '';
    route();
  } catch (err) {
    $('signin-error').textContent = err.status === 401 ? 'That API key was not accepted.' : err.message;
  }
});

// ---- sessions list and create form -------------------------------------

function age(s) {
  const start = Date.parse(s.created_at || '');
  if (!start) return '-';
  const end = s.ended_at ? Date.parse(s.ended_at) : Date.now();
  return fmtDuration(end - start);
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}:${String(sec).padStart(2, '0')}`;
}

function fmtCost(c) { return `$${(Number(c) || 0).toFixed(4)}`; }

// noRepository: the agent's answer for a session started without a repo
// (older agents say it with ok=false): information, not a failed push.
function noRepository(p) {
  return !!p && (!p.ref || p.ok) && /no repository/i.test(p.message || '');
}

// pushInfo describes a session's push result: { text, kind } with kind
// 'ok', 'info' or 'failed'; null when there is nothing to say.
function pushInfo(p) {
  if (!p || !(p.ref || p.commit || p.message)) return null;
  if (noRepository(p)) return { text: p.message, kind: 'info' };
  if (p.ok) {
    if (!p.commit && p.message) return { text: p.message, kind: 'info' };
    return { text: `pushed ${p.ref}${p.commit ? ` @ ${p.commit.slice(0, 12)}` : ''}`, kind: 'ok' };
  }
  return { text: `push failed: ${p.message || p.ref}`, kind: 'failed' };
}

async function refreshSessions() {
  try {
    const list = await app.api.listSessions();
    $('sessions-error').textContent = '';
    const tbody = $('sessions').querySelector('tbody');
    tbody.textContent = '';
    list.sort((a, b) => String(b.created_at || '').localeCompare(String(a.created_at || '')));
    for (const s of list) {
      const tr = document.createElement('tr');
      tr.dataset.session = s.id;
      for (const v of [s.id, s.pool, s.state + (s.reason ? ` (${s.reason})` : ''), s.region || '-', age(s), fmtCost(s.cost_usd)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      const td = document.createElement('td');
      if (s.state !== 'ended' && s.state !== 'failed') {
        const open = document.createElement('button');
        open.className = 'small';
        open.textContent = 'open';
        open.onclick = () => { location.hash = `#/s/${encodeURIComponent(s.id)}`; };
        const end = document.createElement('button');
        end.className = 'small danger';
        end.textContent = 'end';
        end.onclick = () => endSession(s.id);
        td.append(open, ' ', end);
      } else {
        const p = pushInfo(s.push);
        if (p) td.textContent = p.text;
      }
      tr.append(td);
      tbody.append(tr);
    }
  } catch (err) {
    if (err.status === 401) { sessionStorage.removeItem(KEY_STORAGE); app.api = null; showSignIn('Your API key is no longer accepted.'); return; }
    $('sessions-error').textContent = err.message;
  }
}

async function loadPools() {
  const sel = $('create-pool');
  try {
    const pools = await app.api.listPools();
    const cur = sel.value;
    sel.textContent = '';
    for (const p of pools) {
      const o = document.createElement('option');
      o.value = o.textContent = p.name;
      sel.append(o);
    }
    if (cur) sel.value = cur;
    if (pools.length === 0) $('create-error').textContent = 'No pool is available to your tenant.';
  } catch (err) {
    $('create-error').textContent = `Cannot list pools: ${err.message}`;
  }
}

$('create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('create-error').textContent = '';
  const req = { pool: $('create-pool').value, mode: $('create-mode').value };
  const repo = $('create-repo').value.trim();
  const branch = $('create-branch').value.trim();
  const apiKey = $('create-apikey').value.trim();
  if (repo) req.repo = repo;
  if (branch) req.branch = branch;
  if (apiKey) req.credentials = { anthropic_api_key: apiKey };
  if (app.term) { req.cols = app.term.cols; req.rows = app.term.rows; }
  $('create-submit').disabled = true;
  try {
    const s = await app.api.createSession(req);
    $('create-apikey').value = '';
    location.hash = `#/s/${encodeURIComponent(s.id)}`;
  } catch (err) {
    $('create-error').textContent = err.message;
  } finally {
    $('create-submit').disabled = false;
  }
});

$('refresh').addEventListener('click', () => refreshSessions());

async function endSession(id) {
  try {
    await app.api.endSession(id);
  } catch (err) {
    alert(`Could not end session ${id}: ${err.message}`);
  }
  refreshSessions();
}

function showHome() {
  show('home');
  refreshSessions();
  loadPools();
  app.timers.push(setInterval(refreshSessions, 3000));
}

// ---- terminal ------------------------------------------------------------

function ensureTerminal() {
  if (app.term) return;
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 5000,
    allowProposedApi: false,
    theme: { background: '#101418' },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open($('terminal'));
  app.term = term;
  app.fit = fit;
  term.onData((d) => app.link && app.link.input(d));
  term.onBinary((d) => app.link && app.link.input(d));
  term.onResize(({ cols, rows }) => app.link && app.link.resize(cols, rows));
  // Ctrl+Shift+C / Ctrl+Shift+V: copy and paste without fighting the shell's
  // own Ctrl+C. A plain paste (Ctrl+V, middle click) is handled by xterm.js.
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
    if (ev.code === 'KeyC') { copySelection(); return false; }
    if (ev.code === 'KeyV') { pasteClipboard(); return false; }
    return true;
  });
  new ResizeObserver(() => fitTerminal()).observe($('term-wrap'));
  window.addEventListener('resize', () => fitTerminal());
}

// fitTerminal sizes a writer's terminal to its window (the PTY follows).
// A read-only viewer cannot resize the PTY, so its terminal keeps the PTY's
// size instead (applyPtySize): output laid out for one width and drawn on
// another garbles every wrapped line.
function fitTerminal() {
  if (!app.term || $('term-view').hidden || app.role === 'ro') return;
  try { app.fit.fit(); } catch { /* not laid out yet */ }
}

// applyPtySize gives the terminal the PTY's size.
function applyPtySize(cols, rows) {
  if (!app.term || !(cols > 0 && rows > 0)) return;
  if (app.term.cols !== cols || app.term.rows !== rows) app.term.resize(cols, rows);
}

async function copySelection() {
  const text = app.term && app.term.getSelection();
  if (!text) return;
  try { await navigator.clipboard.writeText(text); } catch { /* clipboard refused */ }
}

async function pasteClipboard() {
  try {
    const text = await navigator.clipboard.readText();
    if (text) app.term.paste(text);
  } catch { /* clipboard refused; Ctrl+V still works */ }
}

$('copy').addEventListener('click', () => { copySelection(); app.term && app.term.focus(); });
$('paste').addEventListener('click', () => { pasteClipboard(); app.term && app.term.focus(); });

function overlay(text) {
  $('overlay').hidden = !text;
  $('overlay-text').textContent = text || '';
}

function setLinkStatus(kind, detail) {
  const el = $('st-link');
  el.dataset.link = kind;
  const words = {
    connecting: 'connecting…', reconnecting: 'reconnecting…', attached: 'connected', exited: 'process exited',
    detached: 'detached', gone: 'session ended', superseded: 'another writer took over', forbidden: 'not allowed', error: 'error',
  };
  el.textContent = (words[kind] || kind) + (detail && kind !== 'attached' ? ` (${detail})` : '');
}

function updateStatus() {
  const s = app.session;
  if (!s) return;
  const st = $('st-state');
  st.textContent = s.state + (s.queue_position ? ` · queue ${s.queue_position}` : '') + (s.reason ? ` · ${s.reason}` : '');
  st.dataset.state = s.state;
  $('st-region').textContent = s.region ? `region ${s.region}` : '';
  const start = Date.parse(s.ready_at || s.created_at || '');
  const end = s.ended_at ? Date.parse(s.ended_at) : Date.now();
  $('st-elapsed').textContent = start ? `elapsed ${fmtDuration(end - start)}` : '';
  $('st-cost').textContent = `cost ${fmtCost(s.cost_usd)}`;
  const push = $('st-push');
  const p = pushInfo(s.push);
  if (p) {
    push.textContent = p.text;
    push.dataset.ok = String(p.kind !== 'failed');
  } else {
    push.textContent = '';
  }
  if (s.state === 'ended' || s.state === 'failed') {
    $('end').disabled = true;
    $('share').disabled = true;
    $('paste').disabled = true;
    let text = `Session ${s.state}${s.reason ? `: ${s.reason}` : ''}.`;
    if (p && p.kind === 'ok') text += ` Work pushed to branch ${s.push.ref}.`;
    else if (p && p.kind === 'info') text += ` ${p.text[0].toUpperCase()}${p.text.slice(1)}.`;
    else if (p) text += ` The push failed: ${s.push.message || ''}`;
    overlay(text);
  }
}

async function pollSession(id) {
  if (!app.api) return;
  try {
    app.session = await app.api.getSession(id);
    updateStatus();
  } catch (err) {
    if (err.status === 404) { app.session = { id, state: 'ended', reason: 'not found' }; updateStatus(); }
  }
}

const stateWords = {
  pending: 'Waiting for a machine', claiming: 'Claiming a machine', starting: 'Starting the VM',
  ready: 'Ready', ending: 'Ending', ended: 'Ended', failed: 'Failed',
};

function openTerminal(id, opts) {
  const { role, ticket, mode } = opts;
  app.role = role;
  show('term-view');
  $('term-wrap').dataset.role = role;
  ensureTerminal();
  app.term.reset();
  fitTerminal();
  $('term-title').textContent = role === 'ro' ? `session ${id} (read-only)` : `session ${id}`;
  for (const b of ['end', 'share', 'paste']) $(b).hidden = role === 'ro';
  $('back').hidden = !app.api;
  $('end').disabled = false;
  $('share').disabled = false;
  $('paste').disabled = false;
  $('share-box').hidden = true;
  $('st-push').textContent = '';
  $('jsonl-form').hidden = mode !== 'jsonl' || role === 'ro';
  overlay('Connecting…');
  app.term.options.disableStdin = role === 'ro';
  const link = new Link({
    session: id,
    mode: mode || 'pty',
    role,
    ticket,
    write: (data, done) => app.term.write(data, done),
    size: () => ({ cols: app.term.cols, rows: app.term.rows }),
    on: {
      state: (m) => {
        const words = stateWords[m.state] || m.state;
        overlay(`${words}${m.detail ? ` — ${m.detail}` : ''}${m.queue_position ? ` (position ${m.queue_position} in line)` : ''}…`);
        if (app.session) { app.session.state = m.state; app.session.queue_position = m.queue_position; updateStatus(); }
      },
      attached: (m) => {
        overlay('');
        app.term.focus();
        if (role === 'rw') {
          fitTerminal();
          link.resize(app.term.cols, app.term.rows);
        } else {
          // The replay that follows was laid out for the PTY's size; the
          // write queue is empty here (the link drains it before attaching).
          app.term.write('', () => applyPtySize(m.cols, m.rows));
        }
        pollSession(id);
      },
      // A size the PTY got from someone else (a viewer follows the writer; a
      // writer follows a size it did not ask for). The link calls this in
      // order with the output around it.
      size: (cols, rows) => applyPtySize(cols, rows),
      exit: (m) => {
        const how = m.signal ? `killed by SIG${m.signal}` : `exited with status ${m.code}`;
        overlay(`The session's process ${how}; the session is ending…`);
        pollSession(id);
      },
      // Output was evicted before this browser saw it: say how much, in
      // the terminal, in order with the output (as the CLI does on stderr).
      gap: (m) => {
        const n = Math.max(0, m.oldest - m.requested);
        app.term.write(`\r\n\x1b[2m[hangar] output skipped: ${n} bytes were dropped before this browser could show them\x1b[0m\r\n`);
      },
      error: (m) => {
        if (m.code === 'credentials_rejected') overlay(`Claude Code rejected the credentials: ${m.message}`);
      },
      status: (kind, detail) => {
        setLinkStatus(kind, detail);
        if (kind === 'gone' || kind === 'superseded' || kind === 'forbidden' || kind === 'error') {
          overlay(`${kind === 'superseded' ? 'Another writer took over this session.' : detail || kind}`);
          pollSession(id);
        }
      },
    },
  });
  app.link = link;
  link.start();
  if (app.api) {
    pollSession(id);
    app.timers.push(setInterval(() => pollSession(id), 2000));
  }
  app.timers.push(setInterval(updateStatus, 1000));
}

$('jsonl-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('jsonl-input').value;
  if (!text || !app.link) return;
  app.link.input(JSON.stringify({ type: 'user', message: { role: 'user', content: text } }));
  $('jsonl-input').value = '';
});

$('back').addEventListener('click', () => { location.hash = ''; });

$('end').addEventListener('click', async () => {
  if (!app.session) return;
  const id = app.session.id;
  $('end').disabled = true;
  overlay('Ending: committing and pushing your work, then destroying the VM…');
  try {
    await app.api.endSession(id);
  } catch (err) {
    overlay(`Could not end the session: ${err.message}`);
    $('end').disabled = false;
    return;
  }
  // Poll until ended, so the pushed branch shows.
  for (let i = 0; i < 600; i++) {
    await pollSession(id);
    if (app.session && (app.session.state === 'ended' || app.session.state === 'failed')) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  if (app.link) app.link.close();
});

$('share').addEventListener('click', async () => {
  if (!app.session) return;
  try {
    const t = await app.api.ticket(app.session.id, { role: 'ro', ttl: '24h', uses: 1000 });
    const u = new URL('/', location.href);
    u.searchParams.set('view', app.session.id);
    u.searchParams.set('ticket', t.ticket);
    if (app.session.mode) u.searchParams.set('mode', app.session.mode);
    $('share-url').value = u.toString();
    $('share-box').hidden = false;
    $('share-url').select();
  } catch (err) {
    alert(`Could not create a share link: ${err.message}`);
  }
});

$('share-copy').addEventListener('click', async () => {
  try { await navigator.clipboard.writeText($('share-url').value); } catch { $('share-url').select(); }
});

// ---- routing -------------------------------------------------------------

async function openSession(id) {
  app.session = null;
  let mode = 'pty';
  try {
    app.session = await app.api.getSession(id);
    mode = app.session.mode || 'pty';
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) { overlay(`No session ${id}.`); }
  }
  openTerminal(id, {
    role: 'rw',
    mode,
    ticket: async () => (await app.api.ticket(id, { role: 'rw' })).ticket,
  });
  updateStatus();
}

function route() {
  clearTimers();
  if (app.link) { app.link.close(); app.link = null; }
  const params = new URLSearchParams(location.search);
  const view = params.get('view');
  if (view) {
    // A read-only share link: the ticket has several uses, one per (re)connect.
    const ticket = params.get('ticket') || '';
    openTerminal(view, { role: 'ro', mode: params.get('mode') || 'pty', ticket: async () => ticket });
    setLinkStatus('connecting');
    $('st-state').textContent = 'read-only view';
    return;
  }
  if (!app.api) { showSignIn(); return; }
  const m = location.hash.match(/^#\/s\/(.+)$/);
  if (m) { openSession(decodeURIComponent(m[1])); return; }
  showHome();
}

window.addEventListener('hashchange', route);

// A link such as /#key=KEY&session=ID (printed by `make demo`) offers to
// sign in and open a session. The fragment never reaches the server and is
// removed at once. It never signs in by itself: anyone can send a link, and
// a tab signed in to their tenant would start the victim's sessions (with
// the victim's own credentials) there. So the page asks first, naming the
// link's tenant and the one it is signed in to now.
function takeKeyFromFragment() {
  if (!location.hash.startsWith('#key=')) return null;
  const p = new URLSearchParams(location.hash.slice(1));
  const key = p.get('key');
  const s = p.get('session');
  history.replaceState(null, '', location.pathname + location.search + (s ? `#/s/${encodeURIComponent(s)}` : ''));
  return key ? { key, session: s } : null;
}

// confirmLinkKey resolves true when the user accepts the link's key.
function confirmLinkKey(tenant) {
  show('confirm-link');
  $('confirm-link-text').textContent = `This link signs this tab in to the tenant “${tenant}”.`;
  $('confirm-link-current').textContent = app.api
    ? `You are signed in to “${app.tenant}”; the link's key would replace that.`
    : 'You are not signed in.';
  $('confirm-link-yes').textContent = `Sign in to “${tenant}”`;
  $('confirm-link-no').textContent = app.api ? `Stay in “${app.tenant}”` : 'Cancel';
  return new Promise((resolve) => {
    $('confirm-link-yes').onclick = () => resolve(true);
    $('confirm-link-no').onclick = () => resolve(false);
  });
}

(async () => {
  const linked = takeKeyFromFragment();
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key && !new URLSearchParams(location.search).get('view')) {
    try { await signIn(key); } catch (err) {
      if (err.status === 401) sessionStorage.removeItem(KEY_STORAGE);
    }
  }
  setTopbar();
  if (linked && linked.key !== key) {
    let tenant = '';
    try { tenant = (await new Api(linked.key).whoami()).name; } catch (err) {
      if (!app.api) { showSignIn(err.status === 401 ? 'The key in that link was not accepted.' : err.message); return; }
    }
    if (tenant && await confirmLinkKey(tenant)) {
      try { await signIn(linked.key); } catch (err) {
        showSignIn(err.status === 401 ? 'The key in that link was not accepted.' : err.message);
        return;
      }
    } else {
      // Declined: the link's session is not this tenant's to open.
      history.replaceState(null, '', location.pathname + location.search);
      if (!app.api) { showSignIn(); return; }
    }
  }
  route();
})();
