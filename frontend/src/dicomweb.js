// The DICOMweb side of the viewer: QIDO-RS and WADO-RS requests with the page's session
// cookie, multipart bulk data, and what the viewer reads from an instance's DICOM JSON
// (palette colour LUTs, video transfer syntaxes, a clip's frame rate). No Cornerstone, no DOM.
import dicomParser from 'dicom-parser';

import { Tag, value } from './tags.js';

const DICOM_JSON = 'application/dicom+json';

export function absolute(path) {
  return new URL(path, window.location.href).href;
}

// A request the page started before the viewer's code arrived (static/js/viewer-preview.js:
// the first series' metadata, the first image's frame), taken once.
function takeEarly(url) {
  const early = window.yunyingEarly?.[url];
  if (early) delete window.yunyingEarly[url];
  return early;
}

export async function fetchJson(url) {
  const early = takeEarly(url);
  if (early) {
    try {
      return await early;
    } catch {
      // Asked again below, as if never started.
    }
  }
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: DICOM_JSON } });
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  return response.status === 204 ? [] : response.json();
}

// A study's series (QIDO-RS), as the viewer lists them.
export async function fetchSeriesList(root, studyUid) {
  return (await fetchJson(`${root}/studies/${studyUid}/series`)).map(seriesSummary);
}

export function seriesSummary(json) {
  return {
    uid: value(json, Tag.SeriesInstanceUID),
    modality: value(json, Tag.Modality) || '',
    number: value(json, Tag.SeriesNumber) ?? '',
    description: value(json, Tag.SeriesDescription) || '',
    count: value(json, Tag.NumberOfSeriesRelatedInstances) ?? '',
  };
}

// Instances in reading order: Instance Number, then SOP Instance UID.
export function sortInstances(instances) {
  return instances.sort(
    (a, b) =>
      (value(a, Tag.InstanceNumber) ?? 0) - (value(b, Tag.InstanceNumber) ?? 0) ||
      String(value(a, Tag.SOPInstanceUID)).localeCompare(String(value(b, Tag.SOPInstanceUID))),
  );
}

// A BulkDataURI's bytes: WADO-RS answers multipart/related with the value as its one part.
export async function fetchBulkData(uri) {
  const response = await fetch(absolute(uri), {
    credentials: 'same-origin',
    headers: { Accept: 'multipart/related; type="application/octet-stream", application/octet-stream' },
  });
  if (!response.ok) throw new Error(`${response.status} ${uri}`);
  const body = new Uint8Array(await response.arrayBuffer());
  const type = response.headers.get('Content-Type') || '';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (!type.toLowerCase().startsWith('multipart/') || !boundary) return body.buffer;
  return firstPart(body, boundary);
}

// When a server cannot resolve the LUT Data's BulkDataURI (it sits inside a sequence),
// the LUT is read from the instance itself, retrieved as application/dicom.
export async function lutDataFromInstance(url) {
  const response = await fetch(url, {
    credentials: 'same-origin',
    headers: { Accept: 'multipart/related; type="application/dicom"' },
  });
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  const type = response.headers.get('Content-Type') || '';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  let body = new Uint8Array(await response.arrayBuffer());
  if (boundary) body = new Uint8Array(firstPart(body, boundary));
  const dataSet = dicomParser.parseDicom(body, { untilTag: 'x7fe00010' });
  const item = dataSet.elements[`x${Tag.VOILUTSequence.toLowerCase()}`]?.items?.[0]?.dataSet;
  const data = item?.elements[`x${Tag.LUTData.toLowerCase()}`];
  if (!data) throw new Error(`no VOI LUT Data in ${url}`);
  return item.byteArray.slice(data.dataOffset, data.dataOffset + data.length).buffer;
}

function indexOfBytes(haystack, needle, from) {
  // Candidates by the first byte (TypedArray.indexOf, native), then the rest compared.
  for (let i = haystack.indexOf(needle[0], from); i >= 0 && i <= haystack.length - needle.length; ) {
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
    i = haystack.indexOf(needle[0], i + 1);
  }
  return -1;
}

