"""PACS sources for ``medclip manifest``: DICOMweb (QIDO-RS + WADO-RS) and DIMSE (C-FIND + C-GET / C-MOVE).

A source URL names the server only, never a credential: ``dicomweb+http://HOST:PORT/dicom-web`` (or ``+https``)
and ``dimse://AE_TITLE@HOST:PORT``. Credentials come from the environment or a netrc (:mod:`.dicomweb`). The
studies are synced into a store inside the output folder (:mod:`.store`): a rerun fetches only what is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from medclip.errors import InputError

SCHEMES = ("dicomweb+http://", "dicomweb+https://", "dimse://")


@dataclass(frozen=True)
class PacsSource:
    kind: str  # "dicomweb" | "dimse"
    url: str  # dicomweb: the service root (http(s)://HOST:PORT/PATH); dimse: as given
    host: str
    port: int
    aet: str = ""  # dimse: the called AE title

    @property
    def label(self) -> str:
        """How outputs name the source (no credential can be in it: URLs carrying one are refused)."""
        return self.url if self.kind == "dicomweb" else f"dimse://{self.aet}@{self.host}:{self.port}"


def is_pacs_source(text: str | None) -> bool:
    return bool(text) and str(text).lower().startswith(SCHEMES)


def parse_source(text: str) -> PacsSource:
    """``dicomweb+http://HOST:PORT/PATH`` or ``dimse://AE@HOST:PORT`` -> :class:`PacsSource` (InputError if bad)."""
    low = text.lower()
    if not low.startswith(SCHEMES):
        raise InputError(f"{text!r}: not a PACS source; use dicomweb+http(s)://HOST:PORT/PATH or dimse://AE@HOST:PORT")
    scheme, rest = text.split("://", 1)
    parts = urlsplit(f"{scheme.split('+')[-1].lower()}://{rest}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if low.startswith("dimse://"):
        aet = parts.username or ""
        if parts.password is not None:
            raise InputError("dimse://AE@HOST:PORT takes no password; DIMSE authenticates by AE title and address")
        if not aet or not parts.hostname or not port:
            raise InputError(
                f"{text!r}: DIMSE source needs dimse://AE_TITLE@HOST:PORT (e.g. dimse://ORTHANC@pacs:4242)"
            )
        if len(aet) > 16:
            raise InputError(f"{text!r}: AE title {aet!r} is longer than 16 characters")
        return PacsSource("dimse", text, parts.hostname, port, aet)
    if parts.username is not None or parts.password is not None:
        raise InputError(
            "credentials are never given on the command line (they would land in shell history and logs): set "
            "MEDCLIP_DICOMWEB_USER / MEDCLIP_DICOMWEB_PASSWORD or MEDCLIP_DICOMWEB_TOKEN, or put the host in ~/.netrc"
        )
    if not parts.hostname:
        raise InputError(f"{text!r}: DICOMweb source needs dicomweb+http(s)://HOST:PORT/PATH")
    url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    default_port = 443 if parts.scheme == "https" else 80
    return PacsSource("dicomweb", url, parts.hostname, port or default_port)
