"""What a registered application entity may do on its association: the association
policy admits it (dicomnode.server.handle_requested), these checks answer each service.

A service the entity is not registered for is answered with the general status 0x0124
"Refused: Not authorized" (PS3.7 C.4) and an Error Comment, so the association can go on
with the services it may use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from facilities.models import ApplicationEntity

NOT_AUTHORIZED = 0x0124

STORE = "may_store"
QUERY = "may_query"
RETRIEVE = "may_retrieve"


def entity(event: evt.Event) -> ApplicationEntity | None:
    """The association's registered application entity, set by the association policy."""
    state = getattr(event.assoc, "_yunying", None)
    if state is None or not getattr(state, "accepted", False):
        return None
    found: ApplicationEntity | None = getattr(state, "entity", None)
    return found


def permitted(event: evt.Event, permission: str) -> ApplicationEntity | None:
    found = entity(event)
    if found is None or not getattr(found, permission):
        return None
    return found


def refusal(event: evt.Event, service: str) -> Dataset:
    calling = str(event.assoc.requestor.ae_title).strip()
    status = Dataset()
    status.Status = NOT_AUTHORIZED
    status.ErrorComment = f"{calling} is not registered for {service}"[:64]
    return status


def requiring(permission: str, service: str, handler: Callable[[evt.Event], Any]) -> Callable[[evt.Event], Any]:
    """A handler answered only for entities holding `permission` (N-CREATE, N-SET...)."""

    def guarded(event: evt.Event) -> Any:
        if permitted(event, permission) is None:
            return refusal(event, service), None
        return handler(event)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
