// Put in place of vtk.js's WebGPU rendering profiles by vite.config.js. vtk.js's profiles
// (Rendering/Profiles/Volume.js, Geometry.js) register both of its backends, WebGL and
// WebGPU; Cornerstone draws with WebGL only, so the WebGPU classes were code that every
// page compiled and ran before its first image and never used. Nothing to export: a
// profile module only registers classes.
export {};
