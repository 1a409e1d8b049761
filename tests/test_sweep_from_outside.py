"""The sweep files (pydicom's test and character set files, and pydicom-data's when it is
installed, found through pydicom's external data sources) through the front door and back
out, from outside: each sent with dcmtk
`storescu` (proposing only the file's own transfer syntax, so nothing is converted on the
way in), then fetched again with dcmtk `movescu` to a storage SCP in a process of its own
(bound to 127.0.0.1: dcmtk 3.6.7's storescp binds every address) and with dcmtk `getscu`,
at study, series and image level. What comes back is compared with what was sent: every
element but the file meta group and group lengths identical, pixel data byte for byte
(decoded values when the archive had to send another transfer syntax)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.data import data_manager
from pydicom.dataset import Dataset

from cloudpacs.models import Instance
from facilities.models import ApplicationEntity

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
DATA = Path(pydicom.data.__file__).parent


def sweep_files() -> list[Path]:
    files = [*(DATA / "test_files").glob("*.dcm"), *(DATA / "charset_files").glob("*.dcm")]
    # pydicom-data (`pip install pydicom-data`: vendors' files, big endian, overlays, palettes)
    # registers itself as one of pydicom's external data sources; its module is not named
    # after the package, so it is found through pydicom rather than by import.
    for source in data_manager.external_data_sources().values():
        files += Path(source.data_path).rglob("*.dcm")
    files += (Path(__file__).parent / "data" / "vendor").rglob("*.dcm")
    only = os.environ.get("SWEEP_ONLY")
    if only:
        files = [f for f in files if f.name in only.split(",")]
    return sorted(files)


def dcmtk(tool: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


# A storage SCP in a process of its own, bound to 127.0.0.1: it takes the SOP classes it
# is given on its first line, in every transfer syntax pynetdicom knows, and writes each
# dataset it receives as received (file meta first) to the directory it is given.
DESTINATION_SCRIPT = """
import json, sys
from pathlib import Path
from pynetdicom import AE, evt
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class

directory = Path(sys.argv[1])
sop_classes = json.loads(sys.stdin.readline())
# A retired storage class (Ultrasound Image Storage (Retired), old files still carry it) is
# unknown to pynetdicom, which would abort the association on its first C-STORE.
for number, uid in enumerate(sop_classes):
    if uid_to_service_class(uid) is not StorageServiceClass:
        register_uid(uid, f"SweepStorage{number}", StorageServiceClass)

def on_store(event):
    uid = event.request.AffectedSOPInstanceUID
    (directory / f"{uid}.dcm").write_bytes(event.encoded_dataset())
    return 0x0000

ae = AE(ae_title="SWEEP_DEST")
ae.maximum_associations = 4
# Explicit VR first, as most workstations: the private elements keep their VRs on the way.
syntaxes = ["1.2.840.10008.1.2.1", *(s for s in ALL_TRANSFER_SYNTAXES if s != "1.2.840.10008.1.2.1")]
for uid in sop_classes:
    ae.add_supported_context(uid, syntaxes)
