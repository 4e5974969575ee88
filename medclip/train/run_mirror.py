"""A run folder at an object-storage URL (``train.out_dir=s3://bucket/runs/x``): the run works in a local mirror.

Training writes ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` and ``final/`` exactly as
into a local ``out_dir``, but into ``CACHE/runs/<key>-<name>/<host>/`` (``data.cache_dir``, else ``$MEDCLIP_CACHE``
or ``~/.cache/medclip``); rank 0 uploads each committed checkpoint (then ``metrics.jsonl`` and ``tensorboard/``,
``final/`` at the end). A remote checkpoint counts only once its ``COMPLETE`` marker, uploaded after every other
file, exists, so a run killed mid-upload never leaves a checkpoint that ``--resume`` would take. ``--resume`` lists
the URL's checkpoints, and on every node one process fetches the newest complete one into that node's mirror
before any rank loads it. Credentials come from the environment (fsspec's backends); URLs are logged through
:func:`medclip.io.storage.display`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import uuid
from pathlib import Path

from medclip.distributed import DistInfo, barrier, broadcast_object
from medclip.errors import InputError
from medclip.io import storage
from medclip.train.checkpoint import STEP_DIR

logger = logging.getLogger(__name__)

MARKER = "COMPLETE"  # uploaded last into checkpoints/step-N/: the remote checkpoint is whole


class RunMirror:
    """The local folder a run at ``url`` writes, and the uploads / downloads that keep the URL up to date."""

    def __init__(self, url: str, *, cache_dir: str | Path = "") -> None:
        self.url = url.rstrip("/")
        where = storage.display(self.url)
        key = hashlib.sha256(where.encode()).hexdigest()[:12]
        name = where.rsplit("/", 1)[-1] or "run"
        self.local = Path(cache_dir or storage.cache_root()) / "runs" / f"{key}-{name}" / socket.gethostname()

    def _fail(self, what: str, exc: BaseException) -> InputError:
        return InputError(
            f"{storage.display(self.url)}: cannot {what} ({type(exc).__name__}: {exc}); check train.out_dir and that "
            "the credentials in the environment (AWS_PROFILE or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL) may write there"
        )

    def check(self) -> None:
        """Raise early, naming the URL, when its bucket is missing or unreachable."""
        try:
            found = storage.exists(storage.bucket(self.url))
        except (OSError, PermissionError) as exc:
            raise self._fail("reach the bucket", exc) from None
        if not found:
            raise InputError(
                f"train.out_dir={storage.display(self.url)}: the bucket {storage.bucket(self.url)} does not "
                "exist or these credentials cannot see it; create it or fix the URL"
            )

    def open(self, info: DistInfo, *, resume: bool) -> Path:
        """Every rank: a fresh local mirror on each node, holding the newest complete remote checkpoint on resume
        (rank 0 also gets ``metrics.jsonl`` and ``config.yaml``). Returns the mirror folder."""
        if info.is_main:
            self.check()
        newest = broadcast_object(self.newest_checkpoint() if resume and info.is_main else None)
        if info.local_rank == 0:
            shutil.rmtree(self.local, ignore_errors=True)
            self.local.mkdir(parents=True)
            if newest is not None:
                self._download(f"checkpoints/{newest}", self.local / "checkpoints" / newest)
                logger.info("fetched %s/checkpoints/%s", storage.display(self.url), newest)
            if newest is not None and info.is_main:
                for name in ("metrics.jsonl", "config.yaml"):
                    if storage.isfile(storage.join(self.url, name)):
                        self._download(name, self.local / name)
        barrier()
        logger.info("run folder %s, written locally in %s", storage.display(self.url), self.local)
        return self.local

    def _remote_steps(self) -> list[tuple[int, str]]:
        fs, root = storage.filesystem(storage.join(self.url, "checkpoints"))
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        return sorted((int(m.group(1)), n) for n in names if (m := STEP_DIR.match(n)))

    def newest_checkpoint(self) -> str | None:
        """The name (``step-NNNNNNN``) of the newest remote checkpoint whose upload completed."""
        try:
            for _, name in reversed(self._remote_steps()):
                if storage.isfile(storage.join(self.url, "checkpoints", name, MARKER)):
                    return name
        except (OSError, PermissionError) as exc:
            raise self._fail("list its checkpoints", exc) from None
        return None

    def _download(self, rel: str, dest: Path) -> None:
        """``URL/rel`` (a file or folder) -> ``dest``, through a temporary name."""
        fs, path = storage.filesystem(storage.join(self.url, rel))
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if fs.isfile(path):
                fs.get_file(path, str(tmp))
            else:
                for remote in sorted(fs.find(path)):
                    target = tmp / remote[len(path.rstrip("/")) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(remote, str(target))
            tmp.replace(dest)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def upload(self, *names: str) -> None:
        """Rank 0: copy these files or folders of the mirror to the URL (missing ones are skipped)."""
        for name in names:
            if (self.local / name).exists():
                try:
                    storage.upload(self.local / name, storage.join(self.url, name))
                except (OSError, PermissionError) as exc:
                    raise self._fail(f"upload {name}", exc) from None

    def upload_checkpoint(self, path: Path, *, keep: int) -> None:
        """Rank 0: upload a committed local checkpoint, then its marker; drop remote ones older than the last
        ``keep`` complete ones."""
        rel = f"checkpoints/{path.name}"
        try:
            storage.remove(storage.join(self.url, rel, MARKER))  # the same step saved again: not whole until re-marked
            storage.upload(path, storage.join(self.url, rel))
            storage.write_bytes(storage.join(self.url, rel, MARKER), b"")
            steps = self._remote_steps()
            complete = [s for s, n in steps if storage.isfile(storage.join(self.url, "checkpoints", n, MARKER))]
            oldest_kept = complete[-max(1, keep) :][0]
            for step, name in steps:
                if step < oldest_kept:
                    storage.remove(storage.join(self.url, "checkpoints", name))
        except (OSError, PermissionError) as exc:
            raise self._fail(f"upload {rel}", exc) from None
        logger.debug("uploaded %s/%s", storage.display(self.url), rel)
