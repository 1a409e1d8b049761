"""The receiver's Storage Commitment Push Model SCP (PS3.4 J.3): a console asks, before it
deletes its local copy, whether the archive holds the instances it sent.

N-ACTION (action type 1, Request Storage Commitment) is answered at once; the archive then
checks each referenced instance (`cloudpacs.queryretrieve.commitment`: indexed for the
console's facility, with the same SOP class, its file in the store with its size) and the
result goes back as an N-EVENT-REPORT (event type 1: all committed; 2: some failed, with
their reasons): on the same association while the console keeps it open, otherwise on a
new association to the entity's registered host and port, proposing the SCP role for the
Storage Commitment SOP class (PS3.4 J.3.3, SCP/SCU role selection)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt

from cloudpacs import queryretrieve as archive_qr
from dicomnode import permits, queryretrieve
from facilities.models import ApplicationEntity

logger = logging.getLogger("dicomnode")

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
SOP_CLASSES = [STORAGE_COMMITMENT_PUSH]

SUCCESS = 0x0000
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
REQUEST_STORAGE_COMMITMENT = 1
ALL_COMMITTED = 1
SOME_FAILED = 2
# Attempts to deliver a report on a new association, and the wait between them.
NEW_ASSOCIATION_ATTEMPTS = 3
RETRY_SECONDS = 5.0


def parse_request(ds: Dataset) -> tuple[str, list[tuple[str, str]]]:
    """The Transaction UID and the (SOP Class UID, SOP Instance UID) pairs of an
    N-ACTION's Action Information. Raises KeyError for a missing attribute, ValueError
    for an empty one."""
    transaction_uid = str(ds["TransactionUID"].value or "").strip()
    references = []
    for item in ds["ReferencedSOPSequence"].value or []:
        class_uid = str(item.get("ReferencedSOPClassUID") or "").strip()
        instance_uid = str(item.get("ReferencedSOPInstanceUID") or "").strip()
        if not class_uid or not instance_uid:
            raise ValueError("a Referenced SOP Sequence item lacks its class or instance UID")
        references.append((class_uid, instance_uid))
    if not transaction_uid or not references:
        raise ValueError("Transaction UID or Referenced SOP Sequence empty")
    return transaction_uid, references


def report_dataset(transaction_uid: str, result: archive_qr.CommitmentResult) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's event type and Event Information (PS3.4 J.3.3.1.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = settings.DICOM_AE_TITLE
    committed = []
    for class_uid, instance_uid in result.committed:
        item = Dataset()
        item.ReferencedSOPClassUID = class_uid
        item.ReferencedSOPInstanceUID = instance_uid
        committed.append(item)
    if committed:
        ds.ReferencedSOPSequence = Sequence(committed)
    if not result.failed:
        return ALL_COMMITTED, ds
    failed = []
    for class_uid, instance_uid, reason in result.failed:
        item = Dataset()
        item.ReferencedSOPClassUID = class_uid
        item.ReferencedSOPInstanceUID = instance_uid
        item.FailureReason = reason
        failed.append(item)
    ds.FailedSOPSequence = Sequence(failed)
    return SOME_FAILED, ds


def handle_n_action(event: evt.Event) -> tuple[Any, Dataset | None]:
    """Request Storage Commitment: answered at once; the report follows on a thread."""
    entity = permits.permitted(event, permits.STORE)
    if entity is None:
        return permits.refusal(event, "storage commitment"), None
    request: Any = event.request
    if str(request.RequestedSOPClassUID) != STORAGE_COMMITMENT_PUSH:
        return PROCESSING_FAILURE, None
    if request.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        return NO_SUCH_ACTION, None
    try:
        transaction_uid, references = parse_request(event.action_information)
    except KeyError as exc:
        logger.warning("storage commitment from %s refused: missing %s", entity.ae_title, exc)
        return MISSING_ATTRIBUTE, None
    except Exception as exc:
        logger.warning("storage commitment from %s refused: %s", entity.ae_title, exc)
        return INVALID_ATTRIBUTE_VALUE, None
    logger.info("storage commitment %s from %s: %d instances", transaction_uid, entity.ae_title, len(references))
    thread = threading.Thread(
        target=report,
        args=(event.assoc, entity.pk, transaction_uid, references),
        name=f"commitment-{transaction_uid[-12:]}",
        daemon=True,
    )
    thread.start()
    return SUCCESS, None


def report(assoc: Any, entity_pk: int, transaction_uid: str, references: list[tuple[str, str]]) -> bool:
    """Check the instances and send the report; True once a peer answered it Success.
    Runs on its own thread, after the N-ACTION response is on its way: pynetdicom lets the
    acceptor send on the association only between two messages it serves."""
    close_old_connections()
    try:
        entity = ApplicationEntity.objects.select_related("facility", "modality").get(pk=entity_pk)
        result = archive_qr.commitment(entity, transaction_uid, references)
    except Exception:
        logger.exception("storage commitment %s: the archive could not be checked", transaction_uid)
        result = archive_qr.CommitmentResult(failed=[(c, i, archive_qr.PROCESSING_FAILURE) for c, i in references])
        entity = None
    finally:
        connection.close()
    event_type, information = report_dataset(transaction_uid, result)
    if assoc is not None and assoc.is_established and _send(assoc, event_type, information):
        logger.info(
            "storage commitment %s reported on the same association: %d committed, %d failed",
            transaction_uid,
            len(result.committed),
            len(result.failed),
        )
        return True
    if entity is None:
        return False
    return _report_on_new_association(entity, transaction_uid, event_type, information)


def _send(assoc: Any, event_type: int, information: Dataset) -> bool:
    try:
        status, _reply = assoc.send_n_event_report(
            information, event_type, STORAGE_COMMITMENT_PUSH, WELL_KNOWN_INSTANCE
        )
    except Exception as exc:
        logger.warning("storage commitment report could not be sent: %s", exc)
        return False
    return bool(status) and int(status.Status) == SUCCESS


def _report_on_new_association(
    entity: ApplicationEntity, transaction_uid: str, event_type: int, information: Dataset
) -> bool:
    host, port = entity.network_address
    if not host or not port:
        logger.warning(
            "storage commitment %s for %s: the association closed and the entity has no host and port to report to",
            transaction_uid,
            entity.ae_title,
        )
        return False
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
    for attempt in range(1, NEW_ASSOCIATION_ATTEMPTS + 1):
        assoc = ae.associate(
            host,
            port,
            ae_title=entity.ae_title,
            ext_neg=[build_role(STORAGE_COMMITMENT_PUSH, scp_role=True)],
            evt_handlers=queryretrieve.OPENED,
        )
        if assoc.is_established:
            try:
                sent = _send(assoc, event_type, information)
            finally:
                assoc.release()
            if sent:
                logger.info(
                    "storage commitment %s reported to %s at %s:%s on a new association",
                    transaction_uid,
                    entity.ae_title,
                    host,
                    port,
                )
                return True
        logger.warning(
            "storage commitment %s: report to %s at %s:%s failed (attempt %d of %d)",
            transaction_uid,
            entity.ae_title,
            host,
            port,
            attempt,
            NEW_ASSOCIATION_ATTEMPTS,
        )
        if attempt < NEW_ASSOCIATION_ATTEMPTS:
            time.sleep(RETRY_SECONDS)
    return False
