// Cornerstone3D set up once per page: its core and the DICOM image loader, whose `wadors`
// scheme is wrapped so that an image carrying a VOI LUT is shown through it. The tools are
// not here: they come in a chunk of their own after the first image (tools.js).
import {
  Enums,
  cache,
  getWebWorkerManager,
  imageLoader,
  imageRetrievalPoolManager,
  getRenderingCapabilities,
  init as initCore,
  RenderingEngine,
  setUseCPURendering,
  utilities,
} from '@cornerstonejs/core';
// Named imports: the package's default export is an object holding every decoder, which
// would keep them all (and their WebAssembly glue) in viewer.js; they run in the workers.
import { createImage, getMinMax, init as initLoader, wadors } from '@cornerstonejs/dicom-image-loader';

import { decodableHere, decodeHere } from './decodehere.js';
import { isVideo } from './dicomweb.js';
import { applyVoiLut } from './voilut.js';

const { windowLevel } = utilities;

// imageId -> the VOI LUT its instance carries; read by the wrapped wadors loader.
export const voiLuts = new Map();
// imageId -> the instance's DICOM JSON, for the overlay.
export const instanceMeta = new Map();

let started = null;

export function start() {
  if (started) return started;
  started = (async () => {
    // The decode workers are registered here but started only when a frame is first given
    // to them (decodeFirstFramesHere).
    deferDecodeWorkers();
    initLoader({ maxWebWorkers: Math.min(navigator.hardwareConcurrency || 2, 4) });
    decodeFirstFramesHere();
    startWorkersForEarlyMetadata();
    // One WebGL context for all the panes (and the MPR's planes, which Cornerstone puts in
    // the first context whatever the count): its default, 7, has the rendering engine
    // create and first draw seven offscreen WebGL2 contexts before it can show anything,
    // each costly in software WebGL (SwiftShader) and a share of the browser's limit of
    // 16 per page. The panes take turns in the one context, as they do beyond seven.
    await initCore({ rendering: { webGlContextCount: 1 } });
    // At most four frames of a stack's prefetch in flight (Cornerstone asks for all at
    // once): the browser opens six connections to a host, and the rest would queue every
    // other request (the tools' chunk, thumbnails, an image scrolled to) behind the stack.
    imageRetrievalPoolManager.setMaxSimultaneousRequests(Enums.RequestType.Prefetch, 4);
    imageLoader.registerImageLoader('wadors', loadWithVoiLut);
    performance.mark('yunying:init');
  })();
  return started;
}

// A pane's first image is drawn by Cornerstone's CPU path (the stack viewport's canvas 2D
// rendering) and the pane moves to WebGL once it is on screen (pane.js, toGpu): the first
// WebGL draw (the context, its shaders, and in software WebGL the draw itself, hundreds of
// milliseconds on the page's thread) no longer comes before the first image. Cornerstone
// reads one page-wide flag for it; it is set only while a CPU viewport is made (and the
// engine, which then makes no WebGL context until the first WebGL viewport), and the CPU
// viewport is told to answer for itself, not from the flag, whenever the engine asks.
function onCpu(make) {
  setUseCPURendering(true, false);
  try {
    return make();
  } finally {
    setUseCPURendering(false, false);
  }
}

// Whether the first images can be drawn on the CPU and then move to WebGL (without WebGL
// Cornerstone draws on the CPU throughout).
export function cpuFirst() {
  return getRenderingCapabilities().webgl;
}

export function createEngine(id) {
  return cpuFirst() ? onCpu(() => new RenderingEngine(id)) : new RenderingEngine(id);
}

export function enableOnCpu(engine, input) {
  onCpu(() => engine.enableElement(input));
  const viewport = engine.getViewport(input.viewportId);
  viewport.getUseCustomRenderingPipeline = () => true;
  return viewport;
}

export function disableOnCpu(engine, viewportId) {
  onCpu(() => engine.disableElement(viewportId));
}

// Cornerstone's CPU path draws a MONOCHROME1 image inverted (its image's `invert`, as the
// image loader sets it) but records the viewport as not inverted and keeps no initial
// inversion: the invert button then did nothing at its first press, the reset showed the
// image as MONOCHROME2, and the move to WebGL carried "not inverted" over. Recorded here as
// WebGL records it (inverted, and inverted initially), once the stack's first image is set.
export function recordCpuInvert(viewport) {
  const image = cache.getImage(viewport.getCurrentImageId());
  const invert = Boolean(image?.invert);
  viewport.initialInvert = invert;
  viewport.setInvertColor(invert);
}

