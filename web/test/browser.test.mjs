// Browser test of the web terminal: headless Debian chromium driven by
// playwright-core against a real `hangard dev` on loopback. Signs in,
// creates a session, types a command, sees its output, drops the WebSocket
// mid-output and checks that the terminal resumes with no output lost, opens
// a read-only share link from a narrower writer (the viewer draws at the
// PTY's size and follows its resizes, so wrapped lines stay intact), ends
// the session, and keeps screenshots in
// test-artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const binDir = process.env.HANGAR_BIN_DIR || path.join(root, 'bin');
const artifacts = process.env.HANGAR_ARTIFACTS || path.join(root, 'test-artifacts');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

let tmp;
let daemon;
let daemonLog = '';
let env;
let context;
let repoURL;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

async function waitFor(what, fn, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function parseEnv(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^\s*([A-Z0-9_]+)=(.*)$/);
    if (m) out[m[1]] = m[2].replace(/^["']|["']$/g, '');
  }
  return out;
}

before(async () => {
  for (const b of ['hangard', 'hangar-agent']) {
    assert.ok(existsSync(path.join(binDir, b)), `${binDir}/${b} is missing: run make build first`);
  }
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: apt-get install -y chromium`);
  await mkdir(artifacts, { recursive: true });
  tmp = await mkdtemp(path.join(os.tmpdir(), 'hangar-web-test-'));
  // Sessions run `claude` by default; here it is a plain bash.
  const tools = path.join(tmp, 'tools');
  await mkdir(tools);
  await writeFile(path.join(tools, 'claude'), '#!/bin/sh\nexec bash --norc --noprofile -i\n');
  await chmod(path.join(tools, 'claude'), 0o755);
  // A repository for the session to clone and push its work to.
  const repo = path.join(tmp, 'repo.git');
  const seed = path.join(tmp, 'seed');
  execFileSync('git', ['init', '-q', '--bare', '-b', 'main', repo]);
  await mkdir(seed);
  await writeFile(path.join(seed, 'README.md'), '# browser test\n');
  const git = (...a) => execFileSync('git', ['-C', seed, '-c', 'user.name=t', '-c', 'user.email=t@t.invalid', ...a]);
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-q', '-m', 'seed');
  git('push', '-q', repo, 'main');
  repoURL = `file://${repo}`;
  const data = path.join(tmp, 'data');
  const port = await freePort();
  daemon = spawn(path.join(binDir, 'hangard'), ['dev', '--data', data, '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, PATH: `${tools}:${process.env.PATH}` },
    detached: true, // its own process group, so that cleanup reaches every machine
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  daemon.stdout.on('data', (d) => { daemonLog += d; });
  daemon.stderr.on('data', (d) => { daemonLog += d; });
  let exited = null;
  daemon.on('exit', (code) => { exited = code; });
  env = await waitFor('dev.env', async () => {
    if (exited !== null) throw new Error(`hangard dev exited with ${exited}:\n${daemonLog.slice(-4000)}`);
    try {
      const e = parseEnv(await readFile(path.join(data, 'dev.env'), 'utf8'));
      return e.HANGAR_URL && e.HANGAR_TOKEN ? e : null;
    } catch { return null; }
  });
  await waitFor('healthz', async () => {
    try { return (await fetch(`${env.HANGAR_URL}/healthz`)).ok; } catch { return false; }
  });
  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1200, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.HANGAR_URL }).catch(() => {});
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (daemon && daemon.exitCode === null) {
    try { process.kill(-daemon.pid, 'SIGTERM'); } catch { /* gone */ }
    await waitFor('hangard to stop', () => daemon.exitCode !== null || daemon.signalCode !== null, 20000)
      .catch(() => { try { process.kill(-daemon.pid, 'SIGKILL'); } catch { /* gone */ } });
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const screen = (page) => page.evaluate(() => window.hangar.screenText());
const logicalLines = (page) => page.evaluate(() => window.hangar.logicalLines());
const termSize = (page) => page.evaluate(() => ({ cols: window.hangar.term.cols, rows: window.hangar.term.rows }));
const sameSize = (a, b) => !!a && !!b && a.cols === b.cols && a.rows === b.rows;
// writerPtySize is the writer's terminal size once the PTY has confirmed it
// (the link's last known PTY size equals the terminal's), else null.
const writerPtySize = (page) => page.evaluate(() => {
  const z = window.hangar.link && window.hangar.link.size();
  const t = window.hangar.term;
  return z && z.cols === t.cols && z.rows === t.rows ? { cols: t.cols, rows: t.rows } : null;
});

// checkViewerLine has the writer type a command line longer than its
// terminal is wide (so that it wraps), and checks that the command and its
// output reach the viewer intact: every logical line as the writer sees it.
async function checkViewerLine(writer, viewer, cmdPrefix, outPrefix, cols) {
  const tail = '-' + 'w'.repeat(cols + 7);
  const cmd = `echo ${cmdPrefix}${tail}`;
  const out = `${outPrefix}${tail}`;
  await typeLine(writer, cmd);
  const has = (lines, s, exact) => lines.some((l) => (exact ? l === s : l.endsWith(s)));
  await waitFor(`the writer to see ${outPrefix}`, async () => has(await logicalLines(writer), out, true), 30000);
  // The viewer gets the same bytes a little later: wait for the output line,
  // then the command line above it must be whole.
  await waitFor(`the viewer to see ${outPrefix}`, async () => has(await logicalLines(viewer), out, true), 30000);
  const wl = await logicalLines(writer);
  const vl = await logicalLines(viewer);
  assert.ok(has(vl, cmd, false), `the viewer's command line is garbled:\n${vl.filter((l) => l.includes('www')).join('\n')}`);
  const promptLine = wl.find((l) => l.endsWith(cmd));
  assert.ok(vl.includes(promptLine), `the viewer's line differs from the writer's ${JSON.stringify(promptLine)}`);
}

async function typeLine(page, text) {
  await page.locator('#terminal').click();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

test('web terminal: sign in, create, type, drop and resume losslessly, share, end', { timeout: 240000 }, async (t) => {
  const page = await context.newPage();
  page.on('pageerror', (err) => { t.diagnostic(`page error: ${err.message}`); });
  try {
    await page.goto(`${env.HANGAR_URL}/`);
    // Sign in.
    await page.locator('#signin-key').fill('not-a-key');
    await page.locator('#signin-form button').click();
    await page.locator('#signin-error').filter({ hasText: 'not accepted' }).waitFor();
    await page.locator('#signin-key').fill(env.HANGAR_TOKEN);
    await page.locator('#signin-form button').click();
    await page.locator('#home').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('hangar.apiKey')), env.HANGAR_TOKEN);
    // The page always says whose tenant it acts for.
    await page.locator('#signed-in-as').filter({ hasText: 'signed in as dev' }).waitFor();

    // Create a session in the dev pool (it shows claim progress, then the terminal).
    await page.locator('#create-pool option[value="dev"]').waitFor({ state: 'attached' });
    await page.locator('#create-pool').selectOption('dev');
    await page.locator('#create-repo').fill(repoURL);
    await page.locator('#create-branch').fill('main');
    await page.locator('#create-submit').click();
    await page.locator('#term-view').waitFor();
    await page.locator('#st-link[data-link="attached"]').waitFor({ timeout: 90000 });
    await waitFor('a prompt', async () => /[$#] ?$/m.test(await screen(page)), 30000);

    // Type a command, see its output (and leave work to push).
    await typeLine(page, 'echo hello-$((6*7)) | tee greeting.txt');
    await waitFor('command output', async () => (await screen(page)).includes('hello-42'), 30000);

    // The terminal's size reached the PTY.
    const { cols, rows } = await page.evaluate(() => ({ cols: window.hangar.term.cols, rows: window.hangar.term.rows }));
    await typeLine(page, 'stty size');
    await waitFor('stty size', async () => (await screen(page)).includes(`${rows} ${cols}`), 30000);

    // Resizing the window resizes the terminal and the PTY behind it.
    await page.setViewportSize({ width: 900, height: 600 });
    await waitFor('the terminal to refit', () => page.evaluate((c) => window.hangar.term.cols < c, cols), 10000);
    const small = await page.evaluate(() => ({ cols: window.hangar.term.cols, rows: window.hangar.term.rows }));
    await typeLine(page, 'stty size');
    await waitFor('stty size after resize', async () => (await screen(page)).includes(`${small.rows} ${small.cols}`), 30000);
    await page.setViewportSize({ width: 1200, height: 800 });

    // Paste from the clipboard (the paste button; Ctrl+Shift+V does the same).
    await page.evaluate(() => navigator.clipboard.writeText('echo pasted-$((5+5))'));
    await page.locator('#paste').click();
    // The paste reads the clipboard asynchronously: wait for the text to reach
    // the prompt before pressing Enter, or the Enter may overtake it.
    await waitFor('the paste to reach the prompt', async () => (await screen(page)).includes('echo pasted-$((5+5))'), 30000);
    await page.keyboard.press('Enter');
    await waitFor('pasted input', async () => (await screen(page)).includes('pasted-10'), 30000);
    // Copy: select the terminal's text and copy it with Ctrl+Shift+C.
    await page.evaluate(() => window.hangar.term.selectAll());
    await page.locator('#terminal').press('Control+Shift+KeyC');
    await waitFor('the copy', async () => (await page.evaluate(() => navigator.clipboard.readText())).includes('pasted-10'), 10000);

    // Drop the WebSocket while output streams; the terminal reconnects by
    // itself and every line arrives exactly once, in order.
    await typeLine(page, 'for i in $(seq 1 80); do echo "line-$i-end"; sleep 0.02; done; echo done-$((1+1))');
    await waitFor('streaming to start', async () => (await screen(page)).includes('line-10-end'), 30000);
    await page.evaluate(() => window.hangar.dropConnection());
    await waitFor('the reconnect', () => page.evaluate(() => window.hangar.link.reconnects >= 1), 30000);
    await waitFor('the loop to finish', async () => (await screen(page)).includes('done-2'), 60000);
    const text = await screen(page);
    const lines = text.split('\n').filter((l) => /^line-\d+-end$/.test(l.trim())).map((l) => l.trim());
    assert.deepEqual(lines, Array.from({ length: 80 }, (_, i) => `line-${i + 1}-end`), 'output lost or doubled across the reconnect');

    // Input after the reconnect is applied once.
    await typeLine(page, 'echo after-$((20+3))');
    await waitFor('input after reconnect', async () => (await screen(page)).includes('after-23'), 30000);
    assert.equal((await screen(page)).split('\n').filter((l) => l.trim() === 'after-23').length, 1);

    // Status line: state, elapsed, cost.
    await page.locator('#st-state[data-state="ready"]').waitFor();
    assert.match(await page.locator('#st-cost').innerText(), /^cost \$\d+\.\d{4}$/);
    assert.match(await page.locator('#st-elapsed').innerText(), /^elapsed \d+:\d\d/);
    await page.screenshot({ path: path.join(artifacts, 'web-terminal.png') });

    // A read-only share link shows the same terminal to a viewer without a key.
    await page.locator('#share').click();
    // The link appears once the ticket request has answered.
    await waitFor('the share link', async () => (await page.locator('#share-url').inputValue()) !== '', 30000);
    const shareURL = await page.locator('#share-url').inputValue();
    assert.match(shareURL, /\?view=.+&ticket=/);
    // The writer's window is narrower than the viewer's: the viewer cannot
    // resize the PTY, so it must draw at the PTY's size, or every line that
    // wrapped for the writer is garbled by the shell's redraw.
    await page.setViewportSize({ width: 700, height: 500 });
    await waitFor('the writer to refit', () => page.evaluate(() => window.hangar.term.cols < 100), 30000);
    const narrow = await waitFor('the PTY to take the writer\'s size', () => writerPtySize(page), 30000);
    const viewer = await context.newPage();
    await viewer.goto(shareURL);
    await viewer.locator('#st-link[data-link="attached"]').waitFor({ timeout: 30000 });
    await waitFor('the viewer to see the output', async () => (await screen(viewer)).includes('after-23'), 30000);
    assert.equal(await viewer.locator('#end').isVisible(), false);
    await waitFor('the viewer to take the PTY\'s size', async () => sameSize(await termSize(viewer), await writerPtySize(page)), 30000);
    await checkViewerLine(page, viewer, 'writer-$((8*8))', 'writer-64', narrow.cols);
    await viewer.screenshot({ path: path.join(artifacts, 'web-terminal-readonly.png') });

    // The writer resizes: the viewer follows the PTY's new size.
    await page.setViewportSize({ width: 900, height: 600 });
    await waitFor('the writer to refit wider', () => page.evaluate((c) => window.hangar.term.cols > c, narrow.cols), 30000);
    const wider = await waitFor('the PTY to take the writer\'s new size', () => writerPtySize(page), 30000);
    await waitFor('the viewer to follow the resize', async () => sameSize(await termSize(viewer), await writerPtySize(page)), 30000);
    await checkViewerLine(page, viewer, 'wider-$((9*9))', 'wider-81', wider.cols);
    await viewer.close();
    await page.setViewportSize({ width: 1200, height: 800 });

    // End the session from the page.
    await page.locator('#end').click();
    await page.locator('#st-state[data-state="ended"]').waitFor({ timeout: 120000 });
    await page.locator('#overlay-text').filter({ hasText: 'Session ended' }).waitFor();
    // It shows the branch the work was pushed to, and the commit is there.
    await page.locator('#overlay-text').filter({ hasText: /Work pushed to branch \S*hangar\// }).waitFor();
    const pushed = await page.locator('#st-push').innerText();
    assert.match(pushed, /^pushed \S*hangar\/\S+ @ [0-9a-f]{12}$/);
    const sid = await page.evaluate(() => location.hash.replace('#/s/', ''));
    const shown = execFileSync('git', ['--git-dir', path.join(tmp, 'repo.git'), 'show', `hangar/${sid}:greeting.txt`]).toString();
    assert.equal(shown.trim(), 'hello-42');
    await page.screenshot({ path: path.join(artifacts, 'web-terminal-ended.png') });
  } catch (err) {
    await page.screenshot({ path: path.join(artifacts, 'web-terminal-failure.png') }).catch(() => {});
    t.diagnostic(`hangard log (tail):\n${daemonLog.slice(-3000)}`);
    throw err;
  }
});

// Login CSRF: a /#key=KEY link never signs a tab in, nor replaces its key,
// without a confirmation that names the link's tenant (and the current one).
test('web terminal: a key in a link asks first, naming the tenant', { timeout: 60000 }, async (t) => {
  const resp = await fetch(`${env.HANGAR_URL}/v1/tenants`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env.HANGAR_ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'mallory' }),
  });
  assert.equal(resp.status, 201);
  const mallory = (await resp.json()).api_key;
  const page = await context.newPage();
  page.on('pageerror', (err) => { t.diagnostic(`page error: ${err.message}`); });
  const stored = () => page.evaluate(() => sessionStorage.getItem('hangar.apiKey'));
  const openLink = async (key) => {
    await page.goto('about:blank');
    await page.goto(`${env.HANGAR_URL}/#key=${encodeURIComponent(key)}`);
    await page.locator('#confirm-link').waitFor();
    assert.equal(await page.evaluate(() => location.hash), '', 'the key stays in the address bar');
  };
  try {
    // Not signed in: the link's tenant is named, nothing is stored yet.
    await openLink(env.HANGAR_TOKEN);
    assert.match(await page.locator('#confirm-link-text').innerText(), /tenant “dev”/);
    assert.equal(await stored(), null);
    await page.locator('#confirm-link-yes').click();
    await page.locator('#signed-in-as').filter({ hasText: 'signed in as dev' }).waitFor();
    assert.equal(await stored(), env.HANGAR_TOKEN);

    // Signed in as dev, an attacker's link: declining keeps dev's key.
    await openLink(mallory);
    assert.match(await page.locator('#confirm-link-text').innerText(), /tenant “mallory”/);
    assert.match(await page.locator('#confirm-link-current').innerText(), /signed in to “dev”/);
    assert.equal(await stored(), env.HANGAR_TOKEN);
    await page.locator('#confirm-link-no').click();
    await page.locator('#home').waitFor();
    await page.locator('#signed-in-as').filter({ hasText: 'signed in as dev' }).waitFor();
    assert.equal(await stored(), env.HANGAR_TOKEN);

    // Accepting, knowingly, switches tenants and says so.
    await openLink(mallory);
    await page.locator('#confirm-link-yes').click();
    await page.locator('#signed-in-as').filter({ hasText: 'signed in as mallory' }).waitFor();
    assert.equal(await stored(), mallory);
    await page.screenshot({ path: path.join(artifacts, 'web-terminal-link-confirm.png') });
  } catch (err) {
    await page.screenshot({ path: path.join(artifacts, 'web-terminal-link-failure.png') }).catch(() => {});
    throw err;
  } finally {
    await page.close();
  }
});
