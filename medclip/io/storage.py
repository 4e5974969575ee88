"""Paths that may be object-storage URLs: ``s3://``, ``gs://``, ``file://`` and any other fsspec protocol.

Every command that reads or writes a file or folder goes through here when it may be remote. A plain path and a
``file://`` URL are local (:func:`local_path` gives the :class:`~pathlib.Path`); anything else is opened through
fsspec (s3fs for ``s3://``, gcsfs for ``gs://``: install the one you need).

Credentials are never taken from the command line: fsspec's backends read them from the environment or the usual
config files (``AWS_ACCESS_KEY_ID`` / ``AWS_PROFILE`` / ``~/.aws/credentials``, ``AWS_ENDPOINT_URL`` for an S3-compatible
server such as MinIO; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS). :func:`display` drops any user:password part of a
URL before it is logged or printed.

Remote inputs that a library must open as local files (a checkpoint folder, an index) are fetched once into a local
cache (:func:`fetch`, ``$MEDCLIP_CACHE`` or ``~/.cache/medclip``), keyed by URL and the remote size and modification
time or ETag, so a changed object is fetched again. Remote outputs are written locally and uploaded (:func:`upload`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from medclip.errors import InputError

LOCAL_SCHEMES = ("", "file", "local")
CACHE_ENV = "MEDCLIP_CACHE"

PathLike = str | os.PathLike


def scheme(path: PathLike) -> str:
    text = os.fspath(path)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_url(path: PathLike) -> bool:
    """True for a remote URL (``s3://bucket/key``); False for a plain path or a ``file://`` URL."""
    return scheme(path) not in LOCAL_SCHEMES


def local_path(path: PathLike) -> Path:
    """A plain path or ``file://`` URL as a Path; a remote URL is an error (fetch it first)."""
    text = os.fspath(path)
    if is_url(text):
        raise ValueError(f"{display(text)} is remote; fetch it first (medclip.io.storage.fetch)")
    return Path(text.split("://", 1)[1]) if "://" in text else Path(text)


def display(path: PathLike) -> str:
    """The path as it may be logged: a URL without any ``user:password@`` part."""
    text = os.fspath(path)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    if "@" not in parts.netloc:
        return text
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# URL schemes whose first component is a bucket (or container) that must exist before anything is read or written
BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def bucket(path: PathLike) -> str:
    """The bucket of a URL as a URL, without credentials (``s3://bucket/a/b`` -> ``s3://bucket``)."""
    parts = urlsplit(display(path))
    return f"{parts.scheme}://{parts.netloc}"


def missing_bucket(path: PathLike) -> str | None:
    """The bucket name of ``path`` when it does not exist (or these credentials cannot see it); None when it does,
    or when ``path`` is local or of a scheme without buckets."""
    if not is_url(path) or scheme(path) not in BUCKET_SCHEMES:
        return None
    name = urlsplit(display(path)).netloc
    return name if name and not exists(bucket(path)) else None


def where_missing(path: PathLike) -> str:
    """A note for an error about a remote path that is not there: its bucket's absence, when that is the cause."""
    name = missing_bucket(path)
    return f" (bucket '{name}' does not exist, or these credentials cannot see it)" if name else ""


def refuse_credentials(path: PathLike, *, key: str) -> None:
    """Raise if a URL carries ``user:password@``: credentials come from the environment, never from a config."""
    if is_url(path) and display(path) != os.fspath(path):
        raise InputError(
            f"{key}={display(path)}: the URL carries credentials (user:password@); remove them and set them in the "
            "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_ENDPOINT_URL for an "
            "S3-compatible server) or in ~/.aws/credentials"
        )


def filesystem(path: PathLike) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a URL or a local path."""
    try:
        import fsspec
    except ImportError as exc:  # a dependency; only a broken environment lacks it
        raise InputError("object-storage URLs need fsspec: pip install fsspec s3fs") from exc
    try:
        return fsspec.core.url_to_fs(os.fspath(path))
    except (ImportError, ValueError) as exc:
        proto = scheme(path)
        hint = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, proto)
        raise InputError(f"{display(path)}: no filesystem for {proto}:// ({exc}); pip install {hint}") from exc


def join(base: PathLike, *parts: str) -> str:
    """``base/part/...`` for a URL or a local path (as a string)."""
    text = os.fspath(base)
    if not is_url(text):
        return str(local_path(text).joinpath(*parts))
    return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(path: PathLike) -> bool:
    if not is_url(path):
        return local_path(path).exists()
    fs, p = filesystem(path)
    return fs.exists(p)


def isfile(path: PathLike) -> bool:
    if not is_url(path):
        return local_path(path).is_file()
    fs, p = filesystem(path)
    return fs.isfile(p)


def read_bytes(path: PathLike) -> bytes:
    if not is_url(path):
        return local_path(path).read_bytes()
    fs, p = filesystem(path)
    try:
        return fs.cat_file(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{display(path)}: no such object") from None


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write a whole file: locally through a temporary name and a rename; remotely as one object (atomic in S3)."""
    if not is_url(path):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, p = filesystem(path)
    fs.pipe_file(p, data)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medclip")


def _version(info: dict) -> str:
    """What changes when an object changes: ETag, else size + modification time."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    mtime = info.get("LastModified") or info.get("mtime") or info.get("updated") or ""
    return str(etag or "") + f":{info.get('size')}:{mtime}"


def _remote_tree(fs, p: str) -> dict[str, dict]:
    """relative path -> info of every object under folder ``p`` (or of the single object ``p``)."""
    if fs.isfile(p):
        return {"": fs.info(p)}
    found = fs.find(p, detail=True)
    if not found:
        raise FileNotFoundError(p)
    root = p.rstrip("/")
    return {k[len(root) :].lstrip("/"): v for k, v in found.items() if v.get("type", "file") != "directory"}


def fetch(path: PathLike, *, cache_dir: PathLike | None = None) -> Path:
    """A local copy of a remote file or folder (the path itself when local); fetched once per object version.

    The copy lands under a temporary name and is renamed, so a fetch that dies midway is never taken for a whole
    one, and processes sharing a cache do not read each other's partial files.
    """
    if not is_url(path):
        return local_path(path)
    fs, p = filesystem(path)
    try:
        tree = _remote_tree(fs, p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{display(path)}: no such object or folder") from None
    key = hashlib.sha256(
        (display(path) + "\n" + "\n".join(f"{k}={_version(v)}" for k, v in sorted(tree.items()))).encode()
    ).hexdigest()[:16]
    name = Path(p.rstrip("/")).name or "root"
    target = Path(cache_dir or cache_root() / "fetched") / f"{key}-{name}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if "" in tree:
            fs.get_file(p, str(tmp))
        else:
            for rel in sorted(tree):
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{p.rstrip('/')}/{rel}", str(dest))
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy first
            if not target.exists():
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return target


def upload(local: PathLike, path: PathLike) -> None:
    """Copy a local file or folder to ``path`` (a URL; a local path gets a plain copy). Folders merge: files
    already there are overwritten, others kept."""
    src = Path(local)
    if not is_url(path):
        dest = local_path(path)
        if src.resolve() == dest.resolve():
            return
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return
    fs, p = filesystem(path)
    if src.is_dir():
        for file in sorted(f for f in src.rglob("*") if f.is_file()):
            fs.put_file(str(file), f"{p.rstrip('/')}/{file.relative_to(src).as_posix()}")
    else:
        fs.put_file(str(src), p)


def remove(path: PathLike) -> None:
    """Delete a file or folder (missing is fine)."""
    if not is_url(path):
        target = local_path(path)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        return
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)
