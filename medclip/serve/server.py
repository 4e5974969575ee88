"""``medclip serve``: check the address and token, load the checkpoint and index, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os

from medclip.config import EVAL_MODES, ServeCfg
from medclip.errors import InputError

logger = logging.getLogger(__name__)

TOKEN_ENV = "MEDCLIP_TOKEN"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def server_token(host: str, env: dict | None = None) -> str | None:
    """The API token from ``MEDCLIP_TOKEN``; InputError when ``host`` is not loopback and there is none."""
    token = (env if env is not None else os.environ).get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InputError(
            f"{TOKEN_ENV} is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(24))")'
        )
    if token is None and not is_loopback(host):
        raise InputError(
            f"--host {host} makes the case index reachable from other machines: set {TOKEN_ENV} to a secret "
            f"(at least {MIN_TOKEN_CHARS} characters) that clients must send, or serve on 127.0.0.1"
        )
    return token


def check_cfg(cfg: ServeCfg) -> None:
    """The cheap checks, before torch and the model load."""
    if not cfg.checkpoint or not cfg.index:
        raise InputError("medclip serve needs --checkpoint CKPT and --index IDX (from `medclip index build`)")
    if cfg.mode and cfg.mode not in EVAL_MODES:
        raise InputError(f"--mode '{cfg.mode}' is not one of {EVAL_MODES}")
    if cfg.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive, got {cfg.max_upload_mb}")


def build_service(cfg: ServeCfg):
    check_cfg(cfg)
    from medclip.serve.engine import CaseService

    service = CaseService(
        cfg.checkpoint, cfg.index, prompts=cfg.prompts, mode=cfg.mode, device=cfg.device, nprobe=cfg.nprobe or None
    )
    service.warm_up()
    return service


def serve(cfg: ServeCfg, *, announce=logger.info) -> None:
    """Run the app until interrupted (Ctrl-C); ``announce(text)`` tells where it listens (the CLI prints it)."""
    token = server_token(cfg.host)  # refuse a public address without a token before any heavy import
    check_cfg(cfg)
    import uvicorn

    from medclip.serve.app import create_app

    service = build_service(cfg)
    app = create_app(service, token=token, max_upload_mb=cfg.max_upload_mb)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    announce(
        f"medclip serve: {len(service.index)} images in the index, "
        f"prompts '{service.prompt_name}'{', token required' if token else ''}\n"
        f"  page  http://{host}:{cfg.port}/\n  API   http://{host}:{cfg.port}/docs"
    )
    # log_config=None: keep the CLI's logging; access_log=False: our own access log names routes, not paths.
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False, server_header=False)
