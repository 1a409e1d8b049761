// Key images and measurements kept with the report: the reader marks images (关键图像, K)
// and draws lengths, angles and ellipses; 保存标注 posts them to the server, which keeps
// them in the study as a Key Object Selection and a Grayscale Softcopy Presentation State
// (cloudpacs/keyobjects.py). When the study opens again they come back from there: the key
// images in a strip above the series and marked on the image, the measurements redrawn.
// The drawings need Cornerstone's tools (viewer.tools, loaded after the first image): until
// they are in, kept measurements wait in `pending` and are drawn when they arrive.
import { utilities } from '@cornerstonejs/core';

import { MEASURING } from './toolnames.js';

// The tools whose drawings are kept, by their Cornerstone names (cloudpacs.keyobjects.TOOLS).
const KEPT_TOOLS = new Set(MEASURING);
const FRAME_URL = /\/studies\/([0-9.]+)\/series\/([0-9.]+)\/instances\/([0-9.]+)\/frames\/(\d+)$/;

// The study, series, instance and frame of a pane's image id (wadors:<frame URL>).
export function parseImageId(imageId) {
  const match = FRAME_URL.exec(String(imageId || '').replace(/^wadors:/, ''));
  return match ? { study: match[1], series: match[2], sop: match[3], frame: Number(match[4]) } : null;
}

const keyOf = (sop, frame) => `${sop}:${frame}`;

function emptyTextBox() {
  const zero = [0, 0, 0];
  return {
    hasMoved: false,
    worldPosition: zero,
    worldBoundingBox: { topLeft: zero, topRight: zero, bottomLeft: zero, bottomRight: zero },
  };
}

// What a drawing says, as the reader saw it: "23.4 mm", "87.5°", an ellipse's area and mean.
function describe(item) {
  const stats = Object.values(item.data?.cachedStats || {})[0] || {};
  const round = (value) => Math.round(value * 10) / 10;
  if (Number.isFinite(stats.length)) return `${round(stats.length)} ${stats.unit || 'mm'}`;
  if (Number.isFinite(stats.angle)) return `${round(stats.angle)}°`;
  if (Number.isFinite(stats.area)) {
    const mean = Number.isFinite(stats.mean) ? ` ${round(stats.mean)} ${stats.modalityUnit || ''}`.trimEnd() : '';
    return `${round(stats.area)} ${stats.areaUnit || 'mm²'}${mean}`;
  }
  return '';
}

export class Marks {
  constructor(viewer) {
    this.viewer = viewer;
    const data = viewer.element.dataset;
    this.url = data.marksUrl || '';
    this.saveUrl = data.saveMarksUrl || '';
    this.csrf = data.csrf || '';
    // `${sop}:${frame}` -> {series_uid, sop_instance_uid, frame}, in the order marked.
    this.keys = new Map();
    // Measurements read from the server whose series no pane has opened yet.
    this.pending = [];
    this.dirty = false;
  }

  get canSave() {
    return Boolean(this.saveUrl);
  }

  async load() {
    if (!this.url) return;
    const response = await fetch(this.url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) return;
    this.apply(await response.json());
  }

  apply(marks) {
    this.keys = new Map(marks.key_images.map((k) => [keyOf(k.sop_instance_uid, k.frame), k]));
    this.pending = marks.measurements.slice();
    for (const pane of this.viewer.panes) this.draw(pane);
    this.changed();
  }

  isKey(imageId) {
    const ref = parseImageId(imageId);
    return Boolean(ref && this.keys.has(keyOf(ref.sop, ref.frame)));
  }

  // The active pane's image becomes a key image, or stops being one.
  toggle(pane) {
    const imageId = pane.viewport?.getCurrentImageId();
    const ref = parseImageId(imageId);
    if (!ref || ref.study !== this.viewer.currentUid) return;
    const key = keyOf(ref.sop, ref.frame);
    if (this.keys.has(key)) this.keys.delete(key);
    else this.keys.set(key, { series_uid: ref.series, sop_instance_uid: ref.sop, frame: ref.frame });
    this.dirty = true;
    this.changed();
  }

  changed() {
    this.viewer.onMarksChanged();
  }

  // Redraws the kept measurements of the series a pane has just opened (or, for the panes
  // opened before the tools arrived, when they arrive).
  draw(pane) {
    const annotation = this.viewer.tools?.annotation;
    if (!annotation || !pane.enabled || !pane.imageIds.length || pane.studyUid !== this.viewer.currentUid) return;
    const byImage = new Map(pane.imageIds.map((imageId) => [imageId, parseImageId(imageId)]));
    const left = [];
    for (const item of this.pending) {
      const imageId = [...byImage].find(
        ([, ref]) => ref && ref.sop === item.sop_instance_uid && ref.frame === item.frame,
      )?.[0];
      if (!imageId || !KEPT_TOOLS.has(item.tool)) {
        left.push(item);
        continue;
      }
      const points = item.points.map((point) => utilities.imageToWorldCoords(imageId, point));
      annotation.state.addAnnotation(
        {
          highlighted: false,
          invalidated: true,
          isLocked: false,
          isVisible: true,
          metadata: {
            toolName: item.tool,
            referencedImageId: imageId,
            FrameOfReferenceUID: pane.viewport.getFrameOfReferenceUID(),
          },
          data: { handles: { points, activeHandleIndex: null, textBox: emptyTextBox() }, cachedStats: {}, label: '' },
        },
        pane.element,
      );
    }
    this.pending = left;
    pane.viewport.render();
  }

  // The drawings of the current study's images, in image pixel coordinates, with those
  // read from the server whose series were never opened.
  measurements() {
    const drawn = [];
    const annotation = this.viewer.tools?.annotation;
    for (const item of annotation ? annotation.state.getAllAnnotations() : []) {
      const imageId = item.metadata?.referencedImageId;
      const ref = parseImageId(imageId);
      if (!ref || ref.study !== this.viewer.currentUid || !KEPT_TOOLS.has(item.metadata.toolName)) continue;
      const points = item.data.handles.points.map((point) =>
        utilities.worldToImageCoords(imageId, point).map((v) => Math.round(v * 100) / 100),
      );
      drawn.push({
        tool: item.metadata.toolName,
        sop_instance_uid: ref.sop,
        frame: ref.frame,
        points,
        text: describe(item),
      });
    }
    return [...drawn, ...this.pending];
  }

  async save() {
    if (!this.canSave) return null;
    const body = new URLSearchParams({
      key_images: JSON.stringify(
        [...this.keys.values()].map((k) => ({ sop_instance_uid: k.sop_instance_uid, frame: k.frame })),
      ),
      measurements: JSON.stringify(
        this.measurements().map(({ tool, sop_instance_uid, frame, points, text }) => ({
          tool,
          sop_instance_uid,
          frame,
          points,
          text,
        })),
      ),
    });
    const response = await fetch(this.saveUrl, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': this.csrf, Accept: 'application/json' },
      body,
    });
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(answer.error || response.statusText);
    this.dirty = false;
    this.saved = answer;
    return answer;
  }
}
