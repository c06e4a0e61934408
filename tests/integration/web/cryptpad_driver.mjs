// CryptPad's Code app in Debian's Chromium (headless, playwright-core) against hearth:
//   node cryptpad_driver.mjs <main origin>
// 1. opens <main>/code/ — CryptPad creates a new pad (its URL gets a /code/edit/ hash),
//    loads the editor inside the sandbox-origin iframe, stores the pad through hearth;
// 2. types a line into the editor;
// 3. a second, fresh browser context opens the same pad URL and must show that line
//    (history read back through hearth's history keeper and decrypted by CryptPad).
// Prints one JSON line {ok, pad, text, errors}; exits 0 when ok.
import { chromium } from 'playwright-core';

const main = process.argv[2];
const LINE = 'hello from chromium through hearth';
const DEADLINE_MS = 60000;
const errors = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
const done = async (o) => {
  process.stdout.write(JSON.stringify(Object.assign({ errors: errors.slice(0, 20) }, o)) + '\n');
  await browser.close();
  process.exit(o.ok ? 0 : 1);
};
setTimeout(() => done({ ok: false, why: 'overall deadline' }), 3 * DEADLINE_MS).unref();

async function until(what, fn) {
  const end = Date.now() + DEADLINE_MS;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function openEditor(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`http ${r.status()} ${r.url()}`); });
  await page.goto(url);
  await until('a pad URL', async () => page.url().includes('/code/edit/'));
  const inner = await until('the editor frame', async () => page.frames().find((f) => f.url().includes('/code/inner.html')));
  await until('the editor', async () => inner.evaluate(() => {
    const cm = document.querySelector('.CodeMirror');
    return Boolean(cm && cm.CodeMirror && !cm.CodeMirror.getOption('readOnly'));
  }));
  return { page, inner };
}

try {
  const a = await openEditor(`${main}/code/`);
  const pad = a.page.url();
  await a.inner.click('.CodeMirror');
  await a.page.keyboard.type(LINE);
  await until('the line in the first editor', async () =>
    a.inner.evaluate((l) => document.querySelector('.CodeMirror').CodeMirror.getValue().includes(l), LINE));
  const b = await openEditor(pad);
  const text = await until('the line in a second browser', async () => {
    const v = await b.inner.evaluate(() => document.querySelector('.CodeMirror').CodeMirror.getValue());
    return v.includes(LINE) ? v : null;
  });
  await done({ ok: true, pad, text });
} catch (e) {
  await done({ ok: false, why: String(e) });
}
