// CryptPad uploads, login blocks and TOTP against hearth, driven by CryptPad's own client
// code from a CryptPad checkout (CRYPTPAD_DIR, default /srv/cryptpad):
//   src/common/outer/http-command.js  (the /api/auth two-step challenge client),
//   www/file/file-crypto.js           (file encryption and chunking, loaded with a tiny AMD shim),
//   notp + thirty-two                 (the TOTP libraries CryptPad's server uses).
// The upload chunks are posted exactly as www/common/outer/upload.js does.
//   node cp_files.js <scenario> <http base url> <websocket url>
// prints one JSON object and exits 0, or prints the failure on stderr and exits 1.
'use strict';
const Path = require('path');
const WebSocket = require('ws');
const Netflux = require('netflux-websocket');
const Nacl = require('tweetnacl/nacl-fast');
const NaclUtil = require('tweetnacl-util');

const CRYPTPAD = process.env.CRYPTPAD_DIR || '/srv/cryptpad';
const DEADLINE_MS = 20000;
const [scenario, base, wsUrl] = process.argv.slice(2);
const fail = (why) => { process.stderr.write(`cp_files ${scenario}: ${why && why.stack || why}\n`); process.exit(1); };
setTimeout(() => fail('deadline reached'), DEADLINE_MS * 3).unref();
const within = (promise, what) => Promise.race([
  promise,
  new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), DEADLINE_MS).unref()),
]);

// -- CryptPad's client modules ----------------------------------------------------------
const Util = require(Path.join(CRYPTPAD, 'src/common/common-util.js'));
const ServerCommand = require(Path.join(CRYPTPAD, 'src/common/outer/http-command.js'));
ServerCommand.setCustomize({ ApiConfig: { httpUnsafeOrigin: base, websocketPath: '/cryptpad_websocket' } });
const FileCrypto = (() => {
  let exported;
  global.window = { nacl: Nacl };
  global.define = (deps, f) => { exported = f(Util); };
  require(Path.join(CRYPTPAD, 'www/file/file-crypto.js'));
  delete global.define;
  delete global.window;  // netflux-websocket would take Node for a browser
  return exported;
})();
const cpRequire = (name) => require(require.resolve(name, { paths: [CRYPTPAD] }));
const OTP = cpRequire('notp');
const B32 = cpRequire('thirty-two');

