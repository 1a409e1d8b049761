"""The receiver's database connections kept from one association to the next
(dicomnode.database): the next association stores on the connection the last one left,
and one that PostgreSQL closed in between is replaced, never failing a C-STORE."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from pynetdicom.sop_class import CTImageStorage, Verification

from cloudpacs.models import Instance
from dicomnode import server as dicomnode
from dicomnode.models import AssociationLog
from dicomnode.queryretrieve import OPENED
from tests import store_clients
from tests.factories import make_dataset

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="connections are kept on PostgreSQL only"),
]


@pytest.fixture
def server(settings) -> Iterator[Any]:
    settings.DICOM_AE_TITLE = "CLOUDPACS"
    server = dicomnode.start_server("127.0.0.1", 0, block=False)
    try:
        yield server
    finally:
        server.shutdown()


def push(server: Any, calling: str, count: int = 1) -> list[int]:
    """One association storing `count` new instances; their statuses, once the receiver
    has ended the association (its connection given back)."""
    ae = store_clients.client_ae(calling, [(CTImageStorage, []), (Verification, [])], acse_timeout=10)
    assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(make_dataset()).Status for _ in range(count)]
    finally:
        assoc.release()
    deadline = time.monotonic() + 30
    while len(server.idle_connections) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return statuses


def backends() -> set[int]:
    """The other backends connected to the test database now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_the_next_association_stores_on_the_connection_the_last_one_left(server, ct_modality):
    assert push(server, ct_modality.ae_title, 2) == [0x0000, 0x0000]
    [kept] = server.idle_connections.backend_pids()
    assert kept in backends()

    assert push(server, ct_modality.ae_title, 2) == [0x0000, 0x0000]
    assert push(server, ct_modality.ae_title) == [0x0000]

    assert server.idle_connections.backend_pids() == [kept]
    assert Instance.objects.count() == 5
    assert AssociationLog.objects.filter(outcome=AssociationLog.Outcome.RELEASED).count() == 3


def test_an_association_after_postgresql_closed_the_kept_connection_still_stores(server, ct_modality):
    assert push(server, ct_modality.ae_title) == [0x0000]
    [kept] = server.idle_connections.backend_pids()
    with connection.cursor() as cursor:
        # What a restart of PostgreSQL does to every connection, here to the kept one alone.
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [kept])
        assert cursor.fetchone()[0] is True
    assert kept not in backends()

    assert push(server, ct_modality.ae_title, 2) == [0x0000, 0x0000]

    [replaced] = server.idle_connections.backend_pids()
    assert replaced != kept
    assert Instance.objects.count() == 3


def test_a_rejected_association_leaves_its_connection_for_the_next(server, ct_modality):
    assert push(server, ct_modality.ae_title) == [0x0000]
    [kept] = server.idle_connections.backend_pids()
    ae = store_clients.client_ae("UNKNOWN", [(CTImageStorage, [])], acse_timeout=10)
    assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="CLOUDPACS")
    assert assoc.is_rejected
    # The rejection is sent before its thread gives the connection back.
    deadline = time.monotonic() + 30
    while len(server.idle_connections) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert push(server, ct_modality.ae_title) == [0x0000]
    assert server.idle_connections.backend_pids() == [kept]


def test_stopping_the_receiver_closes_the_kept_connections(settings, ct_modality):
    settings.DICOM_AE_TITLE = "CLOUDPACS"
    server = dicomnode.start_server("127.0.0.1", 0, block=False)
    try:
        assert push(server, ct_modality.ae_title) == [0x0000]
        [kept] = server.idle_connections.backend_pids()
    finally:
        server.shutdown()
    assert len(server.idle_connections) == 0
    deadline = time.monotonic() + 30
    while kept in backends() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kept not in backends()
