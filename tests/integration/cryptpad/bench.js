// Rough throughput check (not a test): N channels x M clients, signed messages sent
// closed-loop (next after the ACK). node bench.js <url> [channels] [clients] [messages]
'use strict';
const WebSocket = require('ws');
const Netflux = require('netflux-websocket');
const CPNF = require('chainpad-netflux');
const Nacl = require('tweetnacl/nacl-fast');
const U = require('tweetnacl-util');
const [url, C = 4, M = 5, N = 100] = process.argv.slice(2).map((x, i) => (i ? Number(x) : x));
const keys = Nacl.sign.keyPair();
const validateKey = U.encodeBase64(keys.publicKey);
const crypto = process.env.PLAIN ? { encrypt: (m) => m, decrypt: (m) => m } : { encrypt: (m) => U.encodeBase64(Nacl.sign(U.decodeUTF8(m), keys.secretKey)), decrypt: (m) => m };
(async () => {
  const pads = [];
  for (let c = 0; c < C; c++) {
    const chan = Buffer.from(Nacl.randomBytes(16)).toString('hex');
    for (let m = 0; m < M; m++) {
      const net = await Netflux.connect(url, (u) => new WebSocket(u));
      pads.push(await new Promise((res) => {
        const p = {};
        CPNF.start({ network: net, channel: chan, noChainPad: true, crypto, validateKey: process.env.PLAIN ? undefined : validateKey,
                     onConnect: (wc, send) => { p.send = send; }, onReady: () => res(p) });
      }));
    }
  }
  const lat = [];
  const t0 = Date.now();
  await Promise.all(pads.map(async (p, k) => {
    for (let i = 0; i < N; i++) {
      const s = process.hrtime.bigint();
      await new Promise((res, rej) => p.send(`${k}-${i}-` + 'x'.repeat(120), (e) => (e ? rej(e) : res())));
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
  }));
  const secs = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  console.log(JSON.stringify({ messages: lat.length, secs, per_sec: Math.round(lat.length / secs),
    p50_ms: lat[Math.floor(lat.length / 2)].toFixed(1), p99_ms: lat[Math.floor(lat.length * 0.99)].toFixed(1) }));
  process.exit(0);
})();