server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
"""


@dataclass
class Destination:
    directory: Path
    port: int
    process: subprocess.Popen[str]

    def take(self) -> dict[str, Path]:
        """What arrived since the last call, by SOP Instance UID, moved out of the way."""
        found = {}
        for path in sorted(self.directory.glob("*.dcm")):
            moved = path.with_suffix(".taken")
            path.rename(moved)
            found[path.stem] = moved
        return found


@pytest.fixture
def sweep_destination(tmp_path) -> Iterator[Destination]:
    directory = tmp_path / "dest"
    directory.mkdir()
    sop_classes = sorted({str(r[1]) for r in map(request_values, sweep_files()) if r})
    process = subprocess.Popen(
        [sys.executable, "-c", DESTINATION_SCRIPT, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(sop_classes) + "\n")
    process.stdin.flush()
    port = int(process.stdout.readline())
    try:
        yield Destination(directory, port, process)
    finally:
        process.communicate("", timeout=30)


def request_values(path: Path) -> tuple[str, str, str] | None:
    try:
        ds = dcmread(path, stop_before_pixels=True)
        values = (ds.file_meta.get("TransferSyntaxUID"), ds.get("SOPClassUID"), ds.get("SOPInstanceUID"))
    except Exception:
        return None
    return (str(values[0]), str(values[1]), str(values[2])) if all(values) else None


# storescu proposes uncompressed transfer syntaxes unless told which other one to propose;
# with it, it sends a file in its own transfer syntax when that is accepted.
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def store_sweep(receiver: tuple[str, int], calling: str) -> dict[str, Path]:
    """Each sweep file sent on its own association; the file each stored SOP Instance UID
    was last accepted from."""
    sent: dict[str, Path] = {}
    for path in sweep_files():
        values = request_values(path)
        if values is None:
            continue
        propose = PROPOSE.get(values[0], "-x=")
        result = dcmtk(
            "storescu", "-R", propose, "-aet", calling, "-aec", "CLOUDPACS", *map(str, receiver), str(path)
        )  # fmt: skip
        if result.returncode == 0 and "Status" not in result.stderr:
            sent[values[2]] = path
        else:
            print("REFUSED", path.name, values[0], result.returncode, result.stderr.strip().splitlines()[-3:])
    return sent


# What a PACS may change in what it sends on (PS3.4 B.4.1, PS3.5 7.2, 7.5): the file meta
# group, group lengths (retired), trailing padding, and the byte order and VR encoding
# when it sends in another transfer syntax.
def differences(original: Path, received: Path) -> list[str]:
    sent, got = dcmread(original), dcmread(received)
    same_syntax = sent.file_meta.TransferSyntaxUID == got.file_meta.TransferSyntaxUID
    swapped = sent.file_meta.TransferSyntaxUID.is_little_endian != got.file_meta.TransferSyntaxUID.is_little_endian
    found: list[str] = []
    compare(sent, got, same_syntax, found, "", swapped)
    return found


# The VRs whose value pydicom gives as the raw bytes, in the transfer syntax's byte order,
# and the size of the word each is made of (PS3.5 6.2).
WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def compare(sent: Dataset, got: Dataset, same_syntax: bool, found: list[str], where: str, swapped: bool) -> None:
    tags = {t for t in [*sent.keys(), *got.keys()] if t.element != 0 and t != 0xFFFCFFFC}
    for tag in sorted(tags):
        if tag.group == 0x0002:
            continue
        a, b = sent.get(tag), got.get(tag)
        if a is None or b is None:
            found.append(f"{where}{tag} {'missing' if b is None else 'added'}")
            continue
        if a.VR == "SQ" or b.VR == "SQ":
            if len(a.value) != len(b.value):
                found.append(f"{where}{tag} {len(a.value)} items, got {len(b.value)}")
                continue
            for number, (x, y) in enumerate(zip(a.value, b.value, strict=True)):
                compare(x, y, same_syntax, found, f"{where}{tag}[{number}].", swapped)
            continue
        if tag == 0x7FE00010 and not same_syntax:
            if not pixels_equal(sent, got):
                found.append(f"{where}{tag} pixels differ")
            continue
        if swapped and a.VR == b.VR and a.VR in WORDS and isinstance(a.value, bytes) and isinstance(b.value, bytes):
            if not words_equal(a.value, b.value, WORDS[a.VR]):
                found.append(f"{where}{tag} {a.VR} differs in value once its byte order is turned")
            continue
        if not values_equal(a, b):
            found.append(f"{where}{tag} {a.VR} {str(a.value)[:60]!r} -> {b.VR} {str(b.value)[:60]!r}")


def words_equal(a: bytes, b: bytes, size: int) -> bool:
    """The same words in the other byte order: big endian sent, little endian received."""
    if len(a) != len(b) or len(a) % size:
        return False
    return all(a[n : n + size] == b[n : n + size][::-1] for n in range(0, len(a), size))


def values_equal(a: Any, b: Any) -> bool:
    try:
        return bool(a.value == b.value) or str(a.value) == str(b.value)
    except Exception:
        return False


def pixels_equal(sent: Dataset, got: Dataset) -> bool:
    try:
        return bool((sent.pixel_array == got.pixel_array).all())
    except Exception:
        return bytes(sent.PixelData) == bytes(got.PixelData)


@dataclass
class Stored:
    sent: dict[str, Path]  # SOP Instance UID -> the file it was stored from
    studies: dict[str, dict[str, list[str]]]  # study UID -> series UID -> SOP Instance UIDs


@pytest.fixture
def workstation(township) -> ApplicationEntity:
    """The township's reading workstation, XUANWO_WS, that queries and retrieves."""
    return ApplicationEntity.objects.create(
        ae_title="XUANWO_WS",
        role=ApplicationEntity.Role.WORKSTATION,
        facility=township,
        may_query=True,
        may_retrieve=True,
    )


@pytest.fixture
def swept(receiver, ct_modality, workstation) -> Stored:
    sent = store_sweep(receiver, ct_modality.ae_title)
    studies: dict[str, dict[str, list[str]]] = {}
    for study_uid, series_uid, sop_uid in Instance.objects.values_list(
        "series__study__study_uid", "series__series_uid", "sop_instance_uid"
    ).order_by("sop_instance_uid"):
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append(sop_uid)
    assert len(sent) > (0 if os.environ.get("SWEEP_ONLY") else 40)
    return Stored(sent, studies)


