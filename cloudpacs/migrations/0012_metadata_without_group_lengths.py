"""Stored WADO-RS metadata documents of instances whose files carry Group Length
(gggg,0000) elements held them, which PS3.18 F.2.2 leaves out of the DICOM JSON model,
and named Available Transfer Syntax UID (0008,3002) after the attributes that follow it.
Such documents are dropped and computed again, from the files, on their next request
(cloudpacs.services.instances_metadata). Group lengths are always UL, so the text
'0000":{"vr":"UL"' finds them (a key is eight hex digits; only a group length's ends in
0000). Documents without one keep 00083002 out of order: every client reads the
attributes by key."""

from typing import Any

from django.db import migrations

GROUP_LENGTH = '0000":{"vr":"UL"'


def drop_documents(apps: Any, schema_editor: Any) -> None:
    InstanceMetadata = apps.get_model("cloudpacs", "InstanceMetadata")
    InstanceMetadata.objects.filter(document__contains=GROUP_LENGTH).delete()


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0011_trimmed_person_names")]

    operations = [migrations.RunPython(drop_documents, migrations.RunPython.noop)]
