"""A logging filter (and string scrubber) that replaces raw header values seen in a run by their salted keys.

A safety net under the rule that no identifier reaches a log: our own messages name studies by key, but a
library's debug line (a URL with a StudyInstanceUID, a C-FIND identifier) or an exception text might not.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager


class Redactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._map: dict[str, str] = {}
        self._pattern: re.Pattern | None = None
        self._lock = threading.Lock()

    def add(self, raw: str | None, key: str) -> None:
        if raw and len(str(raw).strip()) >= 3:
            with self._lock:
                self._map[str(raw).strip()] = key
                self._pattern = None

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._map:
                return text
            if self._pattern is None:
                alternation = "|".join(re.escape(k) for k in sorted(self._map, key=len, reverse=True))
                self._pattern = re.compile(rf"(?<![\w.])(?:{alternation})(?![\w])")
            pattern, mapping = self._pattern, self._map
        return pattern.sub(lambda m: mapping[m.group(0)], text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

    @contextmanager
    def installed(self):
        """Filter every handler of the root logger (and lastResort) while the block runs."""
        handlers = [*logging.getLogger().handlers, logging.lastResort]
        handlers = [h for h in handlers if h is not None]
        for h in handlers:
            h.addFilter(self)
        try:
            yield self
        finally:
            for h in handlers:
                h.removeFilter(self)