// The parts of a multipart/related body: [{headers (lower-case names), data}], each part's
// data a view into the body, not a copy: a grey frame stored as it is is decoded from it on
// the page's thread, and a frame given to a decode worker is copied out of the body then
// (cornerstone.js), since the worker would be sent the whole body with a view of it. A part
// with a Content-Length is stepped over without searching its bytes.
export function multipartParts(body, boundary) {
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`--${boundary}`);
  const closing = encoder.encode(`\r\n--${boundary}`);
  const blank = encoder.encode('\r\n\r\n');
  const decoder = new TextDecoder();
  const parts = [];
  let at = indexOfBytes(body, delimiter, 0);
  if (at < 0) throw new Error('malformed multipart: no boundary');
  for (;;) {
    at += delimiter.length;
    if (body[at] === 45 && body[at + 1] === 45) return parts; // "--": the last boundary
    const headersEnd = indexOfBytes(body, blank, at);
    if (headersEnd < 0) throw new Error('malformed multipart: a part without headers');
    const headers = {};
    for (const line of decoder.decode(body.subarray(at, headersEnd)).split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const start = headersEnd + blank.length;
    const length = Number(headers['content-length']);
    let end = Number.isInteger(length) && length >= 0 ? start + length : indexOfBytes(body, closing, start);
    if (end < 0 || end > body.length) throw new Error('malformed multipart: a part without its end');
    parts.push({ headers, data: body.subarray(start, end) });
    at = end + 2; // past the CRLF before the next boundary
    if (indexOfBytes(body, delimiter, at) !== at) {
      end = indexOfBytes(body, closing, start);
      if (end < 0) throw new Error('malformed multipart: no closing boundary');
      at = end + 2;
    }
  }
}

// A part's transfer syntax, from its Content-Type's transfer-syntax parameter (the server
// always names it); Implicit VR Little Endian without one, as the image loader assumes.
export function transferSyntaxOf(contentType) {
  return /transfer-syntax="?([0-9.]+)"?/i.exec(contentType || '')?.[1] || '1.2.840.10008.1.2';
}

// The first image's frame as the page's script fetched it: a promise of {pixelData,
// transferSyntax} for the image loader (cornerstone.js), or undefined.
export function earlyFrame(url) {
  return takeEarly(url)?.then(({ contentType, body }) => {
    const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
    if (!boundary) return { pixelData: new Uint8Array(body), transferSyntax: transferSyntaxOf(contentType) };
    const [part] = multipartParts(new Uint8Array(body), boundary);
    if (!part) throw new Error(`no frame in ${url}`);
    return { pixelData: part.data, transferSyntax: transferSyntaxOf(part.headers['content-type']) };
  });
}

const FRAMES_ACCEPT = 'multipart/related; type=application/octet-stream; transfer-syntax=*';

// The frames of several instances of a series in one request (the server's
// `.../series/{uid}/frames?instances=...`, docs/dicomweb.md): a Map from "<SOP Instance
// UID>/<frame number>" to {pixelData, transferSyntax}, as stored.
export async function fetchFrames(seriesUrl, sopUids) {
  const response = await fetch(`${seriesUrl}/frames?instances=${sopUids.join(',')}`, {
    credentials: 'same-origin',
    headers: { Accept: FRAMES_ACCEPT },
  });
  if (!response.ok) throw new Error(`${response.status} ${seriesUrl}/frames`);
  const boundary = /boundary="?([^";]+)"?/i.exec(response.headers.get('Content-Type') || '')?.[1];
  if (!boundary) throw new Error('the frames did not come as multipart');
  const frames = new Map();
  for (const part of multipartParts(new Uint8Array(await response.arrayBuffer()), boundary)) {
    const found = /instances\/([0-9.]+)\/frames\/(\d+)$/.exec(part.headers['content-location'] || '');
    if (!found) continue;
    frames.set(`${found[1]}/${found[2]}`, {
      pixelData: part.data,
      transferSyntax: transferSyntaxOf(part.headers['content-type']),
    });
  }
  return frames;
}

