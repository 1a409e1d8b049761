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

What was left of a standard UID's cost was pynetdicom's `set_uid`, which every UID property
of its PDU items, primitives and presentation contexts goes through: a `UID` made from the
value, pynetdicom's UI validator (which makes another `UID` and asks `is_valid`), then
`is_valid` again, ten Python calls for an answer known in advance. Decoding storescu's
request alone set 420 UIDs that way, and its conversion, negotiation and answer as many
again (docs/benchmarks-ingest.md, run 34). For a known standard UID given as a string, a
`UID` without instance attributes, or ASCII bytes, `_set_uid` returns the `UID` that
`set_uid` would (a new one, equal, of the same type) without the checks, whatever the flags
(a known UID is neither empty nor invalid); anything else, or a UI validator other than
pynetdicom's own in its configuration, goes to pynetdicom's `set_uid`. It replaces
`set_uid` in the pynetdicom modules that imported it, on pynetdicom 3.0.4 only
(`SET_UID_PIN`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import pydicom
from pydicom import uid as pydicom_uid
from pydicom import valuerep
from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID
from pynetdicom import _config as pynetdicom_config
from pynetdicom import _validators as pynetdicom_validators
from pynetdicom import utils as pynetdicom_utils

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

# pynetdicom's, kept for every value that is not a known standard UID.
_stock_set_uid = pynetdicom_utils.set_uid
_stock_validate_ui = pynetdicom_validators.validate_ui

SET_UID_PIN = pinning.Pin(
    "3.0.4",
    (pynetdicom_utils.set_uid, "f917a8035170f79262606ce81ff903350ae59d272c75d6d15684d9dcde3d178b"),
    (pynetdicom_validators.validate_ui, "3a4aa36750c3c8a5fdd320cd827090d52fe696ef3215eac1958bb28b2ac7c70e"),
    (pynetdicom_utils.decode_bytes, "d684af5eae3231d6027dc4d5b9124480f1a307202f5d643d6d6c3b051ca7e7b0"),
    otherwise="every UID pynetdicom sets goes through its set_uid's checks",
)

_lock = threading.Lock()
_installed = False
KNOWN: frozenset[str] = frozenset()
# The same, by their ASCII bytes, as pynetdicom's PDU items decode them.
KNOWN_BYTES: dict[bytes, str] = {}


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


def _set_uid(
    value: str | bytes | UID | None,
    name: str,
    allow_empty: bool = True,
    allow_none: bool = True,
    validate: bool = True,
) -> UID | None:
    """pynetdicom's set_uid, a known standard UID made without the checks it passes."""
    kind = type(value)
    text: Any = KNOWN_BYTES.get(value) if isinstance(value, bytes) else value
    if (
        (kind is str or (kind is UID and not text.__dict__) or (kind is bytes and text is not None))
        and text in KNOWN
        and pynetdicom_config.VALIDATORS["UI"] is _stock_validate_ui
    ):
        return str.__new__(UID, text)
    return _stock_set_uid(value, name, allow_empty, allow_none, validate)


def _modules_using(function: Any) -> list[Any]:
    """pynetdicom's modules (but utils, where set_uid is defined) that call `function` by
    the name `set_uid` they imported."""
    return [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("pynetdicom")
        and module is not pynetdicom_utils
        and getattr(module, "set_uid", None) is function
    ]


def _modules_using_stock_set_uid() -> list[Any]:
    return _modules_using(_stock_set_uid)


def _modules_set_uid_replaced() -> list[Any]:
    return _modules_using(_set_uid)


def install() -> bool:
    """Check the standard's UIDs once from now on (idempotent); False, changing nothing, on a
    pydicom this was not written against."""
    global _installed, KNOWN
    if not PIN.compatible():
        return False
    with _lock:
        if not _installed:
            KNOWN = _known_valid()
            KNOWN_BYTES.update((value.encode("ascii"), value) for value in KNOWN)
            pydicom_uid.validate_value = _validate_value  # type: ignore[assignment]
            UID.is_valid = property(_is_valid)  # type: ignore[method-assign,assignment]
            if SET_UID_PIN.compatible():
                for module in _modules_using_stock_set_uid():
                    module.set_uid = _set_uid
            _installed = True
    return True
