// One pane of the viewer: a Cornerstone3D stack viewport showing one series of one study,
// its four overlay corners and its status line. It fetches the series' metadata, builds the
// stack's image ids (one per frame), prefetches the whole stack into the cache, and reports
// its first frame and its full cache to the viewer.
import { Enums, cache, imageLoader, utilities } from '@cornerstonejs/core';

import {
  addInstanceMetadata,
  disableOnCpu,
  enableOnCpu,
  instanceMeta,
  recordCpuInvert,
  startDecodeWorkers,
  voiLuts,
} from './cornerstone.js';
import { decodableHere } from './decodehere.js';
import {
  absolute,
  earlyFrame,
  fetchBulkData,
  fetchFrames,
  fetchJson,
  frameRate,
  isVideo,
  lutDataFromInstance,
  readPalette,
  sortInstances,
} from './dicomweb.js';
import { describeOverlay } from './overlay.js';
import { Tag, value } from './tags.js';
import { readVoiLut } from './voilut.js';

const { windowLevel } = utilities;

// The stack's prefetch asks for the frames of several single-frame instances at once (one
// request per image cost more, in the server and the browser, than a CT image's bytes):
// about this many bytes of pixel data a request (at most 32 images), this many requests at
// a time (Chromium opens six connections to a host: the rest stay free for the tools,
// the thumbnails and an image scrolled to).
const BATCH_BYTES = 4 * 1024 * 1024;
const BATCH_IMAGES = 32;
const BATCHES_IN_FLIGHT = 3;

// Whether a series' images stay on Cornerstone's CPU path: a series of one image, shown
// through a linear window (the CPU path has no sigmoid VOI LUT function; such an image moves
// to WebGL). Moving one image to WebGL costs the context, its shaders, the texture and, in
// software WebGL, every draw read back (0.5-1.1 s for any size, each window step 85-290 ms
// against the CPU's 16-40: docs/viewer.md), and reading one image (window/level, zoom, pan,
// rotation, flips, inversion, measuring, in grey or colour) needs nothing the CPU path
// lacks. Stacks go to WebGL: they scroll and cine there, and MPR needs it.
function keptOnCpu(frames, json) {
  if (frames !== 1 || !json) return false;
  const lutFunction = String(value(json, Tag.VOILUTFunction) || 'LINEAR').toUpperCase();
  return lutFunction === 'LINEAR';
}

// An image's size as stored, uncompressed: what a batch is counted in.
function frameBytes(json) {
  const samples = Number(value(json, Tag.SamplesPerPixel) || 1);
  const bits = Number(value(json, Tag.BitsAllocated) || 16);
  return Number(value(json, Tag.Rows) || 512) * Number(value(json, Tag.Columns) || 512) * samples * Math.ceil(bits / 8);
}

// Where a slice lies along its own normal (mm): Image Position (Patient) projected on the
// cross product of the Image Orientation (Patient) row and column directions. Scrolling two
// panes together moves them the same distance through the patient.
function slicePosition(json) {
  const position = json[Tag.ImagePositionPatient]?.Value;
  const orientation = json[Tag.ImageOrientationPatient]?.Value;
  if (position?.length !== 3 || orientation?.length !== 6) return null;
  const [r1, r2, r3, c1, c2, c3] = orientation.map(Number);
  const normal = [r2 * c3 - r3 * c2, r3 * c1 - r1 * c3, r1 * c2 - r2 * c1];
  return position.reduce((sum, coordinate, i) => sum + Number(coordinate) * normal[i], 0);
}

