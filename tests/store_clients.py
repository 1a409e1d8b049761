"""One C-STORE from a pynetdicom client or from dcmtk's storescu, and what came back: the
status and the Error Comment, as each client reports them."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, DigitalXRayImageStorageForPresentation, Verification

from tests.factories import write_dataset

CLIENTS = ["pynetdicom", "dcmtk"]


@dataclass
class Answer:
    status: int
    comment: str


def send_pynetdicom(address: tuple[str, int], calling: str, ds: Dataset, tmp_path: Path) -> Answer:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, [ExplicitVRLittleEndian])
    assoc = ae.associate(address[0], address[1], ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return Answer(int(answer.Status), str(answer.get("ErrorComment", "")))


def send_dcmtk(address: tuple[str, int], calling: str, ds: Dataset, tmp_path: Path) -> Answer:
    path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    result = subprocess.run(
        ["storescu", "-d", "-R", "-aet", calling, "-aec", "CLOUDPACS", address[0], str(address[1]), str(path)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
    assert status is not None, output[-2000:]
    comment = re.search(r"\(0000,0902\) LO \[(.*?)\]", output)
    return Answer(int(status.group(1), 16), comment.group(1) if comment else "")


def client_ae(
    title: str,
    contexts: list[tuple[str, list[str]]] | None = None,
    *,
    acse_timeout: float = 30,
    timeout: float = 30,
) -> AE:
    """A calling AE for the tests: by default C-ECHO and CT in Explicit VR Little Endian,
    else exactly the (SOP class, transfer syntaxes) contexts given."""
    ae = AE(ae_title=title)
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = ae.network_timeout = timeout
    if contexts is None:
        contexts = [(Verification, []), (CTImageStorage, [ExplicitVRLittleEndian])]
    for abstract, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(abstract, syntaxes)
        else:
            ae.add_requested_context(abstract)
    return ae


SENDERS = {"pynetdicom": send_pynetdicom, "dcmtk": send_dcmtk}


def send_file_as_is(assoc: Association, path: Path) -> Dataset:
    """The C-STORE of a Part 10 file's dataset bytes exactly as the file holds them
    (pynetdicom's chunked sending reads the file instead of encoding a dataset): what a
    console with a broken encoder, or one that sends what it stored, puts on the wire."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
