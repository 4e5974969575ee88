"""Benchmark pulling studies over DICOMweb from a local Orthanc: medclip's source vs a plain sequential loop, as JSON.

Starts its own Orthanc (tests/pacs/orthanc.py: Debian `orthanc` + `orthanc-dicomweb`) on free ports in a temp
folder, writes N synthetic chest X-ray studies (tests/pacs/studies.py), uploads first N/5 of them and then all N,
and at each size runs, each as its own child process (so peak RSS is that tool's alone):

  (a) baseline: a plain sequential dicomweb-client loop: search_for_studies (all pages), then retrieve_study for
      each study, writing every instance to disk with pydicom;
  (b) medclip:  `python -m medclip.cli manifest dicomweb+http://127.0.0.1:PORT/dicom-web --out DIR` with the
      credentials in MEDCLIP_DICOMWEB_USER / MEDCLIP_DICOMWEB_PASSWORD (never on the command line).

studies/s is the number of studies on the server divided by the child's wall time (interpreter start and imports
included, the same for both). Peak RSS is the child's ru_maxrss (os.wait4) and, for tools that start workers, the
peak of the summed RSS of the child's process tree (polled from /proc every 20 ms). Memory is flat when the N run's
peak is close to the N/5 run's. Both tools read from the same warm server (files just uploaded, page cache warm).

    python scripts/bench_dicomweb.py                       # 500 studies, 2 images each, both tools
    python scripts/bench_dicomweb.py --studies 100 --skip-medclip
    python scripts/bench_dicomweb.py --latency-ms 10 --size 1024   # a PACS across a network, bigger images
    python scripts/bench_dicomweb.py --medclip-args "--no-verify"   # extra arguments for `medclip manifest`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the Orthanc launcher and the study writer live with the tests
    sys.path.insert(0, str(ROOT))

TARGET_SPEEDUP = 4.0
BENCH_USER = "bench"


def _baseline(url: str, out: Path) -> None:
    """(a), run as a child: the loop a user would write with dicomweb-client, nothing in parallel."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.auth = (os.environ["MEDCLIP_DICOMWEB_USER"], os.environ["MEDCLIP_DICOMWEB_PASSWORD"])
    client = DICOMwebClient(url, session=session)
    t0 = time.perf_counter()
    studies = client.search_for_studies(get_remaining=True)
    instances = 0
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        folder = out / uid
        folder.mkdir(parents=True, exist_ok=True)
        for ds in client.retrieve_study(uid):
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            instances += 1
    print(json.dumps({"studies": len(studies), "instances": instances, "inner_s": time.perf_counter() - t0}))


class LatencyProxy:
    """A TCP relay in front of Orthanc's HTTP port that holds each chunk the client sends for `latency_s`: about one
    network round trip per request, as against a PACS across the hospital network (a local Orthanc answers in
    well under a millisecond, which no real archive does). Runs its own event loop in a daemon thread."""

    def __init__(self, target_port: int, latency_s: float) -> None:
        import asyncio

        from tests.pacs.orthanc import free_port

        self.port, self._target, self._latency = free_port(), target_port, latency_s
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        import asyncio

        async def pump(reader, writer, delay: float) -> None:
            try:
                while chunk := await reader.read(1 << 16):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def relay(c_reader, c_writer) -> None:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self._target)
            await asyncio.gather(pump(c_reader, s_writer, self._latency), pump(s_reader, c_writer, 0.0))

        async def start() -> None:
            await asyncio.start_server(relay, "127.0.0.1", self.port)
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS (kB) of `pid` and all its descendants, from /proc; 0 when it is gone."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`, return wall time, exit code, ru_maxrss and the polled tree peak (MiB), and its stdout."""
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        peak = [0]
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "tree_peak_rss_mib": round(peak[0] / 1024, 1),
        "stdout": stdout.decode(errors="replace"),
    }


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.dcm") if p.is_file()) if folder.is_dir() else 0


