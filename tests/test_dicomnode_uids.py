"""The standard's UIDs checked once per process (dicomnode.uids): pinned to the pydicom it
was written against, an association request's standard UIDs no longer matched by regular
expression at every copy, and every other UID checked as pydicom checks it."""

from __future__ import annotations

import warnings
from collections import Counter

import pydicom
import pytest
from pydicom import config, valuerep
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.transport import AddressInformation

from dicomnode import uids
from dicomnode.server import build_ae


def test_it_is_written_against_the_installed_pydicom():
    # Fails on a pydicom upgrade: compare UID.__new__, UID.is_valid and
    # valuerep.validate_value with dicomnode.uids, then update uids.PIN.
    assert pydicom.__version__ == uids.PIN.version
    assert uids.PIN.stock_sources() == uids.PIN.sources
    assert uids.PIN.compatible()


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