export class Pane {
  constructor(viewer, index, section) {
    this.viewer = viewer;
    this.index = index;
    this.section = section;
    this.element = section.querySelector('[data-viewport]');
    this.overlay = {};
    for (const corner of ['tl', 'tr', 'bl', 'br']) {
      this.overlay[corner] = section.querySelector(`[data-overlay="${corner}"]`);
    }
    this.status = section.querySelector('[data-status]');
    // A key image says so in its corner (marks.js).
    this.keyMark = document.createElement('div');
    this.keyMark.className = 'yv-key-mark';
    this.keyMark.hidden = true;
    section.append(this.keyMark);
    this.viewportId = `${viewer.id}-pane-${index}`;
    this.studyUid = '';
    this.seriesUid = '';
    this.seriesList = [];
    this.imageIds = [];
    this.positions = [];
    // Per image: its instance's SOP Instance UID and size when the instance has one frame
    // (fetched with others), else null.
    this.single = [];
    this.loaded = 0;
    this.failed = 0;
    this.firstImageMs = null;
    this.stackMs = null;
    this.generation = 0;
    this.element.addEventListener('contextmenu', (event) => event.preventDefault());
    this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => this.onRendered());
    this.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => this.onNewImage());
    this.section.addEventListener('pointerdown', () => viewer.activate(this));
  }

  get viewport() {
    return this.viewer.engine.getViewport(this.viewportId);
  }

  // A User Timing mark (`yunying:pane0:first`...), for the benchmark and the browser's
  // performance panel; returns its time.
  mark(step) {
    return performance.mark(`yunying:pane${this.index}:${step}`).startTime;
  }

  // The viewport: drawn on the CPU when `cpu` (a pane's first series as the viewer starts,
  // until toGpu), else through WebGL.
  enable(cpu = false) {
    if (this.enabled) return;
    const input = {
      viewportId: this.viewportId,
      type: Enums.ViewportType.STACK,
      element: this.element,
      defaultOptions: { background: [0, 0, 0] },
    };
    if (cpu) enableOnCpu(this.viewer.engine, input);
    else this.viewer.engine.enableElement(input);
    this.onCpu = cpu;
    // Until the tools are in there is no tool group; Viewer.loadTools adds the pane then.
    this.viewer.toolGroup?.addViewport(this.viewportId, this.viewer.engine.id);
    this.enabled = true;
  }

  disable() {
    if (!this.enabled) return;
    this.viewer.toolGroup?.removeViewports(this.viewer.engine.id, this.viewportId);
    if (this.onCpu) disableOnCpu(this.viewer.engine, this.viewportId);
    else this.viewer.engine.disableElement(this.viewportId);
    this.enabled = false;
    this.onCpu = false;
  }

  // The pane's CPU viewport replaced by a WebGL one showing the same image, window,
  // rotation and flips. The CPU's picture stays in the canvas (enabling fills it
  // black) until WebGL's first draw replaces it.
  async toGpu(generation) {
    if (!this.onCpu) return;
    this.viewer.cpuFirst = false;
    this.keptOnCpu = false;
    this.mark('to-webgl');
    const cpu = this.viewport;
    const index = cpu.getCurrentImageIdIndex();
    const { voiRange, invert } = cpu.getProperties();
    // Rotation and flips (the CPU path's zoom and pan are in other units than WebGL's; the
    // move comes right after the first image, before the tools that zoom and pan).
    const { rotation, flipHorizontal, flipVertical } = cpu.getViewPresentation();
    const picture = document.createElement('canvas');
    const canvas = cpu.getCanvas();
    picture.width = canvas.width;
    picture.height = canvas.height;
    picture.getContext('2d').drawImage(canvas, 0, 0);
    this.disable();
    this.enable(false);
    const viewport = this.viewport;
    // The CPU path leaves its transform on the canvas's context, under which WebGL's
    // picture would be copied out of sight.
    const shown = viewport.getCanvas().getContext('2d');
    shown.setTransform(1, 0, 0, 1, 0, 0);
    shown.drawImage(picture, 0, 0, shown.canvas.width, shown.canvas.height);
    const drawn = this.rendered();
    await viewport.setStack(this.imageIds, index);
    if (generation !== this.generation) return;
    viewport.setProperties({ voiRange, invert });
    viewport.setViewPresentation({ rotation, flipHorizontal, flipVertical });
    viewport.render();
    await drawn;
    this.mark('webgl');
  }

  // The viewport's next render that has an image to draw.
  rendered() {
    return new Promise((resolve) => {
      const listener = () => {
        const viewport = this.viewport;
        if (!viewport?.getCurrentImageId() || !viewport.getImageData()) return;
        this.element.removeEventListener(Enums.Events.IMAGE_RENDERED, listener);
        resolve();
      };
      this.element.addEventListener(Enums.Events.IMAGE_RENDERED, listener);
    });
  }

  // Shows a series of a study whose series the viewer has listed (viewer.studies).
  async open(study, seriesUid) {
    this.studyUid = study.uid;
    this.seriesList = study.seriesList;
    if (seriesUid === this.seriesUid && this.imageIds.length) return;
    await this.openSeries(seriesUid);
  }

  // Nothing to hang here: the pane is emptied, and its viewport let go.
  clear() {
    this.generation += 1;
    this.studyUid = '';
    this.seriesUid = '';
    this.seriesList = [];
    this.imageIds = [];
    this.positions = [];
    this.single = [];
    this.loaded = 0;
    this.failed = 0;
    this.disable();
    for (const corner of Object.keys(this.overlay)) if (this.overlay[corner]) this.overlay[corner].textContent = '';
    this.keyMark.hidden = true;
    this.setStatus('');
  }

  async openSeries(seriesUid) {
    const generation = ++this.generation;
    this.seriesUid = seriesUid;
    this.loaded = 0;
    this.failed = 0;
    this.firstImageMs = null;
    this.stackMs = null;
    this.mark('open');
    this.setStatus(this.viewer.label('loading'));
    this.viewer.renderThumbnails();
    const base = `${this.viewer.root}/studies/${this.studyUid}/series/${seriesUid}`;
    const instances = await fetchJson(`${base}/metadata`);
    if (generation !== this.generation) return;
    this.mark('metadata');
    sortInstances(instances);
    const imageIds = [];
    const positions = [];
    const single = [];
    const pending = [];
    let firstFrameUrl = null;
    let videos = 0;
    this.frameRate = null;
    let firstImage = null;
    for (const json of instances) {
      const sop = value(json, Tag.SOPInstanceUID);
      if (isVideo(json)) {
        // One MPEG bit stream, not frames Cornerstone could decode: said in the status.
        videos += 1;
        continue;
      }
      const frames = Number(value(json, Tag.NumberOfFrames) || 1);
      const position = frames === 1 ? slicePosition(json) : null;
      if (frames > 1 && this.frameRate === null) this.frameRate = frameRate(json);
      firstFrameUrl ??= `${base}/instances/${sop}/frames/1`;
      firstImage ??= json;
      for (let frame = 1; frame <= frames; frame++) {
        const imageId = `wadors:${absolute(`${base}/instances/${sop}/frames/${frame}`)}`;
        addInstanceMetadata(imageId, json);
        imageIds.push(imageId);
        positions.push(position);
        single.push(frames === 1 ? { sop, bytes: frameBytes(json) } : null);
        if (frame === 1 && value(json, Tag.PhotometricInterpretation) === 'PALETTE COLOR') {
          pending.push(
            readPalette(json, fetchBulkData).catch((error) => console.warn('palette not read', imageId, error)),
          );
        }
        if (json[Tag.VOILUTSequence]) {
          const instanceUrl = absolute(`${base}/instances/${sop}`);
          const fetchLut = (uri) => fetchBulkData(uri).catch(() => lutDataFromInstance(instanceUrl));
          pending.push(
            readVoiLut(json, fetchLut)
              .then((lut) => lut && voiLuts.set(imageId, lut))
              .catch((error) => console.warn('VOI LUT not read', imageId, error)),
          );
        }
      }
    }
    await Promise.all(pending);
    if (generation !== this.generation) return;
    this.imageIds = imageIds;
    this.positions = positions;
    this.single = single;
    this.seriesUrl = absolute(base);
    // A pane's first series as the viewer starts is drawn on the CPU first; another series
    // opened in a pane still on the CPU goes to WebGL at once. A series of one image is
    // drawn on the CPU whenever it is opened, and stays there.
    const kept = this.viewer.webgl && keptOnCpu(imageIds.length, firstImage);
    if (this.onCpu || (kept && this.enabled)) this.disable();
    const cpu = !this.enabled && (kept || this.viewer.cpuFirst);
    this.enable(cpu);
    this.keptOnCpu = cpu && kept;
    // The whole stack is reported cached once the pane is on WebGL too (or, kept on the
    // CPU, drawn).
    let onGpu = Promise.resolve();
    this.videos = videos;
    this.viewer.onSeriesOpened(this);
    if (!imageIds.length) {
      this.setStatus(this.viewer.label(videos ? 'video' : 'empty'));
      return;
    }
    const viewport = this.viewport;
    this.shownIndex = 0;
    this.syncTarget = null;
    this.mark('stack');
    // The first image from the bytes the page's script fetched before this code ran, when
    // it did: in the cache before the stack asks for it.
    const early = earlyFrame(firstFrameUrl);
    // The decode workers at once unless this thread decodes the first image (cornerstone.js).
    if (!(early && decodableHere(firstImage))) startDecodeWorkers();
    if (early) {
      imageLoader
        .loadAndCacheImage(imageIds[0], {
          priority: -5,
          requestType: Enums.RequestType.Interaction,
          frame: early,
          // Decoded on this thread when it can be (cornerstone.js): not waiting for the
          // decode workers' start.
          onMainThread: true,
        })
        .catch(() => {});
    }
    const drawn = this.rendered();
    await viewport.setStack(imageIds, 0);
    if (generation !== this.generation) return;
    if (cpu) recordCpuInvert(viewport);
    viewport.render();
    this.viewer.marks.draw(this);
    // After the task that painted the CPU's first image. An image kept on the CPU is
    // reported whole once drawn there.
    if (this.keptOnCpu) onGpu = drawn;
    else if (cpu) {
      onGpu = drawn
        .then(() => new Promise((resolve) => setTimeout(resolve)))
        .then(() => generation === this.generation && this.toGpu(generation));
    }
    // For tests: settled once the pane's first image is on WebGL (or kept on the CPU).
    this.onGpu = onGpu;
    this.prefetch(generation, onGpu);
  }

  // Every image of the stack is fetched and decoded into the cache once, so that scrolling
  // and cine never wait on the network: outward from the current image, the images of
  // single-frame instances a batch at a time (fetchFrames), the frames of multi-frame
  // instances one request each through Cornerstone's prefetch pool.
  prefetch(generation, onGpu) {
    const total = this.imageIds.length;
    const current = this.viewport.getCurrentImageIdIndex();
    const order = [];
    for (let step = 0; order.length < total; step++) {
      if (current + step < total) order.push(current + step);
      if (step > 0 && current - step >= 0) order.push(current - step);
    }
    const settled = (ok) => {
      if (generation !== this.generation) return;
      if (ok) this.loaded += 1;
      else this.failed += 1;
      if (this.loaded + this.failed === total) {
        onGpu.then(() => {
          if (generation !== this.generation) return;
          this.stackMs = this.mark('stack-cached');
          this.viewer.emit('stack', this);
        });
      }
      this.updateStatus();
    };
    // A frame fetched with others is decoded on this thread when it is stored as it is and
    // grey (a CT, MR or DX stack, cornerstone.js): no decode workers to start for it, and
    // no copies of its values to them and back.
    const load = (index, frame) =>
      imageLoader
        .loadAndCacheImage(this.imageIds[index], {
          priority: 0,
          requestType: Enums.RequestType.Prefetch,
          frame,
          onMainThread: Boolean(frame),
        })
        .then(
          () => settled(true),
          () => settled(false),
        );
    const batches = [];
    let batch = null;
    for (const index of order) {
      const single = this.single[index];
      // Already in the cache or on its way (the current image): asked for as before, which
      // answers from there.
      if (!single || cache.getImageLoadObject(this.imageIds[index]) || cache.getImage(this.imageIds[index])) {
        load(index);
        continue;
      }
      if (!batch || batch.bytes + single.bytes > BATCH_BYTES || batch.indexes.length >= BATCH_IMAGES) {
        batch = { indexes: [], bytes: 0 };
        batches.push(batch);
      }
      batch.indexes.push(index);
      batch.bytes += single.bytes;
    }
    const seriesUrl = this.seriesUrl;
    const next = async () => {
      while (batches.length && generation === this.generation) {
        const { indexes } = batches.shift();
        const frames = fetchFrames(
          seriesUrl,
          indexes.map((index) => this.single[index].sop),
        );
        for (const index of indexes) {
          const key = `${this.single[index].sop}/1`;
          load(
            index,
            frames.then((found) => found.get(key) || Promise.reject(new Error(`${key} not in the answer`))),
          );
        }
        // The next request once this one's bytes are in; their decoding goes on meanwhile.
        await frames.catch(() => {});
      }
    };
    for (let i = 0; i < BATCHES_IN_FLIGHT; i++) next();
  }

  setStatus(text) {
    if (this.status) {
      this.status.textContent = text;
      this.status.hidden = !text;
    }
  }

  updateStatus() {
    const total = this.imageIds.length;
    if (this.videos && this.loaded + this.failed === total) this.setStatus(this.viewer.label('video'));
    else if (this.failed) this.setStatus(`${this.viewer.label('failed')} ${this.failed}/${total}`);
    else if (this.loaded < total) this.setStatus(`${this.viewer.label('cached')} ${this.loaded}/${total}`);
    else this.setStatus('');
  }

  // The stack moved to another image: the viewer hears where from, for linked scrolling.
  // A move the viewer itself asked for (syncTarget) is not passed on again.
  onNewImage() {
    const index = this.viewport?.getCurrentImageIdIndex();
    const previous = this.shownIndex ?? index;
    this.shownIndex = index;
    if (this.syncTarget === index) {
      this.syncTarget = null;
      return;
    }
    this.viewer.onScrolled(this, index, previous);
  }

  onRendered() {
    const viewport = this.viewport;
    if (!viewport || !this.imageIds.length) return;
    // A render before the first image is in (a resize, the tools' arrival) draws nothing:
    // the first image is the first render that has an image to draw.
    if (this.firstImageMs === null && viewport.getCurrentImageId() && viewport.getImageData()) {
      this.firstImageMs = this.mark('first');
      this.viewer.emit('first-image', this);
      this.updateStatus();
    }
    this.renderOverlay();
    this.renderKeyMark();
    if (this.viewer.active === this) this.viewer.updateKeyButton();
  }

  renderKeyMark() {
    const shown = this.enabled && this.imageIds.length && this.viewer.marks.isKey(this.viewport.getCurrentImageId());
    this.keyMark.hidden = !shown;
    this.keyMark.textContent = shown ? `★ ${this.viewer.label('keyImage')}` : '';
  }

  renderOverlay() {
    const viewport = this.viewport;
    const imageId = viewport.getCurrentImageId();
    const image = imageId ? cache.getImage(imageId) : null;
    const { voiRange, invert } = viewport.getProperties();
    const presentation = viewport.getViewPresentation();
    const seriesIndex = this.seriesList.findIndex((series) => series.uid === this.seriesUid);
    const text = describeOverlay({
      json: instanceMeta.get(imageId),
      labels: this.viewer.labels,
      descriptions: this.viewer.descriptions,
      seriesPosition: [seriesIndex + 1, this.seriesList.length],
      imagePosition: [viewport.getCurrentImageIdIndex() + 1, this.imageIds.length],
      window: voiRange ? windowLevel.toWindowLevel(voiRange.lower, voiRange.upper) : null,
      voiLut: image?.yunyingVoiLut && this.isDefaultWindow(image, voiRange) ? image.yunyingVoiLut : '',
      // Inverted against how the file says to show it (a MONOCHROME1 image is drawn
      // inverted from the start, and that is not the reader's inversion).
      invert: Boolean(invert) !== Boolean(image?.invert),
      zoom: this.zoom(),
      rotation: presentation.rotation || 0,
      flipHorizontal: presentation.flipHorizontal,
      flipVertical: presentation.flipVertical,
    });
    for (const corner of Object.keys(this.overlay)) {
      if (this.overlay[corner]) this.overlay[corner].textContent = text[corner].join('\n');
    }
  }

  isDefaultWindow(image, voiRange) {
    if (!voiRange) return false;
    const initial = windowLevel.toLowHighRange(image.windowWidth, image.windowCenter);
    return Math.abs(initial.lower - voiRange.lower) < 0.5 && Math.abs(initial.upper - voiRange.upper) < 0.5;
  }

  // The zoom as WebGL counts it (1 with the image fitted to the pane), whichever path draws
  // it: the CPU path's own is canvas pixels per image pixel.
  zoom() {
    const viewport = this.viewport;
    if (!this.onCpu) return viewport.getZoom();
    const image = cache.getImage(viewport.getCurrentImageId());
    const canvas = viewport.getCanvas();
    if (!image || !canvas.width || !canvas.height) return 1;
    const turned = Math.abs(viewport.getRotation() || 0) % 180 === 90;
    const [width, height] = turned ? [image.rows, image.columns] : [image.columns, image.rows];
    const rowSpacing = image.rowPixelSpacing || 1;
    const columnSpacing = image.columnPixelSpacing || 1;
    const vertical = rowSpacing < columnSpacing ? 1 : rowSpacing / columnSpacing;
    const horizontal = rowSpacing < columnSpacing ? columnSpacing / rowSpacing : 1;
    const fit = Math.min(canvas.height / height / vertical, canvas.width / width / horizontal);
    return viewport.getZoom() / fit;
  }

  // Flips the image ({flipHorizontal, flipVertical}: whether each is to be on). The view
  // presentation's flip works through WebGL's camera only; the CPU path takes flips in its
  // own camera.
  flip(flips) {
    if (this.onCpu) this.viewport.setCamera(flips);
    else this.viewport.setViewPresentation(flips);
  }

  // The image fitted to the pane, upright and unflipped. The CPU path's own reset fits it
  // but keeps its rotation (and its flips in the viewport's record): set them first.
  resetCamera() {
    const viewport = this.viewport;
    if (this.onCpu) {
      viewport.setRotation(0);
      this.flip({ flipHorizontal: false, flipVertical: false });
    }
    viewport.resetCamera();
  }

  // The file's own window and inversion. On WebGL, Cornerstone's reset of a MONOCHROME1
  // image puts back the transfer function as first built (before the image's inversion)
  // while it records the image as inverted: the inversion is made again to match.
  resetProperties() {
    const viewport = this.viewport;
    viewport.resetProperties();
    if (!this.onCpu && viewport.getProperties().invert) {
      viewport.invert = false;
      viewport.setInvertColor(true);
    }
  }

  scrollTo(index) {
    const total = this.imageIds.length;
    if (!total) return;
    const target = Math.max(0, Math.min(total - 1, index));
    this.viewport.setImageIdIndex(target);
  }

  scrollBy(delta, loop = false) {
    const total = this.imageIds.length;
    if (!total) return;
    let target = this.viewport.getCurrentImageIdIndex() + delta;
    if (loop) target = ((target % total) + total) % total;
    this.scrollTo(target);
  }

  // Where an image pixel's centre is on the page (CSS pixels), e.g. to drag a measurement.
  pagePoint([column, row]) {
    const viewport = this.viewport;
    const world = utilities.imageToWorldCoords(viewport.getCurrentImageId(), [column + 0.5, row + 0.5]);
    const [x, y] = viewport.worldToCanvas(world);
    const box = viewport.getCanvas().getBoundingClientRect();
    return [box.left + x, box.top + y];
  }

  // Pixel values under image coordinates, read back from the canvas: used by the tests
  // and the benchmark to see what the reader sees.
  sample(points) {
    const viewport = this.viewport;
    const canvas = viewport.getCanvas();
    const context = canvas.getContext('2d');
    const ratio = canvas.width / canvas.clientWidth;
    const imageId = viewport.getCurrentImageId();
    return points.map(([column, row]) => {
      const world = utilities.imageToWorldCoords(imageId, [column + 0.5, row + 0.5]);
      const [x, y] = viewport.worldToCanvas(world);
      const pixel = context.getImageData(Math.floor(x * ratio), Math.floor(y * ratio), 1, 1).data;
      return Array.from(pixel);
    });
  }
}
