"""Helpers shared by the incident-catalog tests: small filesystems, configuration and the
switch that runs a test with its defence off.

HEARTH_DEFENCE_OFF=1 in the environment asks each test to configure hearthd without the
defence it proves (where a configuration switch exists), so that the test can be seen to
fail: `HEARTH_DEFENCE_OFF=1 python3 -m unittest test_I02_disk_full_goes_read_only`.
"""
import contextlib
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Hearth, free_port, measure_memory_without_asan_quarantine, wait_until  # noqa: E402,F401

DEFENCE_OFF = os.environ.get("HEARTH_DEFENCE_OFF") == "1"


def with_section(h, section, text):
    """Adds keys to a [section] the harness already wrote (TOML forbids a second one)."""
    with open(h.config_path) as f:
        config = f.read()
    header = f"[{section}]\n"
    if header in config:
        config = config.replace(header, header + text, 1)
    else:
        config += header + text
    with open(h.config_path, "w") as f:
        f.write(config)


@contextlib.contextmanager
def small_filesystem(path, size="24m", inodes=None):
    """A size-limited tmpfs mounted at `path` for the duration of the block; unmounted
    even when the block fails. Skips the test when this machine cannot mount."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={size},mode=0700" + (f",nr_inodes={inodes}" if inodes else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise unittest.SkipTest(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


@contextlib.contextmanager
def read_only_bind(path):
    """`path` made read-only for everyone, root included, with a read-only bind mount of
    itself; restored when the block ends. Skips when the machine cannot mount."""
    r = subprocess.run(["mount", "--bind", path, path], capture_output=True, text=True)
    if r.returncode != 0:
        raise unittest.SkipTest(f"cannot bind-mount here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise unittest.SkipTest(f"cannot remount read-only here: {r.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def free_inodes(path):
    return os.statvfs(path).f_favail


def fill_until_free(path, filler, target_free):
    """Appends to `filler` until the filesystem holding it has about `target_free` bytes
    free (never below; a full tmpfs stops the write early, which is fine)."""
    need = free_bytes(path) - target_free
    if need <= 0:
        return
    chunk = b"\0" * (1 << 20)
    with open(filler, "ab") as f:
        try:
            while need > 0:
                n = min(need, len(chunk))
                f.write(chunk[:n])
                need -= n
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            pass


def metric(text, name, labels=""):
    """The value of one Prometheus sample in /metrics text, or None."""
    key = name + (("{" + labels + "}") if labels else "")
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None
