"""The web app: one page (``/``) over a JSON API (``/api/...``, OpenAPI docs at ``/docs``, served offline).

FastAPI + uvicorn: typed query parameters with validation, OpenAPI for scripts, a thread pool for the model-bound
endpoints, and no build step or CDN for the page (plain HTML + JS shipped in the package).

Safety: with a token (``MEDCLIP_TOKEN``) every API call but ``/api/health`` needs it, as ``Authorization: Bearer
TOKEN`` or the page's session cookie (set by ``POST /api/session``; it holds a hash of the token, never the token);
uploads are limited in size (checked while the body streams in) and type (by content); the access log names the
route template (``/api/similar/{case_id}``), never the query string, the path's values or a report. Heat maps
of an upload go back in the answer (PNG data URLs), so nothing of the upload outlives its request.
"""

import hashlib
import hmac
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.routing import Match

from medclip.errors import InputError
from medclip.serve.engine import MAX_K, CaseService
from medclip.serve.uploads import MAX_FILES, UploadError, materialise
from medclip.version import __version__

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("medclip.serve.access")

STATIC = Path(__file__).parent / "static"
COOKIE = "medclip_session"
DEFAULT_MAX_UPLOAD_MB = 64


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: the upload size limit while the body streams in, and an access log without identifiers."""

    def __init__(self, app, *, max_upload_bytes: int, routes=None) -> None:
        self.app, self.max_upload_bytes, self.routes = app, max_upload_bytes, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), {"code": 500}
        limit = self.max_upload_bytes if scope["method"] == "POST" else None

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if limit is not None:
                length = dict(scope.get("headers") or []).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > limit:
                    return await _too_large(send_wrapper, limit)
                received = 0

                async def receive_limited():
                    nonlocal received
                    message = await receive()
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _TooLarge
                    return message

                try:
                    return await self.app(scope, receive_limited, send_wrapper)
                except _TooLarge:
                    return await _too_large(send_wrapper, limit)
            return await self.app(scope, receive, send_wrapper)
        finally:
            access_logger.info(
                "%s %s %d %.1fms",
                scope["method"],
                _route_name(scope, self.routes() if self.routes else ()),
                status["code"],
                (time.perf_counter() - start) * 1e3,
            )


def _route_name(scope, routes=()) -> str:
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path  # the template: /api/similar/{case_id}
    for candidate in routes:  # answered before routing (an upload refused on its Content-Length)
        if getattr(candidate, "path", "").startswith("/api/") and candidate.matches(scope)[0] == Match.FULL:
            return candidate.path
    path = scope.get("path", "")
    if path.startswith("/static/") and "?" not in path:
        return "/static/..."
    return "<unmatched>"


async def _too_large(send, limit: int) -> None:
    body = JSONResponse(
        {"detail": f"upload larger than the limit of {limit // 2**20} MiB (medclip serve --max-upload-mb)"},
        status_code=413,
    )
    await body({"type": "http"}, None, send)


class SessionIn(BaseModel):
    token: str


def _digest(token: str) -> str:
    return hashlib.sha256(b"medclip-session:" + token.encode()).hexdigest()


def create_app(
    service: CaseService, *, token: str | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
) -> FastAPI:
    """The FastAPI app over a loaded :class:`CaseService`; ``token``: required on every API call but health."""
    from fastapi_offline import FastAPIOffline  # Swagger UI / ReDoc assets shipped in the wheel: no CDN

    max_bytes = int(max_upload_mb * 2**20)
    session = _digest(token) if token else None
    app: FastAPI = FastAPIOffline(
        title="medclip case search",
        version=__version__,
        description="Similar prior cases by description, by case or by an uploaded study, and zero-shot screening.",
    )
    app.add_middleware(Guard, max_upload_bytes=max_bytes, routes=lambda: app.router.routes)

    def authorised(request: Request) -> None:
        if session is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        if given is not None and hmac.compare_digest(_digest(given), session):
            return
        cookie = request.cookies.get(COOKIE)
        if cookie and hmac.compare_digest(cookie, session):
            return
        raise _Unauthorised

    Auth = Depends(authorised)
    K = Annotated[int, Query(ge=1, le=MAX_K, description="number of cases")]
    Modality = Annotated[str | None, Query(description="only cases of this modality (see /api/info)")]
    Label = Annotated[str | None, Query(description="only cases with this label positive (see /api/info)")]

    @app.exception_handler(_Unauthorised)
    async def _unauthorised(request, exc):
        return JSONResponse(
            {"detail": "a token is required: Authorization: Bearer TOKEN (the server's MEDCLIP_TOKEN)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(InputError)
    async def _bad_input(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(LookupError)
    async def _not_found(request, exc):
        return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=404)

    @app.exception_handler(UploadError)
    async def _bad_upload(request, exc):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", tags=["service"])
    def health() -> dict:
        """Liveness: whether the index is loaded and whether a token is required (no other detail)."""
        return {"status": "ok", "cases": len(service.index), "token_required": session is not None}

    @app.post("/api/session", tags=["service"])
    def login(body: SessionIn, request: Request):
        """Exchange the token for the page's session cookie (HttpOnly, SameSite=Strict)."""
        if session is None:
            return {"status": "no token required"}
        if not hmac.compare_digest(_digest(body.token), session):
            raise _Unauthorised
        response = JSONResponse({"status": "ok"})
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", secure=secure, path="/")
        return response

    @app.get("/api/info", tags=["service"], dependencies=[Auth])
    def info() -> dict:
        """The index (size, kind), the checkpoint, the screening prompt set and the filters it offers."""
        return service.info()

    @app.get("/api/search", tags=["search"], dependencies=[Auth])
    def search(
        q: Annotated[
            str, Query(min_length=1, max_length=2000, description="a description, e.g. small left pneumothorax")
        ],
        k: K = 10,
        modality: Modality = None,
        label: Label = None,
    ) -> dict:
        """The cases closest to a description (the ranking of ``medclip index query``)."""
        answer = service.search(q, k=k, modality=modality or None, label=label or None)
        answer.pop("query", None)  # the client has it; answers are not where query text should pile up
        answer["index"] = {k: v for k, v in answer.get("index", {}).items() if k != "checkpoint"}  # a server path
        return answer

    @app.get("/api/similar/{case_id}", tags=["search"], dependencies=[Auth])
    def similar(case_id: str, k: K = 10, modality: Modality = None, label: Label = None) -> dict:
        """More like this: the cases closest to an indexed case (the case itself left out)."""
        return service.similar(case_id, k=k, modality=modality or None, label=label or None)

    @app.post(
        "/api/screen",
        tags=["screen"],
        dependencies=[Auth],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                        }
                    }
                },
            }
        },
    )
    async def screen(request: Request, k: K = 10, modality: Modality = None, label: Label = None) -> dict:
        """Upload a study (DICOM / PNG / JPEG; for CT a DICOM series, its ZIP or NIfTI): similar cases and the
        zero-shot screening table (finding, score, the positive / negative prompts used)."""
        from starlette.concurrency import run_in_threadpool

        with tempfile.TemporaryDirectory(prefix="medclip-upload-") as tmp:
            folder = Path(tmp)
            try:
                form = await request.form(max_files=MAX_FILES, max_fields=20)
            except _TooLarge:
                raise
            except Exception as exc:
                raise UploadError(400, f"the upload is not a valid multipart form: {exc}") from None
            files = []
            for i, item in enumerate(form.getlist("file")):
                if isinstance(item, str):
                    raise UploadError(400, "form field 'file' must be a file")
                path = folder / f"upload{i:05d}"
                with open(path, "wb") as out:
                    while chunk := await item.read(1 << 20):
                        out.write(chunk)
                files.append((item.filename or "", path))
            await form.close()
            target = materialise(files, folder, volume=service.is_volume, max_bytes=max_bytes)
            try:
                return await run_in_threadpool(
                    service.screen, target, k=k, modality=modality or None, label=label or None
                )
            except InputError as exc:
                raise UploadError(422, str(exc)) from None

    @app.get(
        "/api/heatmap/{entry}",
        tags=["search"],
        dependencies=[Auth],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def heatmap(
        entry: int,
        q: Annotated[str, Query(max_length=2000, description="a phrase, e.g. left pleural effusion")] = "",
    ):
        """Where a phrase lands on an indexed image: the image in gray under a jet heat map (the map's own range), PNG;
        a CT: the axial slice through the map's peak. The most recent maps are cached."""
        try:
            png = service.heatmap(entry, q)
        except (LookupError, InputError):
            raise
        except Exception as exc:  # the stored image moved or does not decode: the page shows the thumbnail
            logger.warning("heat map of entry %d could not be rendered: %s", entry, type(exc).__name__)
            return JSONResponse({"detail": "the stored image could not be read"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get(
        "/api/thumbnail/{entry}",
        tags=["search"],
        dependencies=[Auth],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def thumbnail(entry: int):
        """An indexed image as PNG, through the checkpoint's preprocessing (a CT: its middle axial slice)."""
        try:
            png = service.thumbnail(entry)
        except LookupError:
            raise
        except Exception as exc:  # the stored image moved or does not decode: the page shows a placeholder
            logger.warning("thumbnail of entry %d could not be rendered: %s", entry, type(exc).__name__)
            return JSONResponse({"detail": "the stored image could not be read"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return app


class _Unauthorised(Exception):
    pass
