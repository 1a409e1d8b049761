"""The province replay's day model (bench/scale/model.py), its arguments, and the
province topology it sizes (deploy/compose.province.yml, deploy/haproxy/haproxy.cfg)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import yaml

from bench.scale import model
from bench.scale.run import parse_arguments, send_study
from billing.hanyin import TOWNSHIPS

ROOT = Path(__file__).resolve().parents[1]
TUESDAY = date(2025, 9, 23)


def test_a_province_day_has_hanyins_exams_per_township():
    day = model.province_day(1100, TUESDAY)
    expected = model.expected_per_weekday(1100)
    counts = Counter(exam.kind for exam in day)
    # 100 Hanyins: Poisson counts within a few standard deviations of the yearly rate.
    assert abs(counts["CT"] - expected["CT"]) < 5 * expected["CT"] ** 0.5
    assert abs(counts["DR"] - expected["DR"]) < 5 * expected["DR"] ** 0.5
    assert expected["CT"] == pytest.approx(100 * sum(t.ct[2] for t in TOWNSHIPS) / model.effective_days())


def test_ct_exams_come_only_from_townships_with_a_ct():
    day = model.province_day(220, TUESDAY)
    with_ct = {index for index in range(220) if TOWNSHIPS[index % len(TOWNSHIPS)].has_ct}
    assert {exam.township for exam in day if exam.kind == "CT"} <= with_ct


def test_only_emergencies_arrive_outside_working_hours():
    day = model.province_day(500, TUESDAY)
    outside = [exam for exam in day if not 8 * 3600 <= exam.at < 18 * 3600]
    assert outside
    assert all(exam.priority == "emergency" for exam in outside)
    assert [exam.at for exam in day] == sorted(exam.at for exam in day)


def test_a_sunday_has_fewer_exams_than_a_tuesday():
    assert len(model.province_day(500, date(2025, 9, 28))) < 0.6 * len(model.province_day(500, TUESDAY))


def test_images_per_exam_follow_the_series_plan():
    day = model.province_day(1000, TUESDAY)
    ct = [exam for exam in day if exam.kind == "CT"]
    assert all(len(exam.series) == 3 and exam.series[0] == 1 for exam in ct)
    assert sum(e.instances for e in ct) / len(ct) == pytest.approx(model.mean_images("CT"), rel=0.05)
    dr = [exam for exam in day if exam.kind == "DR"]
    assert sum(e.instances for e in dr) / len(dr) == pytest.approx(model.mean_images("DR"), rel=0.05)
    assert ct[0].real_bytes == ct[0].instances * 512 * 512 * 2


def test_the_busiest_half_hour_counts_images_where_exams_start():
    exams = [
        model.Exam(0.0, 0, "DR", "CHEST", "routine", (1,)),
        model.Exam(100.0, 0, "CT", "HEAD", "routine", (1, 10, 50)),
        model.Exam(5000.0, 0, "DR", "KNEE", "routine", (1, 1)),
    ]
    assert model.busiest_rate(exams) == pytest.approx(62 / 1800)
    assert model.busiest_rate([]) == 0.0


def test_a_province_without_townships_is_refused():
    with pytest.raises(ValueError, match="at least one township"):
        model.province_day(0, TUESDAY)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--share", "0"], "--share must be in (0, 1]"),
        (["--speed", "-1"], "--speed must be positive"),
        (["--receivers", "0"], "--receivers must be at least 1"),
        (["--townships", "0"], "--townships must be at least 1"),
    ],
)
def test_the_replay_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_arguments(argv)
    assert message in capsys.readouterr().err


@pytest.mark.django_db(transaction=True)
def test_the_replays_consoles_pause_their_loop_with_the_checked_handshake(
    receiver, ct_modality, tmp_path: Path, monkeypatch
):
    """The replay's stalled associations (docs/benchmarks-scale.md, runs 1 and 2): its
    consoles are pynetdicom clients sending C-STORE after C-STORE, and pynetdicom's pause
    handshake let a loaded client's own association loop take a C-STORE response from
    under its sender; the sender waited out its DIMSE timeout while the receiver, having
    answered, timed the association out. The consoles now get the receiver's checked
    pause (dicomnode.reactor.wait_while_paused, whose interleaving
    tests/test_dicomnode_reactor.py checks)."""
    import multiprocessing

    from pydicom.uid import generate_uid

    from dicomnode import reactor
    from tests.factories import make_dataset

    installed: list[str] = []
    install = reactor.install_requestor

    def recording(assoc):  # type: ignore[no-untyped-def]
        done = install(assoc)
        installed.append(type(assoc).__name__ if done else "stock")
        return done

    monkeypatch.setattr(reactor, "install_requestor", recording)
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(1, 4):
        path = tmp_path / f"{number}.dcm"
        make_dataset(study_uid=study, series_uid=series, instance_number=number).save_as(path, enforce_file_format=True)
        files.append(path)
    progress = multiprocessing.Value("i", 0)
    store_ms, answered, failed = send_study(receiver[1], ct_modality.ae_title, "CT", files, progress)
    assert (len(store_ms), len(answered), failed) == (3, 3, 0)
    assert installed == ["CheckedPauseAssociation"]


def test_the_replay_defaults_are_a_thousand_townships_in_minutes():
    args = parse_arguments([])
    assert args.townships == 1000
    assert args.receivers >= 2
    assert args.processes >= 2


def test_the_province_compose_file_has_every_part_with_a_health_check():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.province.yml").read_text())
    services = compose["services"]
    for name in ("postgres", "redis", "minio", "receiver", "web", "worker", "beat", "haproxy"):
        assert "healthcheck" in services[name], name
    assert services["receiver"]["healthcheck"]["test"][-2:] == ["alive", "dicomnode"]
    assert services["worker"]["healthcheck"]["test"][-2:] == ["alive", "worker"]
    proxy = services["haproxy"]["networks"]["province"]["ipv4_address"]
    receiver = services["receiver"]["environment"]
    assert receiver["DICOM_PROXY_ADDRESSES"] == proxy
    assert receiver["TRUSTED_PROXIES"] == proxy
    assert receiver["STORAGE_BACKEND"] == "s3"
    assert services["web"]["environment"]["TRUSTED_PROXIES"] == proxy


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian package haproxy)")
def test_the_province_haproxy_config_is_valid():
    path = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "send-proxy-v2" in path.read_text()
