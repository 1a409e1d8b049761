"""The receiver's C-STORE requests read, and its answers written, without pydicom
datasets (dicomnode.fastpath): pinned to the pynetdicom they were written against, field
for field and byte for byte what pynetdicom reads and writes, and used by the receiver's
associations."""

from __future__ import annotations

import tempfile
from io import BytesIO

import pynetdicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode

from cloudpacs.models import Instance
from dicomnode import fastpath
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_is_written_against_the_installed_pynetdicom():
    # Fails on a pynetdicom upgrade: compare DIMSEServiceProvider.send_msg and
    # .receive_primitive, DIMSEMessage.decode_msg and .message_to_primitive with what
    # dicomnode.fastpath does in their place, then update fastpath.PIN.
    assert pynetdicom.__version__ == fastpath.PIN.version
    assert fastpath.PIN.stock_sources() == fastpath.PIN.sources
    assert fastpath.PIN.compatible()


def answer(message_id: int, status: int, instance: str, sop_class: str = CTImageStorage) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    return primitive


def pynetdicoms_pdvs(primitive: C_STORE, context_id: int, maximum_pdu: int) -> list[list[tuple[int, bytes]]]:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return [pdata.presentation_data_value_list for pdata in message.encode_msg(context_id, maximum_pdu)]


# A generated UID's shape, the same in every process: a test's id names its parameters, and
# pytest-xdist refuses to run when its workers collect different ids.
FIXED_UID = generate_uid(entropy_srcs=["yunying-fastpath"])


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB007, 0xA700, 0xC000, 0x0110])
@pytest.mark.parametrize(
    "instance",
    [
        "1.2.3",  # odd: padded with a NUL
        "1.2.34",  # even
        FIXED_UID,
        "1." + "2" * 62,  # 64 characters, the longest UID
    ],
)
@pytest.mark.parametrize("message_id", [1, 2, 0x7FFF, 0xFFFF])
def test_a_plain_answer_is_pynetdicoms_byte_for_byte(status, instance, message_id):
    primitive = answer(message_id, status, instance)
    command = fastpath.c_store_rsp_command(primitive)
    assert command is not None
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    assert command == encode(message.command_set, True, True)
    assert [[(7, fastpath.LAST_COMMAND_FRAGMENT + command)]] == pynetdicoms_pdvs(primitive, 7, 16382)


def test_an_answer_for_another_sop_class_is_too():
    primitive = answer(5, 0x0000, generate_uid(), sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    command = fastpath.c_store_rsp_command(primitive)
    assert [[(1, fastpath.LAST_COMMAND_FRAGMENT + command)]] == pynetdicoms_pdvs(primitive, 1, 0)


def test_answers_with_more_than_a_status_are_left_to_pynetdicom():
    with_comment = answer(1, 0xA700, generate_uid())
    with_comment.ErrorComment = "out of resources"
    assert fastpath.c_store_rsp_command(with_comment) is None
    with_element = answer(1, 0xC000, generate_uid())
    with_element.OffendingElement = [0x00100020]
    assert fastpath.c_store_rsp_command(with_element) is None
    # A request, not an answer.
    request = answer(1, 0x0000, generate_uid())
    request.MessageIDBeingRespondedTo = None
    assert fastpath.c_store_rsp_command(request) is None


def test_the_receiver_reads_plain_stores_this_way_and_answers_failures_pynetdicoms(receiver, ct_modality, monkeypatch):
    written: list[bytes] = []
    real = fastpath.c_store_rsp_command

    def spy(primitive: C_STORE) -> bytes | None:
        command = real(primitive)
        if command is not None:
            written.append(command)
        return command

    monkeypatch.setattr(fastpath, "c_store_rsp_command", spy)
    read: list[str] = []
    start = fastpath.PlainStoreRequest.start

    def spy_start(*args):
        message = start(*args)
        read.append(args[2][0x1000])
        return message

    monkeypatch.setattr(fastpath.PlainStoreRequest, "start", spy_start)
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    # Three C-STOREs one after another: the checked pause (dicomnode.reactor) on the client's loop.
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        stored = make_dataset()
        response = assoc.send_c_store(stored)
        assert response.Status == 0x0000
        assert "ErrorComment" not in response
        # Without a Study Instance UID: a failure, answered with its Error Comment.
        broken = make_dataset()
        del broken.StudyInstanceUID
        failed = assoc.send_c_store(broken)
        assert failed.Status == 0xC001
        assert "StudyInstanceUID" in str(failed.ErrorComment)
        # A C-MOVE's sub-operation names its originator: read by pynetdicom, stored alike.
        moved = make_dataset()
        assert assoc.send_c_store(moved, originator_aet="ARCHIVE", originator_id=7).Status == 0x0000
    finally:
        assoc.release()
    assert read == [stored.SOPInstanceUID, broken.SOPInstanceUID]
    assert len(written) == 2
    assert Instance.objects.filter(sop_instance_uid__in=[stored.SOPInstanceUID, moved.SOPInstanceUID]).count() == 2


def request(message_id: int, instance: str, sop_class: str = CTImageStorage, priority: int = 2) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.Priority = priority
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00")
    return primitive


def command_of(primitive) -> bytes:
    message = C_STORE_RQ() if isinstance(primitive, C_STORE) else C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)


