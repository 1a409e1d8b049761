"""The standard's UIDs checked once per process (dicomnode.uids): pinned to the pydicom it
was written against, an association request's standard UIDs no longer matched by regular
expression at every copy, nor run through pynetdicom's set_uid (pinned to pynetdicom), and
every other UID checked as pydicom and pynetdicom check it."""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter
from typing import Any

import pydicom
import pynetdicom
import pytest
from pydicom import config, valuerep
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, _config, build_context
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.transport import AddressInformation

from dicomnode import uids
from dicomnode.server import build_ae


def test_it_is_written_against_the_installed_pydicom():
    # Fails on a pydicom upgrade: compare UID.__new__, UID.is_valid and
    # valuerep.validate_value with dicomnode.uids, then update uids.PIN.
    assert pydicom.__version__ == uids.PIN.version
    assert uids.PIN.stock_sources() == uids.PIN.sources
    assert uids.PIN.compatible()


def test_its_set_uid_is_written_against_the_installed_pynetdicom():
    # Fails on a pynetdicom upgrade: compare utils.set_uid, _validators.validate_ui and
    # utils.decode_bytes with dicomnode.uids._set_uid, then update uids.SET_UID_PIN.
    assert pynetdicom.__version__ == uids.SET_UID_PIN.version
    assert uids.SET_UID_PIN.stock_sources() == uids.SET_UID_PIN.sources
    assert uids.SET_UID_PIN.compatible()


def storescu_request() -> bytes:
    """An A-ASSOCIATE-RQ as dcmtk's storescu sends it: 128 storage contexts, two or three
    transfer syntaxes each."""
    contexts = []
    for number, proposed in enumerate(StoragePresentationContexts[:128]):
        syntaxes: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        syntaxes += [ExplicitVRBigEndian] * (number % 2)
        context = build_context(str(proposed.abstract_syntax), syntaxes)
        context.context_id = 2 * number + 1
        contexts.append(context)
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "XUANWO_CT"
    primitive.called_ae_title = "YUNYING"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 11112)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 104)
    primitive.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 131072
    primitive.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


@pytest.fixture
def ui_checks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every string pydicom's UI validator is asked about."""
    checked: Counter[str] = Counter()
    validator = valuerep.VALIDATORS["UI"]

    def counted(vr: str, value: object) -> tuple[bool, str]:
        checked[str(value)] += 1
        return validator(vr, value)

    monkeypatch.setitem(valuerep.VALIDATORS, "UI", counted)
    return checked


def test_an_association_requests_standard_uids_are_not_matched_again_at_every_copy(ui_checks):
    # Before dicomnode.uids: about 1,900 checks per request (each UID decoded, converted
    # and copied by the negotiation is made again, and checked again).
    ae = build_ae()
    request = storescu_request()
    ui_checks.clear()

    pdu = A_ASSOCIATE_RQ()
    pdu.decode(request)
    primitive = pdu.to_primitive()
    results, _roles = negotiate_as_acceptor(primitive.presentation_context_definition_list, ae.supported_contexts)

    assert sum(ui_checks.values()) == 0
    ct = next(context for context in results if context.abstract_syntax == "1.2.840.10008.5.1.4.1.1.2")
    assert ct.result == 0
    assert ct.transfer_syntax == [ExplicitVRLittleEndian]


