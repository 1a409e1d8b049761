from django.db import migrations, models

# The Hanyin demo's facilities, by code: their English names where a database seeded
# before this migration has them under their Chinese names (seed_hanyin writes them from
# now on). A facility renamed since keeps an empty English name.
DEMO_NAMES = {
    "HANYIN": ("汉阴县人民医院", "Hanyin County People's Hospital"),
    "XUANWO": ("漩涡镇中心卫生院", "Xuanwo Central Township Health Centre"),
    "JIANCHI": ("涧池镇卫生院", "Jianchi Township Health Centre"),
    "HANYANG": ("汉阳镇卫生院", "Hanyang Township Health Centre"),
    "LONGYA": ("龙垭镇卫生院", "Longya Township Health Centre"),
    "PUXI": ("蒲溪镇卫生院", "Puxi Township Health Centre"),
    "PINGLIANG": ("平梁镇卫生院", "Pingliang Township Health Centre"),
    "SHANGQI": ("上七镇卫生院", "Shangqi Township Health Centre"),
    "SHUANGRU": ("双乳镇卫生院", "Shuangru Township Health Centre"),
    "CHENGGUAN": ("城关镇卫生院", "Chengguan Township Health Centre"),
    "TIEFOSI": ("铁佛寺镇卫生院", "Tiefosi Township Health Centre"),
    "GUANYINHE": ("观音河镇卫生院", "Guanyinhe Township Health Centre"),
}


def name_the_demo(apps, schema_editor):
    Facility = apps.get_model("facilities", "Facility")
    for code, (name, name_en) in DEMO_NAMES.items():
        Facility.objects.filter(code=code, name=name, name_en="").update(name_en=name_en)


class Migration(migrations.Migration):
    dependencies = [
        ("facilities", "0006_travel_to_the_county"),
    ]

    operations = [
        migrations.AddField(
            model_name="facility",
            name="name_en",
            field=models.CharField(
                blank=True,
                help_text="英文页面上的名称，如 Xuanwo Central Township Health Centre；留空时英文页面也显示中文名称",
                max_length=100,
                verbose_name="英文名称",
            ),
        ),
        migrations.RunPython(name_the_demo, migrations.RunPython.noop),
    ]
