"""The association log: every association the receiver sees, accepted or rejected, becomes
one row with the peer and the counts, written when it ends; administrators read it in the
admin and nobody can change it there."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse

from dicomnode.models import AssociationLog
from dicomnode.queryretrieve import OPENED
from facilities.models import User
from tests.factories import PASSWORD, make_dataset, make_user
from tests.store_clients import client_ae

pytestmark = pytest.mark.django_db(transaction=True)


def logged_rows(count: int) -> list[AssociationLog]:
    """The row is written by the receiver's thread just after it answers the release."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = list(AssociationLog.objects.order_by("started_at"))
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    return list(AssociationLog.objects.order_by("started_at"))


def test_an_accepted_association_is_logged_with_its_peer_and_counts(receiver, ct_modality):
    first, second = make_dataset(), make_dataset()
    ae = client_ae(ct_modality.ae_title)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    local_port = assoc.requestor.port
    assert assoc.send_c_echo().Status == 0x0000
    statuses = [assoc.send_c_store(ds).Status for ds in (first, second, first)]
    assoc.release()
    assert statuses == [0x0000, 0x0000, 0x0000]

    [row] = logged_rows(1)
    assert row.outcome == AssociationLog.Outcome.RELEASED
    assert (row.calling_ae_title, row.called_ae_title) == (ct_modality.ae_title, "CLOUDPACS")
    assert row.modality == ct_modality
    assert (row.peer_address, row.peer_port) == ("127.0.0.1", local_port)
    assert (row.instances_stored, row.instances_duplicate, row.instances_failed) == (2, 1, 0)
    assert row.echoes == 1
    # Three datasets went over the wire, each written with its File Meta header.
    sizes = [len(ds.PixelData) for ds in (first, second, first)]
    assert row.bytes_received > sum(sizes)
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert row.reason == ""


def test_failed_instances_are_counted(receiver, ct_modality):
    missing_series = make_dataset()
    del missing_series.SeriesInstanceUID
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.send_c_store(missing_series).Status == 0xC001
    assoc.release()
    [row] = logged_rows(1)
    assert (row.instances_stored, row.instances_failed) == (0, 1)


def test_an_aborted_association_is_logged_as_aborted(receiver, ct_modality):
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.send_c_store(make_dataset()).Status == 0x0000
    assoc.abort()
    [row] = logged_rows(1)
    assert row.outcome == AssociationLog.Outcome.ABORTED
    assert row.instances_stored == 1


def test_a_rejected_unknown_ae_is_logged_with_the_reason(receiver, ct_modality):
    assoc = client_ae("STRANGER").associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_rejected
    [row] = logged_rows(1)
    assert row.outcome == AssociationLog.Outcome.REJECTED
    assert row.calling_ae_title == "STRANGER"
    assert row.modality is None
    assert row.reason == "calling AE title not recognised"
    assert row.peer_address == "127.0.0.1"
    assert row.instances_stored == 0


def test_a_wrong_called_ae_is_logged_with_the_reason(receiver, ct_modality):
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="ELSEWHERE")
    assert assoc.is_rejected
    [row] = logged_rows(1)
    assert (row.outcome, row.called_ae_title) == (AssociationLog.Outcome.REJECTED, "ELSEWHERE")
    assert row.reason == "called AE title is not ours"


@pytest.fixture
def log_row(ct_modality) -> AssociationLog:
    return AssociationLog.objects.create(
        calling_ae_title=ct_modality.ae_title,
        called_ae_title="CLOUDPACS",
        peer_address="10.1.2.3",
        peer_port=40000,
        modality=ct_modality,
        outcome=AssociationLog.Outcome.RELEASED,
        instances_stored=12,
    )


@pytest.fixture
def staff_administrator_client(county) -> Client:
    make_user(User.Role.ADMINISTRATOR, county, username="admin_staff", is_staff=True)
    client = Client()
    assert client.login(username="admin_staff", password=PASSWORD)
    return client


def test_administrators_read_the_log_in_the_admin(staff_administrator_client, log_row):
    page = staff_administrator_client.get(reverse("admin:dicomnode_associationlog_changelist"))
    assert page.status_code == 200
    assert "10.1.2.3" in page.content.decode()
    change = staff_administrator_client.get(reverse("admin:dicomnode_associationlog_change", args=[log_row.pk]))
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()


def test_the_log_cannot_be_added_or_deleted_in_the_admin(staff_administrator_client, log_row):
    assert staff_administrator_client.get(reverse("admin:dicomnode_associationlog_add")).status_code == 403
    delete = reverse("admin:dicomnode_associationlog_delete", args=[log_row.pk])
    assert staff_administrator_client.get(delete).status_code == 403
    assert staff_administrator_client.post(delete, {"post": "yes"}).status_code == 403
    assert AssociationLog.objects.filter(pk=log_row.pk).exists()


def test_technologists_cannot_see_the_log(technologist_client, log_row):
    response = technologist_client.get(reverse("admin:dicomnode_associationlog_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
