"""The body-part vocabulary the platform ships with (version 1): what a township orders and
the ledger counts. Codes are the main DICOM BodyPartExamined value (PS3.16 Annex L,
CID 4031) of each part; the other values a console may write map to the same part.
A later change to the vocabulary is another migration like this one."""

from django.db import migrations

# code, Chinese name, English name, BodyPartExamined values, exam kinds
BODY_PARTS = [
    ("HEAD", "头颅", "Head", "HEAD\\BRAIN\\SKULL", "CT\\DR"),
    ("SINUS", "鼻窦", "Paranasal sinuses", "SINUS\\PNS", "CT\\DR"),
    ("ORBIT", "眼眶", "Orbit", "ORBIT", "CT"),
    ("NECK", "颈部", "Neck", "NECK", "CT"),
    ("CHEST", "胸部", "Chest", "CHEST\\THORAX\\LUNG", "CT\\DR"),
    ("ABDOMEN", "腹部", "Abdomen", "ABDOMEN", "CT\\DR"),
    ("PELVIS", "盆腔", "Pelvis", "PELVIS", "CT\\DR"),
    ("CSPINE", "颈椎", "Cervical spine", "CSPINE", "CT\\DR"),
    ("TSPINE", "胸椎", "Thoracic spine", "TSPINE", "CT\\DR"),
    ("LSPINE", "腰椎", "Lumbar spine", "LSPINE\\LSSPINE", "CT\\DR"),
    ("SSPINE", "骶尾椎", "Sacrum and coccyx", "SSPINE\\SACRUM\\COCCYX", "CT\\DR"),
    ("SHOULDER", "肩关节", "Shoulder", "SHOULDER", "CT\\DR"),
    ("CLAVICLE", "锁骨", "Clavicle", "CLAVICLE", "DR"),
    ("RIB", "肋骨", "Ribs", "RIB", "CT\\DR"),
    ("ARM", "上臂", "Upper arm", "ARM\\HUMERUS", "DR"),
    ("ELBOW", "肘关节", "Elbow", "ELBOW", "CT\\DR"),
    ("FOREARM", "前臂", "Forearm", "FOREARM\\RADIUS\\ULNA", "DR"),
    ("WRIST", "腕关节", "Wrist", "WRIST", "CT\\DR"),
    ("HAND", "手", "Hand", "HAND", "DR"),
    ("HIP", "髋关节", "Hip", "HIP", "CT\\DR"),
    ("THIGH", "大腿", "Thigh", "THIGH\\FEMUR", "DR"),
    ("KNEE", "膝关节", "Knee", "KNEE", "CT\\DR"),
    ("LEG", "小腿", "Lower leg", "LEG\\TIBIA\\FIBULA", "DR"),
    ("ANKLE", "踝关节", "Ankle", "ANKLE", "CT\\DR"),
    ("FOOT", "足", "Foot", "FOOT\\CALCANEUS", "DR"),
]


def add_body_parts(apps, schema_editor):
    body_part = apps.get_model("cloudpacs", "BodyPart")
    for position, (code, name_zh, name_en, values, kinds) in enumerate(BODY_PARTS, start=1):
        body_part.objects.update_or_create(
            code=code,
            defaults={
                "name_zh": name_zh,
                "name_en": name_en,
                "dicom_values": values,
                "kinds": kinds,
                "sort_order": position * 10,
            },
        )


def remove_body_parts(apps, schema_editor):
    apps.get_model("cloudpacs", "BodyPart").objects.filter(code__in=[row[0] for row in BODY_PARTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("cloudpacs", "0005_orders")]

    operations = [migrations.RunPython(add_body_parts, remove_body_parts)]
