"""Who may connect: the application entities the county registers (consoles, workstations,
archives), each with its facility, address and permissions; the association policy asks
them, and each service is refused to an entity not registered for it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)

from cloudpacs.models import Instance
from dicomnode.queryretrieve import OPENED
from facilities.models import ApplicationEntity, AuditEvent, Facility
from facilities.services import application_entity_for_ae_title
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)


def workstation(facility: Facility, ae_title: str = "COUNTY_WS1", **fields) -> ApplicationEntity:
    fields.setdefault("may_query", True)
    return ApplicationEntity.objects.create(
        ae_title=ae_title, role=ApplicationEntity.Role.WORKSTATION, facility=facility, **fields
    )


def scu(title: str) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    return ae


def test_a_modality_is_registered_as_a_console_entity_with_a_consoles_permissions(ct_modality):
    entity = ct_modality.application_entity
    assert (entity.ae_title, entity.role, entity.facility) == ("XUANWO_CT", "console", ct_modality.facility)
    assert entity.may_store and entity.may_query
    assert not entity.may_retrieve and not entity.is_move_destination


def test_renaming_or_moving_a_modality_keeps_its_entity_in_step_and_its_permissions(ct_modality):
    entity = ct_modality.application_entity
    entity.may_retrieve = True
    entity.save()
    ct_modality.ae_title = "XUANWO_CT2"
    ct_modality.host, ct_modality.port = "10.1.2.3", 104
    ct_modality.is_active = False
    ct_modality.save()
    entity.refresh_from_db()
    assert (entity.ae_title, entity.host, entity.port, entity.is_active) == ("XUANWO_CT2", "10.1.2.3", 104, False)
    assert entity.may_retrieve
    assert ApplicationEntity.objects.count() == 1


def test_a_modality_cannot_take_a_title_a_workstation_holds(county, township):
    from django.core.exceptions import ValidationError

    from facilities.models import Modality

    workstation(county, "TAKEN_WS")
    modality = Modality(facility=township, kind="CT", ae_title="taken_ws")
    with pytest.raises(ValidationError):
        modality.full_clean()


def test_only_a_console_may_store_and_a_move_destination_needs_an_address(county):
    from django.core.exceptions import ValidationError

    entity = ApplicationEntity(ae_title="WS", role="workstation", facility=county, may_store=True)
    with pytest.raises(ValidationError) as error:
        entity.full_clean()
    assert "may_store" in error.value.message_dict
    entity = ApplicationEntity(ae_title="WS", role="workstation", facility=county, is_move_destination=True)
    with pytest.raises(ValidationError) as error:
        entity.full_clean()
    assert "is_move_destination" in error.value.message_dict


def test_an_inactive_entity_or_facility_is_not_found(county, ct_modality):
    ws = workstation(county)
    assert application_entity_for_ae_title(" county_ws1 ") == ws
    ws.is_active = False
    ws.save()
    assert application_entity_for_ae_title("COUNTY_WS1") is None
    Facility.objects.filter(pk=ct_modality.facility_id).update(is_active=False)
    assert application_entity_for_ae_title("XUANWO_CT") is None


def test_the_migration_makes_every_existing_modality_a_console(ct_modality, dr_modality):
    ApplicationEntity.objects.all().delete()
    executor = MigrationExecutor(connection)
    executor.migrate([("facilities", "0004_api_tokens")])
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("facilities"))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    entities = {e.ae_title: e for e in ApplicationEntity.objects.all()}
    assert set(entities) == {"XUANWO_CT", "XUANWO_DR"}
    assert entities["XUANWO_CT"].modality_id == ct_modality.pk
    assert all(e.role == "console" and e.may_store and e.may_query for e in entities.values())


def test_it_rejects_an_unknown_ae(receiver):
    assoc = scu("NOBODY").associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result_source == 1
    assert assoc.acceptor.primitive.diagnostic == 3


def test_a_workstation_is_admitted_but_may_not_store_or_report_steps(receiver, county):
    workstation(county)
    assoc = scu("COUNTY_WS1").associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        ds = make_dataset()
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0124
        assert "not registered" in status.ErrorComment or "may not store" in status.ErrorComment
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(step, ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0x0124
    finally:
        assoc.release()
    assert not Instance.objects.exists()


def test_a_console_without_query_permission_is_refused_the_worklist(receiver, ct_modality):
    entity = ct_modality.application_entity
    entity.may_query = False
    entity.save()
    assoc = scu("XUANWO_CT").associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        statuses = [status.Status for status, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
        assert statuses == [0x0124]
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
    finally:
        assoc.release()


def test_administrators_register_a_workstation_in_the_admin_and_it_is_audited(county, administrator):
    from django.test import Client

    from tests.factories import PASSWORD

    administrator.is_staff = True
    administrator.save()
    client = Client()
    assert client.login(username=administrator.username, password=PASSWORD)
    response = client.post(
        reverse("admin:facilities_applicationentity_add"),
        {
            "ae_title": "county_ws2",
            "role": "workstation",
            "facility": county.pk,
            "description": "阅片工作站",
            "host": "127.0.0.1",
            "port": "11113",
            "may_query": "on",
            "may_retrieve": "on",
            "is_move_destination": "on",
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entity = ApplicationEntity.objects.get(ae_title="COUNTY_WS2")
    assert entity.may_retrieve and entity.is_move_destination
    assert AuditEvent.objects.filter(action="facilities.applicationentity.added").exists()


def test_a_consoles_title_and_address_are_not_edited_on_its_entity(ct_modality, administrator):
    from django.test import Client

    from tests.factories import PASSWORD

    administrator.is_staff = True
    administrator.save()
    client = Client()
    assert client.login(username=administrator.username, password=PASSWORD)
    page = client.get(reverse("admin:facilities_applicationentity_change", args=[ct_modality.application_entity.pk]))
    assert page.status_code == 200
    assert 'name="ae_title"' not in page.content.decode()
    assert 'name="may_retrieve"' in page.content.decode()
