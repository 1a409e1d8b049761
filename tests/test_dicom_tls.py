"""TLS for DICOM associations: with DICOM_TLS_CERT/KEY the receiver speaks only TLS; with
DICOM_TLS_CA too, a console must present a certificate signed by that CA. A throwaway CA,
server and client certificates are made with openssl for each test module."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudpacs.models import Instance
from dicomnode import server as dicomnode
from dicomnode.models import AssociationLog
from tests.factories import make_dataset, write_dataset
from tests.store_clients import client_ae

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

EXTENSIONS = """
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


class Certificates:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "extensions.cnf").write_text(EXTENSIONS)

    def openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.directory, check=True, capture_output=True, timeout=60)

    def authority(self, name: str) -> None:
        self.openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
            "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-config", "extensions.cnf", "-extensions", "ca",
        )  # fmt: skip

    def leaf(self, name: str, subject: str, authority: str, kind: str) -> None:
        self.openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-config", "extensions.cnf",
        )  # fmt: skip
        self.openssl(
            "x509", "-req", "-in", f"{name}.csr", "-days", "2", "-CA", f"{authority}.crt",
            "-CAkey", f"{authority}.key", "-set_serial", str(time.time_ns()), "-out", f"{name}.crt",
            "-extfile", "extensions.cnf", "-extensions", kind,
        )  # fmt: skip

    def __getitem__(self, name: str) -> Path:
        return self.directory / name


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    made = Certificates(tmp_path_factory.mktemp("tls"))
    made.authority("county")
    made.authority("stranger")
    made.leaf("receiver", "127.0.0.1", "county", "server")
    made.leaf("console", "XUANWO_CT console", "county", "client")
    made.leaf("impostor", "XUANWO_CT console", "stranger", "client")
    return made


def start(settings, certificates: Certificates, *, require_client: bool) -> dicomnode.NoDelayAssociationServer:
    settings.DICOM_AE_TITLE = "CLOUDPACS"
    settings.DICOM_TLS_CERT = certificates["receiver.crt"]
    settings.DICOM_TLS_KEY = certificates["receiver.key"]
    settings.DICOM_TLS_CA = certificates["county.crt"] if require_client else None
    return dicomnode.start_server("127.0.0.1", 0, block=False)


@pytest.fixture
def tls_receiver(settings, certificates) -> Iterator[tuple[str, int]]:
    server = start(settings, certificates, require_client=True)
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture
def server_only_tls_receiver(settings, certificates) -> Iterator[tuple[str, int]]:
    server = start(settings, certificates, require_client=False)
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()


def client_tls(certificates: Certificates, identity: str | None) -> tuple[ssl.SSLContext, str]:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certificates["county.crt"])
    if identity is not None:
        context.load_cert_chain(certificates[f"{identity}.crt"], certificates[f"{identity}.key"])
    return context, "127.0.0.1"


def store_over_tls(address, certificates, calling: str, identity: str | None) -> list[int] | None:
    """The statuses of one stored dataset, or None when no association was established."""
    ds = make_dataset()
    assoc = client_ae(calling).associate(*address, ae_title="CLOUDPACS", tls_args=client_tls(certificates, identity))
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds).Status
    finally:
        assoc.release()
    return [status, Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count()]


def wait_for_rows(**filters: object) -> list[AssociationLog]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = list(AssociationLog.objects.filter(**filters))
        if rows:
            return rows
        time.sleep(0.1)
    return []


def test_a_console_with_a_certificate_from_our_ca_stores_over_tls(tls_receiver, certificates, ct_modality):
    assert store_over_tls(tls_receiver, certificates, ct_modality.ae_title, "console") == [0x0000, 1]
    [row] = wait_for_rows(outcome=AssociationLog.Outcome.RELEASED)
    assert row.tls
    assert row.instances_stored == 1


def test_a_client_certificate_signed_by_another_ca_is_refused(tls_receiver, certificates, ct_modality):
    assert store_over_tls(tls_receiver, certificates, ct_modality.ae_title, "impostor") is None
    [row] = wait_for_rows(outcome=AssociationLog.Outcome.REJECTED)
    assert row.reason.startswith("TLS handshake failed")
    assert row.peer_address == "127.0.0.1"
    assert Instance.objects.count() == 0
    # The receiver carries on for the console with the right certificate.
    assert store_over_tls(tls_receiver, certificates, ct_modality.ae_title, "console") == [0x0000, 1]


def test_a_client_without_a_certificate_is_refused_when_a_ca_is_set(tls_receiver, certificates, ct_modality):
    assert store_over_tls(tls_receiver, certificates, ct_modality.ae_title, None) is None
    assert Instance.objects.count() == 0


def test_plain_tcp_to_the_tls_port_gets_no_association(tls_receiver, certificates, ct_modality):
    assoc = client_ae(ct_modality.ae_title).associate(*tls_receiver, ae_title="CLOUDPACS")
    assert not assoc.is_established
    [row] = wait_for_rows(outcome=AssociationLog.Outcome.REJECTED)
    assert row.reason.startswith("TLS handshake failed")
    assert store_over_tls(tls_receiver, certificates, ct_modality.ae_title, "console") == [0x0000, 1]


def test_the_association_policy_still_applies_over_tls(tls_receiver, certificates, ct_modality):
    assert store_over_tls(tls_receiver, certificates, "STRANGER", "console") is None
    [row] = wait_for_rows(outcome=AssociationLog.Outcome.REJECTED)
    assert (row.calling_ae_title, row.reason, row.tls) == ("STRANGER", "calling AE title not recognised", True)


def test_without_a_ca_any_client_may_connect_over_tls(server_only_tls_receiver, certificates, ct_modality):
    assert store_over_tls(server_only_tls_receiver, certificates, ct_modality.ae_title, None) == [0x0000, 1]


def storescu_tls(address, calling: str, certificates: Certificates, identity: str, path: Path):
    return subprocess.run(
        [
            "storescu", "+tls", str(certificates[f"{identity}.key"]), str(certificates[f"{identity}.crt"]),
            "+cf", str(certificates["county.crt"]), "-aet", calling, "-aec", "CLOUDPACS",
            address[0], str(address[1]), str(path),
        ],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_storescu_with_tls_stores_and_a_foreign_certificate_does_not(tls_receiver, certificates, ct_modality, tmp_path):
    good, bad = make_dataset(), make_dataset()
    result = storescu_tls(
        tls_receiver, ct_modality.ae_title, certificates, "console", write_dataset(good, tmp_path / "a.dcm")
    )
    assert result.returncode == 0, result.stderr
    assert Instance.objects.filter(sop_instance_uid=good.SOPInstanceUID).exists()
    result = storescu_tls(
        tls_receiver, ct_modality.ae_title, certificates, "impostor", write_dataset(bad, tmp_path / "b.dcm")
    )
    assert result.returncode != 0
    assert not Instance.objects.filter(sop_instance_uid=bad.SOPInstanceUID).exists()


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_a_missing_certificate_file_stops_the_start(tmp_path):
    result = start_django(DICOM_TLS_CERT=str(tmp_path / "absent.crt"))
    assert result.returncode != 0
    assert "DICOM_TLS_CERT" in result.stderr


def test_a_ca_without_a_certificate_stops_the_start(certificates):
    result = start_django(DICOM_TLS_CA=str(certificates["county.crt"]))
    assert result.returncode != 0
    assert "DICOM_TLS_CA" in result.stderr