def test_any_other_uid_is_checked_as_pydicom_checks_it(ui_checks):
    build_ae()
    ui_checks.clear()

    private = UID("1.2.826.0.1.3680043.8.498.12345")
    assert ui_checks[private] == 1
    assert private.is_valid

    with pytest.raises(ValueError, match="Invalid value for VR UI"):
        UID("1.2.03", validation_mode=config.RAISE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        malformed = UID("1.2.03", validation_mode=config.WARN)
    assert [str(warning.message).split(". ")[0] for warning in caught] == ["Invalid value for VR UI: '1.2.03'"]
    assert not malformed.is_valid
    assert not UID("1." * 40 + "1").is_valid  # over 64 characters

    standard = UID("1.2.840.10008.5.1.4.1.1.2")
    assert ui_checks[standard] == 0
    assert standard.is_valid
    assert standard.name == "CT Image Storage"


@pytest.fixture
def stock_set_uid_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every value that reaches pynetdicom's own set_uid once the AE is built."""
    build_ae()
    calls: Counter[str] = Counter()
    stock = uids._stock_set_uid

    def counted(value: Any, *args: Any) -> Any:
        calls[str(value)] += 1
        return stock(value, *args)

    monkeypatch.setattr(uids, "_stock_set_uid", counted)
    return calls


def negotiated(request: bytes) -> tuple[Any, bytes]:
    """An acceptor's work on `request`: decoded, converted, negotiated against the
    receiver's contexts, and answered (the A-ASSOCIATE-AC encoded)."""
    ae = build_ae()
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(request)
    primitive = pdu.to_primitive()
    results, _roles = negotiate_as_acceptor(primitive.presentation_context_definition_list, ae.supported_contexts)
    answer = A_ASSOCIATE()
    answer.application_context_name = primitive.application_context_name
    answer.calling_ae_title = primitive.calling_ae_title
    answer.called_ae_title = primitive.called_ae_title
    answer.result = 0x00
    answer.presentation_context_definition_results_list = results
    answer.user_information = primitive.user_information
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(answer)
    return primitive, bytes(ac.encode())


def test_an_association_requests_standard_uids_are_set_without_pynetdicoms_checks(stock_set_uid_calls):
    # Before: 784 UIDs of the request through pynetdicom's set_uid (each a UID made,
    # validated by its UI validator, which makes another, and is_valid asked twice).
    negotiated(storescu_request())

    # Only the four storage classes that pydicom's UID dictionary does not list, once each.
    assert set(stock_set_uid_calls).isdisjoint(uids.KNOWN)
    assert sum(stock_set_uid_calls.values()) == 4
    for name, module in list(sys.modules.items()):
        if name.startswith("pynetdicom") and module is not pynetdicom.utils:
            assert getattr(module, "set_uid", uids._set_uid) is uids._set_uid, name


def test_the_request_is_decoded_negotiated_and_answered_as_pynetdicom_does(monkeypatch):
    primitive, answer = negotiated(storescu_request())
    contexts = [
        (context.context_id, type(context.abstract_syntax), context.abstract_syntax, list(context.transfer_syntax))
        for context in primitive.presentation_context_definition_list
    ]
    assert all(isinstance(uid, UID) for context in contexts for uid in (context[2], *context[3]))

    for module in uids._modules_set_uid_replaced():
        monkeypatch.setattr(module, "set_uid", uids._stock_set_uid)
    stock_primitive, stock_answer = negotiated(storescu_request())

    assert answer == stock_answer
    assert contexts == [
        (context.context_id, type(context.abstract_syntax), context.abstract_syntax, list(context.transfer_syntax))
        for context in stock_primitive.presentation_context_definition_list
    ]


def test_any_other_uid_is_set_as_pynetdicom_sets_it(stock_set_uid_calls, caplog):
    context = PresentationContext()
    context.abstract_syntax = "1.2.826.0.1.3680043.8.498.12345"  # private: checked
    context.abstract_syntax = b"1.2.840.10008.5.1.4.1.1.2\x00"  # padded: checked (and kept)
    with pytest.raises(ValueError, match="Invalid 'abstract_syntax' value"):
        context.abstract_syntax = "1." * 40 + "1"
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        context.abstract_syntax = "1.2.03"
    assert "Non-conformant 'abstract_syntax' value '1.2.03'" in caplog.text
    private_syntax = UID("1.2.840.10008.1.2.1")
    private_syntax.set_private_encoding(False, True)
    context.abstract_syntax = private_syntax  # a UID with attributes of its own: checked
    assert context.abstract_syntax._PRIVATE_TS_ENCODING == (False, True)
    assert sorted(stock_set_uid_calls) == sorted(
        [
            "1.2.826.0.1.3680043.8.498.12345",
            "b'1.2.840.10008.5.1.4.1.1.2\\x00'",
            "1." * 40 + "1",
            "1.2.03",
            "1.2.840.10008.1.2.1",
        ]
    )

    stock_set_uid_calls.clear()
    request = C_STORE()
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    request.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    assert type(request.AffectedSOPClassUID) is UID
    assert request.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert list(stock_set_uid_calls) == ["1.2.826.0.1.3680043.8.498.1"]


def test_a_ui_validator_configured_in_pynetdicom_is_asked_about_standard_uids_too(stock_set_uid_calls, monkeypatch):
    monkeypatch.setitem(_config.VALIDATORS, "UI", lambda value: (False, "refused by the site"))
    context = PresentationContext()
    with pytest.raises(ValueError, match="refused by the site"):
        context.abstract_syntax = "1.2.840.10008.5.1.4.1.1.2"
    assert list(stock_set_uid_calls) == ["1.2.840.10008.5.1.4.1.1.2"]
