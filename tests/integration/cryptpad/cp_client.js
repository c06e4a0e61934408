// Drives hearth's CryptPad backend with CryptPad's own client libraries
// (netflux-websocket + chainpad-netflux). One scenario per invocation:
//   node cp_client.js <scenario> <websocket url> [args...]
// prints one JSON object with what the clients observed on stdout and exits 0, or prints
// the failure on stderr and exits 1. Every wait has a deadline; nothing sleeps.
'use strict';
const WebSocket = require('ws');
const Netflux = require('netflux-websocket');
const CPNF = require('chainpad-netflux');
const Nacl = require('tweetnacl/nacl-fast');
const NaclUtil = require('tweetnacl-util');

const DEADLINE_MS = 20000;
const [scenario, url, ...args] = process.argv.slice(2);

const fail = (why) => {
  process.stderr.write(`cp_client ${scenario}: ${why}\n`);
  process.exit(1);
};
setTimeout(() => fail('deadline reached'), DEADLINE_MS * 2).unref();

const within = (promise, what) => Promise.race([
  promise,
  new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), DEADLINE_MS).unref()),
]);

const connect = () => Netflux.connect(url, (u) => new WebSocket(u));

const plainCrypto = { encrypt: (m) => m, decrypt: (m) => m };
const signingCrypto = (signKey, validateKey) => ({
  encrypt: (m) => NaclUtil.encodeBase64(Nacl.sign(NaclUtil.decodeUTF8(m), signKey)),
  decrypt: (m) => {
    const opened = Nacl.sign.open(NaclUtil.decodeBase64(m), NaclUtil.decodeBase64(validateKey));
    if (!opened) throw new Error('bad signature in history');
    return NaclUtil.encodeUTF8(opened);
  },
});

// Joins `channel` with chainpad-netflux; resolves once the history is loaded.
function openPad(network, channel, opts = {}) {
  const pad = { received: [], history: [], send: null, metadata: null, errors: [], ready: false };
  let onReadyResolve;
  const ready = new Promise((res) => { onReadyResolve = res; });
  pad.instance = CPNF.start(Object.assign({
    network,
    channel,
    noChainPad: true,
    crypto: plainCrypto,
    onConnect: (wc, send) => { pad.send = (m) => new Promise((res, rej) => send(m, (err, hash) => err ? rej(err) : res(hash))); pad.wc = wc; },
    onMessage: (msg, peer) => { (pad.ready ? pad.received : pad.history).push(msg); },
    onReady: (info) => { pad.ready = true; pad.metadata = info.metadata; onReadyResolve(); },
    onChannelError: (e) => pad.errors.push(e),
  }, opts));
  pad.ready_p = ready;
  return within(ready, `history of ${channel}`).then(() => pad);
}

const waitFor = (pred, what) => within(new Promise((res) => {
  const tick = () => (pred() ? res() : setTimeout(tick, 10));
  tick();
}), what);

const randomHex = (bytes) => Buffer.from(Nacl.randomBytes(bytes)).toString('hex');

