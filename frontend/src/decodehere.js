// A frame stored as it is (Explicit or Implicit VR Little Endian), grey, decoded on the
// page's main thread the way the image loader's decode worker decodes it
// (@cornerstonejs/dicom-image-loader, decodeLittleEndian and postProcessDecodedPixels, for
// these frames only): the stored values (a signed value's sign extended from its Bits
// Stored), their minimum and maximum, and the modality rescale applied into the smallest
// typed array that holds the result. Anything else (compressed, colour, PET or RT dose
// scaling, a target buffer) returns null: the worker decodes it.
import { Tag, value } from './tags.js';

const NATIVE = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']);

// Whether an instance's frames, as its DICOM JSON describes them (its transfer syntax as the
// server has it stored), are ones decodeHere takes: the decode workers are not wanted for
// such a first image (cornerstone.js, startDecodeWorkers).
export function decodableHere(json) {
  const bits = Number(value(json, Tag.BitsAllocated));
  return (
    NATIVE.has(String(value(json, Tag.AvailableTransferSyntaxUID) || '')) &&
    Number(value(json, Tag.SamplesPerPixel) || 1) === 1 &&
    /^MONOCHROME[12]$/.test(String(value(json, Tag.PhotometricInterpretation) || '')) &&
    (bits === 8 || bits === 16) &&
    !['PT', 'RTDOSE'].includes(String(value(json, Tag.Modality) || ''))
  );
}

// The image loader's choice of typed array for values between min and max.
function arrayFor(min, max) {
  if (Number.isInteger(min) && Number.isInteger(max)) {
    if (min >= 0) {
      if (max <= 255) return Uint8Array;
      if (max <= 65535) return Uint16Array;
      if (max <= 4294967295) return Uint32Array;
    } else {
      if (min >= -128 && max <= 127) return Int8Array;
      if (min >= -32768 && max <= 32767) return Int16Array;
    }
  }
  return Float32Array;
}

export function decodeHere({ imageFrame, transferSyntax, pixelData, options }, getMinMax) {
  const started = Date.now();
  const bits = imageFrame.bitsAllocated;
  const scaling = options?.preScale?.enabled ? options.preScale.scalingParameters : null;
  if (
    !NATIVE.has(transferSyntax) ||
    imageFrame.samplesPerPixel !== 1 ||
    !/^MONOCHROME[12]$/.test(imageFrame.photometricInterpretation || '') ||
    (bits !== 8 && bits !== 16) ||
    options.targetBuffer ||
    (options.preScale?.enabled && !scaling) ||
    (scaling && (scaling.modality === 'PT' || scaling.modality === 'RTDOSE'))
  ) {
    return null;
  }
  let stored;
  if (bits === 16) {
    let { buffer, byteOffset } = pixelData;
    if (byteOffset % 2) {
      buffer = buffer.slice(byteOffset, byteOffset + pixelData.byteLength);
      byteOffset = 0;
    }
    const Stored = imageFrame.pixelRepresentation === 1 ? Int16Array : Uint16Array;
    stored = new Stored(buffer, byteOffset, pixelData.length / 2);
  } else {
    stored = pixelData;
  }
  if (stored.length !== imageFrame.rows * imageFrame.columns) return null;
  // A signed value's sign, from its highest stored bit (into a copy: the bytes are the
  // page's early request's).
  if (imageFrame.pixelRepresentation === 1 && imageFrame.bitsStored) {
    const shift = 32 - imageFrame.bitsStored;
    stored = Int32Array.from(stored, (v) => (v << shift) >> shift);
  }
  const { min, max } = getMinMax(stored);
  const slope = scaling?.rescaleSlope;
  const intercept = scaling?.rescaleIntercept;
  const rescale = typeof slope === 'number' && typeof intercept === 'number';
  const floatRescale = rescale && !(Number.isInteger(slope) && Number.isInteger(intercept));
  // As the worker: a fractional rescale is left to the renderer when it cannot draw floats.
  const scale = rescale && !(floatRescale && options.allowFloatRendering === false);
  // The rescaled range as the worker reckons it (from the stored minimum and maximum).
  const smallest = scale ? slope * min + intercept : min;
  const largest = scale ? slope * max + intercept : max;
  const Values = arrayFor(smallest, largest);
  const values = new Values(stored.length);
  if (scale) {
    for (let i = 0; i < stored.length; i++) values[i] = stored[i] * slope + intercept;
    imageFrame.preScale = { ...options.preScale, scaled: true };
  } else {
    values.set(stored);
  }
  imageFrame.pixelData = values;
  imageFrame.pixelDataLength = values.length;
  imageFrame.smallestPixelValue = smallest;
  imageFrame.largestPixelValue = largest;
  imageFrame.decodeTimeInMS = Date.now() - started;
  return imageFrame;
}