@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", FIXED_UID, "1." + "2" * 62])
@pytest.mark.parametrize("message_id,priority", [(1, 2), (7, 0), (0xFFFF, 1)])
def test_a_plain_request_is_read_as_pynetdicom_reads_it(instance, message_id, priority, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    command = command_of(request(message_id, instance, priority=priority))
    values = fastpath.read_c_store_rq_command(command)
    assert values is not None
    ours = fastpath.PlainStoreRequest.start(3, command, values, ExplicitVRLittleEndian)
    stock_message = C_STORE_RQ()
    stock_message.command_set = decode(BytesIO(command), True, True)
    stock_message.context_id = 3
    stock_message.data_set = BytesIO()
    try:
        mine, stock = ours.message_to_primitive(), stock_message.message_to_primitive()
        for field in (
            "MessageID",
            "AffectedSOPClassUID",
            "AffectedSOPInstanceUID",
            "Priority",
            "MoveOriginatorApplicationEntityTitle",
            "MoveOriginatorMessageID",
            "_context_id",
        ):
            assert getattr(mine, field) == getattr(stock, field), field
            assert type(getattr(mine, field)) is type(getattr(stock, field)), field
        assert mine._dataset_path == ours._data_set_path and mine._dataset_file is ours._data_set_file
        assert mine.DataSet.getvalue() == b""
        # The pydicom command set, for whoever asks for it.
        assert ours.command_set == stock_message.command_set
    finally:
        ours._data_set_file.close()
    # The file begins as pynetdicom begins it.
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        expected,
        create_file_meta(
            sop_class_uid=CTImageStorage, sop_instance_uid=instance, transfer_syntax=ExplicitVRLittleEndian
        ),
    )
    assert ours._data_set_path.read_bytes() == expected.getvalue()


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, JPEG2000Lossless]
)
@pytest.mark.parametrize("sop_class", [CTImageStorage, "1.2.840.10008.5.1.4.1.1.1.1"])
def test_the_file_meta_is_pynetdicoms_byte_for_byte(syntax, sop_class):
    instance = generate_uid()
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        expected, create_file_meta(sop_class_uid=sop_class, sop_instance_uid=instance, transfer_syntax=syntax)
    )
    assert fastpath.file_meta(sop_class, instance, syntax) == expected.getvalue()


def test_other_commands_are_left_to_pynetdicom():
    plain = request(1, generate_uid())
    assert fastpath.read_c_store_rq_command(command_of(plain)) is not None
    moved = request(1, generate_uid())
    moved.MoveOriginatorApplicationEntityTitle = "ARCHIVE"
    moved.MoveOriginatorMessageID = 9
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    command = command_of(plain)
    without_data = command.replace(
        b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x00", b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"
    )
    assert without_data != command
    for other in (command_of(moved), command_of(echo), without_data, command[:-3], command + b"\x00\x00"):
        assert fastpath.read_c_store_rq_command(other) is None
