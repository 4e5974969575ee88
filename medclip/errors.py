"""Errors a user can fix. The CLI prints them as one line and exits 2; any other exception is a bug (exit 1).

Library code raises these for bad input (a path, a config key, a value, a file's content) and for a missing setup
(a package, local weights, a device), with a message that names the offending thing and the fix.
"""

from __future__ import annotations


class MedclipError(Exception):
    """Base of every error the user can fix."""


class InputError(MedclipError, ValueError):
    """A bad value, file or table from the user (a ValueError, so ``except ValueError`` still catches it)."""


class UnknownNameError(InputError, KeyError):
    """A name that is not in a registry (layout, tower, loss, task, prompt set, ...); the message suggests one."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class SetupError(MedclipError, RuntimeError):
    """Something the environment lacks: a package, local model weights, a device."""


class SourceError(MedclipError, ConnectionError):
    """A server the user named (a PACS, a RIS) that cannot be reached, refuses us, or answers with an error."""
