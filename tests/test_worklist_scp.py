"""Modality Worklist and MPPS over real sockets: dcmtk `findscu -W` and pynetdicom SCUs
against the receiver, as a township console takes its exams from the worklist and reports
them performed."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from cloudpacs import orders
from cloudpacs.models import BodyPart, Order, OrderPriority, PerformedProcedureStep, Study
from cloudpacs.services import person_name_groups
from consults.models import Consult
from consults.tasks import sweep_stable_studies
from dicomnode.queryretrieve import OPENED
from facilities.models import AuditEvent, ExamKind
from tests.factories import make_dataset, make_modality

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SCHEDULED = datetime(2025, 9, 1, 9, 30)


@pytest.fixture
def zhang(technologist, ct_modality) -> Order:
    return orders.register_order(
        technologist,
        modality=ct_modality,
        patient_id="XW0001",
        patient_name="张三",
        patient_name_pinyin="ZHANG^SAN",
        patient_sex="M",
        body_parts=list(BodyPart.objects.filter(code__in=["HEAD", "CHEST"])),
        priority=OrderPriority.URGENT,
        clinical_history="头痛三天",
        question="排除出血",
        scheduled_at=_aware(SCHEDULED),
    )


def _aware(moment: datetime) -> datetime:
    from django.utils import timezone

    return timezone.make_aware(moment)


def worklist_query(charset: str | None, **keys: str) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = keys.get("PatientName", "")
    ds.PatientID = keys.get("PatientID", "")
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = keys.get("AccessionNumber", "")
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureDescription = ""
    ds.RequestedProcedurePriority = ""
    ds.AdditionalPatientHistory = ""
    ds.ReferringPhysicianName = ""
    step = Dataset()
    step.Modality = keys.get("Modality", "")
    step.ScheduledStationAETitle = keys.get("ScheduledStationAETitle", "")
    step.ScheduledProcedureStepStartDate = keys.get("ScheduledProcedureStepStartDate", "")
    step.ScheduledProcedureStepStartTime = keys.get("ScheduledProcedureStepStartTime", "")
    step.ScheduledProcedureStepDescription = ""
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def write_query(ds: Dataset, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=False)
    return path


def findscu(address: tuple[str, int], calling: str, query: Path, out: Path) -> list[Dataset]:
    out.mkdir(exist_ok=True)
    result = subprocess.run(
        ["findscu", "-W", "-aet", calling, "-aec", "CLOUDPACS", "-X", "-od", str(out), *map(str, address), str(query)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def scu(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def pynetdicom_find(address: tuple[str, int], calling: str, query: Dataset) -> tuple[list[Dataset], int]:
    assoc = scu(calling).associate(*address, ae_title="CLOUDPACS")
    assert assoc.is_established
    answers: list[Dataset] = []
    final = -1
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status.Status == 0xFF00:
                answers.append(identifier)
            else:
                final = status.Status
    finally:
        assoc.release()
    return answers, final


# --- Modality Worklist ---------------------------------------------------------------------


def test_findscu_in_gb18030_gets_the_chinese_name_in_gb18030(receiver, zhang, ct_modality, tmp_path):
    query = write_query(
        worklist_query("GB18030", PatientName="张*", Modality="CT", ScheduledProcedureStepStartDate="20250901"),
        tmp_path / "query.dcm",
    )
    [answer] = findscu(receiver, ct_modality.ae_title, query, tmp_path / "out")
    assert answer.SpecificCharacterSet == "GB18030"
    assert answer.PatientName.ideographic == "张三" and answer.PatientName.alphabetic == "ZHANG^SAN"
    raw = (tmp_path / "out" / "rsp0001.dcm").read_bytes()
    assert "张三".encode("gb18030") in raw and "张三".encode() not in raw
    assert answer.AccessionNumber == zhang.accession_number
    assert answer.StudyInstanceUID == zhang.study_instance_uid
    assert answer.AdditionalPatientHistory == "头痛三天"
    assert answer.RequestedProcedurePriority == "HIGH"
    step = answer.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT" and step.ScheduledStationAETitle == ct_modality.ae_title
    assert step.ScheduledProcedureStepStartDate == "20250901" and step.ScheduledProcedureStepStartTime == "093000"
    assert step.ScheduledProcedureStepDescription == "CT 头颅、胸部"


def test_findscu_in_utf8_gets_the_chinese_name_in_utf8(receiver, zhang, ct_modality, tmp_path):
    query = write_query(worklist_query("ISO_IR 192", PatientName="张三"), tmp_path / "query.dcm")
    [answer] = findscu(receiver, ct_modality.ae_title, query, tmp_path / "out")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert "张三".encode() in (tmp_path / "out" / "rsp0001.dcm").read_bytes()
    assert answer.PatientName.ideographic == "张三"


def test_findscu_in_iso_2022_ir_58_gets_gb2312_with_its_escape_sequence(receiver, zhang, ct_modality, tmp_path):
    ds = worklist_query("\\ISO 2022 IR 58")
    # As a console writes it: GB 2312 designated to G1 by its escape sequence.
    ds.add_new(0x00100010, "PN", b"\x1b$)A" + "张".encode("gb2312") + b"*")
    query = write_query(ds, tmp_path / "query.dcm")
    [answer] = findscu(receiver, ct_modality.ae_title, query, tmp_path / "out")
    assert list(answer.SpecificCharacterSet) == ["", "ISO 2022 IR 58"]
    raw = (tmp_path / "out" / "rsp0001.dcm").read_bytes()
    assert b"ZHANG^SAN=\x1b$)A" + "张三".encode("gb2312") in raw
    assert b"\x1b$)A" + "头痛三天".encode("gb2312") in raw
    # Read back as the receiver reads an image in this character set.
    raw_name = answer.get_item("PatientName", keep_deferred=True).value
    assert person_name_groups(answer, "PatientName", raw_name)[2] == "张三"


def test_a_name_gb2312_lacks_is_answered_in_utf8_to_an_iso_2022_ir_58_query(receiver, technologist, ct_modality):
    orders.register_order(
        technologist,
        modality=ct_modality,
        patient_id="XW0077",
        patient_name="王堃",
        body_parts=list(BodyPart.objects.filter(code="CHEST")),
        scheduled_at=_aware(SCHEDULED),
    )
    answers, final = pynetdicom_find(receiver, ct_modality.ae_title, worklist_query("\\ISO 2022 IR 58"))
    assert final == 0x0000
    [answer] = answers
    assert answer.SpecificCharacterSet == "ISO_IR 192" and answer.PatientName == "王堃"


def test_a_query_without_a_character_set_is_answered_in_utf8_and_says_so(receiver, zhang, ct_modality):
    answers, final = pynetdicom_find(receiver, ct_modality.ae_title, worklist_query(None))
    assert final == 0x0000
    [answer] = answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName.ideographic == "张三"


def test_another_townships_console_sees_nothing_of_this_township(receiver, zhang, other_township, tmp_path):
    elsewhere = make_modality(other_township, ExamKind.CT, "PINGLIANG_CT")
    answers, final = pynetdicom_find(receiver, elsewhere.ae_title, worklist_query("ISO_IR 192"))
    assert answers == [] and final == 0x0000
    query = write_query(worklist_query("GB18030", PatientName="*"), tmp_path / "query.dcm")
    assert findscu(receiver, elsewhere.ae_title, query, tmp_path / "out") == []


def test_the_console_filters_by_modality_station_and_date(receiver, zhang, technologist, ct_modality, dr_modality):
    chest_film = orders.register_order(
        technologist,
        modality=dr_modality,
        patient_id="XW0002",
        patient_name="李四",
        body_parts=list(BodyPart.objects.filter(code="CHEST")),
        scheduled_at=_aware(datetime(2025, 9, 2, 8, 0)),
    )
    by_modality, _ = pynetdicom_find(receiver, dr_modality.ae_title, worklist_query("ISO_IR 192", Modality="DX"))
    assert [a.AccessionNumber for a in by_modality] == [chest_film.accession_number]
    assert by_modality[0].ScheduledProcedureStepSequence[0].Modality == "DX"
    by_station, _ = pynetdicom_find(
        receiver, dr_modality.ae_title, worklist_query("ISO_IR 192", ScheduledStationAETitle=ct_modality.ae_title)
    )
    assert [a.AccessionNumber for a in by_station] == [zhang.accession_number]
    by_range, _ = pynetdicom_find(
        receiver,
        ct_modality.ae_title,
        worklist_query("ISO_IR 192", ScheduledProcedureStepStartDate="20250902-20250930"),
    )
    assert [a.AccessionNumber for a in by_range] == [chest_film.accession_number]
    morning, _ = pynetdicom_find(
        receiver,
        ct_modality.ae_title,
        worklist_query(
            "ISO_IR 192", ScheduledProcedureStepStartDate="20250901", ScheduledProcedureStepStartTime="0900-1000"
        ),
    )
    assert [a.AccessionNumber for a in morning] == [zhang.accession_number]


def test_a_cancelled_or_performed_order_leaves_the_worklist(receiver, zhang, technologist, ct_modality):
    orders.cancel_order(zhang, technologist)
    answers, final = pynetdicom_find(receiver, ct_modality.ae_title, worklist_query("ISO_IR 192"))
    assert answers == [] and final == 0x0000


def test_a_malformed_date_is_refused_with_unable_to_process(receiver, zhang, ct_modality):
    answers, final = pynetdicom_find(
        receiver, ct_modality.ae_title, worklist_query("ISO_IR 192", ScheduledProcedureStepStartDate="2025-09-01x")
    )
    assert answers == [] and final == 0xC000
    # The association and the receiver carry on.
    answers, final = pynetdicom_find(receiver, ct_modality.ae_title, worklist_query("ISO_IR 192"))
    assert len(answers) == 1 and final == 0x0000


# --- Matching the images to the order over the wire ------------------------------------------


def store(address: tuple[str, int], calling: str, datasets: list[Dataset]) -> None:
    assoc = scu(calling).associate(*address, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0] * len(datasets)
    finally:
        assoc.release()


def test_images_with_the_worklists_accession_number_open_a_consult_with_the_order(
    receiver, zhang, ct_modality, settings
):
    settings.STUDY_STABLE_SECONDS = 0
    [answer], _ = pynetdicom_find(receiver, ct_modality.ae_title, worklist_query("ISO_IR 192"))
    image = make_dataset(
        patient_id=answer.PatientID,
        study_uid=generate_uid(),
        character_set="ISO_IR 192",
        patient_name="ZHANG^SAN=张三",
        AccessionNumber=answer.AccessionNumber,
    )
    store(receiver, ct_modality.ae_title, [image])
    sweep_stable_studies()
    consult = Consult.objects.get(study__study_uid=image.StudyInstanceUID)
    zhang.refresh_from_db()
    assert zhang.study == consult.study and zhang.matched_by == Order.Match.ACCESSION
    assert consult.body_parts == 2 and consult.priority == "urgent" and consult.question == "排除出血"


def test_images_without_it_are_linked_by_patient_id_and_date_for_the_technologist_to_confirm(
    receiver, zhang, ct_modality, settings
):
    settings.STUDY_STABLE_SECONDS = 0
    image = make_dataset(patient_id="XW0001", AccessionNumber="TYPED-BY-HAND")
    store(receiver, ct_modality.ae_title, [image])
    sweep_stable_studies()
    consult = Consult.objects.get(study__study_uid=image.StudyInstanceUID)
    zhang.refresh_from_db()
    assert zhang.study == consult.study and zhang.needs_confirmation
    assert consult.body_parts == 2


# --- MPPS ---------------------------------------------------------------------------------------


def mpps_create(order: Order, status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = Dataset()
    item.AccessionNumber = order.accession_number
    item.StudyInstanceUID = order.study_instance_uid
    item.ScheduledProcedureStepID = order.accession_number
    item.RequestedProcedureID = order.accession_number
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = "ZHANG^SAN=张三"
    ds.PatientID = order.patient_id
    ds.PerformedProcedureStepID = "1"
    ds.PerformedStationAETitle = order.modality.ae_title
    ds.PerformedProcedureStepStartDate = "20250901"
    ds.PerformedProcedureStepStartTime = "094000"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def mpps_end(status: str, images: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20250901"
    ds.PerformedProcedureStepEndTime = "095000"
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID if images else generate_uid()
    references = []
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        references.append(ref)
    series.ReferencedImageSequence = Sequence(references)
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def wait_for(probe, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while (found := probe()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found is not None, "nothing within the time allowed"
    return found


def order_images(order: Order, count: int = 3) -> list[Dataset]:
    series_uid = generate_uid()
    return [
        make_dataset(
            study_uid=order.study_instance_uid,
            series_uid=series_uid,
            patient_id=order.patient_id,
            instance_number=n,
            AccessionNumber=order.accession_number,
        )
        for n in range(1, count + 1)
    ]


def test_mpps_completed_with_all_images_stored_makes_the_study_arrive_at_once(receiver, zhang, ct_modality, settings):
    settings.STUDY_STABLE_SECONDS = 3600
    step_uid = generate_uid()
    assoc = scu(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(mpps_create(zhang), ModalityPerformedProcedureStep, step_uid)
        assert status.Status == 0x0000
        zhang.refresh_from_db()
        assert zhang.status == Order.Status.IN_PROGRESS
        # While the console performs it, the order is off the worklist.
        assert orders.scheduled_steps(ct_modality.facility, orders.WorklistQuery()) == []
        images = order_images(zhang)
        assert [assoc.send_c_store(ds).Status for ds in images] == [0, 0, 0]
        study = Study.objects.get(study_uid=zhang.study_instance_uid)
        assert study.status == Study.Status.RECEIVING
        status, _ = assoc.send_n_set(mpps_end("COMPLETED", images), ModalityPerformedProcedureStep, step_uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    # The receiver asked for a sweep at once (on a thread of its own here, without a broker).
    consult = wait_for(lambda: Consult.objects.filter(study=study).first())
    study.refresh_from_db()
    assert study.status == Study.Status.ARRIVED
    assert consult.body_parts == 2 and consult.priority == "urgent"
    zhang.refresh_from_db()
    assert zhang.status == Order.Status.COMPLETED and zhang.study == study
    assert not PerformedProcedureStep.objects.get(sop_instance_uid=step_uid).awaiting_images
    assert AuditEvent.objects.filter(action="cloudpacs.performed_step.reported", object_id=step_uid).count() == 2


def test_mpps_completed_before_the_last_image_makes_the_study_arrive_when_it_is_stored(
    receiver, zhang, ct_modality, settings
):
    settings.STUDY_STABLE_SECONDS = 3600
    step_uid = generate_uid()
    images = order_images(zhang, 2)
    assoc = scu(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        assert assoc.send_n_create(mpps_create(zhang), ModalityPerformedProcedureStep, step_uid)[0].Status == 0
        assert assoc.send_c_store(images[0]).Status == 0
        assert assoc.send_n_set(mpps_end("COMPLETED", images), ModalityPerformedProcedureStep, step_uid)[0].Status == 0
        study = Study.objects.get(study_uid=zhang.study_instance_uid)
        assert study.status == Study.Status.RECEIVING
        sweep_stable_studies()
        study.refresh_from_db()
        assert study.status == Study.Status.RECEIVING
        assert assoc.send_c_store(images[1]).Status == 0
    finally:
        assoc.release()
    sweep_stable_studies()
    study.refresh_from_db()
    assert study.status == Study.Status.ARRIVED and Consult.objects.filter(study=study).exists()


def test_mpps_discontinued_puts_the_order_back_on_the_worklist(receiver, zhang, ct_modality):
    step_uid = generate_uid()
    assoc = scu(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        assert assoc.send_n_create(mpps_create(zhang), ModalityPerformedProcedureStep, step_uid)[0].Status == 0
        status, _ = assoc.send_n_set(mpps_end("DISCONTINUED", []), ModalityPerformedProcedureStep, step_uid)
        assert status.Status == 0
        # Finished: no further change.
        status, _ = assoc.send_n_set(mpps_end("COMPLETED", []), ModalityPerformedProcedureStep, step_uid)
        assert status.Status == 0x0110
    finally:
        assoc.release()
    zhang.refresh_from_db()
    assert zhang.status == Order.Status.SCHEDULED
    assert PerformedProcedureStep.objects.get(sop_instance_uid=step_uid).status == "DISCONTINUED"


def test_mpps_requests_that_break_the_rules_get_their_failure_statuses(receiver, zhang, ct_modality, other_township):
    step_uid = generate_uid()
    assoc = scu(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        completed_at_once = mpps_create(zhang, status="COMPLETED")
        assert (
            assoc.send_n_create(completed_at_once, ModalityPerformedProcedureStep, generate_uid())[0].Status == 0x0106
        )
        without_status = mpps_create(zhang)
        del without_status.PerformedProcedureStepStatus
        assert assoc.send_n_create(without_status, ModalityPerformedProcedureStep, generate_uid())[0].Status == 0x0120
        assert assoc.send_n_create(mpps_create(zhang), ModalityPerformedProcedureStep, step_uid)[0].Status == 0
        assert assoc.send_n_create(mpps_create(zhang), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0111
        unknown = assoc.send_n_set(mpps_end("COMPLETED", []), ModalityPerformedProcedureStep, generate_uid())
        assert unknown[0].Status == 0x0112
        odd = mpps_end("FINISHED", [])
        assert assoc.send_n_set(odd, ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0106
    finally:
        assoc.release()
    elsewhere = make_modality(other_township, ExamKind.CT, "PINGLIANG_CT")
    assoc = scu(elsewhere.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        # Another township's step does not exist for this console.
        status, _ = assoc.send_n_set(mpps_end("COMPLETED", []), ModalityPerformedProcedureStep, step_uid)
        assert status.Status == 0x0112
    finally:
        assoc.release()
    assert PerformedProcedureStep.objects.get(sop_instance_uid=step_uid).status == "IN PROGRESS"


def test_a_c_cancel_stops_the_answers(receiver, technologist, ct_modality):
    chest = list(BodyPart.objects.filter(code="CHEST"))
    for n in range(300):
        orders.register_order(
            technologist,
            modality=ct_modality,
            patient_id=f"XW{n:04d}",
            patient_name="张三",
            body_parts=chest,
            scheduled_at=_aware(SCHEDULED),
        )
    assoc = scu(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    pending, final = 0, -1
    try:
        for status, _identifier in assoc.send_c_find(
            worklist_query("ISO_IR 192"), ModalityWorklistInformationFind, msg_id=7
        ):
            if status.Status == 0xFF00:
                pending += 1
                if pending == 1:
                    assoc.send_c_cancel(7, query_model=ModalityWorklistInformationFind)
            else:
                final = status.Status
    finally:
        assoc.release()
    assert final == 0xFE00
    assert 1 <= pending < 300
