// The VOI LUT of a DX or CR image (PS3.3 C.11.2), read from DICOM JSON and applied the
// way PS3.3 C.11.2.1.1 says: values below the first mapped value take the first entry,
// values past the last take the last. Cornerstone3D's GPU path ignores the VOI LUT
// Sequence, so the viewer maps the pixels through it here and then shows the result with
// a linear window spanning the LUT's whole output range. Pure functions, no DOM: the
// tests run them in Node against pydicom's apply_voi_lut.

import { Tag } from './tags.js';

const VOI_LUT_SEQUENCE = Tag.VOILUTSequence;
const LUT_DESCRIPTOR = Tag.LUTDescriptor;
const LUT_DATA = Tag.LUTData;
const LUT_EXPLANATION = Tag.LUTExplanation;
const PIXEL_REPRESENTATION = Tag.PixelRepresentation;

function decodeBase64(text) {
  if (typeof atob === 'function') {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function wordsFromBytes(bytes, entries) {
  // LUT Data is OW (little endian 16-bit words), or bytes when the entries are 8-bit.
  if (bytes.byteLength === entries) return Uint16Array.from(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(Math.floor(bytes.byteLength / 2));
  for (let i = 0; i < out.length; i++) out[i] = view.getUint16(2 * i, true);
  return out;
}

/** The first item of the VOI LUT Sequence in one instance's DICOM JSON, or null.
 *  `fetchBulk(uri)` resolves to the bytes of a BulkDataURI when the server sends one. */
export async function readVoiLut(instance, fetchBulk) {
  const sequence = instance?.[VOI_LUT_SEQUENCE]?.Value;
  if (!sequence || sequence.length === 0) return null;
  const item = sequence[0];
  const descriptor = item[LUT_DESCRIPTOR]?.Value;
  const data = item[LUT_DATA];
  if (!descriptor || descriptor.length < 3 || !data) return null;
  const entries = descriptor[0] === 0 ? 65536 : descriptor[0];
  let firstMapped = descriptor[1];
  const signedPixels = instance?.[PIXEL_REPRESENTATION]?.Value?.[0] === 1;
  // Read as US, the first mapped value of signed pixel data is a two's complement.
  if (signedPixels && firstMapped >= 32768) firstMapped -= 65536;
  let table;
  if (Array.isArray(data.Value) && data.Value.length > 0) {
    table = Uint16Array.from(data.Value);
  } else if (data.InlineBinary) {
    table = wordsFromBytes(decodeBase64(data.InlineBinary), entries);
  } else if (data.BulkDataURI && fetchBulk) {
    table = wordsFromBytes(new Uint8Array(await fetchBulk(data.BulkDataURI)), entries);
  } else {
    return null;
  }
  if (table.length > entries) table = table.subarray(0, entries);
  let bits = descriptor[2];
  let largest = 0;
  for (let i = 0; i < table.length; i++) if (table[i] > largest) largest = table[i];
  // A descriptor that understates its entries' depth would clip; trust the data then.
  if (largest > 2 ** bits - 1) bits = Math.ceil(Math.log2(largest + 1));
  return {
    firstMapped,
    table,
    bits,
    maxOutput: 2 ** bits - 1,
    explanation: item[LUT_EXPLANATION]?.Value?.[0] || '',
  };
}

/** Map modality values (stored values after rescale) through the LUT. */
export function applyVoiLut(values, lut) {
  const out = new Uint16Array(values.length);
  const { firstMapped, table } = lut;
  const last = table.length - 1;
  for (let i = 0; i < values.length; i++) {
    let index = Math.floor(values[i]) - firstMapped;
    if (index < 0) index = 0;
    else if (index > last) index = last;
    out[i] = table[index];
  }
  return out;
}
