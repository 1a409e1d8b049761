// Builds the viewer into ../static/viewer/, every file named by its content's hash (the
// entry viewer-<hash>.js and its viewer-<hash>.css too), so that browsers keep them for good;
// the Django templates find the entry's current names in manifest.json
// (cloudpacs/templatetags/viewer_build.py). The decoders (web workers and their
// WebAssembly) are split off and loaded only when an image needs them; Cornerstone's tools
// and the MPR are chunks loaded after the first image (src/tools.js, src/mpr.js), so that
// the entry holds what the first image needs (docs/viewer.md, "Building").
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants } from 'node:zlib';
import { defineConfig } from 'vite';

// Brotli copies (`.br`) of the built scripts, styles and WebAssembly, made once here:
// WhiteNoise sends them to browsers that accept br (browsers ask for it over HTTPS),
// 15 % smaller than the gzip copies it makes itself at collectstatic. Quality 9: 11 made
// viewer.js.br 9 % smaller again but took 20 s instead of 1 s.
const brotli = {
  name: 'yunying-brotli',
  apply: 'build',
  writeBundle(options, bundle) {
    for (const name of Object.keys(bundle)) {
      if (!/\.(js|css|wasm)$/.test(name)) continue;
      const path = join(options.dir, name);
      const data = readFileSync(path);
      if (data.length < 1024) continue;
      const params = { [constants.BROTLI_PARAM_QUALITY]: 9, [constants.BROTLI_PARAM_SIZE_HINT]: data.length };
      writeFileSync(`${path}.br`, brotliCompressSync(data, { params }));
    }
  },
};

// vtk.js's WebGPU profiles, which its Rendering/Profiles modules import beside the WebGL
// ones: src/stubs/vtk-webgpu-profile.js says why they are left out.
const webGpuProfile = fileURLToPath(new URL('./src/stubs/vtk-webgpu-profile.js', import.meta.url));
const noWebGpu = {
  name: 'yunying-no-webgpu',
  enforce: 'pre',
  async resolveId(source, importer, options) {
    if (!source.includes('WebGPU/Profiles/')) return null;
    const resolved = await this.resolve(source, importer, { ...options, skipSelf: true });
    return resolved && /@kitware[\\/]vtk\.js[\\/]Rendering[\\/]WebGPU[\\/]Profiles[\\/]/.test(resolved.id)
      ? webGpuProfile
      : null;
  },
};

// Cornerstone3D's table of viewport types, which imports every viewport class it has, replaced
// by src/stubs/viewport-types.js (which says why) wherever Cornerstone imports it.
const viewportTypes = fileURLToPath(new URL('./src/stubs/viewport-types.js', import.meta.url));
const fewerViewportTypes = {
  name: 'yunying-fewer-viewport-types',
  enforce: 'pre',
  async resolveId(source, importer, options) {
    if (!source.endsWith('/viewportTypeToViewportClass.js')) return null;
    const resolved = await this.resolve(source, importer, { ...options, skipSelf: true });
    return resolved && /@cornerstonejs[\\/]core[\\/]dist[\\/]esm[\\/]RenderingEngine[\\/]helpers[\\/]/.test(resolved.id)
      ? viewportTypes
      : null;
  },
};

// The image loader's setPixelDataType, replaced by src/stubs/set-pixel-data-type.js (which
// says why) where its createImage imports it.
const setPixelDataType = fileURLToPath(new URL('./src/stubs/set-pixel-data-type.js', import.meta.url));
const noSecondCopy = {
  name: 'yunying-no-second-copy',
  enforce: 'pre',
  async resolveId(source, importer, options) {
    if (!source.endsWith('/setPixelDataType.js')) return null;
    const resolved = await this.resolve(source, importer, { ...options, skipSelf: true });
    return resolved && /@cornerstonejs[\\/]dicom-image-loader[\\/]dist[\\/]esm[\\/]imageLoader[\\/]/.test(resolved.id)
      ? setPixelDataType
      : null;
  },
};

