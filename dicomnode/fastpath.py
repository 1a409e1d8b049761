"""What pynetdicom does for every C-STORE, done with less: the request's command set
read, and the response's written, without pydicom datasets.

pynetdicom reads a C-STORE-RQ's command set with pydicom (a Dataset, each element
converted), builds the File Meta of the file it receives the dataset into with pydicom
too, then copies every element into the request primitive. Here the seven elements of a
plain request are read with `struct` and go straight into the primitive, the File Meta
is written with `struct`, byte for byte pynetdicom's; the dataset's fragments are
received into the file by pynetdicom as before. A request with anything else in its
command (a C-MOVE's originator, a command cut into fragments, a command and its data in
one PDU) is pynetdicom's to read.

pynetdicom answers a C-STORE by building a DIMSE message object (a pydicom Dataset of
every command element the message type may have), filling it from the response
primitive, encoding it with pydicom twice (once for the group length, once to send) and
cutting it into P-DATA fragments. The answer to a C-STORE is seven elements of fixed
shape; here they are written with `struct` and handed to the DUL as the one P-DATA
fragment pynetdicom would have made. Byte for byte the same (tests/test_dicomnode_fastpath.py
compares the two on the installed pynetdicom).

Only the plain answers take this way: a response with an Error Comment or an Offending
Element (the receiver's failures), a peer whose maximum PDU would need the command cut
into fragments, or a handler bound to EVT_DIMSE_SENT go pynetdicom's way.

The provider below relies on how pynetdicom 3.0's DIMSE provider receives and sends
(`PIN`: the version and the digests of the functions it stands in for); on any other version
`install` changes nothing. tests/test_dicomnode_fastpath.py compares both directions with
pynetdicom's own, byte for byte and field by field.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

import pynetdicom
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

from cloudpacs import pinning

# What this module stands in for on pynetdicom 3.0.4 (cloudpacs.pinning).
PIN = pinning.Pin(
    "3.0.4",
    (DIMSEServiceProvider.send_msg, "a839cf2fb46976d9da29cf06fea41c04416b38d14fab612af12e5d869bd5b3f0"),
    (DIMSEServiceProvider.receive_primitive, "5f99c86b14a15cefa87d914cda3591ec4d636d4c53a982e945ec9c1828c6e43f"),
    (DIMSEMessage.decode_msg, "f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284"),
    (DIMSEMessage.message_to_primitive, "f8f43d34e43450efa31bd308677b85b370f8ca7600c0e067e854f8095ce665ac"),
    otherwise="C-STORE requests are read, and answers encoded, by pynetdicom",
)

# (0000,0100) Command Field of a C-STORE-RSP; (0000,0800) Command Data Set Type: none.
C_STORE_RSP_COMMAND = 0x8001
NO_DATA_SET = 0x0101
# The message control header of a PDV holding a whole command: command, last fragment.
LAST_COMMAND_FRAGMENT = b"\x03"
# What pynetdicom keeps back from the peer's maximum PDU length for each fragment: a
# command longer than the rest is cut in two.
PDV_ITEM_OVERHEAD = 6


def _uid(tag_element: int, value: Any) -> bytes:
    data = str(value).encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return struct.pack("<HHI", 0x0000, tag_element, len(data)) + data


def _us(tag_element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag_element, 2, value)


def c_store_rsp_command(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP in Implicit VR Little Endian, or None when the
    response is not a plain one (pynetdicom then encodes it)."""
    if (
        primitive.MessageIDBeingRespondedTo is None
        or primitive.Status is None
        or primitive.AffectedSOPClassUID is None
        or primitive.AffectedSOPInstanceUID is None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
    ):
        return None
    body = b"".join(
        (
            _uid(0x0002, primitive.AffectedSOPClassUID),
            _us(0x0100, C_STORE_RSP_COMMAND),
            _us(0x0120, int(primitive.MessageIDBeingRespondedTo)),
            _us(0x0800, NO_DATA_SET),
            _us(0x0900, int(primitive.Status)),
            _uid(0x1000, primitive.AffectedSOPInstanceUID),
        )
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


# The elements of a plain C-STORE-RQ's command set (PS3.7 9.3.1.1), by element number
# (group 0000), with the length each must have (None: a UID, any length).
C_STORE_RQ_COMMAND = 0x0001
_REQUEST_ELEMENTS: dict[int, int | None] = {
    0x0000: 4,  # Command Group Length, UL
    0x0002: None,  # Affected SOP Class UID
    0x0100: 2,  # Command Field, US
    0x0110: 2,  # Message ID, US
    0x0700: 2,  # Priority, US
    0x0800: 2,  # Command Data Set Type, US
    0x1000: None,  # Affected SOP Instance UID
}
_REQUIRED = frozenset(_REQUEST_ELEMENTS)


def read_c_store_rq_command(command: bytes) -> dict[int, Any] | None:
    """The values of a plain C-STORE-RQ command set (Implicit VR Little Endian) with a
    data set, by element number; None for anything else, which pynetdicom then reads.
    UIDs as pydicom reads them: without the trailing NUL or spaces."""
    elements: dict[int, Any] = {}
    offset, end = 0, len(command)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        if group != 0x0000 or element in elements or element not in _REQUEST_ELEMENTS or length > end - offset:
            return None
        value = command[offset : offset + length]
        offset += length
        size = _REQUEST_ELEMENTS[element]
        if size is None:
            text = value.decode("latin-1").rstrip("\0 ")
            if not text or "\\" in text:
                return None
            elements[element] = text
        elif length != size:
            return None
        else:
            elements[element] = struct.unpack("<I" if size == 4 else "<H", value)[0]
    if elements.keys() != _REQUIRED or elements[0x0100] != C_STORE_RQ_COMMAND or elements[0x0800] == NO_DATA_SET:
        return None
    return elements


def _meta_ui(element: int, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return struct.pack("<HH2sH", 0x0002, element, b"UI", len(data)) + data


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """The preamble, prefix and File Meta that pynetdicom writes before a dataset it
    receives to a file (create_file_meta, write_file_meta_info: Explicit VR Little Endian)."""
    version = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    if len(version) % 2:
        version += b" "
    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _meta_ui(0x0002, sop_class_uid),
            _meta_ui(0x0003, sop_instance_uid),
            _meta_ui(0x0010, transfer_syntax_uid),
            _meta_ui(0x0012, str(pynetdicom.PYNETDICOM_IMPLEMENTATION_UID)),
            struct.pack("<HH2sH", 0x0002, 0x0013, b"SH", len(version)) + version,
        )
    )
    return b"\x00" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


