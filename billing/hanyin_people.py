"""The demo's patients: invented Chinese names, ages and sexes plausible for what was
examined. Every name is made up from common surnames and given-name characters; any
likeness to a real person is not intended.

A patient is stored as the archive stores one received from a township's console: a PN
value with an alphabetic (pinyin) and an ideographic group, and the pinyin initials that
`cloudpacs.personname.name_initials` gives for a search by initials."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

from cloudpacs.personname import name_initials

# Common surnames of southern Shaanxi, with their reading as a surname.
SURNAMES: tuple[tuple[str, str, float], ...] = (
    ("王", "Wang", 7.0), ("李", "Li", 7.0), ("张", "Zhang", 6.5), ("刘", "Liu", 5.5), ("陈", "Chen", 5.0),
    ("杨", "Yang", 4.0), ("黄", "Huang", 2.5), ("赵", "Zhao", 2.5), ("吴", "Wu", 2.0), ("周", "Zhou", 2.0),
    ("徐", "Xu", 1.5), ("孙", "Sun", 1.5), ("胡", "Hu", 1.5), ("朱", "Zhu", 1.3), ("高", "Gao", 1.3),
    ("何", "He", 1.2), ("郭", "Guo", 1.2), ("马", "Ma", 1.1), ("罗", "Luo", 1.0), ("梁", "Liang", 0.9),
    ("宋", "Song", 0.9), ("郑", "Zheng", 0.9), ("谢", "Xie", 0.8), ("韩", "Han", 0.8), ("唐", "Tang", 0.8),
    ("冯", "Feng", 0.8), ("董", "Dong", 0.7), ("程", "Cheng", 0.7), ("邓", "Deng", 0.7), ("彭", "Peng", 0.7),
    ("袁", "Yuan", 0.6), ("沈", "Shen", 0.6), ("田", "Tian", 0.6), ("苏", "Su", 0.6), ("蒋", "Jiang", 0.6),
    ("贾", "Jia", 0.5), ("魏", "Wei", 0.5), ("叶", "Ye", 0.5), ("余", "Yu", 0.5), ("杜", "Du", 0.5),
    ("汪", "Wang", 0.4), ("任", "Ren", 0.4), ("范", "Fan", 0.4), ("方", "Fang", 0.4), ("石", "Shi", 0.4),
    ("姚", "Yao", 0.4), ("廖", "Liao", 0.4), ("熊", "Xiong", 0.4), ("金", "Jin", 0.3), ("陆", "Lu", 0.3),
    ("孔", "Kong", 0.3), ("白", "Bai", 0.3), ("崔", "Cui", 0.3), ("毛", "Mao", 0.3), ("邱", "Qiu", 0.3),
    ("秦", "Qin", 0.3), ("江", "Jiang", 0.3), ("侯", "Hou", 0.3), ("雷", "Lei", 0.4), ("龚", "Gong", 0.3),
    ("柯", "Ke", 0.3), ("汤", "Tang", 0.3), ("尹", "Yin", 0.2), ("易", "Yi", 0.2), ("武", "Wu", 0.2),
)  # fmt: skip

# Given names by sex and by the decade people were born in, each character with its pinyin.
_OLDER_MALE = (
    "建国 德明 志强 国华 保全 永福 春生 贵富 明华 军平 海林 成兴 "
    "有才 长青 家和 玉山 光明 正义 文华 治国 树林 万里 宝山 金山"
)
_OLDER_FEMALE = (
    "秀英 桂英 玉兰 秀兰 凤英 翠花 兰芳 玉珍 春霞 秀梅 淑琴 金凤 桂兰 秀珍 玉梅 素芳 月英 小红 巧云 彩霞 丽华 秀芳"
)
_YOUNGER_MALE = "浩然 宇航 俊杰 涛 磊 鹏飞 伟 超 志强 博文 子豪 一鸣 家乐 浩宇 晨阳 思远 明轩 建华 亮 勇"
_YOUNGER_FEMALE = "婷婷 敏 静 丽娟 颖 雪梅 倩 欣怡 悦 佳琪 琳 怡然 梦瑶 雨涵 思琪 晓燕 丹 娜 艳 慧敏"
PINYIN: dict[str, str] = dict(
    pair.split(":")
    for pair in [
        "建:jian",
        "国:guo",
        "德:de",
        "明:ming",
        "志:zhi",
        "强:qiang",
        "华:hua",
        "保:bao",
        "全:quan",
        "永:yong",
        "福:fu",
        "春:chun",
        "生:sheng",
        "贵:gui",
        "富:fu",
        "军:jun",
        "平:ping",
        "海:hai",
        "林:lin",
        "成:cheng",
        "兴:xing",
        "有:you",
        "才:cai",
        "长:chang",
        "青:qing",
        "家:jia",
        "和:he",
        "玉:yu",
        "山:shan",
        "光:guang",
        "正:zheng",
        "义:yi",
        "文:wen",
        "治:zhi",
        "树:shu",
        "万:wan",
        "里:li",
        "宝:bao",
        "金:jin",
        "秀:xiu",
        "英:ying",
        "桂:gui",
        "兰:lan",
        "凤:feng",
        "翠:cui",
        "花:hua",
        "芳:fang",
        "珍:zhen",
        "霞:xia",
        "梅:mei",
        "淑:shu",
        "琴:qin",
        "素:su",
        "月:yue",
        "小:xiao",
        "红:hong",
        "巧:qiao",
        "云:yun",
        "彩:cai",
        "丽:li",
        "浩:hao",
        "然:ran",
        "宇:yu",
        "航:hang",
        "俊:jun",
        "杰:jie",
        "涛:tao",
        "磊:lei",
        "鹏:peng",
        "飞:fei",
        "伟:wei",
        "超:chao",
        "博:bo",
        "子:zi",
        "豪:hao",
        "一:yi",
        "鸣:ming",
        "乐:le",
        "晨:chen",
        "阳:yang",
        "思:si",
        "远:yuan",
        "轩:xuan",
        "亮:liang",
        "勇:yong",
        "婷:ting",
        "敏:min",
        "静:jing",
        "娟:juan",
        "颖:ying",
        "雪:xue",
        "倩:qian",
        "欣:xin",
        "怡:yi",
        "悦:yue",
        "佳:jia",
        "琪:qi",
        "琳:lin",
        "梦:meng",
        "瑶:yao",
        "雨:yu",
        "涵:han",
        "晓:xiao",
        "燕:yan",
        "丹:dan",
        "娜:na",
        "艳:yan",
        "慧:hui",
    ]
)
GIVEN_NAMES: dict[tuple[str, bool], tuple[str, ...]] = {
    ("M", True): tuple(_OLDER_MALE.split()),
    ("F", True): tuple(_OLDER_FEMALE.split()),
    ("M", False): tuple(_YOUNGER_MALE.split()),
    ("F", False): tuple(_YOUNGER_FEMALE.split()),
}
BORN_BEFORE_IS_OLDER = 1975


@dataclass(frozen=True)
class AgeProfile:
    """Who has this part examined at a township centre: age (mean, SD, bounds), share of men."""

    mean: float
    sd: float
    male: float
    youngest: int = 1
    oldest: int = 95


# Townships are old: the young work in the cities. Chest and head films are mostly of the
# elderly; limbs of people hurt at work or in a fall.
AGE_PROFILES: dict[str, AgeProfile] = {
    "HEAD": AgeProfile(61, 17, 0.55),
    "CHEST": AgeProfile(58, 18, 0.53),
    "ABDOMEN": AgeProfile(54, 16, 0.52, youngest=5),
    "PELVIS": AgeProfile(62, 15, 0.42, youngest=10),
    "HIP": AgeProfile(68, 13, 0.40, youngest=15),
    "LSPINE": AgeProfile(56, 13, 0.48, youngest=15),
    "CSPINE": AgeProfile(52, 13, 0.45, youngest=15),
    "KNEE": AgeProfile(58, 14, 0.40, youngest=8),
    "SINUS": AgeProfile(38, 16, 0.50, youngest=6),
    "RIB": AgeProfile(55, 15, 0.62, youngest=15),
}
LIMB_PROFILE = AgeProfile(44, 20, 0.56, youngest=4)


@dataclass(frozen=True)
class PatientDraft:
    patient_id: str
    name: str
    name_alphabetic: str
    name_ideographic: str
    name_initials: str
    birth_date: date
    sex: str


def age_profile(part_code: str) -> AgeProfile:
    return AGE_PROFILES.get(part_code, LIMB_PROFILE)


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


_SURNAME_CUM = _cumulative([w for _s, _p, w in SURNAMES])


@cache
def _initials(alphabetic: str, ideographic: str) -> str:
    return name_initials(alphabetic, ideographic)


def invent_patient(rng: random.Random, patient_id: str, part_code: str, exam_date: date) -> PatientDraft:
    """A new patient of the township, of an age and sex that fit the part examined."""
    profile = age_profile(part_code)
    sex = "M" if rng.random() < profile.male else "F"
    age = min(profile.oldest, max(profile.youngest, round(rng.gauss(profile.mean, profile.sd))))
    birth = exam_date - timedelta(days=age * 365 + rng.randrange(365))
    surname, surname_pinyin, _w = SURNAMES[_bisect(_SURNAME_CUM, rng.random() * _SURNAME_CUM[-1])]
    given = rng.choice(GIVEN_NAMES[(sex, birth.year < BORN_BEFORE_IS_OLDER)])
    given_pinyin = "".join(PINYIN[c] for c in given).capitalize()
    alphabetic = f"{surname_pinyin}^{given_pinyin}"
    ideographic = f"{surname}^{given}"
    return PatientDraft(
        patient_id=patient_id,
        name=f"{alphabetic}={ideographic}",
        name_alphabetic=alphabetic,
        name_ideographic=ideographic,
        name_initials=_initials(alphabetic, ideographic),
        birth_date=birth,
        sex=sex,
    )


def _bisect(cumulative: list[float], x: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo
