"""The report templates the platform ships with: normal findings for CT head, chest and
abdomen, and DR chest, spine and limbs. Radiologists add their own beside them."""

from django.db import migrations

TEMPLATES = [
    (
        "CT",
        "头颅",
        "头颅 CT 平扫（正常）",
        "颅骨骨质完整，未见骨折征象。脑实质内未见异常密度影，灰白质分界清楚。"
        "各脑室、脑池大小及形态正常，脑沟、脑裂未见增宽。中线结构居中。",
        "头颅 CT 平扫未见明显异常。",
    ),
    (
        "CT",
        "胸部",
        "胸部 CT 平扫（正常）",
        "胸廓对称。双肺纹理清晰，走行自然，双肺野内未见异常密度影。气管及各级支气管通畅。"
        "纵隔居中，纵隔内未见肿大淋巴结。心影大小、形态正常。双侧胸膜未见增厚，胸腔未见积液。",
        "胸部 CT 平扫未见明显异常。",
    ),
    (
        "CT",
        "腹部",
        "上腹部 CT 平扫（正常）",
        "肝脏大小、形态正常，肝实质密度均匀，未见异常密度影。肝内外胆管未见扩张，胆囊不大。"
        "脾脏、胰腺大小形态及密度未见异常。双肾形态、大小正常，未见异常密度影。腹膜后未见肿大淋巴结，腹腔未见积液。",
        "上腹部 CT 平扫未见明显异常。",
    ),
    (
        "DR",
        "胸部",
        "胸部正位片（正常）",
        "胸廓对称，气管居中。双肺纹理清晰，双肺野内未见异常密度影。双肺门不大。"
        "心影大小、形态正常。双侧膈面光整，肋膈角锐利。",
        "心、肺、膈未见明显异常。",
    ),
    (
        "DR",
        "脊柱",
        "腰椎正侧位片（正常）",
        "腰椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏，椎体边缘未见明显骨质增生。"
        "各椎间隙未见狭窄。附件结构未见异常。椎旁软组织未见异常。",
        "腰椎未见明显异常。",
    ),
    (
        "DR",
        "四肢",
        "四肢骨关节片（正常）",
        "所摄骨质结构完整，骨皮质连续，未见骨折及骨质破坏征象。关节间隙正常，关节面光整。周围软组织未见异常。",
        "所摄骨关节未见明显异常。",
    ),
]


def add_templates(apps, schema_editor):
    report_template = apps.get_model("consults", "ReportTemplate")
    for kind, body_part, name, findings, impression in TEMPLATES:
        report_template.objects.get_or_create(
            kind=kind, body_part=body_part, name=name, author=None,
            defaults={"findings": findings, "impression": impression},
        )


def remove_templates(apps, schema_editor):
    report_template = apps.get_model("consults", "ReportTemplate")
    report_template.objects.filter(author=None, name__in=[name for _, _, name, _, _ in TEMPLATES]).delete()


class Migration(migrations.Migration):
    dependencies = [("consults", "0002_reading_workflow")]

    operations = [migrations.RunPython(add_templates, remove_templates)]
