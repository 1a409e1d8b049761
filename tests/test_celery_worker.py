"""Tasks reach a real Celery worker over Redis when a broker is configured.

This is the one test that needs CELERY_BROKER_URL and PostgreSQL (the worker is another
process and must see the test database); .ci/run provides both. Elsewhere it is skipped
and pytest reports it as skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from cloudpacs.models import Patient, Study
from consults.models import Consult
from consults.tasks import sweep_stable_studies

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("CELERY_BROKER_URL"), reason="needs CELERY_BROKER_URL (Redis)"),
]


def database_url_of_the_test_database() -> str:
    db = settings.DATABASES["default"]
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_a_stable_study_gets_its_consult_from_a_real_worker(township, ct_modality, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: run with DATABASE_URL on PostgreSQL")
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

    queue = f"test-{uuid.uuid4().hex}"
    env = dict(os.environ, DATABASE_URL=database_url_of_the_test_database())
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cloudpacs", "worker", "--pool", "solo", "-Q", queue, "-l", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        sweep_stable_studies.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Consult.objects.filter(study=study).exists():
            time.sleep(0.2)
        consult = Consult.objects.filter(study=study).first()
        assert consult is not None, Path(log.name).read_text()
        assert consult.kind == "CT"
        assert consult.facility == township
        study.refresh_from_db()
        assert study.status == Study.Status.ARRIVED
        assert "sweep_stable_studies" in Path(log.name).read_text()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
