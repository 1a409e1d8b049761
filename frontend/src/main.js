// 云影 viewer: a Cornerstone3D stack viewer over the platform's own DICOMweb (WADO-RS),
// mounted on every element carrying `data-yunying-viewer` (templates/cloudpacs/_viewer_embed.html).
// The page renders the toolbar, the labels (translated by Django) and the current study's
// series; this module wires them to the viewports.
import {
  Enums,
  RenderingEngine,
  cache,
  imageLoader,
  init as initCore,
  utilities,
} from '@cornerstonejs/core';
import {
  AngleTool,
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  annotation,
  init as initTools,
} from '@cornerstonejs/tools';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import dicomParser from 'dicom-parser';

import { applyVoiLut, readVoiLut } from './voilut.js';
import { describeOverlay } from './overlay.js';
import './viewer.css';

const { MouseBindings } = ToolEnums;
const { windowLevel } = utilities;
const DICOM_JSON = 'application/dicom+json';
const TOOL_NAMES = {
  WindowLevel: WindowLevelTool.toolName,
  Pan: PanTool.toolName,
  Zoom: ZoomTool.toolName,
  Length: LengthTool.toolName,
  Angle: AngleTool.toolName,
};

// imageId -> the VOI LUT its instance carries; read by the wrapped wadors loader.
const voiLuts = new Map();
// imageId -> the instance's DICOM JSON, for the overlay.
const instanceMeta = new Map();

let started = null;
// performance.now() at each step of opening, for the benchmark's breakdown of the time to
// the first image: when this module ran, and when Cornerstone was ready.
const timings = { code: performance.now() };

function start() {
  // Cornerstone, its tools and the DICOM loader are initialised once per page.
  if (started) return started;
  started = (async () => {
    await initCore();
    initTools();
    dicomImageLoader.init({ maxWebWorkers: Math.min(navigator.hardwareConcurrency || 2, 4) });
    imageLoader.registerImageLoader('wadors', loadWithVoiLut);
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool]) {
      addTool(tool);
    }
    timings.init = performance.now();
  })();
  return started;
}

function loadWithVoiLut(imageId, options) {
  const inner = dicomImageLoader.wadors.loadImage(imageId, options);
  const lut = voiLuts.get(imageId);
  if (!lut) return inner;
  return { ...inner, promise: inner.promise.then((image) => mapThroughVoiLut(image, lut)) };
}

// Cornerstone3D draws with a linear window only; an image whose file carries a VOI LUT is
// mapped through it once here, and then shown with a window over the LUT's whole output.
function mapThroughVoiLut(image, lut) {
  const stored = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
  let values = stored;
  const slope = image.slope ?? 1;
  const intercept = image.intercept ?? 0;
  if (!image.preScale?.scaled && (slope !== 1 || intercept !== 0)) {
    values = new Float32Array(stored.length);
    for (let i = 0; i < stored.length; i++) values[i] = stored[i] * slope + intercept;
  }
  const mapped = applyVoiLut(values, lut);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < mapped.length; i++) {
    if (mapped[i] < min) min = mapped[i];
    if (mapped[i] > max) max = mapped[i];
  }
  image.voxelManager = utilities.VoxelManager.createImageVoxelManager({
    scalarData: mapped,
    width: image.columns,
    height: image.rows,
    numberOfComponents: 1,
  });
  image.getPixelData = () => mapped;
  image.dataType = 'Uint16Array';
  image.sizeInBytes = mapped.byteLength;
  image.minPixelValue = min;
  image.maxPixelValue = max;
  image.slope = 1;
  image.intercept = 0;
  image.preScale = { enabled: false, scaled: false };
  const full = windowLevel.toWindowLevel(0, lut.maxOutput);
  image.windowWidth = full.windowWidth;
  image.windowCenter = full.windowCenter;
  image.voiLUTFunction = Enums.VOILUTFunctionType.LINEAR;
  image.voiLUT = undefined;
  image.yunyingVoiLut = lut.explanation || 'VOI LUT';
  return image;
}

