import pytest
from django.db import IntegrityError, transaction

from facilities.models import User


def test_a_technologist_must_belong_to_a_facility(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="nofac", role=User.Role.TECHNOLOGIST)
