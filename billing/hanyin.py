"""The Hanyin County demo, as data: the published figures of the paper and the people and
machines the demo invents around them.

Source: 李永亮 等,《云影像平台在分级诊疗制度中的作用与价值研究》, DOI 10.62177/fcdt.v2i2.1191
(汉阴县人民医院). Tables 1 and 2 give exams per township, modality and year (2025 cut at
2025-09-28), Figure 2 the mean consult time per township. The figures are copied here so
the seed never reads a file at run time.

What the paper does not give, the demo chooses and documents here:
- Body parts per exam: the paper prices exams "per part" but reports no parts; its totals
  imply about one (fewer than one for DR, which no per-part ledger can express). The demo
  gives every exam one part, so the ledger's headline is 831,454 yuan (CT 15,137 x 30 =
  454,110, DR 47,168 x 8 = 377,344), 0.12 % above the paper's 830,498 (CT 459,490, DR
  371,008; docs/savings-ledger.md explains the gap).
- Who read what: nine fictional radiologists share the exams by READ_WEIGHTS, CT only to
  those who read CT (the paper's Figure 3 gives no numbers we could copy).
- The spread of consult times around Figure 2's means: right-skewed (lognormal above a
  floor), rescaled so each township's mean is the published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

COUNTY_CODE = "HANYIN"
COUNTY_NAME = "汉阴县人民医院"
COUNTY_SHORT_NAME = "县医院"
COUNTY_PINYIN = "Hanyin"

# 2022 to 2024 are whole years; 2025 stops at the paper's cut-off, inclusive.
YEARS: tuple[int, ...] = (2022, 2023, 2024, 2025)
LAST_EXAM_DATE = date(2025, 9, 28)


@dataclass(frozen=True)
class Township:
    short_name: str
    name: str
    pinyin: str
    # Table 2 (DR) and Table 1 (CT), by year; "-" in the paper is 0.
    dr: tuple[int, int, int, int]
    ct: tuple[int, int, int, int] = (0, 0, 0, 0)
    # Figure 2: mean minutes from the study's arrival to the signed report, all exams.
    mean_consult_minutes: float = 0.0
    has_ct: bool = False

    @property
    def code(self) -> str:
        return self.pinyin.upper()


TOWNSHIPS: tuple[Township, ...] = (
    Township(
        "漩涡",
        "漩涡镇中心卫生院",
        "Xuanwo",
        dr=(1583, 2076, 2117, 2214),
        ct=(1590, 2788, 2455, 2157),
        mean_consult_minutes=44.76,
        has_ct=True,
    ),
    Township(
        "涧池",
        "涧池镇卫生院",
        "Jianchi",
        dr=(906, 101, 5473, 5385),
        ct=(0, 0, 2662, 3485),
        mean_consult_minutes=38.07,
        has_ct=True,
    ),
    Township("汉阳", "汉阳镇卫生院", "Hanyang", dr=(975, 704, 665, 892), mean_consult_minutes=53.54),
    Township("龙垭", "龙垭镇卫生院", "Longya", dr=(127, 591, 1971, 1449), mean_consult_minutes=32.6),
    Township("蒲溪", "蒲溪镇卫生院", "Puxi", dr=(215, 237, 490, 666), mean_consult_minutes=65.73),
    Township("平梁", "平梁镇卫生院", "Pingliang", dr=(2584, 3979, 3914, 2361), mean_consult_minutes=34.89),
    Township("上七", "上七镇卫生院", "Shangqi", dr=(541, 669, 893, 425), mean_consult_minutes=65.19),
    Township("双乳", "双乳镇卫生院", "Shuangru", dr=(56, 195, 527, 248), mean_consult_minutes=44.6),
    Township("城关镇", "城关镇卫生院", "Chengguan", dr=(48, 232, 330, 1148), mean_consult_minutes=41.45),
    Township("铁佛寺", "铁佛寺镇卫生院", "Tiefosi", dr=(10, 7, 30, 115), mean_consult_minutes=77.89),
    Township("观音河", "观音河镇卫生院", "Guanyinhe", dr=(7, 0, 0, 12), mean_consult_minutes=46.23),
)

# The sums of the tables (the paper's text says one CT exam more: 15,138 and 62,306).
TOTAL_CT = 15_137
TOTAL_DR = 47_168
TOTAL_EXAMS = TOTAL_CT + TOTAL_DR

# Both CT townships run a United Imaging uCT 528; every township has a domestic DR.
CT_MANUFACTURER = "UIH"
CT_MODEL = "uCT 528"
DR_MACHINES: dict[str, tuple[str, str]] = {
    "XUANWO": ("UIH", "uDR 780i"),
    "JIANCHI": ("UIH", "uDR 780i"),
}
DEFAULT_DR_MACHINE = ("Mindray", "DigiEye 760")


@dataclass(frozen=True)
class Radiologist:
    username: str
    display_name: str
    reads_ct: bool
    reads_dr: bool
    is_senior: bool
    # Relative share of the exams this radiologist read.
    weight: float


# Fictional people: any likeness to a real radiologist of the hospital is not intended.
RADIOLOGISTS: tuple[Radiologist, ...] = (
    Radiologist("dr_li", "李明远", reads_ct=True, reads_dr=True, is_senior=True, weight=1.30),
    Radiologist("dr_wang", "王晓峰", reads_ct=True, reads_dr=True, is_senior=True, weight=1.20),
    Radiologist("dr_zhang", "张静怡", reads_ct=True, reads_dr=True, is_senior=True, weight=1.10),
    Radiologist("dr_liu", "刘振华", reads_ct=True, reads_dr=True, is_senior=False, weight=1.05),
    Radiologist("dr_chen", "陈思远", reads_ct=True, reads_dr=True, is_senior=False, weight=1.00),
    Radiologist("dr_yang", "杨帆", reads_ct=True, reads_dr=True, is_senior=False, weight=0.95),
    Radiologist("dr_zhao", "赵磊", reads_ct=False, reads_dr=True, is_senior=False, weight=0.90),
    Radiologist("dr_huang", "黄丽萍", reads_ct=False, reads_dr=True, is_senior=False, weight=0.80),
    Radiologist("dr_zhou", "周敏", reads_ct=False, reads_dr=True, is_senior=False, weight=0.70),
)

ADMIN_USERNAME = "admin"
ADMIN_DISPLAY_NAME = "汉阴县人民医院信息科"

# Priority of an exam: routine, urgent, emergency. Emergencies arrive at any hour and are
# read faster; the rest arrive in working hours.
PRIORITY_SHARES: tuple[float, float, float] = (0.88, 0.08, 0.04)

# Township exams by weekday (Monday first): fewer at weekends.
WEEKDAY_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.4)
