"""What the receiver accepts at negotiation: every Storage SOP Class of PS3.4 Annex B, each
with the transfer syntaxes that equipment sends, stored as received.

Any other class proposed (query/retrieve, print, private or unknown classes, and the
non-patient storage classes of Annex GG, which carry no study to file them under) is
refused at negotiation: its presentation context is answered "abstract syntax not
supported", unless the server adds a service of its own for it (Verification)."""

from __future__ import annotations

from pynetdicom import sop_class
from pynetdicom.service_class import StorageServiceClass

from cloudpacs.conformance import (
    IMAGE_TRANSFER_SYNTAXES,
    NATIVE_TRANSFER_SYNTAXES,
    RETIRED_STORAGE_CLASSES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VIDEO_TRANSFER_SYNTAXES,
)

__all__ = [
    "IMAGE_TRANSFER_SYNTAXES",
    "NATIVE_TRANSFER_SYNTAXES",
    "RETIRED_STORAGE_CLASSES",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "VIDEO_TRANSFER_SYNTAXES",
]


def _register_retired() -> None:
    """Make pynetdicom dispatch C-STORE on the retired classes to the storage handler."""
    for keyword, value in RETIRED_STORAGE_CLASSES.items():
        if not hasattr(sop_class, keyword):
            sop_class.register_uid(value, keyword, StorageServiceClass)


_register_retired()