class PlainStoreRequest(C_STORE_RQ):
    """A C-STORE-RQ whose command was read by `read_c_store_rq_command`. Its pydicom
    command set is made only if something asks for it."""

    _values: dict[int, Any]
    _command_set: Dataset | None

    @classmethod
    def start(cls, context_id: int, command: bytes, values: dict[int, Any], transfer_syntax: str) -> PlainStoreRequest:
        """The message, its data set to be received into a new file that begins with
        pynetdicom's File Meta (what DIMSEMessage.decode_msg does for a C-STORE-RQ)."""
        message = cls.__new__(cls)
        message.context_id = context_id
        message.encoded_command_set = BytesIO(command)
        message.data_set = BytesIO()
        message._values = values
        message._command_set = None
        stream: Any = NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")  # noqa: SIM115 (pynetdicom closes it)
        message._data_set_file = stream
        message._data_set_path = Path(stream.name)
        stream.write(file_meta(values[0x0002], values[0x1000], transfer_syntax))
        return message

    @property  # type: ignore[override]
    def command_set(self) -> Dataset:
        if self._command_set is None:
            self._command_set = decode(BytesIO(self.encoded_command_set.getvalue()), True, True)
        return self._command_set

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self._command_set = value

    def message_to_primitive(self) -> Any:
        values = self._values
        primitive = C_STORE()
        primitive.MessageID = values[0x0110]
        primitive.AffectedSOPClassUID = UID(values[0x0002])
        primitive.AffectedSOPInstanceUID = UID(values[0x1000])
        primitive.Priority = values[0x0700]
        primitive.DataSet = self.data_set
        primitive._context_id = self.context_id
        primitive._dataset_path = self._data_set_path
        primitive._dataset_file = self._data_set_file
        return primitive


class PlainStoreDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, reading plain C-STORE requests and writing plain
    C-STORE answers without pydicom datasets."""

    # False when pynetdicom's standard logging handler describes each received message:
    # it looks messages up by their exact class.
    reads_plain_requests = True

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is None and self.reads_plain_requests and _config.STORE_RECV_CHUNKED_DATASET:
            items = primitive.presentation_data_value_list
            if len(items) == 1 and items[0][1][:1] == LAST_COMMAND_FRAGMENT:
                context_id, data = items[0]
                command = bytes(data[1:])
                values = read_c_store_rq_command(command)
                context = self.assoc._accepted_cx.get(context_id) if values is not None else None
                if values is not None and context is not None:
                    transfer_syntax = str(context.transfer_syntax[0])
                    self.message = PlainStoreRequest.start(context_id, command, values, transfer_syntax)
                    return
        super().receive_primitive(primitive)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if type(primitive) is C_STORE and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            command = c_store_rsp_command(primitive)
            maximum = self.maximum_pdu_size
            if command is not None and (not maximum or len(command) <= maximum - PDV_ITEM_OVERHEAD):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, LAST_COMMAND_FRAGMENT + command))
                # From this thread when the DUL allows it (dicomnode.reactor.send_now),
                # or through its queue as pynetdicom sends.
                send_now = getattr(self.dul, "send_now", None)
                if send_now is None or not send_now(pdata):
                    self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


def install(assoc: Any) -> bool:
    """Give a just-created acceptor association (not started) the provider above.
    Returns False, changing nothing, on a pynetdicom this was not written for."""
    if not PIN.compatible() or type(assoc.dimse) is not DIMSEServiceProvider:
        return False
    dimse: Any = assoc.dimse
    dimse.__class__ = PlainStoreDIMSE
    dimse.reads_plain_requests = not any(
        handler is standard_dimse_recv_handler for handler, _ in assoc.get_handlers(evt.EVT_DIMSE_RECV)
    )
    return True
