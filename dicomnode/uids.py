"""The standard's UIDs checked once per process, not at every copy of an association request.

A console's A-ASSOCIATE-RQ names an abstract syntax and its transfer syntaxes in each
presentation context: dcmtk's storescu proposes 128 contexts, about 320 UIDs. pynetdicom
makes a pydicom `UID` of every one of them each time it decodes, converts or copies the
request (the front door's decode, the primitive, the negotiation's copies, the answer),
and every `UID` made from a string checks it against the UI regular expression
(`pydicom.valuerep.validate_value`), then pynetdicom asks `UID.is_valid` (another regular
expression) once or twice more: about 1,900 UIDs made and checked per association, on the
same 200 or so strings. That was half of an association's set-up (103 M instructions of
callgrind's count); with four associations of 50 instances each, the four set-ups were a
fifth of what the receiver executed per instance (docs/benchmarks-ingest.md, run 31).

The UIDs of pydicom's UID dictionary (every SOP class, transfer syntax and well-known
instance the standard defines) are valid by both checks; `install` finds which of them
pass both, once, and then answers for those strings without matching again: a `UID` made
from one is not validated again (whatever the validation mode: a valid value is never
reported) and `is_valid` is true for it. Any other string (a private SOP class, an
instance UID, a malformed UID) is checked exactly as pydicom checks it, with its warning or
error. The answers are the same; only the repeated matches go.

This replaces pydicom's own functions (the module's `validate_value` as `UID` calls it, and
`UID.is_valid`), so it is installed only on the pydicom version it was written against
(`PIN`); on any other, pydicom's code runs and tests/test_dicomnode_uids.py fails until the
new code has been compared with this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pydicom
from pydicom import uid as pydicom_uid
from pydicom import valuerep
from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID

from cloudpacs import pinning

# pydicom's own, kept for every string that is not a known standard UID.
_stock_validate_value = valuerep.validate_value
_stock_is_valid: Callable[[UID], bool] = UID.is_valid.fget  # type: ignore[attr-defined]

PIN = pinning.Pin(
    "3.0.2",
    (UID.__new__, "608d4e34f388481f712b5c27983a275dd3d5f68a92421ce577615257cefcb836"),
    (_stock_is_valid, "5c38fc3862d1fa310326f21003e26f2d66344776512b5a571a37c99173c72f4a"),
    (valuerep.validate_value, "5a6c289a7411afea461fb7ea218f7472259a3199d35977f492af6fd793ef88a0"),
    otherwise="every UID is checked by regular expression each time pydicom makes one",
    package=pydicom,
)

_lock = threading.Lock()
_installed = False
KNOWN: frozenset[str] = frozenset()


def _known_valid() -> frozenset[str]:
    """The standard's UIDs that pass both of pydicom's checks: the UI value validator (the
    one `UID()` applies) and `UID.is_valid`."""
    validator = valuerep.VALIDATORS["UI"]
    return frozenset(
        value for value in UID_dictionary if validator("UI", value)[0] and _stock_is_valid(str.__new__(UID, value))
    )


def _validate_value(vr: str, value: Any, validation_mode: int, validator: Any = None) -> None:
    if vr == "UI" and validator is None and type(value) in (str, UID) and value in KNOWN:
        return
    _stock_validate_value(vr, value, validation_mode, validator)


def _is_valid(self: UID) -> bool:
    return self in KNOWN or _stock_is_valid(self)


def install() -> bool:
    """Check the standard's UIDs once from now on (idempotent); False, changing nothing, on a
    pydicom this was not written against."""
    global _installed, KNOWN
    if not PIN.compatible():
        return False
    with _lock:
        if not _installed:
            KNOWN = _known_valid()
            pydicom_uid.validate_value = _validate_value  # type: ignore[assignment]
            UID.is_valid = property(_is_valid)  # type: ignore[method-assign,assignment]
            _installed = True
    return True