def _measure(tool: str, server, url: str, n_studies: int, work: Path, medclip_args: list[str]) -> dict:
    user, password = server.auth
    env = dict(os.environ, MEDCLIP_DICOMWEB_USER=user, MEDCLIP_DICOMWEB_PASSWORD=password, PYTHONUNBUFFERED="1")
    env.setdefault("MEDCLIP_PATIENT_SALT", "bench-dicomweb-salt-not-a-secret")
    out = work / f"{tool}_{n_studies}"
    shutil.rmtree(out, ignore_errors=True)
    if tool == "baseline":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_baseline", url, str(out)]
    elif tool == "medclip":
        cmd = [sys.executable, "-m", "medclip.cli", "manifest", "dicomweb+" + url, "--out", str(out), *medclip_args]
    else:
        raise ValueError(f"unknown tool {tool!r}: baseline or medclip")
    res = _run_child(cmd, env, work / f"{tool}_{n_studies}.log")
    row = {"tool": tool, "studies_on_server": n_studies, **{k: v for k, v in res.items() if k != "stdout"}}
    row["studies_per_s"] = round(n_studies / res["wall_s"], 2)
    if tool == "baseline" and res["rc"] == 0:
        row.update(json.loads(res["stdout"].strip().splitlines()[-1]))
    row["dicom_files_written"] = _count_files(out)
    if res["rc"] != 0:
        row["stderr_tail"] = (work / f"{tool}_{n_studies}.log").read_text(errors="replace")[-1500:]
    return row


def _upload(server, files: list[Path], workers: int = 4) -> list[dict]:
    chunks = [files[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        return [r for part in pool.map(server.upload, chunks) for r in part]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=500, help="studies on the server for the big run (default 500)")
    ap.add_argument("--images", type=int, default=2, help="images per study (default 2)")
    ap.add_argument("--size", type=int, help="image side in pixels (default: 64..256 picked per study)")
    ap.add_argument(
        "--latency-ms", type=float, default=0.0, help="hold each request this long in a relay (default 0: direct)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir, removed after)")
    ap.add_argument("--skip-medclip", action="store_true", help="run only the sequential baseline")
    ap.add_argument("--skip-baseline", action="store_true", help="run only medclip")
    ap.add_argument("--medclip-args", default="", help="extra arguments for `medclip manifest` (one shell string)")
    ap.add_argument("--_baseline", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._baseline:
        _baseline(args._baseline[0], Path(args._baseline[1]))
        return {}

    from tests.pacs.orthanc import start_orthanc
    from tests.pacs.studies import make_cxr_archive

    tools = [t for t, skip in (("baseline", args.skip_baseline), ("medclip", args.skip_medclip)) if not skip]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_dicomweb_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    studies = make_cxr_archive(work / "studies", args.studies, seed=args.seed, images=args.images, size=args.size)
    synth_s = time.perf_counter() - t0
    sizes = sorted({max(1, args.studies // 5), args.studies})
    runs: list[dict] = []
    server = start_orthanc(work / "orthanc", users={BENCH_USER: os.urandom(9).hex()})
    url = server.dicomweb_url
    if args.latency_ms > 0:
        url = f"http://127.0.0.1:{LatencyProxy(server.http_port, args.latency_ms / 1000).port}/dicom-web"
    try:
        uploaded = 0
        for n in sizes:
            results = _upload(server, [f for s in studies[uploaded:n] for f in s.files])
            refused = [r for r in results if r["status"] == "Refused"]
            if refused:
                raise RuntimeError(f"Orthanc refused {len(refused)} synthetic files, e.g. {refused[0]['source']}")
            uploaded = n
            for tool in tools:
                runs.append(_measure(tool, server, url, n, work, shlex.split(args.medclip_args)))
                print(json.dumps(runs[-1]), file=sys.stderr)
        version = server.rest("GET", "/system").json()
        plugins = server.rest("GET", "/plugins/dicom-web").json()
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = _summary(args, runs, synth_s, version, plugins)
    print(json.dumps(report, indent=2))
    return report


def _summary(args, runs: list[dict], synth_s: float, system: dict, plugin: dict) -> dict:
    by = {(r["tool"], r["studies_on_server"]): r for r in runs}
    sizes = sorted({r["studies_on_server"] for r in runs})
    speedup = {
        str(n): round(by[("medclip", n)]["studies_per_s"] / by[("baseline", n)]["studies_per_s"], 2)
        for n in sizes
        if ("medclip", n) in by and ("baseline", n) in by and by[("medclip", n)]["rc"] == 0
    }
    growth = {}
    for tool in ("baseline", "medclip"):
        small, big = by.get((tool, sizes[0])), by.get((tool, sizes[-1]))
        if small and big and len(sizes) > 1:
            growth[tool] = round(big["tree_peak_rss_mib"] / max(small["tree_peak_rss_mib"], 1e-9), 2)
    return {
        "studies": args.studies,
        "images_per_study": args.images,
        "image_size": args.size or "64..256",
        "latency_ms": args.latency_ms,
        "synthesis_s": round(synth_s, 2),
        "orthanc": system.get("Version"),
        "dicomweb_plugin": plugin.get("Version"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "runs": runs,
        "speedup_medclip_over_baseline": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "peak_rss_growth_big_over_small": growth,
    }


if __name__ == "__main__":
    main()
