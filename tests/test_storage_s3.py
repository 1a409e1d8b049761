"""The image store in an S3-compatible object store (moto's server on a loopback port,
behind a proxy that can be slow, refuse PUTs or be down): what the receiver answers when
the store fails, that nothing is lost or indexed then, that reads are ranged, and the
commands that move an archive between backends and verify it."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from pydicom import dcmread
from pydicom.uid import generate_uid

from cloudpacs import services, storage
from cloudpacs.dicomweb import wado
from cloudpacs.models import Instance
from tests.factories import ingest, make_dataset
from tests.s3_support import FaultyProxy, use_object_store
from tests.test_dicomnode_server import send
from tests.test_ingest import staged_file

pytestmark = pytest.mark.django_db(transaction=True)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def proxy(s3_server):
    proxy = FaultyProxy(s3_server.port)
    yield proxy
    proxy.stop()


@pytest.fixture
def store_behind_proxy(settings, proxy):
    """STORAGE_BACKEND=s3 through the proxy, with a short timeout and one attempt, so
    that a slow store fails a C-STORE in about a second."""
    bucket = f"yunying-{generate_uid()[-12:].replace('.', '')}"
    use_object_store(settings, proxy.endpoint, bucket, timeout=1.0, max_attempts=1)
    return bucket


def spool() -> list[Path]:
    directory = Path(settings.STORAGE_ROOT) / storage.INCOMING
    return list(directory.iterdir()) if directory.exists() else []


def objects() -> list[str]:
    return [item.key for item in storage.stored_objects()]


# ---------------------------------------------------------------- faults


def test_with_the_store_down_a_c_store_is_out_of_resources_and_a_resend_later_is_stored_once(
    settings, store_behind_proxy, proxy, receiver, ct_modality
):
    ds = make_dataset()
    proxy.stop()
    assert send(receiver, ct_modality.ae_title, [ds]) == [OUT_OF_RESOURCES]
    assert not Instance.objects.exists()
    assert spool() == []
    # The store comes back (here: straight to the server, the proxy being gone).
    settings.S3_ENDPOINT_URL = f"http://127.0.0.1:{proxy.upstream_port}"
    assert send(receiver, ct_modality.ae_title, [ds]) == [SUCCESS]
    assert send(receiver, ct_modality.ae_title, [ds]) == [SUCCESS]
    instance = Instance.objects.get()
    assert objects() == [instance.storage_key]
    assert spool() == []


def test_a_put_the_store_refuses_is_out_of_resources_and_nothing_is_kept(
    store_behind_proxy, proxy, receiver, ct_modality
):
    ds = make_dataset()
    proxy.mode = "refuse"
    assert send(receiver, ct_modality.ae_title, [ds]) == [OUT_OF_RESOURCES]
    proxy.mode = "error"
    assert send(receiver, ct_modality.ae_title, [ds]) == [OUT_OF_RESOURCES]
    assert not Instance.objects.exists()
    assert objects() == []
    assert spool() == []
    proxy.mode = "pass"
    assert send(receiver, ct_modality.ae_title, [ds]) == [SUCCESS]
    assert Instance.objects.get().sop_instance_uid == ds.SOPInstanceUID


def test_a_store_slower_than_the_timeout_is_out_of_resources_and_what_it_took_late_is_swept(
    store_behind_proxy, proxy, receiver, ct_modality
):
    ds = make_dataset()
    proxy.mode, proxy.delay = "slow", 8.0
    started = time.monotonic()
    assert send(receiver, ct_modality.ae_title, [ds]) == [OUT_OF_RESOURCES]
    assert time.monotonic() - started < 8.0
    assert not Instance.objects.exists()
    assert spool() == []
    # The proxy still forwards the PUT after its delay: an object nothing indexes.
    deadline = time.monotonic() + 30
    while not objects() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(objects()) == 1
    assert storage.sweep_unindexed(services.indexed_keys, older_than=0, remove=False) == objects()
    proxy.mode = "pass"
    # A re-send finds the object there, indexes it and answers Success; nothing to sweep.
    assert send(receiver, ct_modality.ae_title, [ds]) == [SUCCESS]
    assert storage.sweep_unindexed(services.indexed_keys, older_than=0, remove=True) == []
    assert objects() == [Instance.objects.get().storage_key]


def test_the_orphan_sweep_removes_an_unindexed_object_and_keeps_indexed_ones(object_store, ct_modality, tmp_path):
    kept = ingest(make_dataset(), ct_modality, tmp_path)
    ds = make_dataset()
    staged = staged_file(ds, tmp_path / "lost.dcm")
    lost = storage.key_for(ds.StudyInstanceUID, ds.SOPInstanceUID, staged.sha256)
    storage.publish(staged, lost)
    storage.discard(staged)
    # Younger than the grace period: it may be a store in progress.
    assert storage.sweep_unindexed(services.indexed_keys, older_than=3600, remove=True) == []
    assert storage.sweep_unindexed(services.indexed_keys, older_than=0, remove=True) == [lost]
    assert objects() == [kept.instance.storage_key]


# ---------------------------------------------------------------- reads


def test_a_frame_is_read_by_ranges_not_the_whole_instance(store_behind_proxy, proxy, ct_modality, tmp_path):
    frames, size = 24, 256
    pixels = (np.arange(frames * size * size, dtype=np.uint32) % 4000).astype(np.uint16).reshape(frames, size, size)
    ds = make_dataset(rows=size, columns=size, NumberOfFrames=frames)
    ds.PixelData = pixels.tobytes()
    instance = ingest(ds, ct_modality, tmp_path).instance
    with proxy.counting(), storage.open_key(instance.storage_key) as stream:
        got = wado.frames(stream, [17], decode=False)
    assert got == [pixels[16].tobytes()]
    assert proxy.get_bytes < instance.size // 4
    assert all(method == "GET" and rng.startswith("bytes=") for method, _, rng in proxy.requests)
    with proxy.counting():
        whole = b"".join(storage.iter_key(instance.storage_key))
    assert len(whole) == instance.size
    assert dcmread(io.BytesIO(whole)).PixelData == ds.PixelData


def test_a_cine_frame_costs_one_ranged_get_once_its_instance_is_mapped(
    store_behind_proxy, proxy, ct_modality, tmp_path
):
    """An ultrasound clip without an offset table: the first frame request walks the
    fragments in one ranged read; later ones, by the storage key, read only their frame
    (before, each request walked every fragment before its frame in 256 KB windows: a
    cold 100-frame clip took 34 s from the store against 4 s from disk)."""
    from pydicom.encaps import encapsulate

    from tests.equipment import encapsulated, jpeg, us_ybr_full_422_jpeg

    rng = np.random.default_rng(7)
    frames = [jpeg(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(12)]
    frames = [frame + b"\0" * (len(frame) % 2) for frame in frames]  # as stored: fragments are even
    ds = us_ybr_full_422_jpeg(frames=12, rows=256, columns=256)
    ds.PixelData = encapsulate(frames, has_bot=False)
    encapsulated(ds)
    instance = ingest(ds, ct_modality, tmp_path).instance
    assert instance.size > 4 * 256 * 1024
    wado._FRAME_MAPS.clear()
    with proxy.counting(), storage.open_key(instance.storage_key) as stream:
        assert wado.frames(stream, [12], decode=False, cache_key=instance.storage_key) == [frames[11]]
    assert len(proxy.requests) <= 2  # the header's window, then the fragments with the frame
    for number in (3, 9):
        with proxy.counting(), storage.open_key(instance.storage_key) as stream:
            assert wado.frames(stream, [number], decode=False, cache_key=instance.storage_key) == [frames[number - 1]]
        assert len(proxy.requests) <= 2  # the reader's first window, the frame
        assert proxy.get_bytes < instance.size // 2


def test_a_retrieved_uncompressed_instance_is_sent_from_the_store_a_mebibyte_at_a_time(
    store_behind_proxy, proxy, ct_modality, tmp_path
):
    """C-MOVE/C-GET read an instance through `read_instance`: from the object store its
    Pixel Data is the object's range, fetched by ranged GETs as pynetdicom encodes the
    message, not read whole first (before: the whole object in memory, then the message)."""
    from pynetdicom.dsutils import encode

    from cloudpacs import queryretrieve

    frames, size = 40, 256
    pixels = (np.arange(frames * size * size, dtype=np.uint32) % 4000).astype(np.uint16).reshape(frames, size, size)
    ds = make_dataset(rows=size, columns=size, NumberOfFrames=frames)
    ds.PixelData = pixels.tobytes()
    instance = ingest(ds, ct_modality, tmp_path).instance
    assert instance.size > 5 * 1024 * 1024
    item = queryretrieve.RetrieveItem(
        instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax_uid, instance.storage_key, 0
    )
    with proxy.counting():
        read = queryretrieve.read_instance(item)
        assert read["PixelData"].is_buffered
        assert proxy.get_bytes < instance.size // 4  # the header, not the pixels
        message = encode(read, False, True)  # as the C-STORE sub-operation encodes it
        read["PixelData"].value.close()
    assert message is not None and message.endswith(pixels.tobytes())
    assert proxy.get_bytes < instance.size * 1.2
    ranges = [rng for _, _, rng in proxy.requests]
    assert all(rng.startswith("bytes=") for rng in ranges)
    assert len(ranges) <= instance.size // queryretrieve.STREAM_BUFFER + 3


def test_a_missing_object_reads_as_a_missing_file(object_store):
    with pytest.raises(FileNotFoundError):
        storage.open_key("ab/nothing-here.dcm")
    assert not storage.exists("ab/nothing-here.dcm")


# ---------------------------------------------------------------- commands


def test_an_archive_moves_to_the_object_store_and_back_and_verifies(settings, s3_server, ct_modality, tmp_path, capsys):
    study_uid = generate_uid()
    for number in range(1, 4):
        ingest(make_dataset(study_uid=study_uid, instance_number=number), ct_modality, tmp_path)
    keys = sorted(Instance.objects.values_list("storage_key", flat=True))
    use_object_store(settings, s3_server.endpoint, f"yunying-move-{generate_uid()[-8:]}")
    settings.STORAGE_BACKEND = "local"
    call_command("storage_copy", "--to", "s3")
    settings.STORAGE_BACKEND = "s3"
    assert objects() == keys
    call_command("storage_verify")
    assert "3 verified, 0 missing, 0 damaged" in capsys.readouterr().out
    # Run again, it finds them there.
    settings.STORAGE_BACKEND = "local"
    call_command("storage_copy", "--to", "s3")
    assert "0 copied, 3 already there" in capsys.readouterr().out
    # And back to a fresh disk.
    for key in keys:
        storage.path_for(key).unlink()
    settings.STORAGE_BACKEND = "s3"
    call_command("storage_copy", "--to", "local")
    settings.STORAGE_BACKEND = "local"
    call_command("storage_verify", "--restart")
    assert "3 verified, 0 missing, 0 damaged" in capsys.readouterr().out


def test_verify_names_a_damaged_and_a_missing_object(object_store, ct_modality, tmp_path, capsys):
    first, second, third = (ingest(make_dataset(), ct_modality, tmp_path).instance for _ in range(3))
    store = storage.s3_store()
    damaged = dcmread(io.BytesIO(b"".join(storage.iter_key(first.storage_key))))
    damaged.PixelData = bytes(len(damaged.PixelData))
    buffer = io.BytesIO()
    damaged.save_as(buffer, enforce_file_format=True)
    path = tmp_path / "damaged.dcm"
    path.write_bytes(buffer.getvalue())
    store.put_file(path, first.storage_key)
    store.delete(second.storage_key)
    with pytest.raises(CommandError, match="1 missing and 1 damaged"):
        call_command("storage_verify")
    out = capsys.readouterr().out
    assert "1 verified, 1 missing, 1 damaged" in out
    assert f"damaged {first.storage_key}" in out
    assert f"missing {second.storage_key}" in out
    assert third.storage_key not in out


def test_a_copy_stopped_by_the_store_going_down_resumes_after_the_last_key_it_finished(
    settings, s3_server, ct_modality, tmp_path, capsys, monkeypatch
):
    for _ in range(3):
        ingest(make_dataset(), ct_modality, tmp_path)
    use_object_store(settings, s3_server.endpoint, f"yunying-resume-{generate_uid()[-8:]}")
    settings.STORAGE_BACKEND = "local"
    real_copy = storage.copy_key
    calls = []

    def failing_second(key, source, destination):
        calls.append(key)
        if len(calls) == 2:
            raise storage.StoreUnavailable("the store went away")
        return real_copy(key, source, destination)

    monkeypatch.setattr(storage, "copy_key", failing_second)
    with pytest.raises(CommandError, match="run again to resume"):
        call_command("storage_copy", "--to", "s3", "--quiet")
    monkeypatch.setattr(storage, "copy_key", real_copy)
    call_command("storage_copy", "--to", "s3", "--quiet")
    out = capsys.readouterr().out
    assert f"resuming after {calls[0]}" in out
    assert "2 copied, 0 already there" in out


def test_the_start_sweep_passes_over_a_file_a_copy_is_writing(monkeypatch):
    # storage_copy --to local writes each file in the spool before renaming it to its
    # key; a receiver starting meanwhile swept it away as a crash's (the copy then failed
    # at the rename). Written under its flock, as a staged file is, it is passed over.
    key = f"{generate_uid()}/{generate_uid()}.dcm"
    swept: list[int] = []
    spooled: list[list[str]] = []

    class Store:
        def iter_chunks(self, key: str):
            yield b"first half "
            spooled.append([path.name for path in spool()])
            swept.append(storage.sweep_orphans(lambda keys: set()))
            yield b"second half"

    monkeypatch.setattr(storage, "s3_store", Store)
    assert storage.copy_key(key, "s3", "local") is True
    assert swept == [0]
    assert len(spooled[0]) == 1 and spooled[0][0].endswith(".copy")
    assert storage.path_for(key).read_bytes() == b"first half second half"
    assert spool() == []