function firstPart(body, boundary) {
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`--${boundary}`);
  const start = indexOfBytes(body, delimiter, 0);
  const headersEnd = indexOfBytes(body, encoder.encode('\r\n\r\n'), start);
  const end = indexOfBytes(body, encoder.encode(`\r\n--${boundary}`), headersEnd + 4);
  if (start < 0 || headersEnd < 0 || end < 0) throw new Error('malformed multipart bulk data');
  return body.slice(headersEnd + 4, end).buffer;
}

// The image loader reads a palette's Red, Green and Blue LUT Data as numbers in the
// metadata's "Value"; DICOM JSON carries them as base64 (InlineBinary) or behind a
// BulkDataURI. They are decoded here, once, into the instance's JSON: one number an entry,
// which is a byte when the descriptor's third value is 8 (PS3.3 C.7.6.3.1.5: the data is
// stored as with 8 bits allocated, two entries to each word of the OW element) and a
// little-endian word when it is 16. Data of 8-bit entries that fills a word each (as some
// writers store it) is read a word an entry.
export async function readPalette(json, fetchBulk) {
  const channels = [
    [Tag.RedPaletteColorLUTDescriptor, Tag.RedPaletteColorLUTData],
    [Tag.GreenPaletteColorLUTDescriptor, Tag.GreenPaletteColorLUTData],
    [Tag.BluePaletteColorLUTDescriptor, Tag.BluePaletteColorLUTData],
  ];
  await Promise.all(
    channels.map(async ([descriptorTag, tag]) => {
      const element = json[tag];
      if (!element || element.Value) return;
      let bytes;
      if (element.InlineBinary) {
        bytes = Uint8Array.from(atob(element.InlineBinary), (character) => character.charCodeAt(0));
      } else if (element.BulkDataURI) {
        bytes = new Uint8Array(await fetchBulk(element.BulkDataURI));
      } else {
        return;
      }
      json[tag] = { vr: 'US', Value: paletteEntries(bytes, json[descriptorTag]?.Value) };
    }),
  );
}

function paletteEntries(bytes, descriptor) {
  const entries = Number(descriptor?.[0]) || 65536;
  if (Number(descriptor?.[2]) === 8 && bytes.byteLength < 2 * entries) {
    return Array.from(bytes.subarray(0, entries));
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const words = [];
  for (let i = 0; i + 1 < bytes.byteLength && words.length < entries; i += 2) words.push(view.getUint16(i, true));
  return words;
}

// MPEG-2, MPEG-4 AVC/H.264 and HEVC transfer syntaxes (1.2.840.10008.1.2.4.100 to .108,
// with the fragmentable .1 variants): the metadata names the stored one in Available
// Transfer Syntax UID.
export function isVideo(json) {
  const syntax = String(value(json, Tag.AvailableTransferSyntaxUID) || '');
  const match = /^1\.2\.840\.10008\.1\.2\.4\.(\d+)(\.1)?$/.exec(syntax);
  return Boolean(match) && Number(match[1]) >= 100 && Number(match[1]) <= 108;
}

// A clip's own playback rate, frames per second: Recommended Display Frame Rate, else Cine
// Rate, else 1000 / Frame Time (ms); null when it has none of them.
export function frameRate(json) {
  const recommended = Number(value(json, Tag.RecommendedDisplayFrameRate));
  if (recommended > 0) return recommended;
  const cine = Number(value(json, Tag.CineRate));
  if (cine > 0) return cine;
  const frameTime = Number(value(json, Tag.FrameTime));
  if (frameTime > 0) return 1000 / frameTime;
  return null;
}
