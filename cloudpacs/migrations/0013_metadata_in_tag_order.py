"""Stored WADO-RS metadata documents written before the attributes were sorted name
Available Transfer Syntax UID (0008,3002) after every attribute of the dataset, just
before Pixel Data (7FE0,0010) or last; 0012 dropped only those that also held group
lengths. PS3.18 F.2.2 orders a DICOM JSON object's attributes by tag: the remaining
ones are written again in that order, from their own text (the same JSON as a document
computed now from the file: nothing is read from the store). Only the top level is
concerned: items were always in their dataset's order."""

import json
from typing import Any

from django.db import migrations

# 00083002 followed by the end of the document or by Pixel Data: where it was appended.
APPENDED = r'"00083002":\{"vr":"UI","Value":\["[0-9.]*"\]\}(\}$|,"7FE00010":)'


def sort_documents(apps: Any, schema_editor: Any) -> None:
    InstanceMetadata = apps.get_model("cloudpacs", "InstanceMetadata")
    found = InstanceMetadata.objects.filter(document__regex=APPENDED).values_list("pk", "document")
    for pk, text in found.iterator(chunk_size=500):
        document = json.loads(text)
        if list(document) == sorted(document):
            continue
        ordered = json.dumps(dict(sorted(document.items())), ensure_ascii=False, separators=(",", ":"))
        InstanceMetadata.objects.filter(pk=pk).update(document=ordered)


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0012_metadata_without_group_lengths")]

    operations = [migrations.RunPython(sort_documents, migrations.RunPython.noop)]
