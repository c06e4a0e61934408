#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (one JSON object per run) into the results markdown.

usage: report.py MACHINE_TXT RESULTS_JSONL > results.md
Each figure is shown as min / median / max over the runs; the ratio column divides hearth's
median by the peer's (for "lower is better" rows a ratio below 1 favours hearth).
"""
import json
import statistics
import sys

SERVERS = ["hearth", "prosody", "ejabberd", "synapse", "cryptpad"]

# bench -> (title, description, rows); row = (label, key, unit, better)
WORKLOADS = {
    "login": ("Logins per second (STARTTLS + SCRAM-SHA-1 + bind, then close)",
              "{logins} fresh logins, 50 in flight; latency from TCP connect to the bind result.",
              [("logins/s", "per_s", "", "higher"),
               ("latency p50", "p50_ms", "ms", "lower"),
               ("latency p99", "p99_ms", "ms", "lower"),
               ("server CPU per login", "server_cpu_us_per_op", "µs", "lower"),
               ("server CPU (total)", "server_cpu_s", "s", "lower"),
               ("client CPU (total)", "client_cpu_s", "s", "lower"),
               ("failed logins", "failed", "", "lower")]),
    "login256": ("Logins per second with SCRAM-SHA-256 (the issue's workload)",
                 "Same as above with SCRAM-SHA-256; a server that does not offer it shows n/a.",
                 [("logins/s", "per_s", "", "higher"),
                  ("latency p50", "p50_ms", "ms", "lower"),
                  ("latency p99", "p99_ms", "ms", "lower"),
                  ("server CPU per login", "server_cpu_us_per_op", "µs", "lower"),
                  ("client CPU (total)", "client_cpu_s", "s", "lower"),
                  ("failed logins", "failed", "", "lower")]),
    "messages": ("1:1 messages, burst",
                 "{clients} connected TLS clients; {messages} chat messages queued at once, client i to "
                 "client i+1; latency from the sender's timestamp in the body to delivery.",
                 [("messages/s", "per_s", "", "higher"),
                  ("latency p50", "p50_ms", "ms", "lower"),
                  ("latency p99", "p99_ms", "ms", "lower"),
                  ("server CPU per message", "server_cpu_us_per_op", "µs", "lower"),
                  ("server CPU (total)", "server_cpu_s", "s", "lower"),
                  ("client CPU (total)", "client_cpu_s", "s", "lower"),
                  ("messages lost", "lost", "", "lower")]),
    "paced": ("1:1 messages, paced at {paced_rate} msg/s",
              "{clients} connected TLS clients; {paced_messages} messages sent evenly at {paced_rate}/s.",
              [("delivered/s", "per_s", "", "higher"),
               ("latency p50", "p50_ms", "ms", "lower"),
               ("latency p99", "p99_ms", "ms", "lower"),
               ("server CPU per message", "server_cpu_us_per_op", "µs", "lower"),
               ("client CPU (total)", "client_cpu_s", "s", "lower"),
               ("messages lost", "lost", "", "lower")]),
    "muc": ("Group chat fan-out (XEP-0045), one room of {muc_clients}",
            "{muc_clients} TLS clients join one room at conference.bench.local (no join history); "
            "{muc_senders} of them post {muc_messages} groupchat messages at once, so every message is "
            "delivered to all {muc_clients} occupants (the sender included). Deliveries/s from the first "
            "send to the last delivery; latency at the receivers from the sender's timestamp in the body "
            "(under a burst it is mostly queueing). Server CPU per delivery and per posted message.",
            [("deliveries/s", "per_s", "", "higher"),
             ("posted messages/s", "sent_per_s", "", "higher"),
             ("latency p50", "p50_ms", "ms", "lower"),
             ("latency p99", "p99_ms", "ms", "lower"),
             ("server CPU per delivery", "server_cpu_us_per_op", "µs", "lower"),
             ("server CPU per posted message", "server_cpu_us_per_sent", "µs", "lower"),
             ("client CPU (total)", "client_cpu_s", "s", "lower"),
             ("time for all to join", "join_s", "s", "lower"),
             ("server RSS with the room full", "rss_kib_joined", "MiB", "lower", 1 / 1024),
             ("deliveries lost", "lost", "", "lower")]),
    "matrix1": ("Matrix: sends with 1 sender",
                "One room; each sender PUTs m.room.message events closed-loop ({matrix_messages} per level); a "
                "receiver long-polls /sync. Send-to-sync latency: from the start of the PUT to the event's "
                "arrival in the receiver's /sync. Load generator: `bench/matrixload` (C++, one Asio thread, "
                "Beast HTTP/1.1 keep-alive). Server RSS after the level.",
                None),
    "matrix16": ("Matrix: sends with 16 concurrent senders", "As above, 16 senders.", None),
    "matrix64": ("Matrix: sends with 64 concurrent senders", "As above, 64 senders.", None),
    "cryptpad": ("CryptPad protocol: signed-message fan-out",
                 "{cp_channels} channels × {cp_clients} clients (netflux over a websocket, as chainpad-netflux speaks it); each "
                 "channel has an ed25519 validateKey, so the server verifies every message's signature; "
                 "every client sends {cp_messages} signed messages closed-loop (next after the ACK) and every "
                 "other client of the channel receives each one. Messages are signed before the timed phase. "
                 "Load generator: `bench/cpload` (C++, one Asio thread, Boost.Beast websocket, libsodium signatures).",
                 [("signed messages/s (ACKed)", "per_s", "", "higher"),
                  ("deliveries/s", "deliveries_per_s", "", "higher"),
                  ("ACK latency p50", "p50_ms", "ms", "lower"),
                  ("ACK latency p99", "p99_ms", "ms", "lower"),
                  ("delivery latency p50", "delivery_p50_ms", "ms", "lower"),
                  ("delivery latency p99", "delivery_p99_ms", "ms", "lower"),
                  ("server CPU per message", "server_cpu_us_per_op", "µs", "lower"),
                  ("client CPU (total)", "client_cpu_s", "s", "lower"),
                  ("server RSS idle", "rss_kib_idle", "MiB", "lower", 1 / 1024),
                  ("server RSS with clients connected", "rss_kib_ready", "MiB", "lower", 1 / 1024),
                  ("server RSS after", "rss_kib_after", "MiB", "lower", 1 / 1024),
                  ("errors", "errors", "", "lower")]),
    "idle": ("Resident memory per idle authenticated TLS connection",
             "Connections logged in (STARTTLS, SCRAM-SHA-1, bind, initial presence) from 8 source "
             "addresses and held idle; (server RSS with N connections − RSS before any) / N.",
             None),
}


MATRIX_ROWS = [("sends/s", "per_s", "", "higher"),
               ("send latency p50", "p50_ms", "ms", "lower"),
               ("send latency p99", "p99_ms", "ms", "lower"),
               ("send-to-sync p50", "sync_p50_ms", "ms", "lower"),
               ("send-to-sync p99", "sync_p99_ms", "ms", "lower"),
               ("server CPU per send", "server_cpu_us_per_op", "µs", "lower"),
               ("client CPU (total)", "client_cpu_s", "s", "lower"),
               ("server RSS idle (fresh start)", "rss_kib_idle", "MiB", "lower", 1 / 1024),
               ("server RSS after this level", "rss_kib_after", "MiB", "lower", 1 / 1024),
               ("events not seen by /sync", "not_synced", "", "lower"),
               ("errors", "errors", "", "lower")]

# Reference figures from ../shared/bench/README.md (same kind of machine, not this run).
ANCHORS = {
    "matrix1": "Anchor (not measured in this run): Synapse 1.160 (SQLite) 34 sends/s sequential, 145 MB RSS idle.",
    "matrix16": "Anchor (not measured in this run): Synapse 1.160 (SQLite) 79 sends/s with 16 concurrent senders.",
    "matrix64": "Anchor (not measured in this run): none published for 64 senders (Synapse on Postgres fell to 32 sends/s at 32).",
    "cryptpad": "Anchor (not measured in this run): CryptPad 2026.2.2, 200 clients in 20 channels of 10, 344-byte "
                "signed messages, closed-loop: 97 msg/s, p50 1968 ms / p99 4102 ms, 10.8 ms server CPU per message, "
                "~310 MB RSS idle (5 processes), ~560 MB under load.",
    "messages": "Anchor: Prosody ~2,200 msgs/s burst (../shared/bench/xmpp.md).",
    "login": "Anchor: Prosody ~74 logins/s (../shared/bench/xmpp.md, SCRAM with its default iterations).",
}


def fmt_num(v):
    if v is None:
        return "–"
    if float(v).is_integer() and abs(v) < 1e6:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def triple(vals):
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt_num(vals[0])
    return f"{fmt_num(min(vals))} / **{fmt_num(statistics.median(vals))}** / {fmt_num(max(vals))}"


def main():
    machine = {}
    skipped = []
    with open(sys.argv[1]) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            if k == "skipped":
                skipped.append(v)
            else:
                machine[k] = v
    results = []
    with open(sys.argv[2]) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    servers = [s for s in SERVERS if any(r.get("server") == s for r in results)]
    peers = [s for s in servers if s != "hearth"]

    def valid(r):
        # A run counts when it produced its main figure (a server that does not offer the
        # mechanism, or that did not start, has none).
        if r.get("bench") == "idle":
            return any(k.startswith("per_conn_kib_") for k in r)
        if r.get("bench", "").startswith("matrix") or r.get("bench") == "cryptpad":
            return "per_s" in r and r.get("sent", 0) > 0
        if r.get("bench") == "idle":
            return any(k.startswith("per_conn_kib_") for k in r)
        if "received" in r:  # message workloads: a run that delivered nothing has no figure
            return "per_s" in r and r["received"] > 0
        return "per_s" in r and (r.get("ok", 1) > 0 or r.get("received", 0) > 0)

    out = []
    quick = machine.get("quick") == "1"
    out.append(f"# hearth side by side: Prosody, ejabberd, Synapse, CryptPad — {machine.get('date', '')}".rstrip(" —"))
    out.append("")
    if quick:
        out.append("**Smoke run (`--quick`): one run each, small counts — not for comparison.**")
        out.append("")
    out.append("Produced by `bench/run.sh` (see `bench/README.md`). Each figure is min / **median** / max "
               f"over {machine.get('runs', '?')} run(s), each run on a freshly started server, runs "
               "alternating between servers. The ratio is hearth's median ÷ the peer's median "
               "(↑ higher is better, ↓ lower is better).")
    out.append("")
    out.append("## Machine")
    out.append("")
    out.append(f"- CPU: {machine.get('cpu', '?')}, {machine.get('nproc', '?')} cores (load generator and server share them)")
    out.append(f"- Kernel: {machine.get('kernel', '?')}; memory: {machine.get('mem', '?')}; load average at the end: {machine.get('load', '?')}")
    out.append(f"- hearth {machine.get('hearth', '?')} (Release, log level warn); Prosody {machine.get('prosody', '-')}; "
               f"ejabberd {machine.get('ejabberd', '-')} (Debian 12 packages, throttles off)")
    out.append(f"- Synapse: {machine.get('synapse', '-')}; CryptPad: {machine.get('cryptpad', '-')}")
    out.append(f"- Workloads took {machine.get('duration', '?')} s in all")
    for s in skipped:
        out.append(f"- Skipped: {s}")
    out.append("")

    for bench, (title, desc, rows) in WORKLOADS.items():
        runs = [r for r in results if r.get("bench") == bench]
        if not runs:
            continue
        out.append("## " + title.format(**machine))
        out.append("")
        out.append(desc.format(**machine))
        mechs = sorted({r.get("mech") for r in runs if valid(r) and r.get("mech")})
        if mechs and bench != "login256":
            out.append(f"SASL mechanism used: {', '.join(mechs)}.")
        out.append("")
        wservers = [s for s in servers if any(r.get("server") == s for r in runs)]
        wpeers = [s for s in wservers if s != "hearth"]
        by = {s: [r for r in runs if r.get("server") == s and valid(r)] for s in wservers}
        if bench.startswith("matrix"):
            rows = MATRIX_ROWS
        if rows is None:
            rows = [("idle RSS (before connections)", "idle_rss_kib", "MiB", "lower", 1 / 1024)]
            targets = sorted({int(k.rsplit("_", 1)[1]) for r in runs for k in r if k.startswith("per_conn_kib_")})
            for t in targets:
                rows.append((f"RSS with {t:,} connections", f"rss_kib_{t}", "MiB", "lower", 1 / 1024))
            for t in targets:
                rows.append((f"**per connection at {t:,}**", f"per_conn_kib_{t}", "KiB", "lower", 1))
            rows.append(("logins/s while connecting", "login_per_s", "", "higher", 1))
            rows.append(("server CPU per login", "server_cpu_us_per_op", "µs", "lower", 1))
            rows.append(("client CPU (total)", "client_cpu_s", "s", "lower", 1))
            rows.append(("connections dropped", "disconnected", "", "lower", 1))
        else:
            rows = [r if len(r) == 5 else (*r, 1) for r in rows]
        head = "| | " + " | ".join(wservers) + "".join(f" | hearth/{p}" for p in wpeers) + " |"
        out.append(head)
        out.append("|---" * (1 + len(wservers) + len(wpeers)) + "|")
        for label, key, unit, better, scale in rows:
            cells = []
            medians = {}
            for s in wservers:
                vals = [r[key] * scale for r in by[s] if isinstance(r.get(key), (int, float))]
                cells.append(triple(vals))
                if vals:
                    medians[s] = statistics.median(vals)
            ratios = []
            for p in wpeers:
                h, v = medians.get("hearth"), medians.get(p)
                ratios.append(f"{h / v:.2f}" if h is not None and v not in (None, 0) else "–")
            arrow = "↑" if better == "higher" else "↓"
            name = f"{label} ({unit}) {arrow}" if unit else f"{label} {arrow}"
            out.append(f"| {name} | " + " | ".join(cells) + "".join(f" | {x}" for x in ratios) + " |")
        errs = []
        for r in runs:
            e = r.get("errors")
            if e:
                errs.append(f"{r.get('server')} run {r.get('run')}: {e}")
        if errs:
            out.append("")
            out.append("Errors: " + "; ".join(errs[:12]) + (" …" if len(errs) > 12 else ""))
        if bench in ANCHORS:
            out.append("")
            out.append(ANCHORS[bench])
        out.append("")

    out.append("## Backup / restore throughput")
    out.append("")
    out.append("Placeholder: measured by another part of issue 8 (not in this run).")
    out.append("")
    out.append("## Settings")
    out.append("")
    out.append(f"- Accounts u1..u{machine.get('users', '?')} on `bench.local`, SCRAM with 4096 PBKDF2 iterations on every "
               "server; one P-256 certificate shared by all three; TLS via STARTTLS on the client port.")
    out.append("- hearth: generated config (limits relaxed: max_connections 19000, per-IP 19000, "
               "xmpp.read_bytes_per_second 1 GiB/s); hearth always writes each message to its archive "
               "(XEP-0313, SQLite) before delivering it.")
    if machine.get("peer_archive") == "1":
        out.append("- Peers archive too: Prosody mod_mam (default_archive_policy = true, internal storage), "
                   "ejabberd mod_mam (default: always, mnesia).")
    else:
        out.append("- **Peers without an archive** (`--no-peer-archive`): hearth does more work per message than they do.")
    out.append("- Prosody: Debian module set minus mod_limits, c2s_require_encryption; default GC.")
    out.append("- ejabberd: Debian module set, c2s_shaper none, listener backlog 128; accounts created in-band (XEP-0077).")
    out.append("- Load generator: `bench/xmppload` (C++, one epoll thread, OpenSSL); it caches the SCRAM salted "
               "password per salt, so its CPU goes to TLS and XMPP. Server CPU = utime+stime of the server "
               "process from /proc during the measured phase.")
    out.append("- Matrix and CryptPad: hearth's HTTP listener on 127.0.0.1 (plain HTTP, as the anchors' peers); "
               "Matrix users registered with `hearthctl invite create` tokens; server CPU and RSS from /proc of hearthd.")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
