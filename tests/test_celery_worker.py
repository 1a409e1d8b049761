"""Tasks reach a real Celery worker over Redis when a broker is configured.

Needs CELERY_BROKER_URL and PostgreSQL (the worker is another process and must see the
test database); .ci/run provides both. Elsewhere pytest reports it as skipped."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from django.utils import timezone

from cloudpacs.models import Patient, Study
from consults.models import Consult
from consults.tasks import sweep_stable_studies

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]


def test_a_stable_study_gets_its_consult_from_a_real_worker(township, ct_modality, celery_worker_process):
    patient = Patient.objects.create(facility=township, patient_id="W1", name="Wang^Wu=王^五")
    study = Study.objects.create(
        study_uid="1.2.826.0.1.3680043.10.1.1",
        patient=patient,
        facility=township,
        modality=ct_modality,
        study_date=date(2025, 9, 1),
        modalities_in_study="CT",
        number_of_series=1,
        number_of_instances=3,
        first_received_at=timezone.now() - timedelta(minutes=5),
        last_received_at=timezone.now() - timedelta(minutes=5),
    )
    worker = celery_worker_process()

    sweep_stable_studies.apply_async(queue=worker.queue)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not Consult.objects.filter(study=study).exists():
        time.sleep(0.2)

    consult = Consult.objects.filter(study=study).first()
    assert consult is not None, worker.output()
    assert consult.kind == "CT"
    assert consult.facility == township
    study.refresh_from_db()
    assert study.status == Study.Status.ARRIVED
    assert "sweep_stable_studies" in worker.output()
