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
- Who read what: nine fictional radiologists on a rotating roster (by day three led by a
  senior, by night one CT reader), each exam given at its arrival to the least loaded
  qualified reader on duty, as the live workflow does (the paper's Figure 3 gives no
  numbers we could copy).
- When: the rhythm of a township's day and year (HALF_HOUR_WEIGHTS, HOLIDAYS below).
- Who was examined and what was found: billing/hanyin_people.py, billing/hanyin_reports.py.
- The spread of consult times around Figure 2's means: right-skewed (lognormal above a
  floor), rescaled so each township's mean is the published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

COUNTY_CODE = "HANYIN"
COUNTY_NAME = "汉阴县人民医院"
COUNTY_NAME_EN = "Hanyin County People's Hospital"
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

    @property
    def name_en(self) -> str:
        """The English name of the pages in English: 涧池镇卫生院 -> Jianchi Township Health
        Centre, 漩涡镇中心卫生院 (a central health centre) -> Xuanwo Central Township Health Centre."""
        central = "Central " if "中心" in self.name else ""
        return f"{self.pinyin} {central}Township Health Centre"


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


# Fictional people: any likeness to a real radiologist of the hospital is not intended.
RADIOLOGISTS: tuple[Radiologist, ...] = (
    Radiologist("dr_li", "李明远", reads_ct=True, reads_dr=True, is_senior=True),
    Radiologist("dr_wang", "王晓峰", reads_ct=True, reads_dr=True, is_senior=True),
    Radiologist("dr_zhang", "张静怡", reads_ct=True, reads_dr=True, is_senior=True),
    Radiologist("dr_liu", "刘振华", reads_ct=True, reads_dr=True, is_senior=False),
    Radiologist("dr_chen", "陈思远", reads_ct=True, reads_dr=True, is_senior=False),
    Radiologist("dr_yang", "杨帆", reads_ct=True, reads_dr=True, is_senior=False),
    Radiologist("dr_zhao", "赵磊", reads_ct=False, reads_dr=True, is_senior=False),
    Radiologist("dr_huang", "黄丽萍", reads_ct=False, reads_dr=True, is_senior=False),
    Radiologist("dr_zhou", "周敏", reads_ct=False, reads_dr=True, is_senior=False),
)

ADMIN_USERNAME = "admin"
ADMIN_DISPLAY_NAME = "汉阴县人民医院信息科"

# Priority of an exam: routine, urgent, emergency. Emergencies arrive at any hour and are
# read faster; the rest arrive in working hours.
PRIORITY_SHARES: tuple[float, float, float] = (0.88, 0.08, 0.04)

# Township exams by weekday (Monday first): fewer at weekends.
WEEKDAY_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.4)

# --- The rhythm of a working day and year ------------------------------------------------
# What the paper does not give either, chosen from how township centres work: the
# technologists scan from eight, break for lunch (12:00-13:30: hardly any exams), finish
# at half past five; emergencies come at any hour, fewer at night.

# Relative arrivals of non-emergency exams per half hour, from 08:00 to 17:30.
HALF_HOUR_WEIGHTS: tuple[float, ...] = (
    0.6,  # 08:00
    1.0,  # 08:30
    1.3,  # 09:00
    1.4,  # 09:30
    1.4,  # 10:00
    1.3,  # 10:30
    1.1,  # 11:00
    0.7,  # 11:30
    0.15,  # 12:00: lunch
    0.1,  # 12:30
    0.2,  # 13:00
    0.6,  # 13:30
    1.0,  # 14:00
    1.1,  # 14:30
    1.0,  # 15:00
    0.9,  # 15:30
    0.8,  # 16:00
    0.6,  # 16:30
    0.35,  # 17:00
)
FIRST_HALF_HOUR = 16  # 08:00

# Relative arrivals of emergencies by hour, midnight first.
EMERGENCY_HOUR_WEIGHTS: tuple[float, ...] = (
    *(0.4,) * 7,  # 00-07
    0.8,  # 07
    *(1.2,) * 10,  # 08-18
    *(0.9,) * 4,  # 18-22
    0.6,  # 22
    0.5,  # 23
)

# Public holidays (State Council notices, 2022-2025, up to the cut-off) and how many
# exams a township centre does on them against an ordinary weekday: almost none in the
# first days of the Spring Festival, few on the other holidays. Make-up working days
# (调休) count as ordinary days.
SPRING_FESTIVAL_FIRST_DAYS = 0.08
SPRING_FESTIVAL_LATER_DAYS = 0.25
HOLIDAY = 0.3


def _span(first: date, days: int, weight: float) -> dict[date, float]:
    return {date.fromordinal(first.toordinal() + i): weight for i in range(days)}


def _spring_festival(first: date, days: int = 7) -> dict[date, float]:
    return _span(first, 3, SPRING_FESTIVAL_FIRST_DAYS) | _span(
        date.fromordinal(first.toordinal() + 3), days - 3, SPRING_FESTIVAL_LATER_DAYS
    )


