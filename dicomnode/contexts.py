"""What the receiver accepts at negotiation: every Storage SOP Class of PS3.4 Annex B, each
with the transfer syntaxes that equipment sends, stored as received.

Any other class proposed (query/retrieve, print, private or unknown classes, and the
non-patient storage classes of Annex GG, which carry no study to file them under) is
refused at negotiation: its presentation context is answered "abstract syntax not
supported", unless the server adds a service of its own for it (Verification)."""

from __future__ import annotations

from pydicom import uid
from pynetdicom import sop_class
from pynetdicom.service_class import StorageServiceClass

# Retired storage classes that older consoles still send: ultrasound and nuclear medicine
# machines of the 1990s (PS3.6 lists them as retired; PS3.4 Annex B no longer does, so
# pynetdicom does not know them as storage classes).
RETIRED_STORAGE_CLASSES = {
    "UltrasoundMultiFrameImageStorageRetired": "1.2.840.10008.5.1.4.1.1.3",
    "NuclearMedicineImageStorageRetired": "1.2.840.10008.5.1.4.1.1.5",
    "UltrasoundImageStorageRetired": "1.2.840.10008.5.1.4.1.1.6",
    "XRayAngiographicBiPlaneImageStorage": "1.2.840.10008.5.1.4.1.1.12.3",
}


def _register_retired() -> None:
    """Make pynetdicom dispatch C-STORE on the retired classes to the storage handler."""
    for keyword, value in RETIRED_STORAGE_CLASSES.items():
        if not hasattr(sop_class, keyword):
            sop_class.register_uid(value, keyword, StorageServiceClass)


_register_retired()


def _numeric(value: str) -> list[int]:
    return [int(part) for part in value.split(".")]


# pynetdicom's registry of the Storage Service Class: the 170 SOP classes of Annex B
# (Table B.5-1) of the 2024 standard, then the retired ones above.
STORAGE_SOP_CLASSES: list[str] = sorted(
    {str(value) for value in sop_class._STORAGE_CLASSES.values()} | set(RETIRED_STORAGE_CLASSES.values()),
    key=_numeric,
)

# Transfer syntaxes accepted for every storage class, stored exactly as received.
NATIVE_TRANSFER_SYNTAXES = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
]
IMAGE_TRANSFER_SYNTAXES = [
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEG2000MCLossless,
    uid.JPEG2000MC,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
]
VIDEO_TRANSFER_SYNTAXES = [
    uid.MPEG2MPML,
    uid.MPEG2MPMLF,
    uid.MPEG2MPHL,
    uid.MPEG2MPHLF,
    uid.MPEG4HP41,
    uid.MPEG4HP41F,
    uid.MPEG4HP41BD,
    uid.MPEG4HP41BDF,
    uid.MPEG4HP422D,
    uid.MPEG4HP422DF,
    uid.MPEG4HP423D,
    uid.MPEG4HP423DF,
    uid.MPEG4HP42STEREO,
    uid.MPEG4HP42STEREOF,
    uid.HEVCMP51,
    uid.HEVCM10P51,
]
TRANSFER_SYNTAXES: list[str] = [*NATIVE_TRANSFER_SYNTAXES, *IMAGE_TRANSFER_SYNTAXES, *VIDEO_TRANSFER_SYNTAXES]