// Registers an instance's metadata for one of its frames' image id.
export function addInstanceMetadata(imageId, json) {
  wadors.metaDataManager.add(imageId, json);
  instanceMeta.set(imageId, json);
}

// The image loader decodes every frame in its workers, through the one web worker manager
// of the page. A frame asked for with `onMainThread` (a pane's first image, and the frames
// its stack fetches in batches, pane.js) whose pixels are stored as they are (uncompressed,
// little-endian, grey) is decoded here instead: the rescale and the minimum and maximum, a
// millisecond or two for a CT slice, where the workers' thread starts a few hundred
// milliseconds after the page asks for it on a loaded machine, and sending a frame to a
// worker and its values back costs this thread about as much as decoding it
// (docs/viewer.md). Any other frame goes to the workers as before; and so does this one
// when decodehere.js cannot take it.
function decodeFirstFramesHere() {
  const manager = getWebWorkerManager();
  const executeTask = manager.executeTask.bind(manager);
  manager.executeTask = (workerName, methodName, args, taskOptions) => {
    if (workerName === 'dicomImageLoader' && methodName === 'decodeTask' && args?.options?.onMainThread) {
      const decoded = decodeHere(args, getMinMax);
      if (decoded) return Promise.resolve(decoded);
    }
    if (workerName === 'dicomImageLoader') startDecodeWorkers();
    // A frame that is a view into a larger buffer (a part of a multipart answer,
    // dicomweb.js) is copied out: the worker is sent the view's whole buffer otherwise.
    const pixelData = args?.pixelData;
    if (ArrayBuffer.isView(pixelData) && pixelData.byteLength !== pixelData.buffer.byteLength) {
      args = { ...args, pixelData: pixelData.slice() };
    }
    return executeTask(workerName, methodName, args, taskOptions);
  };
}

// The image loader's registration of its decode workers held back until a frame needs them:
// Cornerstone's worker manager starts every worker as it is registered, and each fetches and
// compiles its 207 KB module. A CT, MR or DX first image is decoded on this thread, so its
// workers would only compete for the machine's cores with the entry's run and the first
// image's draw; they are started by the first frame given to them (the stack's prefetch), or
// by the pane as soon as it knows its first image is one they must decode (pane.js).
let heldWorkers = null;

function deferDecodeWorkers() {
  const manager = getWebWorkerManager();
  const register = manager.registerWorker.bind(manager);
  manager.registerWorker = (workerName, workerFn, options) => {
    if (workerName !== 'dicomImageLoader') return register(workerName, workerFn, options);
    heldWorkers = () => register(workerName, workerFn, options);
    return undefined;
  };
}

// The first series' metadata, when the page's script asked for it before this code ran
// (window.yunyingEarly): as soon as it is in, the workers start if any of its images is one
// they must decode (an ultrasound clip's JPEG frames), without waiting for the pane to open
// the series. It is only looked at here; the pane takes it as before.
function startWorkersForEarlyMetadata() {
  for (const [url, early] of Object.entries(window.yunyingEarly || {})) {
    if (!url.endsWith('/metadata') || typeof early?.then !== 'function') continue;
    early.then(
      (instances) => {
        if (!instances.filter((json) => !isVideo(json)).every(decodableHere)) startDecodeWorkers();
      },
      () => {},
    );
  }
}

// Starts the decode workers if they were held back and not yet started.
export function startDecodeWorkers() {
  if (!heldWorkers) return;
  const start = heldWorkers;
  heldWorkers = null;
  start();
  performance.mark('yunying:workers');
}

// A frame whose bytes the viewer already has or is fetching with others (options.frame: a
// promise of {pixelData, transferSyntax}, pane.js) is decoded from them; any other, or one
// whose request failed, is fetched alone by the wadors loader.
function loadFrame(imageId, options) {
  const { frame, ...rest } = options || {};
  if (!frame) return wadors.loadImage(imageId, rest);
  const promise = frame.then(
    async ({ pixelData, transferSyntax }) => {
      const started = Date.now();
      const image = await createImage(imageId, pixelData, transferSyntax, { ...rest, decodeLevel: 0 });
      image.loadTimeInMS = Date.now() - started;
      image.transferSyntaxUID = transferSyntax;
      image.imageQualityStatus = Enums.ImageQualityStatus.FULL_RESOLUTION;
      return image;
    },
    (error) => {
      console.warn('frame fetched alone', imageId, error);
      return wadors.loadImage(imageId, rest).promise;
    },
  );
  return { promise, cancelFn: undefined };
}

function loadWithVoiLut(imageId, options) {
  const inner = loadFrame(imageId, options);
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
