"""Code that stands in for pynetdicom's internals (or pydicom's), used only on the
version it was written against.

dicomnode.reactor (the association loops), dicomnode.fastpath (a plain C-STORE's command
and answer) and cloudpacs.dicomsocket (the socket's check for bytes to read) each replace
a few of pynetdicom's functions. Each names the version
it was written for and the SHA-256 of the source of every function it replaces or relies
on; on any other version, or when one of those functions changed, the module is not
installed and pynetdicom's own code runs (logged once), and the module's test fails until
someone has compared the new code with what stands in for it. cloudpacs.services reads a
received dataset's elements as pydicom's Dataset does, pinned to pydicom the same way, and
dicomnode.uids checks the standard's UIDs once instead of at every UID pydicom makes.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pynetdicom

logger = logging.getLogger("cloudpacs")


def digest(function: Callable[..., Any]) -> str:
    """SHA-256 of a function's source, as inspect.getsource() gives it."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


class Pin:
    """A version of pynetdicom (or of `package`) and the functions replaced (or relied
    on) there, each with its source's digest on that version."""

    def __init__(
        self,
        version: str,
        *replaced: tuple[Callable[..., Any], str],
        otherwise: str,
        package: ModuleType = pynetdicom,
    ) -> None:
        self.version = version
        self.package = package
        self._functions = [function for function, _ in replaced]
        # By qualified name ("DULServiceProvider.run_reactor"), as the tests compare them.
        self.sources = {function.__qualname__: source for function, source in replaced}
        # What runs instead when the pin does not hold, for the log.
        self._otherwise = otherwise
        self._compatible: bool | None = None

    def stock_sources(self) -> dict[str, str]:
        """The digests of the replaced functions on the installed package."""
        return {function.__qualname__: digest(function) for function in self._functions}

    def compatible(self) -> bool:
        """Whether the installed package is the version pinned (worked out once)."""
        if self._compatible is None:
            installed = self.package.__version__
            self._compatible = installed == self.version and self.stock_sources() == self.sources
            if not self._compatible:
                logger.warning(
                    "%s %s is not %s (or the functions replaced on it changed): %s",
                    self.package.__name__,
                    installed,
                    self.version,
                    self._otherwise,
                )
        return self._compatible
