"""Broken and unusual files through the front door from outside, each sent by dcmtk
`storescu` (TCP_NODELAY=1) and by pynetdicom (the file's dataset bytes as they are), then
fetched back with C-GET: a refused one gets a failure status with a reason and leaves
nothing in the index or the store; an accepted one comes back with the same elements and
the same pixel data (tests/test_sweep_from_outside.differences)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from cloudpacs.charsets import ESC_GB2312_G1
from cloudpacs.models import Instance
from facilities.models import ApplicationEntity
from tests.factories import make_dataset
from tests.store_clients import send_file_as_is
from tests.test_sweep_from_outside import PROPOSE, differences

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
FILES = Path(pydicom.data.__file__).parent / "test_files"


def part10(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def edited(path: Path, change: Callable[[bytes], bytes]) -> Path:
    path.write_bytes(change(path.read_bytes()))
    return path


def element_offset(data: bytes, tag: int) -> int:
    """Where an explicit VR little endian element starts (its tag), past the file meta."""
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return data.index(needle, 132 + 12)


def wrong_group_length(tmp: Path) -> Path:
    ds = make_dataset()
    ds.add_new(0x00080000, "UL", 4)  # group 0008 is far longer than 4 bytes
    return part10(ds, tmp / "group-length.dcm")


def odd_length_value(tmp: Path) -> Path:
    path = part10(make_dataset(StationName="ABCD"), tmp / "odd.dcm")

    def change(data: bytes) -> bytes:
        # Station Name (LO) "ABCD" said to be 3 bytes, "ABC": what follows starts at odd offsets.
        at = element_offset(data, 0x00081010)
        return data[: at + 6] + struct.pack("<H", 3) + b"ABC" + data[at + 12 :]

    return edited(path, change)


def nested_undefined_sequences(tmp: Path) -> Path:
    ds = make_dataset()
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([inner])
    item.ConceptNameCodeSequence.is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    inner.is_undefined_length_sequence_item = True
    ds.AnatomicRegionSequence = Sequence([item])
    ds.AnatomicRegionSequence.is_undefined_length = True
    return part10(ds, tmp / "nested.dcm")


def deflated(tmp: Path) -> Path:
    ds = make_dataset(transfer_syntax_uid=DeflatedExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return part10(ds, tmp / "deflated.dcm")


def truncated(tmp: Path) -> Path:
    path = part10(make_dataset(), tmp / "truncated.dcm")
    return edited(path, lambda data: data[: len(data) - 2000])


def gb18030(tmp: Path) -> Path:
    ds = make_dataset(character_set="GB18030", patient_name="Wang^Yan=王^䶮", StudyDescription="胸部平扫")
    return part10(ds, tmp / "gb18030.dcm")


def ir58(tmp: Path) -> Path:
    ds = make_dataset(character_set=["", "ISO 2022 IR 58"])
    ds["PatientName"].value = (
        b"Zhang^Xiaodong="
        + ESC_GB2312_G1
        + "张".encode("gb2312")
        + b"^"
        + ESC_GB2312_G1
        + "小东".encode("gb2312")
        + b"="
    )
    ds.add_new(0x00081030, "LO", ESC_GB2312_G1 + "胸部平扫".encode("gb2312"))
    return part10(ds, tmp / "ir58.dcm")


def ir6_ir87(tmp: Path) -> Path:
    # PS3.5 H.3.1: Yamada^Tarou=山田^太郎=やまだ^たろう, ideographic and phonetic groups in JIS X 0208.
    ds = make_dataset(character_set=["ISO 2022 IR 6", "ISO 2022 IR 87"])
    ds["PatientName"].value = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
    return part10(ds, tmp / "ir87.dcm")


def private_class(tmp: Path) -> Path:
    return part10(make_dataset(sop_class_uid="1.2.826.0.1.3680043.9.3811.99.1"), tmp / "private.dcm")


def pydicom_file(name: str) -> Callable[[Path], Path]:
    return lambda tmp: FILES / name


@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]
    accepted: bool
    reason: str = ""  # in the refusal's Error Comment
    dcmtk_sends: bool = True  # storescu refuses to send a file it cannot read whole


CASES = [
    Case("wrong group length", wrong_group_length, True),
    Case("odd-length value", odd_length_value, True),
    Case("undefined-length sequence in a sequence", nested_undefined_sequences, True),
    Case("deflated explicit VR", deflated, True),
    # The Error Comment is an LO: its first 64 characters.
    Case("truncated", truncated, False, "only 6192 arrived", dcmtk_sends=False),
    Case("JPEG-LS lossless", pydicom_file("MR_small_jpeg_ls_lossless.dcm"), True),
    Case("JPEG 2000 lossless", pydicom_file("MR_small_jp2klossless.dcm"), True),
    Case("RLE lossless", pydicom_file("MR_small_RLE.dcm"), True),
    Case("GB18030", gb18030, True),
    Case("ISO 2022 IR 58", ir58, True),
    Case("ISO 2022 IR 6 and IR 87, three name groups", ir6_ir87, True),
]


def storescu(receiver: tuple[str, int], calling: str, path: Path, syntax: str) -> tuple[int | None, str]:
    result = subprocess.run(
        ["storescu", "-d", "-R", PROPOSE.get(syntax, "-x="), "-aet", calling, "-aec", "CLOUDPACS",
         *map(str, receiver), str(path)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
    comment = re.search(r"\(0000,0902\) LO \[(.*?)\]", output)
    return (int(status.group(1), 16) if status else None), (comment.group(1) if comment else output[-500:])


def pynetdicom_store(receiver: tuple[str, int], calling: str, path: Path, meta: Dataset) -> tuple[int | None, str]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        if not assoc.accepted_contexts:
            return None, "no presentation context accepted"
        answer = send_file_as_is(assoc, path)
    finally:
        assoc.release()
    return (int(answer.Status) if "Status" in answer else None), str(answer.get("ErrorComment", ""))


def c_get(receiver: tuple[str, int], meta: Dataset, study_uid: str, directory: Path) -> Path | None:
    """The instance fetched back with C-GET, as it came (file meta first)."""
    got: list[Path] = []

    def on_store(event: evt.Event) -> int:
        path = directory / f"{event.request.AffectedSOPInstanceUID}.dcm"
        # The receiver in this process has pynetdicom write what it receives to a file.
        chunked = getattr(event, "dataset_path", None)
        path.write_bytes(chunked.read_bytes() if chunked else event.encoded_dataset())
        got.append(path)
        return 0x0000

    ae = AE(ae_title="XUANWO_WS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    sop_class, sop_uid = str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)
    # One context per syntax (an acceptor takes one syntax of each): the file's own and the natives.
    for syntax in dict.fromkeys([str(meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian]):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(
        *receiver, ae_title="CLOUDPACS", ext_neg=[build_role(sop_class, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study_uid
    identifier.SOPInstanceUID = sop_uid
    try:
        list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return got[0] if got else None


@pytest.fixture
def workstation(township) -> ApplicationEntity:
    return ApplicationEntity.objects.create(
        ae_title="XUANWO_WS", role=ApplicationEntity.Role.WORKSTATION, facility=township, may_retrieve=True
    )


@pytest.mark.parametrize("client", ["dcmtk", "pynetdicom"])
def test_broken_and_unusual_files_are_refused_with_a_reason_or_come_back_identical(
    receiver, ct_modality, workstation, tmp_path, client
):
    problems: list[str] = []
    for number, case in enumerate(CASES):
        work = tmp_path / str(number)
        work.mkdir()
        path = case.make(work)
        meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
        sop_uid = str(meta.MediaStorageSOPInstanceUID)
        Instance.objects.filter(sop_instance_uid=sop_uid).delete()  # pydicom's files, sent by both clients
        if client == "dcmtk":
            status, comment = storescu(receiver, ct_modality.ae_title, path, str(meta.TransferSyntaxUID))
        else:
            status, comment = pynetdicom_store(receiver, ct_modality.ae_title, path, meta)
        stored = Instance.objects.filter(sop_instance_uid=sop_uid).select_related("series__study").first()
        if client == "dcmtk" and not case.dcmtk_sends:
            if status is not None or stored is not None:
                problems.append(f"{case.name}: storescu sent it ({status}), indexed {bool(stored)}")
            continue
        if not case.accepted:
            if status is None or status < 0xA000 or stored is not None or case.reason not in comment.lower():
                problems.append(f"{case.name}: expected a refusal, got {status} {comment!r}, indexed {bool(stored)}")
            continue
        if status != 0x0000 or stored is None:
            problems.append(f"{case.name}: refused {status} {comment!r}")
            continue
        back = c_get(receiver, meta, stored.series.study.study_uid, work)
        if back is None:
            problems.append(f"{case.name}: stored, not retrieved")
            continue
        problems += [f"{case.name}: {difference}" for difference in differences(path, back)]
    if os.environ.get("SWEEP_PROBLEMS"):
        Path(os.environ["SWEEP_PROBLEMS"] + f".{client}").write_text("\n".join(problems))
    assert problems == []


def test_a_private_sop_class_is_refused_at_negotiation_and_the_rest_of_the_association_serves(
    receiver, ct_modality, tmp_path
):
    path = private_class(tmp_path)
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context("1.2.826.0.1.3680043.9.3811.99.1", [ExplicitVRLittleEndian])
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert accepted == {SecondaryCaptureImageStorage}
    assert rejected == {"1.2.826.0.1.3680043.9.3811.99.1": 0x03}  # abstract syntax not supported
    result = subprocess.run(
        ["storescu", "-aet", ct_modality.ae_title, "-aec", "CLOUDPACS", *map(str, receiver), str(path)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no presentation context" in (result.stdout + result.stderr).lower()
    assert not Instance.objects.exists()