const command = (keys, data) => within(new Promise((res) => {
  ServerCommand(keys, data, (err, reply) => res({ err: err === undefined ? null : err, reply: reply === undefined ? null : reply }));
}), `/api/auth ${data.command}`);
// First step only, to see the server's error text (http-command.js keeps only the status).
const firstStep = async (keys, data) => {
  const body = Object.assign({}, data, { publicKey: NaclUtil.encodeBase64(keys.publicKey), nonce: 'x' });
  const r = await fetch(`${base}/api/auth`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
};

// -- netflux + signed RPC (as src/common/rpc.js) ------------------------------------------
async function rpcSession(keys) {
  const network = await Netflux.connect(wsUrl, (u) => new WebSocket(u));
  // The history keeper is the 16-character member of any channel (as chainpad-netflux finds it).
  const wc = await within(network.join(randomHex(16)), 'JOIN');
  const hk = wc.members.find((m) => m.length === 16);
  if (!hk) throw new Error('no history keeper in the member list');
  const pub = NaclUtil.encodeBase64(keys.publicKey);
  let counter = 0;
  let cookie = null;
  const call = (data) => {
    const txid = `tx${++counter}`;
    return within(new Promise((res) => {
      const onMsg = (msg, sender) => {
        if (sender !== hk) return;
        const parsed = JSON.parse(msg);
        if (!Array.isArray(parsed) || parsed[0] !== txid) return;
        network.off('message', onMsg);
        res(parsed);
      };
      network.on('message', onMsg);
      network.sendto(hk, JSON.stringify([txid, data]));
    }), `RPC ${JSON.stringify(data).slice(0, 60)}`);
  };
  const signed = async (cmd, arg) => {
    const data = [cookie, cmd, arg];
    const sig = NaclUtil.encodeBase64(Nacl.sign.detached(NaclUtil.decodeUTF8(JSON.stringify(data)), keys.secretKey));
    const reply = await call([sig, pub, cookie, cmd, arg]);
    if (reply[1] !== 'ERROR') cookie = reply[1];
    return reply;
  };
  await signed('COOKIE', '');
  return { network, signed, anon: (cmd, arg) => call([cmd, arg]), close: () => network.disconnect() };
}

const randomHex = (bytes) => Buffer.from(Nacl.randomBytes(bytes)).toString('hex');

// One chunk exactly as www/common/outer/upload.js sendChunk posts it.
async function sendChunk(id, box, keys, cookie) {
  const body = {
    chunk: Util.encodeBase64(box),
    sig: Util.encodeBase64(Nacl.sign(Util.decodeUTF8(cookie), keys.secretKey)),
    edPublic: NaclUtil.encodeBase64(keys.publicKey),
  };
  const r = await fetch(`${base}/upload-blob/${id.slice(0, 2)}/${id}`, {
    method: 'post', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}

// Encrypts `u8` with CryptPad's FileCrypto and uploads it like upload.js; returns what happened.
async function upload(rpc, keys, u8, metadata, opts = {}) {
  const key = Nacl.randomBytes(32);
  const id = opts.id || randomHex(24);
  const estimate = FileCrypto.computeEncryptedSize(u8.length, metadata);
  const declared = opts.declare !== undefined ? opts.declare : estimate;
  const out = { id, estimate, key, status: await rpc.signed('UPLOAD_STATUS', { size: declared }) };
  if (out.status[1] === 'ERROR') return out;
  const c = await command({ publicKey: keys.publicKey, secretKey: keys.secretKey }, { command: 'UPLOAD_COOKIE', id });
  let cookie = c.reply && c.reply.cookie;
  if (!cookie) throw new Error(`no upload cookie: ${JSON.stringify(c)}`);
  if (opts.badCookie) cookie = 'f'.repeat(32);
  const next = FileCrypto.encrypt(u8, metadata, key);
  out.chunks = [];
  const boxes = await new Promise((res) => {
    const all = [];
    const again = (err, box) => { if (box) { all.push(box); next(again); } else res(all); };
    next(again);
  });
  if (opts.extra) boxes.push(Nacl.randomBytes(opts.extra));
  for (const box of boxes) {
    const r = await sendChunk(id, box, keys, cookie);
    out.chunks.push(r.status === 200 ? 'ok' : r.json.error);
    if (r.status !== 200) break;
    cookie = r.json.cookie;
  }
  out.sent = boxes.reduce((n, b) => n + b.length, 0);
  out.complete = await rpc.signed(opts.owned === false ? 'UPLOAD_COMPLETE' : 'OWNED_UPLOAD_COMPLETE', id);
  return out;
}

async function fetchBlob(id) {
  const r = await fetch(`${base}/blob/${id.slice(0, 2)}/${id}`);
  return { status: r.status, bytes: r.status === 200 ? new Uint8Array(await r.arrayBuffer()) : null };
}

const scenarios = {
  async upload() {
    const keys = Nacl.sign.keyPair();
    const rpc = await rpcSession(keys);
    const plain = Nacl.randomBytes(300 * 1024);  // three chunks
    const metadata = { name: 'report.bin', type: 'application/octet-stream', owners: [NaclUtil.encodeBase64(keys.publicKey)] };
    const up = await upload(rpc, keys, plain, metadata);
    const got = await fetchBlob(up.id);
    const head = await fetch(`${base}/blob/${up.id.slice(0, 2)}/${up.id}`, { method: 'HEAD' });
    const decrypted = await new Promise((res) => FileCrypto.decrypt(got.bytes, up.key, (e, data) => res(e ? { error: String(e) } : data)));
    const content = decrypted.error ? null : Buffer.from(await new Response(decrypted.content).arrayBuffer());
    const fileSize = await rpc.anon('GET_FILE_SIZE', up.id);
    const before = await rpc.signed('GET_TOTAL_SIZE', undefined);
    await rpc.signed('PIN', [up.id]);
    const after = await rpc.signed('GET_TOTAL_SIZE', undefined);
    // A second, unowned upload, then the owner removes the first one.
    const up2 = await upload(rpc, keys, Nacl.randomBytes(1000), { name: 'b', type: 'x' }, { owned: false });
    const removed = await rpc.signed('REMOVE_OWNED_CHANNEL', up.id);
    const gone = await fetchBlob(up.id);
    rpc.close();
    return {
      status: up.status.slice(2), chunks: up.chunks, complete: up.complete.slice(2), estimate: up.estimate, sent: up.sent,
      blob_status: got.status, blob_length: got.bytes.length, head_status: head.status,
      head_length: Number(head.headers.get('content-length')),
      same_content: content !== null && Buffer.compare(content, Buffer.from(plain)) === 0,
      metadata: decrypted.metadata, file_size: fileSize[2], total_before: before[2], total_after: after[2],
      second: { chunks: up2.chunks, complete: up2.complete.slice(2) },
      removed: removed[1] === 'ERROR' ? removed[2] : 'ok', after_removal: gone.status,
    };
  },

  // Everything that must fail, and leave nothing behind.
  async bad_uploads() {
    const keys = Nacl.sign.keyPair();
    const rpc = await rpcSession(keys);
    const meta = { name: 'x', type: 'y' };
    const code = (r) => (r[1] === 'ERROR' ? r[2] : r.slice(2));
    const out = {};
    out.negative = code(await rpc.signed('UPLOAD_STATUS', { size: -5 }));
    out.non_numeric = code(await rpc.signed('UPLOAD_STATUS', { size: '1000' }));
    out.fractional = code(await rpc.signed('UPLOAD_STATUS', { size: 10.5 }));
    out.missing = code(await rpc.signed('UPLOAD_STATUS', {}));
    out.too_large = code(await rpc.signed('UPLOAD_STATUS', { size: Number(process.env.MAX_UPLOAD) + 1 }));
    out.over_quota = code(await rpc.signed('UPLOAD_STATUS', { size: Number(process.env.QUOTA) }));
    // Declares less than it sends: the chunk that passes the declared size is refused.
    const more = await upload(rpc, keys, Nacl.randomBytes(2000), meta, { extra: 500 });
    out.sends_more = { chunks: more.chunks, complete: code(more.complete), blob: (await fetchBlob(more.id)).status };
    // Declares more than it sends.
    const less = await upload(rpc, keys, Nacl.randomBytes(2000), meta, { declare: 5000 });
    out.sends_less = { chunks: less.chunks, complete: code(less.complete), blob: (await fetchBlob(less.id)).status };
    // A wrong cookie.
    const bad = await upload(rpc, keys, Nacl.randomBytes(100), meta, { badCookie: true });
    out.bad_cookie = { chunks: bad.chunks, complete: code(bad.complete) };
    // A pending upload is reported, then cancelled.
    await rpc.signed('UPLOAD_STATUS', { size: 1000 });
    const c = await command(keys, { command: 'UPLOAD_COOKIE' });
    await sendChunk(randomHex(24), Nacl.randomBytes(10), keys, c.reply.cookie);
    out.pending = code(await rpc.signed('UPLOAD_STATUS', { size: 1000 }));
    await rpc.signed('UPLOAD_CANCEL', { size: 1000 });
    out.after_cancel = code(await rpc.signed('UPLOAD_STATUS', { size: 1000 }));
    await rpc.signed('UPLOAD_CANCEL', { size: 1000 });
    // Filling the quota: a first upload fits, a second one of the same size does not.
    const quota = Number(process.env.QUOTA);
    const big = Nacl.randomBytes(Math.floor(quota * 0.6));
    const first = await upload(rpc, keys, big, meta);
    out.first_fits = code(first.complete);
    const second = await upload(rpc, keys, big, meta);
    out.second = code(second.status);
    rpc.close();
    return out;
  },

  // A login block without and with TOTP.
  async blocks() {
    const keys = Nacl.sign.keyPair();
    const pub = NaclUtil.encodeBase64(keys.publicKey);
    const safe = pub.replace(/\//g, '-');
    const blockUrl = `${base}/block/${safe.slice(0, 2)}/${safe}`;
    const get = async (bearer) => {
      const r = await fetch(blockUrl, bearer ? { headers: { Authorization: `Bearer ${bearer}` } } : {});
      const buf = new Uint8Array(await r.arrayBuffer());
      let json = null;
      try { json = JSON.parse(Buffer.from(buf).toString()); } catch (e) { /* binary */ }
      return { status: r.status, bytes: buf, json };
    };
    const makeContent = (bytes) => ({
      publicKey: pub,
      signature: NaclUtil.encodeBase64(Nacl.sign.detached(Nacl.hash(bytes), keys.secretKey)),
      ciphertext: NaclUtil.encodeBase64(bytes),
    });
    const out = {};
    const block1 = Nacl.randomBytes(200);
    out.write = await command(keys, { command: 'WRITE_BLOCK', content: makeContent(block1) });
    let g = await get();
    out.read = { status: g.status, same: Buffer.compare(Buffer.from(g.bytes), Buffer.from(block1)) === 0 };
    const forged = makeContent(Nacl.randomBytes(200));
    forged.ciphertext = NaclUtil.encodeBase64(Nacl.randomBytes(200));
    out.forged = await command(keys, { command: 'WRITE_BLOCK', content: forged });
    out.mfa_check = await command(keys, { command: 'MFA_CHECK' });
    // TOTP on.
    const secretBytes = Nacl.randomBytes(20);
    const secret = B32.encode(Buffer.from(secretBytes)).toString();
    const totp = () => OTP.totp.gen(Buffer.from(secretBytes));
    out.setup_bad_code = (await firstStep(keys, { command: 'TOTP_SETUP', secret, code: '000000' === totp() ? '111111' : '000000' })).body;
    const setup = await command(keys, { command: 'TOTP_SETUP', secret, code: totp(), contact: 'secret:' + 'A'.repeat(32) });
    out.setup_bearer = Boolean(setup.reply && typeof setup.reply.bearer === 'string');
    g = await get();
    out.read_without_bearer = { status: g.status, json: g.json };
    g = await get('not-a-session');
    out.read_bad_bearer = g.status;
    g = await get(setup.reply.bearer);
    out.read_with_bearer = { status: g.status, same: Buffer.compare(Buffer.from(g.bytes), Buffer.from(block1)) === 0 };
    out.mfa_check_on = (await firstStep(keys, { command: 'MFA_CHECK' })).body;
    out.write_on = (await firstStep(keys, { command: 'WRITE_BLOCK', content: makeContent(block1) })).body;
    out.remove_on = (await firstStep(keys, { command: 'REMOVE_BLOCK' })).body;
    out.totp_mfa_check = await command(keys, { command: 'TOTP_MFA_CHECK', auth: totp() });
    out.validate_bad = (await firstStep(keys, { command: 'TOTP_VALIDATE', code: totp() === '123456' ? '654321' : '123456' })).body;
    const v = await command(keys, { command: 'TOTP_VALIDATE', code: totp() });
    g = await get(v.reply && v.reply.bearer);
    out.validate_session = g.status;
    out.wrong_recovery = (await firstStep(keys, { command: 'TOTP_REVOKE', recoveryKey: 'B'.repeat(32) })).body;
    out.revoke = await command(keys, { command: 'TOTP_REVOKE', code: totp() });
    g = await get();
    out.read_after_revoke = g.status;
    // Removal without TOTP: a placeholder with the reason.
    out.remove = await command(keys, { command: 'REMOVE_BLOCK', reason: 'DELETED_ACCOUNT' });
    g = await get();
    out.read_after_remove = { status: g.status, json: g.json };
    // TOTP_REMOVE_BLOCK on a second key.
    const keys2 = Nacl.sign.keyPair();
    const pub2 = NaclUtil.encodeBase64(keys2.publicKey);
    const b2 = Nacl.randomBytes(64);
    await command(keys2, { command: 'WRITE_BLOCK', content: {
      publicKey: pub2, signature: NaclUtil.encodeBase64(Nacl.sign.detached(Nacl.hash(b2), keys2.secretKey)),
      ciphertext: NaclUtil.encodeBase64(b2) } });
    await command(keys2, { command: 'TOTP_SETUP', secret, code: totp() });
    out.totp_remove = await command(keys2, { command: 'TOTP_REMOVE_BLOCK', auth: totp(), reason: 'GONE' });
    const safe2 = pub2.replace(/\//g, '-');
    const r2 = await fetch(`${base}/block/${safe2.slice(0, 2)}/${safe2}`);
    out.read_after_totp_remove = { status: r2.status, json: await r2.json() };
    return out;
  },
};

// Keys from 32-byte seeds given as hex in the environment (ADMIN_SEED, USER_SEED).
const seeded = (name) => Nacl.sign.keyPair.fromSeed(Buffer.from(process.env[name], 'hex'));

scenarios.pubkeys = async () => ({ admin: NaclUtil.encodeBase64(seeded('ADMIN_SEED').publicKey),
                                   user: NaclUtil.encodeBase64(seeded('USER_SEED').publicKey) });

scenarios.limit = async () => {
  const rpc = await rpcSession(seeded('USER_SEED'));
  const limit = await rpc.signed('GET_LIMIT', undefined);
  rpc.close();
  return { limit: limit.slice(2) };
};

// The admin panel's commands: who may use them, stats, decrees, archive/restore.
scenarios.admin = async () => {
  const adminKeys = seeded('ADMIN_SEED');
  const userKeys = seeded('USER_SEED');
  const userPub = NaclUtil.encodeBase64(userKeys.publicKey);
  const admin = await rpcSession(adminKeys);
  const user = await rpcSession(userKeys);
  const val = (r) => (r[1] === 'ERROR' ? r[2] : r.slice(2));
  const A = async (...args) => val(await admin.signed('ADMIN', args));
  const out = {};
  out.forbidden = val(await user.signed('ADMIN', ['ACTIVE_SESSIONS']));
  out.sessions = await A('ACTIVE_SESSIONS');
  out.pads = await A('ACTIVE_PADS');
  out.disk = await A('DISK_USAGE');
  out.fds = await A('GET_FILE_DESCRIPTOR_COUNT');
  out.fd_limit = await A('GET_FILE_DESCRIPTOR_LIMIT');
  out.status = await A('INSTANCE_STATUS');
  out.unknown = await A('NO_SUCH_COMMAND');
  // Quotas by decree.
  out.set_quota = await A('ADMIN_DECREE', ['SET_QUOTA', [userPub, { limit: 1234, plan: 'small', note: 'test' }]]);
  out.user_limit = val(await user.signed('GET_LIMIT', undefined));
  out.limits = await A('GET_LIMITS');
  out.user_quota = await A('GET_USER_QUOTA', userPub);
  out.bad_decree = await A('ADMIN_DECREE', ['SET_QUOTA', ['nope', { limit: 1 }]]);
  out.unsupported_decree = await A('ADMIN_DECREE', ['SET_SURVEY_URL', ['x']]);
  // A second admin by decree, seen in /api/config.
  out.add_admin = await A('ADMIN_DECREE', ['ADD_ADMIN_KEY', [userPub]]);
  const cfg = await (await fetch(`${base}/api/config`)).text();
  out.config_admins = JSON.parse(cfg.slice(27, -5)).adminKeys;
  out.user_now_admin = val(await user.signed('ADMIN', ['ACTIVE_PADS']));
  out.rm_admin = await A('ADMIN_DECREE', ['RM_ADMIN_KEY', [userPub]]);
  out.user_again = val(await user.signed('ADMIN', ['ACTIVE_PADS']));
  // Archive and restore a document with history.
  const chan = randomHex(16);
  const n = user.network;
  const wc = await within(n.join(chan), 'JOIN');
  const hk = wc.members.find((m) => m.length === 16);
  await new Promise((res) => {
    const onMsg = (msg, sender) => { if (sender === hk && /"state":1/.test(msg)) { n.off('message', onMsg); res(); } };
    n.on('message', onMsg);
    n.sendto(hk, JSON.stringify(['GET_HISTORY', chan, { txid: 'h1', metadata: {} }]));
  });
  await within(wc.bcast('a message to keep'), 'MSG ack');
  out.archive = await A('ARCHIVE_DOCUMENT', { id: chan, reason: 'spam' });
  out.after_archive = (await admin.anon('IS_NEW_CHANNEL', chan))[2];
  out.restore = await A('RESTORE_ARCHIVED_DOCUMENT', chan);
  out.after_restore = (await admin.anon('IS_NEW_CHANNEL', chan))[2];
  out.restore_again = await A('RESTORE_ARCHIVED_DOCUMENT', chan);
  out.size_after_restore = (await admin.anon('GET_FILE_SIZE', chan))[2];
  // Archive and restore a login block.
  const bytes = Nacl.randomBytes(100);
  await command(userKeys, { command: 'WRITE_BLOCK', content: {
    publicKey: userPub, signature: NaclUtil.encodeBase64(Nacl.sign.detached(Nacl.hash(bytes), userKeys.secretKey)),
    ciphertext: NaclUtil.encodeBase64(bytes) } });
  const safe = userPub.replace(/\//g, '-');
  const blockUrl = `${base}/block/${safe.slice(0, 2)}/${safe}`;
  out.archive_block = await A('ARCHIVE_BLOCK', { key: userPub, reason: 'abuse' });
  const b1 = await fetch(blockUrl);
  out.block_archived = { status: b1.status, json: await b1.json() };
  out.restore_block = await A('RESTORE_ARCHIVED_BLOCK', { key: userPub });
  const b2 = await fetch(blockUrl);
  out.block_restored = { status: b2.status, same: Buffer.compare(Buffer.from(await b2.arrayBuffer()), Buffer.from(bytes)) === 0 };
  admin.close();
  user.close();
  return out;
};

// Not a test: how long an upload of UPLOAD_MB MiB takes, chunk by chunk as upload.js sends
// it (encryption by CryptPad's FileCrypto included, as in the browser).
scenarios.upload_timing = async () => {
  const keys = Nacl.sign.keyPair();
  const rpc = await rpcSession(keys);
  const plain = Nacl.randomBytes(Number(process.env.UPLOAD_MB || 10) * 1024 * 1024);
  const t0 = process.hrtime.bigint();
  const up = await upload(rpc, keys, plain, { name: 'big', type: 'application/octet-stream' });
  const t1 = process.hrtime.bigint();
  const got = await fetchBlob(up.id);
  const t2 = process.hrtime.bigint();
  rpc.close();
  return { bytes: up.sent, chunks: up.chunks.length, complete: up.complete.slice(2), upload_ms: Number(t1 - t0) / 1e6,
           download_ms: Number(t2 - t1) / 1e6, download_ok: got.bytes && got.bytes.length === up.sent };
};

(async () => {
  const fn = scenarios[scenario];
  if (!fn) fail(`unknown scenario ${scenario}`);
  const result = await fn();
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
})().catch(fail);