const scenarios = {
  // Two clients exchange messages; a third joins later and gets the history.
  async exchange() {
    const channel = args[0] || randomHex(16);
    const [na, nb, nc] = [await connect(), await connect(), await connect()];
    const a = await openPad(na, channel);
    const b = await openPad(nb, channel);
    await a.send('hello from a');
    await b.send('hello from b');
    await a.send('second from a');
    await waitFor(() => b.received.length >= 2 && a.received.length >= 1, 'live messages');
    const c = await openPad(nc, channel);
    const members = a.wc.members.slice();
    [na, nb, nc].forEach((n) => n.disconnect());
    return { channel, a_received: a.received, b_received: b.received, c_history: c.history,
             members, hk: members.filter((m) => m.length === 16) };
  },

  // Reads the history of a channel (after a restart).
  async history() {
    const n = await connect();
    const p = await openPad(n, args[0]);
    n.disconnect();
    return { history: p.history, errors: p.errors };
  },

  // A signed channel: good signatures are stored, a bad one is refused.
  async signed() {
    const channel = randomHex(16);
    const keys = Nacl.sign.keyPair();
    const other = Nacl.sign.keyPair();
    const validateKey = NaclUtil.encodeBase64(keys.publicKey);
    const [na, nb] = [await connect(), await connect()];
    const a = await openPad(na, channel, { crypto: signingCrypto(keys.secretKey, validateKey), validateKey });
    await a.send('signed one');
    await a.send('signed two');
    const forger = await openPad(nb, channel, { crypto: signingCrypto(other.secretKey, validateKey), validateKey });
    let rejected = null;
    try { await forger.send('forged'); } catch (e) { rejected = e; }
    const n3 = await connect();
    const c = await openPad(n3, channel, { crypto: signingCrypto(keys.secretKey, validateKey), validateKey });
    [na, nb, n3].forEach((n) => n.disconnect());
    return { channel, validateKey, rejected: rejected !== null, forger_history: forger.history,
             later_history: c.history, metadata: c.metadata };
  },

  // An ephemeral (34 hex) channel: relayed, never stored.
  async ephemeral() {
    const channel = randomHex(17);
    const [na, nb] = [await connect(), await connect()];
    const wa = await within(na.join(channel), 'join a');
    const wb = await within(nb.join(channel), 'join b');
    const got = [];
    wb.on('message', (m) => got.push(m));
    await within(wa.bcast('cursor at 12'), 'ack');
    await waitFor(() => got.length === 1, 'relayed ephemeral message');
    na.disconnect(); nb.disconnect();
    const nc = await connect();
    const c = await openPad(nc, channel);
    nc.disconnect();
    return { channel, relayed: got, later_history: c.history };
  },

  // Signed RPC: cookies, signatures, the pin family, limits, SET_METADATA + allow lists.
  async rpc() {
    const network = await connect();
    const keys = Nacl.sign.keyPair();
    const pub = NaclUtil.encodeBase64(keys.publicKey);
    const channel = randomHex(16);
    // Create an owned channel through chainpad-netflux (metadata on first GET_HISTORY).
    const pad = await openPad(network, channel, { owners: [pub] });
    const hk = network.historyKeeper;
    let counter = 0;
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
    const sign = (secret, data) => NaclUtil.encodeBase64(Nacl.sign.detached(NaclUtil.decodeUTF8(JSON.stringify(data)), secret));
    let cookie = null;
    const signed = async (cmd, arg, secret = keys.secretKey) => {
      const data = [cookie, cmd, arg];
      const reply = await call([sign(secret, data), pub, cookie, cmd, arg]);
      if (reply[1] !== 'ERROR') cookie = reply[1];
      return reply;
    };
    const other_keys = Nacl.sign.keyPair();
    const hashOf = (list) => NaclUtil.encodeBase64(Nacl.hash(NaclUtil.decodeUTF8(JSON.stringify(Array.from(new Set(list)).sort()))));
    const out = {};
    cookie = '1|2|3';
    out.no_cookie = (await signed('PIN', [channel]))[2];
    cookie = null;
    const c = await signed('COOKIE', '');
    if (c[1] === 'ERROR') throw new Error(`COOKIE failed: ${c[2]}`);
    out.bad_signature = (await signed('GET_HASH', undefined, Nacl.sign.keyPair().secretKey))[2];
    const other = randomHex(16);
    out.pinned = [channel, other];
    out.hash_after_pin = (await signed('PIN', out.pinned))[2];
    out.expected_hash = hashOf(out.pinned);
    out.pins = (await signed('GET_PIN_LIST', undefined)).slice(2)[0];
    out.total_size = (await signed('GET_TOTAL_SIZE', undefined))[2];
    out.channel_size = (await call(['GET_FILE_SIZE', channel]))[2];
    // Over the quota (the test server allows 100 000 bytes): PIN is refused.
    const big = randomHex(16);
    const bigPad = await openPad(network, big);
    await bigPad.send('b'.repeat(60000));
    await bigPad.send('c'.repeat(60000));
    out.over_limit = (await signed('PIN', [big]))[2];
    out.limit = (await signed('GET_LIMIT', undefined)).slice(2);
    out.hash_after_reset = (await signed('RESET', [other]))[2];
    out.expected_reset_hash = hashOf([other]);
    const md = await signed('SET_METADATA', { channel, command: 'RESTRICT_ACCESS', value: [true] });
    if (md[1] === 'ERROR') throw new Error(`SET_METADATA failed: ${md[2]}`);
    const stranger = await connect();
    try {
      await within(stranger.join(channel), 'restricted join');
      out.restricted_join_error = null;
    } catch (e) {
      out.restricted_join_error = e.type;
    }
    pad.wc.leave('');
    await waitFor(() => !network.webChannels.some((w) => w.id === channel), 'leave');
    try {
      await within(network.join(channel), 'owner join');
      out.owner_can_join = true;
    } catch (e) {
      out.owner_can_join = false;
    }
    // An owned, open channel: trimmed, then removed by its owner.
    const doc = randomHex(16);
    const owned = await openPad(network, doc, { owners: [pub] });
    const watcherNet = await connect();
    const watcher = await openPad(watcherNet, doc);
    for (const m of ['message one', 'message two', 'message three']) await owned.send(m);
    out.trim = (await signed('TRIM_HISTORY', { channel: doc, hash: 'message two' }))[1] === 'ERROR' ? 'failed' : 'ok';
    const readerNet = await connect();
    out.after_trim = (await openPad(readerNet, doc)).history;
    // Someone else (with a valid session of their own) may not remove it.
    const otherPub = NaclUtil.encodeBase64(other_keys.publicKey);
    const otherCookie = (await call([sign(other_keys.secretKey, [null, 'COOKIE', '']), otherPub, null, 'COOKIE', '']))[1];
    const removeArg = { channel: doc, reason: 'mine now' };
    out.stranger_remove = (await call([sign(other_keys.secretKey, [otherCookie, 'REMOVE_OWNED_CHANNEL', removeArg]), otherPub,
                                       otherCookie, 'REMOVE_OWNED_CHANNEL', removeArg]))[2];
    out.remove = (await signed('REMOVE_OWNED_CHANNEL', { channel: doc, reason: 'gone' }))[1] === 'ERROR' ? 'failed' : 'ok';
    await waitFor(() => watcher.errors.length > 0, 'EDELETED notice');
    out.watcher_error = watcher.errors[0];
    const lateNet = await connect();
    const late = { errors: [] };
    CPNF.start({ network: lateNet, channel: doc, noChainPad: true, crypto: plainCrypto,
                 onChannelError: (e) => late.errors.push(e) });
    await waitFor(() => late.errors.length > 0, 'EDELETED on GET_HISTORY');
    out.late_error = late.errors[0];
    [network, stranger, watcherNet, readerNet, lateNet].forEach((n) => n.disconnect());
    return out;
  },
};

if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
scenarios[scenario]().then((result) => {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}, (err) => fail(err && err.stack ? err.stack : JSON.stringify(err)));