// dcmjs as Cornerstone3D imports it, replaced by src/stubs/dcmjs.js (which says why), and the
// dictionary entries that stub serves, read from dcmjs's own dictionary here at build time:
// those of every attribute keyword Cornerstone3D's code names (the metadata modules' tags,
// the display set rules' attributes...: about 200 words of its sources that are keywords).
const dcmjsStub = fileURLToPath(new URL('./src/stubs/dcmjs.js', import.meta.url));
const TAGS_MODULE = 'virtual:yunying-dcmjs-tags';
const cornerstone = fileURLToPath(new URL('./node_modules/@cornerstonejs/', import.meta.url));

function wordsOfSources(folder, words = new Set()) {
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) wordsOfSources(path, words);
    else if (entry.name.endsWith('.js')) for (const [word] of readFileSync(path, 'utf8').matchAll(/\b[A-Z][A-Za-z0-9]{2,}\b/g)) words.add(word);
  }
  return words;
}

const noDcmjs = {
  name: 'yunying-no-dcmjs',
  enforce: 'pre',
  resolveId(source, importer) {
    if (source === TAGS_MODULE) return `\0${TAGS_MODULE}`;
    if (source === 'dcmjs' && importer && /[\\/]@cornerstonejs[\\/](metadata|utils)[\\/]/.test(importer)) return dcmjsStub;
    return null;
  },
  async load(id) {
    if (id !== `\0${TAGS_MODULE}`) return null;
    const { default: dcmjs } = await import('dcmjs');
    const { nameMap } = dcmjs.data.DicomMetaDictionary;
    const words = new Set();
    for (const name of readdirSync(cornerstone)) {
      const sources = join(cornerstone, name, 'dist', 'esm');
      if (existsSync(sources)) wordsOfSources(sources, words);
    }
    // [tag as 8 hex digits, VR, VM, keyword], sorted by keyword for a reproducible build.
    const rows = [...words]
      .filter((word) => Object.prototype.hasOwnProperty.call(nameMap, word))
      .sort()
      .map((word) => {
        const { tag, vr, vm } = nameMap[word];
        return [tag.slice(1, 5) + tag.slice(6, 10), vr, vm, word];
      });
    return `export const rows = ${JSON.stringify(rows)};\n`;
  },
};

export default defineConfig({
  base: './',
  plugins: [noDcmjs, noWebGpu, fewerViewportTypes, noSecondCopy, brotli],
  resolve: {
    alias: [
      // src/stubs/loglevel.js says why.
      { find: /^loglevel$/, replacement: fileURLToPath(new URL('./src/stubs/loglevel.js', import.meta.url)) },
      // src/stubs/vtk-xml-polydata-reader.js says why.
      {
        find: /^@kitware\/vtk\.js\/IO\/XML\/XMLPolyDataReader(?:\.js)?$/,
        replacement: fileURLToPath(new URL('./src/stubs/vtk-xml-polydata-reader.js', import.meta.url)),
      },
    ],
  },
  build: {
    outDir: fileURLToPath(new URL('../static/viewer', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 8000,
    // static/viewer/manifest.json: src/main.js -> its file and style sheets.
    manifest: 'manifest.json',
    lib: false,
    rollupOptions: {
      input: fileURLToPath(new URL('./src/main.js', import.meta.url)),
      // The image loader's modules and the codecs' WebAssembly glue only define functions
      // (the package does not say so: no "sideEffects" in its package.json). Declared here,
      // the decoders that run only in the decode workers stay out of viewer.js.
      treeshake: {
        moduleSideEffects: (id) => !/[\\/]node_modules[\\/]@cornerstonejs[\\/](dicom-image-loader|codec-[^\\/]+)[\\/]/.test(id),
      },
      output: {
        entryFileNames: 'viewer-[hash].js',
        chunkFileNames: 'chunks/[name]-[hash].js',
        assetFileNames: (asset) =>
          asset.names?.[0]?.endsWith('.css') ? 'viewer-[hash][extname]' : 'assets/[name]-[hash][extname]',
      },
    },
  },
  worker: {
    format: 'es',
    rollupOptions: {
      output: {
        entryFileNames: 'workers/[name]-[hash].js',
        chunkFileNames: 'workers/[name]-[hash].js',
      },
    },
  },
});
