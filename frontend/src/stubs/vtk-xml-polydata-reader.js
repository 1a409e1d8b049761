// Put in place of vtk.js's VTP (XML PolyData) reader by vite.config.js. Cornerstone's mesh
// cache (core/cache/classes/Mesh.js) imports it, and with it an XML and YAML library
// (xmlbuilder2, its DOM and js-yaml: 0.6 MB of source, 9 % of viewer.js) that every page
// compiled and ran before its first image. The viewer shows no surface meshes; should a
// VTP mesh ever be loaded, this says why it cannot be.
function newInstance() {
  throw new Error('VTP meshes are not read by this viewer (vtk.js XMLPolyDataReader is left out of its build)');
}

export default { newInstance, extend: newInstance };
