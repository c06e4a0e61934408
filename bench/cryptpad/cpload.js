// cpload: CryptPad-protocol fan-out load (netflux websocket + chainpad-netflux, CryptPad's own
// client libraries). CH channels x CL clients per channel; each channel has an ed25519
// validateKey (metadata) so the server verifies every message's signature. Every client
// sends N signed messages closed-loop (the next after the server's ACK); every other
// client of the channel receives each one (fan-out).
//
//   node cpload.js <ws url> <channels> <clients per channel> <messages per client>
//                  [server pid] [max seconds]
//
// Messages are signed before the timed phase (tweetnacl signing is slow and would make this
// client the bottleneck); receivers do not re-verify (the server did). Prints one JSON
// object: signed messages/s (ACKed), deliveries/s, ACK latency p50/p99, delivery latency
// p50/p99, client CPU (this process) and server CPU/RSS from /proc/<pid>.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');
const Netflux = require('netflux-websocket');
const CPNF = require('chainpad-netflux');
const Nacl = require('tweetnacl/nacl-fast');
const U = require('tweetnacl-util');

const [url, CH = 20, CL = 10, N = 20, PID = 0, MAXS = 120] = process.argv.slice(2).map((x, i) => (i ? Number(x) : x));
if (!/^wss?:\/\/(127\.0\.0\.1|localhost)[:/]/.test(url)) { console.error('cpload: loopback only'); process.exit(2); }
setTimeout(() => { console.error('cpload: deadline'); finish(true); }, MAXS * 1000).unref();

// The server's CPU and RSS include its child processes (CryptPad runs workers).
const tree = () => {
  if (!PID) return [];
  const kids = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch (e) { /* gone */ }
  }
  const out = [PID];
  for (let i = 0; i < out.length; i++) for (const k of kids.get(out[i]) || []) out.push(k);
  return out;
};
const procCpu = () => tree().reduce((sum, p) => {
  try {
    const s = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return sum + (Number(f[11]) + Number(f[12])) / 100;
  } catch (e) { return sum; }
}, 0);
const procRss = () => tree().reduce((sum, p) => {
  try { return sum + Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))[1]); } catch (e) { return sum; }
}, 0);
const selfCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const pct = (v, q) => { if (!v.length) return 0; v.sort((a, b) => a - b); return v[Math.min(v.length - 1, Math.round(q * (v.length - 1)))]; };
const ident = { encrypt: (m) => m, decrypt: (m) => m };

const sentAt = new Map();  // signature prefix -> hrtime ms
const ackLat = [];
const delLat = [];
let acked = 0, delivered = 0, errors = 0, t0 = 0, tLast = 0, cpu0 = 0, scpu0 = 0, rssIdle = 0, rssReady = 0, done = false;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function finish(timedOut) {
  if (done) return;
  done = true;
  const wall = ((tLast || nowMs()) - t0) / 1000;
  const scpu = procCpu() - scpu0;
  console.log(JSON.stringify({
    workload: 'cryptpad', channels: CH, clients_per_channel: CL, clients: CH * CL, messages_per_client: N,
    sent: CH * CL * N, acked, delivered, expected_deliveries: acked * (CL - 1), errors, timed_out: !!timedOut,
    wall_s: +wall.toFixed(3), per_s: +(acked / wall).toFixed(1), deliveries_per_s: +(delivered / wall).toFixed(1),
    p50_ms: +pct(ackLat, 0.5).toFixed(2), p99_ms: +pct(ackLat, 0.99).toFixed(2),
    delivery_p50_ms: +pct(delLat, 0.5).toFixed(2), delivery_p99_ms: +pct(delLat, 0.99).toFixed(2),
    client_cpu_s: +(selfCpu() - cpu0).toFixed(3), server_cpu_s: +scpu.toFixed(3),
    server_cpu_us_per_op: acked ? +(scpu / acked * 1e6).toFixed(1) : 0,
    processes: tree().length, rss_kib_idle: rssIdle, rss_kib_ready: rssReady, rss_kib_after: procRss(),
  }));
  process.exit(timedOut ? 1 : 0);
}

(async () => {
  rssIdle = procRss();
  const pads = [];
  for (let c = 0; c < CH; c++) {
    const keys = Nacl.sign.keyPair();
    const validateKey = U.encodeBase64(keys.publicKey);
    const chan = Buffer.from(Nacl.randomBytes(16)).toString('hex');
    for (let m = 0; m < CL; m++) {
      const net = await Netflux.connect(url, (u) => new WebSocket(u));
      const p = { queue: [] };
      for (let i = 0; i < N; i++) p.queue.push(U.encodeBase64(Nacl.sign(U.decodeUTF8(`${c}-${m}-${i}-` + 'x'.repeat(120)), keys.secretKey)));
      await new Promise((res) => {
        CPNF.start({
          network: net, channel: chan, noChainPad: true, crypto: ident, validateKey,
          onConnect: (wc, send) => { p.send = send; },
          onMessage: (msg) => {
            if (!t0) return;
            const s = sentAt.get(msg.slice(0, 86));
            if (s !== undefined) { delivered++; tLast = nowMs(); delLat.push(tLast - s); }
          },
          onReady: () => res(),
        });
      });
      pads.push(p);
    }
  }
  rssReady = procRss();
  cpu0 = selfCpu(); scpu0 = procCpu(); t0 = nowMs();
  await Promise.all(pads.map(async (p) => {
    for (const m of p.queue) {
      const s = nowMs();
      sentAt.set(m.slice(0, 86), s);
      try {
        await new Promise((res, rej) => p.send(m, (e) => (e ? rej(e) : res())));
        acked++;
        const t = nowMs();
        ackLat.push(t - s);
        if (t > tLast) tLast = t;
      } catch (e) { errors++; }
    }
  }));
  // Let the last deliveries arrive (bounded).
  const end = nowMs() + 5000;
  while (delivered < acked * (CL - 1) && nowMs() < end) await new Promise((r) => setTimeout(r, 20));
  finish(false);
})().catch((e) => { console.error('cpload:', e && e.stack || e); process.exit(1); });
