#!/usr/bin/env python3
"""Markdown for bigroom.sh: machine details, the fill, and min/median/max over the rounds."""
import json
import statistics
import sys

machine = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
rows = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
fill = next((r for r in rows if r.get("phase") == "fill"), {})
meas = [r for r in rows if r.get("phase") == "measure"]


def mmm(room, key, fmt="{:,.1f}"):
    v = [r[key] for r in meas if r["room"] == room and key in r]
    if not v:
        return "n/a"
    f = lambda x: fmt.format(x)
    return f"{f(min(v))} / **{f(statistics.median(v))}** / {f(max(v))}"


print(f"# Matrix big room (issue 5), {machine.get('date')}\n")
print("`bench/bigroom/bigroom.sh` (bench/README.md, `bigroom`). Numbers are min / **median** / max over "
      f"{len({r['run'] for r in meas})} measurement rounds against the same server, after one fill.\n")
print("## Machine\n")
for k in ("nproc", "cpu", "kernel", "mem", "load", "hearth", "duration_s"):
    print(f"- {k}: {machine.get(k, '-')}")
print("\n## Fill\n")
print(f"- accounts: {fill.get('members', 0) + 2:,} with `hearthctl user add-many` in {machine.get('accounts_s')} s")
print(f"- {fill.get('members', 0) - 1:,} joins (`POST /join`, 32 at once): {fill.get('joins_s')} s, "
      f"{fill.get('joins_per_s')} joins/s, server CPU {fill.get('join_server_cpu_us'):,} µs per join")
print(f"- {fill.get('events', 0):,} messages (`PUT /send`, 32 at once): {fill.get('events_s')} s, "
      f"{fill.get('events_per_s')} events/s, server CPU {fill.get('event_server_cpu_us'):,} µs per event")
print(f"- whole fill {fill.get('fill_s')} s (server CPU {fill.get('fill_server_cpu_s')} s), errors {fill.get('errors')}; "
      f"after it: hearthd RSS {fill.get('rss_kib', 0) / 1024:,.0f} MiB, database {fill.get('db_bytes', 0) / 2**20:,.0f} MiB")
print("\n## Big room vs small room\n")
print(f"| operation | figure | big room ({fill.get('members', 0):,} members, {fill.get('events', 0):,} messages) | small room (2 members) |")
print("|---|---|---|---|")
for label, key, what in [
    ("send (200 sequential PUTs)", "send_p50_ms", "p50 ms"), ("", "send_p99_ms", "p99 ms"), ("", "send_cpu_us", "server CPU µs/op"),
    ("incremental /sync (1 new event)", "sync_incr_p50_ms", "p50 ms"), ("", "sync_incr_p99_ms", "p99 ms"),
    ("", "sync_incr_cpu_us", "server CPU µs/op"),
    ("initial /sync, lazy members, timeline 20", "sync_initial_p50_ms", "p50 ms"), ("", "sync_initial_max_ms", "max ms"),
    ("", "sync_initial_cpu_us", "server CPU µs/op"), ("", "sync_initial_bytes", "response bytes"),
    ("", "sync_initial_state_events", "state events in it"),
    ("/members", "members_p50_ms", "p50 ms"), ("", "members_cpu_us", "server CPU µs/op"), ("", "members_bytes", "response bytes"),
    ("/messages dir=b limit=50", "messages_p50_ms", "p50 ms"), ("", "messages_max_ms", "max ms"),
    ("", "messages_cpu_us", "server CPU µs/op"),
    ("hearthd", "rss_kib", "RSS KiB (end of round)"), ("", "db_bytes", "database bytes (db + wal)"),
]:
    fmt = "{:,.2f}" if key.endswith("_ms") else "{:,.0f}"
    print(f"| {label} | {what} | {mmm('big', key, fmt)} | {mmm('small', key, fmt)} |")
print("\nServer CPU per operation is the total utime+stime of hearthd over the phase divided by its "
      "operations (10 ms ticks; the small room's cheap reads round to 0 or 1 tick in a phase). "
      "Incremental syncs: the member takes a token, another member sends one event, then "
      "`/sync?since=<token>&timeout=0` is timed (50 per round).")
