"""The demo's report text: a normal report for the exam's kind and body part, or one with
a finding, now and then a critical one (危急值).

The normal text has one source, `normal_report_source`: the report template library
(consults.services.normal_report), and for the parts it does not cover, the few normal
texts below. The findings are this project's own wording, written for a
demo: plausible, not clinical guidance."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from consults.services import normal_report as library_normal_report

# Normal texts for the parts the template library leaves out ({part}: the part's name).
_NORMAL_FALLBACK: dict[tuple[str, str], tuple[str, str]] = {
    ("CT", "SPINE"): (
        "{part}序列连续，生理曲度存在。各椎体形态、大小及密度未见异常，未见骨质破坏。"
        "各椎间盘未见明显膨出或突出，椎管未见狭窄。椎旁软组织未见异常。",
        "{part} CT 平扫未见明显异常。",
    ),
    ("CT", "PELVIS"): (
        "膀胱充盈尚可，壁光滑，腔内未见异常密度影。盆腔内未见肿块及肿大淋巴结，盆腔未见积液。所见骨盆骨质未见异常。",
        "盆腔 CT 平扫未见明显异常。",
    ),
    ("CT", "SINUS"): (
        "双侧上颌窦、筛窦、额窦及蝶窦气化良好，窦腔内未见异常密度影，窦壁骨质完整。鼻中隔居中，鼻甲未见肥大。",
        "鼻窦 CT 平扫未见明显异常。",
    ),
    ("CT", "RIB"): (
        "双侧肋骨骨质连续，未见骨折线及骨质破坏。双侧胸腔未见积液，双肺野未见明显异常密度影。",
        "双侧肋骨 CT 平扫未见明显骨折。",
    ),
    ("CT", "JOINT"): (
        "{part}构成骨骨质完整，未见骨折及骨质破坏，关节间隙正常，关节面光整。关节腔未见积液，周围软组织未见异常。",
        "{part} CT 平扫未见明显异常。",
    ),
    ("DR", "PELVIS"): (
        "骨盆诸骨骨质完整，骨小梁清晰，未见骨折及骨质破坏。双侧髋关节间隙正常，关节面光整。骶髂关节未见异常。",
        "骨盆及双髋关节未见明显异常。",
    ),
    ("DR", "ABDOMEN"): (
        "腹部肠管未见明显扩张积气，未见气液平面。双侧膈下未见游离气体。腹部未见异常致密影。",
        "腹部立位片未见明显异常。",
    ),
}


@dataclass(frozen=True)
class Finding:
    findings: str
    impression: str
    # minor (often age-related), significant, or critical (危急值)
    level: str
    critical: str = ""


def _f(findings: str, impression: str, level: str = "minor", critical: str = "") -> Finding:
    return Finding(findings, impression, level, critical)


FINDINGS: dict[tuple[str, str], tuple[Finding, ...]] = {
    ("CT", "HEAD"): (
        _f(
            "双侧基底节区见数个斑点状低密度影，边界清，直径约 3-5 mm。"
            "各脑室、脑池大小形态正常，中线结构居中。颅骨未见异常。",
            "双侧基底节区腔隙性脑梗死。",
        ),
        _f(
            "双侧侧脑室旁白质见对称性斑片状稍低密度影，边界模糊。脑沟、脑裂增宽加深，脑室系统轻度扩大。中线结构居中。",
            "1. 脑白质脱髓鞘改变；2. 脑萎缩。",
        ),
        _f(
            "左侧额颞叶见大片状低密度影，边界欠清，局部脑沟变浅，左侧侧脑室受压变窄。中线结构居中。",
            "左侧额颞叶脑梗死，建议 MRI 进一步检查。",
            "significant",
        ),
        _f(
            "右侧基底节区见团块状高密度影，大小约 3.2 cm × 2.5 cm，CT 值约 65 HU，周围见低密度水肿带，"
            "右侧侧脑室受压变窄，中线结构左移约 5 mm。",
            "右侧基底节区脑出血，中线结构左移。",
            "critical",
            "右侧基底节区脑出血（约 3.2 cm × 2.5 cm），中线左移约 5 mm。",
        ),
        _f(
            "左侧额顶部颅板下见新月形高密度影，最厚处约 12 mm，邻近脑组织受压，左侧侧脑室变窄，中线结构右移约 6 mm。",
            "左侧额顶部急性硬膜下血肿，中线结构右移。",
            "critical",
            "左侧额顶部急性硬膜下血肿（厚约 12 mm），中线右移约 6 mm。",
        ),
    ),
    ("CT", "CHEST"): (
        _f(
            "双肺纹理增多、紊乱，双肺透亮度增高，散在小叶中心型肺气肿。"
            "气管及主支气管通畅。纵隔内未见肿大淋巴结。心影不大。",
            "慢性支气管炎、肺气肿。",
        ),
        _f(
            "右肺上叶尖段见一实性小结节，直径约 4 mm，边界清楚。余双肺野未见异常密度影。纵隔居中，未见肿大淋巴结。",
            "右肺上叶实性小结节，建议 12 个月后 CT 复查。",
        ),
        _f(
            "右肺下叶见斑片状高密度影，边界模糊，其内可见支气管充气征。右侧胸腔少量积液。纵隔内未见肿大淋巴结。",
            "右肺下叶肺炎，伴右侧胸腔少量积液，建议治疗后复查。",
            "significant",
        ),
        _f(
            "左肺上叶见一不规则软组织肿块，大小约 3.5 cm × 2.8 cm，边缘可见分叶及毛刺，邻近胸膜牵拉。"
            "纵隔内见肿大淋巴结。",
            "左肺上叶占位，考虑周围型肺癌可能，建议增强 CT 及进一步检查。",
            "significant",
        ),
        _f(
            "左侧胸腔见无肺纹理透亮区，左肺被压缩约 60%，纵隔向右侧移位。",
            "左侧气胸，左肺压缩约 60%，纵隔右移。",
            "critical",
            "左侧张力性气胸可能，左肺压缩约 60%，纵隔右移。",
        ),
    ),
    ("CT", "ABDOMEN"): (
        _f(
            "胆囊不大，腔内见数个高密度结石影，较大者直径约 8 mm。"
            "肝脏大小形态正常，肝内外胆管未见扩张。脾、胰、双肾未见异常。",
            "胆囊多发结石。",
        ),
        _f(
            "肝右叶见一类圆形低密度影，直径约 15 mm，边界清楚，CT 值约 5 HU。"
            "余肝实质密度均匀。胆囊、脾、胰、双肾未见异常。",
            "肝右叶囊肿。",
        ),
        _f(
            "左肾盂内见一高密度结石影，直径约 6 mm，左肾盂轻度扩张积水。右肾及输尿管未见异常。",
            "左肾结石伴左肾轻度积水。",
            "significant",
        ),
        _f(
            "双侧膈下及肝前间隙见游离气体影，腹腔内见少量积液，上腹部肠管周围脂肪间隙模糊。",
            "膈下游离气体，考虑消化道穿孔。",
            "critical",
            "膈下游离气体，考虑消化道穿孔。",
        ),
    ),
    ("CT", "SPINE"): (
        _f(
            "{part}生理曲度变直，多个椎体边缘骨质增生。L4/5、L5/S1 椎间盘向后突出，相应水平硬膜囊受压。",
            "1. {part}退行性变；2. L4/5、L5/S1 椎间盘突出。",
        ),
        _f(
            "{part}某椎体呈楔形变，前缘高度减低约 1/3，椎体内见骨折线，后缘骨皮质尚完整，椎管未见明显狭窄。",
            "{part}椎体压缩性骨折，建议结合临床。",
            "significant",
        ),
    ),
    ("CT", "PELVIS"): (
        _f("前列腺体积增大，密度均匀，突入膀胱底部。膀胱充盈尚可。盆腔未见肿大淋巴结及积液。", "前列腺增生。"),
        _f("盆腔内见少量液性密度影，膀胱充盈尚可，壁光滑。盆腔内未见肿块。", "盆腔少量积液。", "significant"),
    ),
    ("CT", "SINUS"): (
        _f(
            "双侧上颌窦黏膜增厚，窦腔内见软组织密度影，窦壁骨质完整。鼻中隔轻度左偏。", "双侧上颌窦炎；鼻中隔轻度偏曲。"
        ),
    ),
    ("CT", "RIB"): (
        _f(
            "右侧第 6、7 肋骨腋段骨皮质不连续，可见骨折线，断端轻度错位。右侧胸腔少量积液。",
            "右侧第 6、7 肋骨骨折，伴右侧胸腔少量积液。",
            "significant",
        ),
    ),
    ("CT", "JOINT"): (
        _f("{part}关节间隙变窄，关节面下骨质硬化，关节边缘骨质增生。关节腔少量积液。", "{part}退行性骨关节病。"),
    ),
    ("DR", "CHEST"): (
        _f(
            "双肺纹理增多、增粗，走行紊乱，双肺野未见实变影。心影大小形态正常。双侧膈面光整，肋膈角锐利。",
            "双肺纹理增多，考虑支气管炎。",
        ),
        _f(
            "双肺纹理增多。主动脉结突出，可见弧形钙化影。心影不大。双侧膈面光整，肋膈角锐利。",
            "1. 双肺纹理增多；2. 主动脉硬化。",
        ),
        _f(
            "右下肺野见斑片状模糊影，边界不清。右侧肋膈角变钝。心影大小形态正常。",
            "右下肺炎，右侧胸腔少量积液可能，建议治疗后复查。",
            "significant",
        ),
        _f(
            "左侧肋膈角消失，左下肺野见大片均匀致密影，上缘呈外高内低弧形。纵隔未见移位。",
            "左侧胸腔积液（中等量）。",
            "significant",
        ),
        _f(
            "右侧胸腔外带见无肺纹理透亮区，可见被压缩的肺组织边缘，右肺压缩约 40%。纵隔未见明显移位。",
            "右侧气胸，右肺压缩约 40%。",
            "critical",
            "右侧气胸，右肺压缩约 40%。",
        ),
    ),
    ("DR", "SPINE"): (
        _f("{part}生理曲度变直，多个椎体边缘骨质增生，部分椎间隙变窄。附件未见异常。", "{part}退行性变。"),
        _f(
            "{part}某椎体呈楔形变，前缘变扁，骨小梁稀疏。余椎体骨质疏松。",
            "{part}椎体压缩性骨折，骨质疏松。",
            "significant",
        ),
    ),
    ("DR", "LIMB"): (
        _f(
            "{part}关节间隙变窄，关节面下骨质硬化，关节边缘骨质增生，可见骨赘形成。周围软组织未见异常。",
            "{part}退行性骨关节病。",
        ),
        _f(
            "{part}所摄骨质骨皮质不连续，可见透亮骨折线，断端轻度移位。周围软组织肿胀。",
            "{part}骨折，建议复查。",
            "significant",
        ),
    ),
    ("DR", "PELVIS"): (
        _f("双侧髋关节间隙变窄，髋臼缘骨质增生。骨盆诸骨骨质疏松。", "双髋关节退行性变，骨质疏松。"),
        _f("左侧股骨颈骨皮质不连续，见斜行骨折线，断端错位，股骨头未见明显移位。", "左侧股骨颈骨折。", "significant"),
    ),
    ("DR", "ABDOMEN"): (
        _f(
            "中上腹部见多个扩张积气肠管，立位见多个阶梯状气液平面。膈下未见游离气体。",
            "肠梗阻，建议进一步检查。",
            "critical",
            "肠梗阻（多发气液平面）。",
        ),
    ),
}

_CT_SPINE = {"CSPINE", "TSPINE", "LSPINE", "SSPINE"}
_LIMBS = {"SHOULDER", "CLAVICLE", "ARM", "ELBOW", "FOREARM", "WRIST", "HAND", "THIGH", "KNEE", "LEG", "ANKLE", "FOOT"}


def region(kind: str, code: str) -> str:
    """The group of parts whose findings read alike."""
    if code in _CT_SPINE:
        return "SPINE"
    if code == "HIP":
        return "PELVIS" if kind == "DR" else "JOINT"
    if code in _LIMBS:
        return "LIMB" if kind == "DR" else "JOINT"
    if kind == "DR" and code == "RIB":
        return "LIMB"
    return code


def normal_report_source() -> Callable[[str, str, str, str], tuple[str, str]]:
    """`normal_report(kind, part_code, part_name, language)`: the normal findings and
    impression, from the report template library (consults.services.normal_report), asked
    once per kind, part and language; for a part it has no template for, the normal texts
    above."""
    known: dict[tuple[str, str, str], tuple[str, str] | None] = {}

    def normal_report(kind: str, code: str, name: str, language: str = "zh-hans") -> tuple[str, str]:
        key = (kind, code, language)
        if key not in known:
            found = library_normal_report(kind, [code], language)
            known[key] = (found.findings, found.impression) if found is not None else None
        text = known[key]
        if text is not None:
            return text
        fallback = _NORMAL_FALLBACK.get((kind, region(kind, code)))
        if fallback is None:
            fallback = _NORMAL_FALLBACK[("CT", "JOINT")] if kind == "CT" else _NORMAL_FALLBACK[("DR", "PELVIS")]
        return fallback[0].format(part=name), fallback[1].format(part=name)

    return normal_report


def draw_finding(
    rng: random.Random, kind: str, code: str, age: int, priority: str, critical_share: float, finding_share: float
) -> Finding | None:
    """None for a normal report; else one of the part's findings. A critical one with the
    priority's share, where the part has one; else minor or significant."""
    choices = FINDINGS.get((kind, region(kind, code)), ())
    critical = [f for f in choices if f.level == "critical"]
    if critical and rng.random() < critical_share:
        return rng.choice(critical)
    if rng.random() >= finding_share:
        return None
    minor = [f for f in choices if f.level == "minor"]
    significant = [f for f in choices if f.level == "significant"]
    pool = significant if significant and (not minor or rng.random() < 0.2) else minor
    return rng.choice(pool) if pool else None