HOLIDAYS: dict[date, float] = (
    # 2022
    _span(date(2022, 1, 1), 3, HOLIDAY)
    | _spring_festival(date(2022, 1, 31))
    | _span(date(2022, 4, 3), 3, HOLIDAY)
    | _span(date(2022, 4, 30), 5, HOLIDAY)
    | _span(date(2022, 6, 3), 3, HOLIDAY)
    | _span(date(2022, 9, 10), 3, HOLIDAY)
    | _span(date(2022, 10, 1), 7, HOLIDAY)
    # 2023
    | _span(date(2022, 12, 31), 3, HOLIDAY)
    | _spring_festival(date(2023, 1, 21))
    | _span(date(2023, 4, 5), 1, HOLIDAY)
    | _span(date(2023, 4, 29), 5, HOLIDAY)
    | _span(date(2023, 6, 22), 3, HOLIDAY)
    | _span(date(2023, 9, 29), 8, HOLIDAY)
    # 2024
    | _span(date(2024, 1, 1), 1, HOLIDAY)
    | _spring_festival(date(2024, 2, 10), 8)
    | _span(date(2024, 4, 4), 3, HOLIDAY)
    | _span(date(2024, 5, 1), 5, HOLIDAY)
    | _span(date(2024, 6, 8), 3, HOLIDAY)
    | _span(date(2024, 9, 15), 3, HOLIDAY)
    | _span(date(2024, 10, 1), 7, HOLIDAY)
    # 2025
    | _span(date(2025, 1, 1), 1, HOLIDAY)
    | _spring_festival(date(2025, 1, 28), 8)
    | _span(date(2025, 4, 4), 3, HOLIDAY)
    | _span(date(2025, 5, 1), 5, HOLIDAY)
    | _span(date(2025, 5, 31), 3, HOLIDAY)
)
SPRING_FESTIVAL_DAYS: tuple[date, ...] = (date(2022, 2, 1), date(2023, 1, 22), date(2024, 2, 10), date(2025, 1, 29))


def day_weight(day: date) -> float:
    """Exams expected on `day` against an ordinary weekday."""
    return WEEKDAY_WEIGHTS[day.weekday()] * HOLIDAYS.get(day, 1.0)


# --- What was examined, and what was found -------------------------------------------------
# One body part per exam (codes of the body-part vocabulary), with the share of each.
BODY_PART_MIX: dict[str, tuple[tuple[str, float], ...]] = {
    "CT": (
        ("HEAD", 0.34),
        ("CHEST", 0.33),
        ("ABDOMEN", 0.10),
        ("LSPINE", 0.08),
        ("CSPINE", 0.05),
        ("PELVIS", 0.03),
        ("SINUS", 0.02),
        ("KNEE", 0.02),
        ("RIB", 0.03),
    ),
    "DR": (
        ("CHEST", 0.52),
        ("LSPINE", 0.10),
        ("CSPINE", 0.07),
        ("KNEE", 0.07),
        ("PELVIS", 0.03),
        ("SHOULDER", 0.03),
        ("WRIST", 0.03),
        ("HAND", 0.02),
        ("ANKLE", 0.03),
        ("FOOT", 0.02),
        ("FOREARM", 0.02),
        ("LEG", 0.02),
        ("ABDOMEN", 0.02),
        ("HIP", 0.02),
    ),
}

# The share of reports with a finding rises with age (degeneration, chronic lung disease):
# FINDING_BASE at 20, FINDING_BASE + FINDING_PER_DECADE for each decade above. A small
# share has a critical finding (危急值), far more often among emergencies.
FINDING_BASE = 0.25
FINDING_PER_DECADE = 0.09
FINDING_MAX = 0.85
CRITICAL_SHARE: dict[str, float] = {"routine": 0.002, "urgent": 0.02, "emergency": 0.08}

# A patient comes back for another exam now and then: the share of exams of a returning patient.
RETURNING_SHARE = 0.18


# --- Patients' travel to the county hospital ----------------------------------------------
# One-way road distance from each township's centre to the county seat (城关, where the
# county hospital is), in km, with where the figure comes from. Two are published; for
# the rest no public figure was found, and the distance is an estimate, said as such.
# Every figure is a default: an administrator changes it per facility in the admin.
_ESTIMATED = (
    "估算：未找到公开的里程，按该镇相对县城的方位及有公开里程的邻镇（漩涡 51 公里、龙垭 6 公里）推估，"
    "取整到 5 公里；请以县里的实测里程替换。"
)
TRAVEL_KM: dict[str, tuple[int, str]] = {
    "XUANWO": (
        51,
        "三秦游《古镇漩涡》（2015-05-27）：漩涡镇“距离县城有51公里”。"
        " http://www.sanqinyou.com/minsu/info/1552718185450462.html",
    ),
    "LONGYA": (6, "乡镇介绍《龙垭镇》：“处于汉阴县城以北6公里”。 http://jswhf.com/shanxi2/ankang01/4884.shtml"),
    "JIANCHI": (10, _ESTIMATED),
    "HANYANG": (35, _ESTIMATED),
    "PUXI": (20, _ESTIMATED),
    "PINGLIANG": (10, _ESTIMATED),
    "SHANGQI": (65, _ESTIMATED),
    "SHUANGRU": (15, _ESTIMATED),
    "CHENGGUAN": (5, "估算：城关镇即县城所在地，取镇内往返县医院的距离 5 公里。"),
    "TIEFOSI": (25, _ESTIMATED),
    "GUANYINHE": (15, _ESTIMATED),
}
# The fare and the time on the road have no published figure either: both are estimated
# from the distance, at a rural bus fare of 0.5 yuan a km and 30 km/h on mountain roads.
FARE_PER_KM = Decimal("0.50")
ROAD_KM_PER_HOUR = 30
TRAVEL_COST_NOTE = "往返路费按每公里 0.5 元、路上时间按平均时速 30 公里估算。"


def travel_defaults(code: str) -> dict[str, Any]:
    """The facility fields of a Hanyin township's travel to the county hospital."""
    km, source = TRAVEL_KM[code]
    return {
        "county_distance_km": Decimal(km),
        "round_trip_cost": (2 * km * FARE_PER_KM).quantize(Decimal("1")),
        "round_trip_minutes": round(2 * km * 60 / ROAD_KM_PER_HOUR),
        "travel_source": f"{source} {TRAVEL_COST_NOTE}",
    }
