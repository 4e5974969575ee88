"""The ``medclip`` command line. The only module that configures logging handlers.

Commands that take a configuration (``train``, ``eval``, ``index``, ``manifest``, ``demo``) read a typed schema from
:mod:`medclip.config`: an optional YAML file, then the command's flags (sugar for config keys, whose defaults live
in the schema only), then dotted ``key=value`` overrides. Choices (layouts, tasks, demos, label sets) come from the
registries.

Exit codes: 0 success; 2 a user error (bad usage, path, config key or input file), one line naming it and the fix;
1 a bug, with its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable

from medclip.cli.commands import CFG, UsageError
from medclip.cli.parser import EXAMPLES, build_parser
from medclip.errors import MedclipError

__all__ = ["CFG", "EXAMPLES", "UsageError", "build_parser", "main"]

logger = logging.getLogger("medclip")

# Errors the user can fix: one line, exit 2. Anything else is a bug: traceback, exit 1.
USER_ERRORS = (MedclipError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
# botocore's (through s3fs) when no credentials or no endpoint answer: setup a user fixes, named without importing it
STORAGE_SETUP_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "EndpointConnectionError", "NoRegionError")
STORAGE_HINT = (
    "credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or ~/.aws, "
    "an S3-compatible server's address from AWS_ENDPOINT_URL"
)


def configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for name in ("transformers", "monai", "huggingface_hub", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The PACS / de-identification libraries log every request and recognizer at INFO (UIDs included).
    for name in ("dicomweb_client", "pynetdicom", "presidio-analyzer", "presidio-anonymizer", "dicognito", "pydicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse ends a nargs="*" positional at the first flag: `train CONFIG a=1 --resume b=2` leaves b=2 over
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides, extra = [*args.overrides, *extra], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.quiet)
    func: Callable = args.func
    if os.environ.get("MEDCLIP_DEBUG") == "1":  # developers: full tracebacks for user errors too
        return int(func(args) or 0)
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except USER_ERRORS as exc:
        print(f"medclip {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: show where it happened (object-storage setup errors excepted)
        if type(exc).__name__ in STORAGE_SETUP_ERRORS:
            print(f"medclip {args.command}: error: object storage: {_one_line(exc)}; {STORAGE_HINT}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"medclip {args.command}: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)  # fmt: skip
        return 1
