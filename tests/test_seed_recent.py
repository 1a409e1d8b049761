"""`seed_hanyin --with-images`: the recent studies come in as a township's would (order,
images through the ingest service, a consult the roster gives to a reader), unsigned.
Without the history, to keep it quick; the browser walk (test_demo_browser) does it whole."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from billing.hanyin_recent import RECENT
from billing.models import LedgerEntry
from cloudpacs.models import Instance, Order
from consults.models import Consult
from facilities.models import RosterShift


@pytest.mark.django_db(transaction=True)
def test_the_recent_studies_arrive_with_their_images_and_wait_for_a_reader(settings):
    out = StringIO()
    call_command("seed_hanyin", "--no-history", "--with-images", stdout=out)
    consults = Consult.objects.select_related("study", "study__patient", "radiologist")
    assert consults.count() == len(RECENT) == 6
    for consult in consults:
        study = consult.study
        assert study is not None and study.number_of_instances in (1, 24)
        assert study.patient.name_ideographic and study.patient.name_initials
        assert Order.objects.get(study=study).accession_number == study.accession_number
        assert consult.body_part_names and consult.clinical_history
        assert consult.signed_at is None
        # Given by the roster to whoever is on duty now.
        assert consult.status == Consult.Status.ASSIGNED
        assert RosterShift.objects.filter(
            radiologist=consult.radiologist, starts_at__lte=consult.assigned_at, ends_at__gt=consult.assigned_at
        ).exists()
    assert {c.priority for c in consults} == {"emergency", "urgent", "routine"}
    for instance in Instance.objects.all()[:3]:
        assert (Path(settings.STORAGE_ROOT) / instance.storage_key).exists()
    assert LedgerEntry.objects.count() == 0
    assert "新到检查 6 例" in out.getvalue()
    # Run again: nothing more is sent.
    call_command("seed_hanyin", "--no-history", "--with-images", stdout=StringIO())
    assert Consult.objects.count() == 6