async function fetchJson(url) {
  // The page may have started this request before the viewer's code arrived.
  const early = window.yunyingEarly?.[url];
  if (early) {
    delete window.yunyingEarly[url];
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

// A BulkDataURI's bytes: WADO-RS answers multipart/related with the value as its one part.
async function fetchBulkData(uri) {
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
async function lutDataFromInstance(url) {
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
  const item = dataSet.elements.x00283010?.items?.[0]?.dataSet;
  const data = item?.elements.x00283006;
  if (!data) throw new Error(`no VOI LUT Data in ${url}`);
  return item.byteArray.slice(data.dataOffset, data.dataOffset + data.length).buffer;
}

function indexOfBytes(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
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

function value(json, tag, index = 0) {
  return json?.[tag]?.Value?.[index];
}

// The image loader reads a palette's Red, Green and Blue LUT Data (0028,1201-1203) as
// numbers in the metadata's "Value"; DICOM JSON carries them as base64 (InlineBinary) or
// behind a BulkDataURI. They are decoded here, once, into the instance's JSON.
async function readPalette(json, fetchBulk) {
  await Promise.all(
    ['00281201', '00281202', '00281203'].map(async (tag) => {
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
      const words = new Uint16Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 2));
      json[tag] = { vr: 'US', Value: Array.from(words) };
    }),
  );
}

// MPEG-2, MPEG-4 AVC/H.264 and HEVC transfer syntaxes (1.2.840.10008.1.2.4.100 to .108,
// with the fragmentable .1 variants): the metadata names the stored one in Available
// Transfer Syntax UID (0008,3002).
function isVideo(json) {
  const syntax = String(value(json, '00083002') || '');
  const match = /^1\.2\.840\.10008\.1\.2\.4\.(\d+)(\.1)?$/.exec(syntax);
  return Boolean(match) && Number(match[1]) >= 100 && Number(match[1]) <= 108;
}

// A clip's own playback rate, frames per second: Recommended Display Frame Rate, else Cine
// Rate, else 1000 / Frame Time (ms); null when it has none of them.
function frameRate(json) {
  const recommended = Number(value(json, '00082144'));
  if (recommended > 0) return recommended;
  const cine = Number(value(json, '00180040'));
  if (cine > 0) return cine;
  const frameTime = Number(value(json, '00181063'));
  if (frameTime > 0) return 1000 / frameTime;
  return null;
}

function absolute(path) {
  return new URL(path, window.location.href).href;
}

class Pane {
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
    this.viewportId = `${viewer.id}-pane-${index}`;
    this.studyUid = '';
    this.seriesUid = '';
    this.seriesList = [];
    this.imageIds = [];
    this.loaded = 0;
    this.failed = 0;
    this.firstImageMs = null;
    this.stackMs = null;
    this.timings = {};
    this.generation = 0;
    this.element.addEventListener('contextmenu', (event) => event.preventDefault());
    this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => this.onRendered());
    this.section.addEventListener('pointerdown', () => viewer.activate(this));
  }

  get viewport() {
    return this.viewer.engine.getViewport(this.viewportId);
  }

  enable() {
    if (this.enabled) return;
    this.viewer.engine.enableElement({
      viewportId: this.viewportId,
      type: Enums.ViewportType.STACK,
      element: this.element,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.viewer.toolGroup.addViewport(this.viewportId, this.viewer.engine.id);
    this.enabled = true;
  }

  async openStudy(studyUid, seriesList) {
    this.studyUid = studyUid;
    this.seriesList =
      seriesList ||
      (await fetchJson(`${this.viewer.root}/studies/${studyUid}/series`)).map((json) => ({
        uid: value(json, '0020000E'),
        modality: value(json, '00080060') || '',
        number: value(json, '00200011') ?? '',
        description: value(json, '0008103E') || '',
        count: value(json, '00201209') ?? '',
      }));
    this.seriesList.sort((a, b) => (Number(a.number) || 0) - (Number(b.number) || 0));
    this.viewer.renderThumbnails();
    if (this.seriesList.length) await this.openSeries(this.seriesList[0].uid);
  }

  async openSeries(seriesUid) {
    const generation = ++this.generation;
    this.seriesUid = seriesUid;
    this.loaded = 0;
    this.failed = 0;
    this.firstImageMs = null;
    this.stackMs = null;
    this.timings = { open: performance.now() };
    this.setStatus(this.viewer.label('loading'));
    this.viewer.renderThumbnails();
    const base = `${this.viewer.root}/studies/${this.studyUid}/series/${seriesUid}`;
    const instances = await fetchJson(`${base}/metadata`);
    if (generation !== this.generation) return;
    this.timings.metadata = performance.now();
    instances.sort(
      (a, b) =>
        (value(a, '00200013') ?? 0) - (value(b, '00200013') ?? 0) ||
        String(value(a, '00080018')).localeCompare(String(value(b, '00080018'))),
    );
    const imageIds = [];
    const pending = [];
    let videos = 0;
    this.frameRate = null;
    for (const json of instances) {
      const sop = value(json, '00080018');
      if (isVideo(json)) {
        // One MPEG bit stream, not frames Cornerstone could decode: said in the status.
        videos += 1;
        continue;
      }
      const frames = Number(value(json, '00280008') || 1);
      if (frames > 1 && this.frameRate === null) this.frameRate = frameRate(json);
      for (let frame = 1; frame <= frames; frame++) {
        const imageId = `wadors:${absolute(`${base}/instances/${sop}/frames/${frame}`)}`;
        dicomImageLoader.wadors.metaDataManager.add(imageId, json);
        instanceMeta.set(imageId, json);
        imageIds.push(imageId);
        if (frame === 1 && value(json, '00280004') === 'PALETTE COLOR') {
          pending.push(
            readPalette(json, fetchBulkData).catch((error) => console.warn('palette not read', imageId, error)),
          );
        }
        if (json['00283010']) {
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
    this.enable();
    this.videos = videos;
    this.viewer.onSeriesOpened(this);
    if (!imageIds.length) {
      this.setStatus(this.viewer.label(videos ? 'video' : 'empty'));
      return;
    }
    const viewport = this.viewport;
    this.timings.stack = performance.now();
    await viewport.setStack(imageIds, 0);
    if (generation !== this.generation) return;
    viewport.render();
    this.prefetch(generation);
  }

  // Every image of the stack is fetched and decoded into the cache once, so that scrolling
  // and cine never wait on the network.
  prefetch(generation) {
    const total = this.imageIds.length;
    const current = this.viewport.getCurrentImageIdIndex();
    const order = [];
    for (let step = 0; order.length < total; step++) {
      if (current + step < total) order.push(current + step);
      if (step > 0 && current - step >= 0) order.push(current - step);
    }
    const done = () => {
      if (generation !== this.generation) return;
      this.loaded += 1;
      if (this.loaded + this.failed === total) {
        this.stackMs = performance.now();
        this.viewer.emit('stack', this);
      }
      this.updateStatus();
    };
    for (const index of order) {
      const imageId = this.imageIds[index];
      imageLoader
        .loadAndCacheImage(imageId, { priority: 0, requestType: Enums.RequestType.Prefetch })
        .then(done, () => {
          this.failed += 1;
          this.loaded -= 1;
          done();
        });
    }
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

  onRendered() {
    const viewport = this.viewport;
    if (!viewport || !this.imageIds.length) return;
    if (this.firstImageMs === null && viewport.getCurrentImageId()) {
      this.firstImageMs = performance.now();
      this.timings.first = this.firstImageMs;
      this.viewer.emit('first-image', this);
      this.updateStatus();
    }
    this.renderOverlay();
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
      seriesPosition: [seriesIndex + 1, this.seriesList.length],
      imagePosition: [viewport.getCurrentImageIdIndex() + 1, this.imageIds.length],
      window: voiRange ? windowLevel.toWindowLevel(voiRange.lower, voiRange.upper) : null,
      voiLut: image?.yunyingVoiLut && this.isDefaultWindow(image, voiRange) ? image.yunyingVoiLut : '',
      invert,
      zoom: viewport.getZoom(),
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

class Viewer {
  constructor(root, index) {
    this.root = root.dataset.dicomwebRoot.replace(/\/$/, '');
    this.element = root;
    this.id = `yunying-${index}`;
    this.labels = { ...root.querySelector('[data-labels]')?.dataset };
    this.listeners = {};
    this.cineTimer = null;
    this.thumbnailList = root.querySelector('[data-series-list]');
    this.panes = [...root.querySelectorAll('[data-pane]')].map((section, i) => new Pane(this, i, section));
    this.active = this.panes[0];
  }

  label(key) {
    return this.labels[key] || key;
  }

  on(name, callback) {
    (this.listeners[name] ||= []).push(callback);
  }

  showThumbnails() {
    if (this.thumbnailsWanted) return;
    this.thumbnailsWanted = true;
    for (const image of this.element.querySelectorAll('.yv-thumb img[data-src]')) image.src = image.dataset.src;
  }

  emit(name, pane) {
    if (name === 'first-image' || name === 'stack') this.showThumbnails();
    for (const callback of this.listeners[name] || []) callback(pane);
    this.element.dispatchEvent(new CustomEvent(`yunying:${name}`, { detail: { pane: pane.index } }));
  }

  async mount() {
    await start();
    this.engine = new RenderingEngine(this.id);
    this.toolGroup = ToolGroupManager.createToolGroup(`${this.id}-tools`);
    for (const name of Object.values(TOOL_NAMES)) this.toolGroup.addTool(name);
    this.toolGroup.addTool(StackScrollTool.toolName);
    this.toolGroup.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    this.toolGroup.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    this.toolGroup.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    this.selectTool('WindowLevel');
    this.bindToolbar();
    new ResizeObserver(() => this.engine.resize(true, true)).observe(this.element.querySelector('[data-panes]'));
    const initialSeries = [...this.element.querySelectorAll('[data-initial-series] [data-series-uid]')].map(
      (node) => ({
        uid: node.dataset.seriesUid,
        modality: node.dataset.modality || '',
        number: node.dataset.number || '',
        description: node.dataset.description || '',
        count: node.dataset.count || '',
      }),
    );
    // On its own page the viewer takes the keys at once; embedded, it waits for a click so
    // that it never takes them from the report being typed beside it.
    if (document.body.classList.contains('viewer-page')) this.element.focus({ preventScroll: true });
    // Without a first image (an empty or failed series) the thumbnails still come.
    setTimeout(() => this.showThumbnails(), 5000);
    const prior = this.element.dataset.priorStudyUid;
    const opening = this.panes[0].openStudy(this.element.dataset.studyUid, initialSeries.length ? initialSeries : null);
    if (prior) await this.openPrior(prior);
    await opening;
  }

  activate(pane) {
    if (this.active === pane) return;
    this.active = pane;
    for (const other of this.panes) other.section.classList.toggle('is-active', other === pane);
  }

  async openPrior(studyUid) {
    const pane = this.panes[1];
    if (!pane) return;
    const select = this.element.querySelector('[data-prior]');
    if (select) select.value = studyUid;
    if (!studyUid) {
      pane.generation += 1;
      pane.section.hidden = true;
      pane.studyUid = '';
      pane.seriesList = [];
      this.activate(this.panes[0]);
      this.renderThumbnails();
      this.engine.resize(true, true);
      return;
    }
    pane.section.hidden = false;
    this.engine.resize(true, true);
    this.activate(pane);
    await pane.openStudy(studyUid, null);
  }

  renderThumbnails() {
    if (!this.thumbnailList) return;
    const list = this.thumbnailList;
    list.replaceChildren();
    for (const pane of this.panes) {
      if (!pane.studyUid) continue;
      const group = document.createElement('div');
      group.className = 'yv-series-group';
      if (this.panes.length > 1 && this.panes[1].studyUid) {
        const heading = document.createElement('div');
        heading.className = 'yv-series-heading';
        heading.textContent = pane.index === 0 ? this.label('current') : this.label('prior');
        group.append(heading);
      }
      for (const series of pane.seriesList) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'yv-thumb';
        button.dataset.seriesUid = series.uid;
        button.dataset.forPane = pane.index;
        if (series.uid === pane.seriesUid) button.classList.add('is-current');
        const image = document.createElement('img');
        image.alt = '';
        image.loading = 'lazy';
        // Thumbnails are rendered by the server: asked for once the first image is up, so
        // that they do not compete with it.
        image.dataset.src = `${this.root}/studies/${pane.studyUid}/series/${series.uid}/thumbnail?viewport=128,128`;
        if (this.thumbnailsWanted) image.src = image.dataset.src;
        image.addEventListener('error', () => image.remove(), { once: true });
        const caption = document.createElement('span');
        caption.className = 'yv-thumb-caption';
        caption.textContent = [series.modality, series.number !== '' ? `#${series.number}` : '', series.description]
          .filter(Boolean)
          .join(' ');
        const count = document.createElement('span');
        count.className = 'yv-thumb-count';
        count.textContent = series.count !== '' ? String(series.count) : '';
        button.append(image, caption, count);
        button.addEventListener('click', () => {
          this.activate(pane);
          pane.openSeries(series.uid);
        });
        group.append(button);
      }
      list.append(group);
    }
  }

  selectTool(name) {
    const current = this.toolGroup.getActivePrimaryMouseButtonTool();
    if (current) this.toolGroup.setToolPassive(current);
    this.toolGroup.setToolActive(TOOL_NAMES[name], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    // Middle and right buttons keep pan and zoom whatever the left button does.
    if (name !== 'Pan') {
      this.toolGroup.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    }
    if (name !== 'Zoom') {
      this.toolGroup.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    }
    for (const button of this.element.querySelectorAll('[data-tool]')) {
      button.setAttribute('aria-pressed', String(button.dataset.tool === name));
    }
  }

  applyPreset(preset) {
    const viewport = this.active.viewport;
    if (!viewport) return;
    if (preset === 'default') {
      // The file's own window (or its VOI LUT), without inversion.
      const image = cache.getImage(viewport.getCurrentImageId());
      if (!image) return;
      const invert = image.invert ?? false;
      viewport.setProperties({
        voiRange: windowLevel.toLowHighRange(image.windowWidth, image.windowCenter, image.voiLUTFunction),
        invert,
      });
    } else {
      const [center, width] = preset.split(',').map(Number);
      viewport.setProperties({ voiRange: windowLevel.toLowHighRange(width, center) });
    }
    viewport.render();
  }

  act(action) {
    const pane = this.active;
    const viewport = pane.viewport;
    if (!viewport) return;
    const presentation = viewport.getViewPresentation();
    switch (action) {
      case 'fit':
        viewport.resetCamera();
        break;
      case 'rotate':
        viewport.setViewPresentation({ rotation: ((presentation.rotation || 0) + 90) % 360 });
        break;
      case 'flip-h':
        viewport.setViewPresentation({ flipHorizontal: !presentation.flipHorizontal });
        break;
      case 'flip-v':
        viewport.setViewPresentation({ flipVertical: !presentation.flipVertical });
        break;
      case 'invert':
        viewport.setProperties({ invert: !viewport.getProperties().invert });
        break;
      case 'reset':
        viewport.resetProperties();
        viewport.resetCamera();
        break;
      case 'cine':
        this.toggleCine();
        return;
      case 'clear':
        this.clearMeasurements(pane);
        break;
      default:
        return;
    }
    viewport.render();
  }

  // The measurements drawn, with what they measure (mm, or px without a pixel spacing).
  measurements() {
    return annotation.state.getAllAnnotations().map((item) => {
      const stats = Object.values(item.data?.cachedStats || {})[0] || {};
      return { tool: item.metadata.toolName, length: stats.length, angle: stats.angle, unit: stats.unit };
    });
  }

  clearMeasurements(pane) {
    annotation.state.removeAllAnnotations();
    pane.viewport.render();
  }

  // A multi-frame clip (ultrasound, XA) opened in the active pane plays at its own rate:
  // the frames-per-second box takes it, and a cine already running follows.
  onSeriesOpened(pane) {
    if (pane !== this.active || !pane.frameRate) return;
    const input = this.element.querySelector('[data-fps]');
    if (!input) return;
    input.value = String(Math.round(Math.max(1, Math.min(60, pane.frameRate))));
    if (this.cineTimer !== null) this.toggleCine(true);
  }

  fps() {
    const input = this.element.querySelector('[data-fps]');
    const fps = Number(input?.value) || 10;
    return Math.max(1, Math.min(60, fps));
  }

  toggleCine(force) {
    const playing = this.cineTimer !== null;
    const play = force ?? !playing;
    if (this.cineTimer !== null) {
      clearInterval(this.cineTimer);
      this.cineTimer = null;
    }
    if (play) {
      const pane = this.active;
      this.cineTimer = setInterval(() => pane.scrollBy(1, true), 1000 / this.fps());
    }
    const button = this.element.querySelector('[data-action="cine"]');
    if (button) {
      button.setAttribute('aria-pressed', String(play));
      button.textContent = play ? this.label('pause') : this.label('play');
    }
  }

  onKey(event) {
    const target = event.target;
    if (target.closest('input, textarea, select, [contenteditable="true"]')) return;
    const pane = this.active;
    const page = Math.max(1, Math.round(pane.imageIds.length / 10));
    const keys = {
      ArrowUp: () => pane.scrollBy(-1),
      ArrowLeft: () => pane.scrollBy(-1),
      ArrowDown: () => pane.scrollBy(1),
      ArrowRight: () => pane.scrollBy(1),
      PageUp: () => pane.scrollBy(-page),
      PageDown: () => pane.scrollBy(page),
      Home: () => pane.scrollTo(0),
      End: () => pane.scrollTo(pane.imageIds.length - 1),
      ' ': () => this.toggleCine(),
    };
    const presetKeys = [...this.element.querySelectorAll('[data-preset] option[data-key]')];
    const preset = presetKeys.find((option) => option.dataset.key === event.key);
    if (keys[event.key]) keys[event.key]();
    else if (preset) this.applyPreset(preset.value);
    else return;
    event.preventDefault();
  }

  bindToolbar() {
    const root = this.element;
    for (const button of root.querySelectorAll('[data-tool]')) {
      button.addEventListener('click', () => this.selectTool(button.dataset.tool));
    }
    for (const button of root.querySelectorAll('[data-action]')) {
      button.addEventListener('click', () => this.act(button.dataset.action));
    }
    const presets = root.querySelector('[data-preset]');
    presets?.addEventListener('change', () => {
      if (presets.value) this.applyPreset(presets.value);
      presets.value = '';
    });
    const fps = root.querySelector('[data-fps]');
    fps?.addEventListener('change', () => {
      if (this.cineTimer !== null) this.toggleCine(true);
    });
    const prior = root.querySelector('[data-prior]');
    prior?.addEventListener('change', () => this.openPrior(prior.value));
    root.addEventListener('keydown', (event) => this.onKey(event));
    root.addEventListener('pointerdown', (event) => {
      if (!event.target.closest('input, select, textarea, button')) root.focus({ preventScroll: true });
    });
  }
}

async function mountAll() {
  const viewers = [];
  const roots = document.querySelectorAll('[data-yunying-viewer]');
  roots.forEach((root, index) => viewers.push(new Viewer(root, index)));
  window.yunyingViewer = {
    viewers,
    timings,
    ready: Promise.all(viewers.map((viewer) => viewer.mount())),
  };
  await window.yunyingViewer.ready;
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', mountAll, { once: true });
} else {
  mountAll();
}

