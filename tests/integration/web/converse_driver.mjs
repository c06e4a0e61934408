// Runs Converse.js in Debian's Chromium (headless) with playwright-core and follows the
// commands the Python test writes on stdin, one JSON object per line; answers one JSON
// line each on stdout.
//   {"cmd":"open","url":...}          -> {"ok":true,"status":"connected"}
//   {"cmd":"join","room":...,"nick":...} -> {"ok":true}
//   {"cmd":"send","room":...,"body":...} -> {"ok":true}
//   {"cmd":"wait_message","body":...}  -> {"ok":true,"from":...}
//   {"cmd":"quit"}
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--ignore-certificate-errors'],
});
const page = await browser.newPage();
const consoleLines = [];
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));

const reply = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const deadline = (ms) => Date.now() + ms;

async function waitFor(fn, ms, what, arg) {
  const end = deadline(ms);
  for (;;) {
    const v = await page.evaluate(fn, arg).catch((e) => ({ error: String(e) }));
    if (v && !v.error) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const c = JSON.parse(line);
  try {
    if (c.cmd === 'open') {
      await page.goto(c.url);
      await waitFor(() => window.hearth.status === 'connected' || (window.hearth.errors.length && { error: window.hearth.errors.join() }), 30000, 'login');
      reply({ ok: true, status: 'connected' });
    } else if (c.cmd === 'join') {
      await page.evaluate(async ({ room, nick }) => {
        await window.hearth.api.rooms.open(room, { nick }, true);
      }, c);
      // Entered once the room reports a nick of ours and a joined status.
      await waitFor(async (room) => {
        const r = await window.hearth.api.rooms.get(room);
        const status = r?.session?.get('connection_status');
        return status === 5 ? true : { error: `status ${status}` };
      }, 30000, 'the room join', c.room);
      reply({ ok: true });
    } else if (c.cmd === 'send') {
      await page.evaluate(async ({ room, body }) => {
        const r = await window.hearth.api.rooms.get(room);
        await r.sendMessage({ body });
      }, c);
      reply({ ok: true });
    } else if (c.cmd === 'wait_message') {
      const got = await waitFor((body) => window.hearth.received.find((m) => m.body === body) || null, 30000, 'a message', c.body);
      reply({ ok: true, from: got.from });
    } else if (c.cmd === 'quit') {
      break;
    }
  } catch (e) {
    reply({ ok: false, error: String(e), console: consoleLines.filter((l) => !l.includes('ERR_NAME_NOT_RESOLVED')).slice(-60) });
  }
}
await browser.close();
