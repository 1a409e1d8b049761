// Builds the viewer into ../static/viewer/ with fixed names, so that the Django template
// loads viewer.js and viewer.css without a manifest. The decoders (web workers and their
// WebAssembly) are split off and loaded only when an image needs them; Cornerstone's tools
// and the MPR are chunks loaded after the first image (src/tools.js, src/mpr.js), so that
// viewer.js holds what the first image needs (docs/viewer.md, "Building").
import { readFileSync, writeFileSync } from 'node:fs';
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

export default defineConfig({
  base: './',
  plugins: [noWebGpu, brotli],
  resolve: {
    alias: [
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
        entryFileNames: 'viewer.js',
        chunkFileNames: 'chunks/[name]-[hash].js',
        assetFileNames: (asset) => (asset.names?.[0]?.endsWith('.css') ? 'viewer.css' : 'assets/[name]-[hash][extname]'),
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
