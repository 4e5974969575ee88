"""A real Orthanc (Debian packages `orthanc` + `orthanc-dicomweb`) started on free ports for tests and benchmarks.

Each `start_orthanc` writes its own JSON config, storage and index folders under `workdir` and runs
`/usr/sbin/Orthanc` as a child process; nothing of the Debian service (which the package does not start here)
is used. `Orthanc.stop()` ends that process only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

ORTHANC_BIN = Path(os.environ.get("MEDCLIP_ORTHANC_BIN", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get("MEDCLIP_ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed (tests skip with this message)."""


class OrthancStartError(RuntimeError):
    """The Orthanc process did not come up; the message carries the tail of its log."""


def missing_reason() -> str | None:
    """Why Orthanc cannot be started here, or None when the binary and the DICOMweb plugin are installed."""
    if not ORTHANC_BIN.is_file() and shutil.which("Orthanc") is None:
        return f"Orthanc is not installed ({ORTHANC_BIN} absent): apt-get install orthanc orthanc-dicomweb"
    if not DICOMWEB_PLUGIN.is_file():
        return (
            f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN} absent): apt-get install orthanc-dicomweb"
        )
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick; a race with other processes is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc child process and how to reach it."""

    process: subprocess.Popen
    workdir: Path
    http_port: int
    dicom_port: int
    aet: str
    users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root without a trailing slash, e.g. for `dicomweb_client.DICOMwebClient(url)`."""
        return f"{self.http_url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first registered (user, password), or None when authentication is off."""
        return next(iter(self.users.items()), None)

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def session(self) -> requests.Session:
        """A requests session with the first user's basic auth (the REST API and DICOMweb share it)."""
        s = requests.Session()
        s.auth = self.auth
        return s

    def dicomweb_client(self):
        """A `dicomweb_client.DICOMwebClient` for this server, authenticated as the first user."""
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(self.dicomweb_url, session=self.session())

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call the Orthanc REST API (`path` like "/instances"); raises on an HTTP error."""
        with self.session() as s:
            r = s.request(method, self.http_url + path, timeout=kwargs.pop("timeout", 60), **kwargs)
        r.raise_for_status()
        return r

    def upload(self, items: Iterable[str | Path | bytes]) -> list[dict]:
        """POST each DICOM file (a path, a folder walked recursively, or raw bytes) to /instances.

        Returns one dict per file: {"source", "status" ("Success" | "AlreadyStored" | "Refused"), "id" (the Orthanc
        instance id, None when refused), "http" (the status code)}. A refused file does not stop the others.
        """
        results: list[dict] = []
        with self.session() as s:
            for source, data in _iter_payloads(items):
                r = s.post(
                    self.http_url + "/instances",
                    data=data,
                    headers={"Content-Type": "application/dicom"},
                    timeout=60,
                )
                body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
                ok = r.status_code == 200 and isinstance(body, dict) and "ID" in body
                results.append(
                    {
                        "source": source,
                        "status": body.get("Status", "Success") if ok else "Refused",
                        "id": body.get("ID") if ok else None,
                        "http": r.status_code,
                    }
                )
        return results

    def instances(self) -> list[str]:
        """The Orthanc ids of every stored instance."""
        return self.rest("GET", "/instances").json()

    def studies(self) -> list[str]:
        """The Orthanc ids of every stored study (not StudyInstanceUIDs; see `/studies/{id}` MainDicomTags)."""
        return self.rest("GET", "/studies").json()

    def clear(self) -> int:
        """Delete every patient (so every study, series and instance); returns how many patients were removed."""
        patients = self.rest("GET", "/patients").json()
        for pid in patients:
            self.rest("DELETE", f"/patients/{pid}")
        return len(patients)

    def add_modality(self, name: str, *, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Register (or replace) a DICOM modality at run time, e.g. a C-MOVE destination whose port was just picked.

        Orthanc resolves a C-MOVE destination by its AE title among the registered modalities, so a storage SCP
        must be registered before it can receive a C-MOVE.
        """
        self.rest("PUT", f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": int(port)})

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the Orthanc process (SIGTERM, then SIGKILL after `timeout` seconds). Idempotent."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _iter_payloads(items: Iterable[str | Path | bytes]) -> Iterable[tuple[str, bytes]]:
    if isinstance(items, (str, Path, bytes)):
        items = [items]
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            yield f"<bytes #{i}>", item
            continue
        p = Path(item)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            yield str(f), f.read_bytes()


def orthanc_config(
    workdir: Path,
    *,
    http_port: int,
    dicom_port: int,
    aet: str = "ORTHANC",
    users: Mapping[str, str] | None = None,
    modalities: Mapping[str, tuple[str, str, int] | Mapping] | None = None,
) -> dict:
    """The JSON config of a test Orthanc: local only, its own storage, DICOMweb on, every DIMSE service allowed."""
    return {
        "Name": "medclip-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpThreadsCount": 16,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpDescribeErrors": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        # Callers unknown to Orthanc may query and retrieve: the tests' SCUs pick their AE titles freely. A C-MOVE
        # destination must still be registered (DicomModalities / add_modality): Orthanc looks it up by AE title.
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {
            name: (list(spec) if isinstance(spec, (tuple, list)) else dict(spec))
            for name, spec in (modalities or {}).items()
        },
        "StableAge": 1,
        "SaveJobs": False,
        "ConcurrentJobs": 2,
        "OverwriteInstances": False,
    }


def start_orthanc(
    workdir: str | Path,
    *,
    users: Mapping[str, str] | None = None,
    modalities: Mapping[str, tuple[str, str, int] | Mapping] | None = None,
    aet: str = "ORTHANC",
    timeout: float = 60.0,
    verbose: bool = False,
) -> Orthanc:
    """Start Orthanc with a fresh config on free ports and wait until GET /system answers.

    Args:
        workdir: folder for the config, storage, index and log (created; should be empty or Orthanc's own).
        users: {user: password} for HTTP basic auth (REST and DICOMweb); None or {} leaves authentication off.
        modalities: DicomModalities entries, {name: (aet, host, port)} or Orthanc's dict form.
        aet: Orthanc's own AE title.
        timeout: seconds to wait for the HTTP server.
        verbose: start Orthanc with --verbose (a longer log).

    Raises:
        OrthancUnavailable: the binary or the DICOMweb plugin is not installed.
        OrthancStartError: the process exited or did not answer in time (the message has the log tail).
    """
    reason = missing_reason()
    if reason:
        raise OrthancUnavailable(reason)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binary = str(ORTHANC_BIN) if ORTHANC_BIN.is_file() else shutil.which("Orthanc")
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between free_port() and Orthanc's bind: retry on new ones
        http_port, dicom_port = free_port(), free_port()
        while dicom_port == http_port:
            dicom_port = free_port()
        cfg = orthanc_config(
            workdir, http_port=http_port, dicom_port=dicom_port, aet=aet, users=users, modalities=modalities
        )
        cfg_path = workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        log_path = workdir / "orthanc.log"
        args = [binary, str(cfg_path)] + (["--verbose"] if verbose else [])
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Orthanc(proc, workdir, http_port, dicom_port, aet, dict(users or {}))
        try:
            _wait_ready(server, timeout)
            return server
        except OrthancStartError as e:
            server.stop(timeout=5)
            last_error = str(e)
    raise OrthancStartError(last_error)


def _wait_ready(server: Orthanc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise OrthancStartError(f"Orthanc exited with code {server.process.returncode}:\n{_log_tail(server)}")
        try:
            r = requests.get(server.http_url + "/system", auth=server.auth, timeout=2)
            if r.status_code == 200 and _dicom_port_open(server):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise OrthancStartError(f"Orthanc did not answer on {server.http_url} within {timeout:.0f} s:\n{_log_tail(server)}")


def _dicom_port_open(server: Orthanc) -> bool:
    try:
        with socket.create_connection((server.host, server.dicom_port), timeout=1):
            return True
    except OSError:
        return False


def _log_tail(server: Orthanc, n: int = 30) -> str:
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
