// What the four corners of a pane say, from the shown instance's DICOM JSON and the
// viewport's state. Pure: returns lines of text per corner.
import { Tag, value as first } from './tags.js';

// The page passes the name formatted by the server (cloudpacs.personname) as
// labels.patientName; this is the fallback for a file of another patient: the
// ideographic group without separators, else the alphabetic one with spaces.
const CJK = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/;

function joinGroup(group) {
  const parts = (group || '').split('^').slice(0, 3).map((part) => part.trim()).filter(Boolean);
  return parts.every((part) => CJK.test(part)) ? parts.join('') : parts.join(' ');
}

export function personName(json, tag = Tag.PatientName) {
  const name = first(json, tag);
  if (!name) return '';
  const groups = typeof name === 'string' ? name.split('=') : [name.Alphabetic, name.Ideographic, name.Phonetic];
  return joinGroup(groups[1]) || joinGroup(groups[0]) || joinGroup(groups[2]);
}

export function sexLabel(code, labels = {}) {
  if (!code) return '';
  return labels[`sex${code.charAt(0).toUpperCase()}${code.slice(1).toLowerCase()}`] || code;
}

export function formatDate(text) {
  if (!text || text.length < 8) return text || '';
  return `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6, 8)}`;
}

export function formatTime(text) {
  if (!text || text.length < 4) return '';
  return `${text.slice(0, 2)}:${text.slice(2, 4)}`;
}

// PatientAge as written ("045Y": 45 years), else years between birth and study dates; the
// unit as the page's language writes it (labels.ageY, ageM, ageW, ageD: 岁, 个月, 周, 天),
// else the DICOM letter.
export function age(json, labels = {}) {
  const written = first(json, Tag.PatientAge);
  if (written) {
    const parts = /^0*(\d+)\s*([DWMY])$/i.exec(written.trim());
    if (!parts) return written;
    const unit = parts[2].toUpperCase();
    return `${parts[1]}${labels[`age${unit}`] || unit}`;
  }
  const birth = first(json, Tag.PatientBirthDate);
  const study = first(json, Tag.StudyDate) || first(json, Tag.AcquisitionDate);
  if (!birth || !study || birth.length < 8 || study.length < 8) return '';
  let years = Number(study.slice(0, 4)) - Number(birth.slice(0, 4));
  if (study.slice(4, 8) < birth.slice(4, 8)) years -= 1;
  return years >= 0 ? `${years}${labels.ageY || 'Y'}` : '';
}

function round(number) {
  return Math.round(number);
}

export function describeOverlay(state) {
  const { json, labels = {}, descriptions = {} } = state;
  // A console's description (or institution) as the page shows it (the server's words), else as written.
  const described = (text) => descriptions[text] || text;
  const sexAge = [sexLabel(first(json, Tag.PatientSex), labels), age(json, labels)].filter(Boolean).join(' / ');
  const tl = [labels.patientName || personName(json), first(json, Tag.PatientID) || '', sexAge].filter(Boolean);
  const institution = described(first(json, Tag.InstitutionName) || '');
  const studyWhen = [formatDate(first(json, Tag.StudyDate)), formatTime(first(json, Tag.StudyTime))]
    .filter(Boolean)
    .join(' ');
  const tr = [
    institution,
    studyWhen,
    described(first(json, Tag.StudyDescription) || ''),
    [first(json, Tag.Modality) || '', described(first(json, Tag.SeriesDescription) || '')].filter(Boolean).join(' '),
  ].filter(Boolean);
  const [seriesNumber, seriesTotal] = state.seriesPosition || [0, 0];
  const [imageNumber, imageTotal] = state.imagePosition || [0, 0];
  // The label's colon as the language writes it: full-width after Chinese (序列：1/4).
  const colon = labels.colon || ': ';
  const bl = [
    `${labels.series || 'Se'}${colon}${seriesNumber}/${seriesTotal}`,
    `${labels.image || 'Im'}${colon}${imageNumber}/${imageTotal}`,
  ];
  const thickness = first(json, Tag.SliceThickness);
  if (thickness) bl.push(`${labels.thickness || 'Thk'}${colon}${Number(thickness).toFixed(1)} mm`);
  const br = [];
  if (state.voiLut) br.push(`${state.voiLut}`);
  else if (state.window) br.push(`W: ${round(state.window.windowWidth)} L: ${round(state.window.windowCenter)}`);
  if (state.invert) br.push(labels.inverted || 'INV');
  br.push(`${labels.zoom || 'Zoom'}${colon}${Math.round((state.zoom || 1) * 100)}%`);
  const transform = [];
  if (state.rotation) transform.push(`${state.rotation}°`);
  if (state.flipHorizontal) transform.push(labels.fliph || 'H');
  if (state.flipVertical) transform.push(labels.flipv || 'V');
  if (transform.length) br.push(transform.join(' '));
  return { tl, tr, bl, br };
}
