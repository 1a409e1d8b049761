// What the viewer's code gets for `dcmjs` (1.0 MB of source: DICOM writing, SR, SEG and
// parametric-map adapters, normalizers, an anonymizer, a Part 10 reader) in place of the
// package itself, which nothing the viewer runs needs. Cornerstone3D imports it in two
// places (vite.config.js sends only those here):
//
// - @cornerstonejs/utils takes its `log` (loglevel's root logger, which dcmjs re-exports):
//   here loglevel itself, the same version.
// - @cornerstonejs/metadata looks attribute keywords up in dcmjs's dictionary (`nameMap` by
//   keyword, `dictionary` by tag): as its Tags module is evaluated, the 122 attributes its
//   metadata modules name, and as its display set rules are compiled, the attributes they
//   name. Here the dictionary holds the entries of every keyword Cornerstone3D's code names
//   (about 200), taken from dcmjs's own dictionary when the viewer is built
//   (virtual:yunying-dcmjs-tags, vite.config.js), so that what it finds is the same; a
//   keyword outside them is not found, as a word not in the dictionary. Its transfer syntax
//   names take four `constants`, the UIDs of PS3.5 A.1-A.4 below.
//
// The rest of what @cornerstonejs/metadata takes from dcmjs (a Part 10 reader, a listener that
// naturalizes a dataset) serves only the `wadouri` loader and `addDicomPart10Instance` /
// `addDicomWebInstance`, which the viewer never calls: it reads DICOM JSON through the
// `wadors` loader (cornerstone.js). Should anything call them, they say so instead of failing
// somewhere later. Key objects and presentation states are written on the server
// (cloudpacs/keyobjects.py), not with dcmjs.
import log from 'loglevel';
import { rows } from 'virtual:yunying-dcmjs-tags';

export { log };

// As dcmjs answers: an entry by keyword, and by tag both as 00280030 and as (0028,0030).
const nameMap = {};
const dictionary = {};
for (const [hex, vr, vm, name] of rows) {
  const tag = `(${hex.slice(0, 4)},${hex.slice(4)})`;
  const entry = { tag, vr, vm, name, version: 'DICOM' };
  nameMap[name] = entry;
  dictionary[hex] = entry;
  dictionary[tag] = entry;
}

export const constants = Object.freeze({
  IMPLICIT_LITTLE_ENDIAN: '1.2.840.10008.1.2',
  EXPLICIT_LITTLE_ENDIAN: '1.2.840.10008.1.2.1',
  DEFLATED_EXPLICIT_LITTLE_ENDIAN: '1.2.840.10008.1.2.1.99',
  EXPLICIT_BIG_ENDIAN: '1.2.840.10008.1.2.2',
});

function notInTheViewer(name) {
  return class {
    constructor() {
      throw new Error(`dcmjs's ${name} is not in the viewer's build (frontend/src/stubs/dcmjs.js)`);
    }
  };
}

const dcmjs = {
  log,
  constants,
  data: { DicomMetaDictionary: { dictionary, nameMap } },
  async: { AsyncDicomReader: notInTheViewer('AsyncDicomReader') },
  utilities: { DicomMetadataListener: notInTheViewer('DicomMetadataListener') },
};

export default dcmjs;
