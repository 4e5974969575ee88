"""Screenshot of the ``medclip serve`` page for the docs: start the server, open a deep link, save a PNG.

Runs ``python -m medclip.cli serve --checkpoint CKPT --index IDX`` on a free loopback port (no token: any
MEDCLIP_TOKEN in the environment is not passed on), opens ``/?q=QUERY&k=K`` in headless Debian chromium (Selenium
with ``/usr/bin/chromedriver`` named explicitly and SE_OFFLINE=true: nothing is downloaded) with a 1280x900
viewport, waits until the result cards' images in view have loaded, saves the screenshot and stops the server.

    python scripts/screenshot_serve.py --checkpoint runs/demo/train/final --index runs/demo/index --out docs/serve.png
    python scripts/screenshot_serve.py --checkpoint CKPT --index IDX --out docs/serve.png --query "large right effusion"

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium`` (a dev
dependency). Exits 0 with the PNG written, 2 on a user error (a missing path or browser), 1 when the server or the
page fails (with the server's output).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("MEDCLIP_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MEDCLIP_CHROMEDRIVER", "/usr/bin/chromedriver"))

# The cards' thumbnails inside the viewport (the page loads them lazily) have all decoded.
IMAGES_IN_VIEW_LOADED = """
const cards = document.querySelectorAll('#results article.card[data-case-id]');
if (!cards.length) return false;
const inView = [...document.querySelectorAll('#results article.card img.thumb')]
  .filter((img) => img.getBoundingClientRect().top < window.innerHeight);
return inView.length > 0 && inView.every((img) => img.complete && img.naturalWidth > 0);
"""


class UserError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, index: Path, port: int, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MEDCLIP_TOKEN"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "medclip.cli", "serve", "--checkpoint", str(checkpoint), "--index", str(index)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def wait_healthy(process: subprocess.Popen, base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"medclip serve exited with code {process.returncode} before answering /api/health")
        try:
            with urllib.request.urlopen(f"{base_url}/api/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"medclip serve did not answer /api/health within {timeout:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def screenshot(url: str, out: Path, *, width: int, height: int, timeout: float, profile: Path) -> None:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never reach the network
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--hide-scrollbars", f"--window-size={width},{height}",
                f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        # the viewport exactly width x height (a window size also counts the browser's frame)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(timeout)
        driver.get(url)
        try:
            WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: d.execute_script(IMAGES_IN_VIEW_LOADED))
        except TimeoutException:
            state = driver.execute_script(
                "return {status: document.getElementById('status')?.textContent,"
                " error: document.getElementById('error')?.textContent,"
                " cards: document.querySelectorAll('#results article.card').length}"
            )
            raise RuntimeError(f"the page did not show loaded result cards within {timeout:.0f} s: {state}") from None
        driver.execute_script("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
        time.sleep(0.3)  # one more frame after the last image decoded
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium could not write {out}")
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Screenshot of the medclip serve page (a deep-linked search) for the docs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/screenshot_serve.py --checkpoint runs/demo/train/final "
        "--index runs/demo/index --out docs/serve.png",
    )
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the index was built with")
    parser.add_argument("--index", required=True, help="index directory (`medclip index build`)")
    parser.add_argument("--out", required=True, help="PNG to write, e.g. docs/serve.png")
    parser.add_argument("--query", default="small left pneumothorax", help="the description searched for")
    parser.add_argument("-k", "--k", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the server start and the page")
    args = parser.parse_args(argv)

    try:
        for path, what in ((args.checkpoint, "--checkpoint"), (args.index, "--index")):
            if not Path(path).exists():
                raise UserError(f"{what} {path} does not exist")
        for binary in (CHROMIUM, CHROMEDRIVER):
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise UserError(f"{binary} is absent: apt-get install chromium chromium-driver")
        try:
            import selenium  # noqa: F401
        except ImportError:
            raise UserError("selenium is not installed: pip install -e '.[dev]'") from None
        if not 1 <= args.k <= 100:
            raise UserError(f"-k must be between 1 and 100, got {args.k}")
    except UserError as exc:
        print(f"screenshot_serve: error: {exc}", file=sys.stderr)
        return 2

    out = Path(args.out).resolve()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    url = f"{base_url}/?{urlencode({'q': args.query, 'k': args.k})}"
    with tempfile.TemporaryDirectory(prefix="medclip-screenshot-") as tmp:
        log_path = Path(tmp) / "serve.log"
        with open(log_path, "wb") as log:
            process = start_server(Path(args.checkpoint).resolve(), Path(args.index).resolve(), port, log)
        try:
            wait_healthy(process, base_url, args.timeout)
            screenshot(url, out, width=args.width, height=args.height, timeout=args.timeout, profile=Path(tmp) / "p")
        except Exception as exc:
            print(f"screenshot_serve: {exc}\n--- medclip serve output ---\n{log_path.read_text(errors='replace')}",
                  file=sys.stderr)  # fmt: skip
            return 1
        finally:
            stop_server(process)
    print(f"wrote {out} ({args.width}x{args.height}, {url.replace(base_url, '')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