def movescu(receiver: tuple[str, int], destination: str, *keys: str) -> subprocess.CompletedProcess[str]:
    args = ["-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return dcmtk("movescu", *args, *map(str, receiver))


def test_every_swept_file_moves_back_identical_at_study_series_and_image_level(
    receiver, swept, settings, township, sweep_destination
):
    ApplicationEntity.objects.create(
        ae_title="SWEEP_DEST",
        role=ApplicationEntity.Role.WORKSTATION,
        facility=township,
        is_move_destination=True,
        host="127.0.0.1",
        port=sweep_destination.port,
    )
    problems: list[str] = []
    for study_uid, series in swept.studies.items():
        requests = [("STUDY", [f"StudyInstanceUID={study_uid}"], [u for uids in series.values() for u in uids])]
        for series_uid, uids in series.items():
            requests.append(("SERIES", [f"StudyInstanceUID={study_uid}", f"SeriesInstanceUID={series_uid}"], uids))
            requests.append(
                (
                    "IMAGE",
                    [
                        f"StudyInstanceUID={study_uid}",
                        f"SeriesInstanceUID={series_uid}",
                        f"SOPInstanceUID={chr(92).join(uids)}",
                    ],
                    uids,
                )
            )
        for level, keys, expected in requests:
            result = movescu(receiver, "SWEEP_DEST", f"QueryRetrieveLevel={level}", *keys)
            got = sweep_destination.take()
            if result.returncode != 0 or sorted(got) != sorted(expected):
                missing = sorted(set(expected) - set(got))
                problems.append(
                    f"{level} {keys[-1][:80]}: rc {result.returncode}, missing "
                    f"{[swept.sent[u].name if u in swept.sent else u for u in missing]} {result.stderr[-300:]}"
                )
            for uid, path in got.items():
                if uid in swept.sent:
                    for difference in differences(swept.sent[uid], path):
                        problems.append(f"{level} {swept.sent[uid].name}: {difference}")
    if os.environ.get("SWEEP_PROBLEMS"):
        Path(os.environ["SWEEP_PROBLEMS"]).write_text("\n".join(problems))
    assert problems == []


def final_status(result: subprocess.CompletedProcess[str]) -> int | None:
    """The status of the last response a dcmtk tool printed with -d."""
    found = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", result.stdout + result.stderr)
    return int(found[-1], 16) if found else None


CHARSET_FILES = ["chrH31.dcm", "chrX1.dcm", "chrJapMultiExplicitIR6.dcm", "chrKoreanMulti.dcm"]


def test_findscu_getscu_and_refused_moves_over_swept_character_set_files(receiver, ct_modality, workstation, tmp_path):
    """findscu finds each study with the name as sent, getscu brings each instance back
    identical, and movescu is refused with the statuses of docs/dicom-conformance.md: an
    unknown destination 0xA801, an identifier without the level's unique key 0xC514."""
    paths = [DATA / "charset_files" / name for name in CHARSET_FILES]
    for path in paths:
        values = request_values(path)
        assert values is not None
        result = dcmtk(
            "storescu", "-R", PROPOSE.get(values[0], "-x="), "-aet", ct_modality.ae_title, "-aec", "CLOUDPACS",
            *map(str, receiver), str(path),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    problems: list[str] = []
    for path in paths:
        sent = dcmread(path)
        answers = tmp_path / f"find-{path.stem}"
        answers.mkdir()
        found = dcmtk(
            "findscu", "-S", "-X", "-od", str(answers), "-aet", "XUANWO_WS", "-aec", "CLOUDPACS",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent.StudyInstanceUID}", "-k", "PatientName",
            *map(str, receiver),
        )  # fmt: skip
        names = [str(dcmread(answer).PatientName) for answer in sorted(answers.glob("*.dcm"))]
        if found.returncode != 0 or names != [str(sent.PatientName)]:
            problems.append(f"findscu {path.name}: {names} for {str(sent.PatientName)!r} {found.stderr[-300:]}")
        fetched = tmp_path / f"get-{path.stem}"
        fetched.mkdir()
        got = dcmtk(
            "getscu", "-S", "-od", str(fetched), "-aet", "XUANWO_WS", "-aec", "CLOUDPACS",
            "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={sent.StudyInstanceUID}",
            "-k", f"SOPInstanceUID={sent.SOPInstanceUID}", *map(str, receiver),
        )  # fmt: skip
        back = sorted(fetched.iterdir())
        if got.returncode != 0 or len(back) != 1:
            problems.append(f"getscu {path.name}: {len(back)} files {got.stderr[-200:]}")
        else:
            problems += [f"getscu {path.name}: {difference}" for difference in differences(path, back[0])]
    study_uid = str(dcmread(paths[0]).StudyInstanceUID)
    unknown = dcmtk(
        "movescu", "-d", "-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *map(str, receiver),
    )  # fmt: skip
    no_key = dcmtk(
        "movescu", "-d", "-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=Yamada*", *map(str, receiver),
    )  # fmt: skip
    assert problems == []
    assert (final_status(unknown), final_status(no_key)) == (0xA801, 0xC514)
