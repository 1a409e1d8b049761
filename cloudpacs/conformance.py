"""What the archive accepts, over DICOM (the receiver's presentation contexts) and over
the web (STOW-RS) alike: every Storage SOP Class of PS3.4 Annex B and four retired ones,
each in the transfer syntaxes that equipment sends, stored as received. One list, so that
a file one door refuses is not taken by the other; and one set of failure statuses, the
C-STORE response's (PS3.4 B.2.3) and the same code as STOW-RS's FailureReason (PS3.18
10.5.3), each raised with its reason by cloudpacs.services."""

from __future__ import annotations

from pydicom import uid
from pynetdicom import sop_class

# Retired storage classes that older consoles still send: ultrasound and nuclear medicine
# machines of the 1990s (PS3.6 lists them as retired; PS3.4 Annex B no longer does, so
# pynetdicom does not know them as storage classes).
RETIRED_STORAGE_CLASSES = {
    "UltrasoundMultiFrameImageStorageRetired": "1.2.840.10008.5.1.4.1.1.3",
    "NuclearMedicineImageStorageRetired": "1.2.840.10008.5.1.4.1.1.5",
    "UltrasoundImageStorageRetired": "1.2.840.10008.5.1.4.1.1.6",
    "XRayAngiographicBiPlaneImageStorage": "1.2.840.10008.5.1.4.1.1.12.3",
}


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

# What STOW-RS asks of each instance (the receiver asks it at negotiation).
ACCEPTED_SOP_CLASSES = frozenset(STORAGE_SOP_CLASSES)
ACCEPTED_TRANSFER_SYNTAXES = frozenset(str(syntax) for syntax in TRANSFER_SYNTAXES)

# Failure statuses of a dataset the archive did not store (PS3.4 Table B.2-1), whichever
# door it came in by. The identity rules' 0xC010-0xC015 are cloudpacs.services'.
OUT_OF_RESOURCES = 0xA700
# The index database failed: out of resources too, for the sender to retry.
INDEX_UNAVAILABLE = 0xA701
# The dataset's SOP Class UID is not the one it was announced as: the presentation
# context's over DICOM, the File Meta Information's over the web.
DOES_NOT_MATCH_SOP_CLASS = 0xA900
# The payload cannot be parsed, or is not encoded as its transfer syntax says.
CANNOT_UNDERSTAND = 0xC000
# A Study, Series or SOP Instance UID missing or not a UID, or a SOP Instance UID that is
# not the one it was announced as (the C-STORE request's Affected SOP Instance UID, the
# File Meta Information's Media Storage SOP Instance UID).
BAD_IDENTIFIER = 0xC001
PROCESSING_FAILURE = 0x0110
