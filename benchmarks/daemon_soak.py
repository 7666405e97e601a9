"""Soak the daemon: fast schedules against local feeds for N minutes; sample its CPU% and RSS.

    .venv/bin/python benchmarks/daemon_soak.py --minutes 10               # busy: 10 sources every 5 s
    .venv/bin/python benchmarks/daemon_soak.py --minutes 3 --every 1h     # idle: one run each, then nothing

Runs `python scheduler.py` exactly as a deployment would, against a 127.0.0.1 replay server (feeds
grow by a few entries now and then and answer 304 to conditional GETs otherwise). Prints CPU%
(mean / p95 / max over the sampling interval), RSS (start / end / max) and what the daemon did,
read back from /metrics. Uses psutil when installed, else /proc (Linux). Not a test: no asserts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import Store  # noqa: E402
from tests.support.server import ReplayServer, Reply, Seen  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Feed:
    """Publishes `per_minute` entries a minute; a matching ETag gets 304 like a real feed server."""

    def __init__(self, name: str, per_minute: float) -> None:
        self.name, self.per_minute, self.started = name, per_minute, time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            count = 3 + int((time.monotonic() - self.started) / 60 * self.per_minute)
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        items = "".join(f"<item><guid>{self.name}-{i}</guid><title>acme notes {i}</title>"
                        f"<description>acme sync post {i}</description><pubDate>{stamp}</pubDate></item>"
                        for i in range(max(1, count - 50), count + 1))
        body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'
        return Reply(body=body.encode(), content_type="application/rss+xml", etag=f'"{self.name}-{count}"')


def sample_proc(pid: int) -> tuple[float, int]:
    """(cumulative CPU seconds, RSS bytes) of one process."""
    try:
        import psutil

        proc = psutil.Process(pid)
        cpu = proc.cpu_times()
        return cpu.user + cpu.system, int(proc.memory_info().rss)
    except ImportError:
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15 of stat)
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu_s, rss


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line.rsplit(" ", 1)[1] != "NaN")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--every", default="5s", help="schedule of every source (default 5s)")
    parser.add_argument("--per-minute", type=float, default=2.0, help="new entries per feed per minute")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds after start left out of the RSS growth figure (model load, caches)")
    parser.add_argument("--extra-config", default="",
                        help='TOML appended to the config, e.g. "[alerts]\\nenabled = false"')
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    server = ReplayServer().start()
    work = Path(tempfile.mkdtemp(prefix="listener-soak-"))
    sources = ""
    for n in range(args.sources):
        server.routes[f"/feed/{n}"] = Feed(f"f{n}", args.per_minute)
        sources += (f'[[source]]\nname = "feed{n}"\nkind = "rss"\nurl = "{server.url}/feed/{n}"\n'
                    f'every = "{args.every}"\nrate = 100\n\n')
    cfg = work / "listener.toml"
    cfg.write_text(f'[storage]\ndatabase = "listener.db"\n[daemon]\ndigest_every = "1h"\nhttp_retries = 0\n\n'
                   f'[[watch]]\nname = "acme"\nterms = ["acme"]\n\n{sources}\n'
                   + args.extra_config.replace("\\n", "\n") + "\n", encoding="utf-8")
    Store.open(work / "listener.db").close()
    port = free_port()
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scheduler.py"), "-c", str(cfg), "--health-port", str(port),
                             "--log-format", "json", "--log-level", "warning"], cwd=work, stdout=log, stderr=log)
    samples: list[tuple[float, float, int]] = []  # (wall, cpu seconds, rss)
    end = time.monotonic() + args.minutes * 60
    try:
        time.sleep(3)  # skip start-up (imports, migrations check) in the steady-state figures
        while time.monotonic() < end and proc.poll() is None:
            cpu, rss = sample_proc(proc.pid)
            samples.append((time.monotonic(), cpu, rss))
            time.sleep(args.sample)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        server.stop()
    cpu_pct = [100 * (c2 - c1) / (t2 - t1) for (t1, c1, _), (t2, c2, _) in itertools.pairwise(samples)]
    rss_mb = [r / 2**20 for _, _, r in samples]
    quarter = max(1, len(rss_mb) // 4)
    t0 = samples[0][0] if samples else 0.0
    steady = [(t, r / 2**20) for t, _, r in samples if t - t0 >= args.warmup]
    growth = (60 * (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
              if len(steady) >= 2 and steady[-1][0] > steady[0][0] else None)
    summary = {
        "minutes": args.minutes, "sources": args.sources, "every": args.every, "samples": len(samples),
        "cpu_percent": {"mean": round(statistics.fmean(cpu_pct), 2),
                        "p95": round(sorted(cpu_pct)[int(0.95 * (len(cpu_pct) - 1))], 2),
                        "max": round(max(cpu_pct), 2)} if cpu_pct else None,
        "rss_mb": {"start": round(rss_mb[0], 1), "end": round(rss_mb[-1], 1), "max": round(max(rss_mb), 1),
                   "first_quarter_mean": round(statistics.fmean(rss_mb[:quarter]), 1),
                   "last_quarter_mean": round(statistics.fmean(rss_mb[-quarter:]), 1),
                   "after_warmup": round(steady[0][1], 1) if steady else None,
                   "growth_mb_per_min_after_warmup": round(growth, 3) if growth is not None else None,
                   } if rss_mb else None,
        "fetches": int(metric_sum(metrics, "listener_fetch_total")),
        "fetch_errors": int(metric_sum(metrics, "listener_fetch_errors_total")),
        "mentions_new": int(metric_sum(metrics, "listener_mentions_new_total")),
        "requests_served": len(server.requests),
        "exit_code": code,
        "sampler": "psutil" if _has_psutil() else "/proc",
        "workdir": str(work),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"daemon soak: {args.sources} sources every {args.every}, {args.minutes:g} min, {len(samples)} samples "
          f"({summary['sampler']})")
    if summary["cpu_percent"]:
        c = summary["cpu_percent"]
        print(f"  CPU %   mean {c['mean']}  p95 {c['p95']}  max {c['max']}")
    if summary["rss_mb"]:
        r = summary["rss_mb"]
        print(f"  RSS MB  start {r['start']}  end {r['end']}  max {r['max']}  "
              f"(first-quarter mean {r['first_quarter_mean']}, last-quarter mean {r['last_quarter_mean']})")
        print(f"  RSS after {args.warmup:g}s warm-up {r['after_warmup']} MB, then "
              f"{r['growth_mb_per_min_after_warmup']} MB/min")
    print(f"  fetches {summary['fetches']} ({summary['fetch_errors']} failed), new mentions {summary['mentions_new']}, "
          f"HTTP requests {summary['requests_served']}, exit code {code}, logs in {work}")


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
