// Multiplanar reformats of a CT series: axial, coronal and sagittal Cornerstone3D volume
// viewports over one streaming volume built from the series' image ids, a thick slab shown
// as a maximum intensity projection, and reference lines (where the other planes cut the
// one under the pointer). Loaded on demand (main bundle: import('./mpr.js')), so that the
// first image of a study never waits for it.
import { Enums, cache, setVolumesForViewports, volumeLoader } from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  PanTool,
  ReferenceLinesTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
} from '@cornerstonejs/tools';

const { MouseBindings } = ToolEnums;
const PLANES = [
  ['axial', Enums.OrientationAxis.AXIAL],
  ['coronal', Enums.OrientationAxis.CORONAL],
  ['sagittal', Enums.OrientationAxis.SAGITTAL],
];
let toolsAdded = false;
let count = 0;

// A series can be reformatted when it is one stack of parallel single-frame slices: at
// least three images, each with a position.
export function canReformat(pane) {
  return pane.imageIds.length >= 3 && pane.positions.every((position) => position != null);
}

export class Mpr {
  constructor(viewer, pane) {
    this.viewer = viewer;
    this.pane = pane;
    this.id = `${viewer.id}-mpr-${++count}`;
    this.volumeId = `cornerstoneStreamingImageVolume:${this.id}`;
    this.readyMs = null;
    this.slab = 0;
  }

  get viewports() {
    return PLANES.map(([name]) => this.viewer.engine.getViewport(`${this.id}-${name}`));
  }

  // Builds the three panes in place of the viewer's panes, loads the volume, and resolves
  // when every plane has drawn it.
  async open(container) {
    const started = performance.now();
    performance.mark('yunying:mpr:open');
    this.container = container;
    container.replaceChildren();
    const elements = PLANES.map(([name]) => {
      const section = document.createElement('section');
      section.className = 'yv-pane yv-mpr-pane';
      section.dataset.plane = name;
      const element = document.createElement('div');
      element.className = 'yv-viewport';
      element.addEventListener('contextmenu', (event) => event.preventDefault());
      const label = document.createElement('div');
      label.className = 'yv-overlay';
      label.dataset.overlay = 'tl';
      label.textContent = this.viewer.label(`plane${name.charAt(0).toUpperCase()}${name.slice(1)}`);
      section.append(element, label);
      container.append(section);
      return element;
    });
    const engine = this.viewer.engine;
    for (const [index, [name, orientation]] of PLANES.entries()) {
      engine.enableElement({
        viewportId: `${this.id}-${name}`,
        type: Enums.ViewportType.ORTHOGRAPHIC,
        element: elements[index],
        defaultOptions: { orientation, background: [0, 0, 0] },
      });
    }
    if (!toolsAdded) {
      addTool(ReferenceLinesTool);
      toolsAdded = true;
    }
    const tools = ToolGroupManager.createToolGroup(`${this.id}-tools`);
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, ReferenceLinesTool]) {
      tools.addTool(tool.toolName);
    }
    for (const [name] of PLANES) tools.addViewport(`${this.id}-${name}`, engine.id);
    tools.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    tools.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    tools.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    tools.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    this.tools = tools;
    this.referenceFrom('axial');
    for (const [index, [name]] of PLANES.entries()) {
      elements[index].addEventListener('pointerenter', () => this.referenceFrom(name));
    }

    const volume = await volumeLoader.createAndCacheVolume(this.volumeId, { imageIds: this.pane.imageIds });
    const loaded = new Promise((resolve) => {
      volume.load(() => resolve());
    });
    await setVolumesForViewports(engine, [{ volumeId: this.volumeId }], PLANES.map(([name]) => `${this.id}-${name}`));
    // The reader's window from the pane they came from.
    const { voiRange } = this.pane.viewport.getProperties();
    for (const viewport of this.viewports) {
      if (voiRange) viewport.setProperties({ voiRange });
      viewport.render();
    }
    await loaded;
    engine.renderViewports(PLANES.map(([name]) => `${this.id}-${name}`));
    this.readyMs = performance.mark('yunying:mpr:ready').startTime;
    this.openedInMs = this.readyMs - started;
    this.viewer.element.dispatchEvent(new CustomEvent('yunying:mpr-ready'));
  }

  // Reference lines: the other planes drawn where they cut the plane under the pointer.
  referenceFrom(name) {
    this.tools.setToolConfiguration(ReferenceLinesTool.toolName, { sourceViewportId: `${this.id}-${name}` });
    this.tools.setToolEnabled(ReferenceLinesTool.toolName);
    this.viewer.engine.renderViewports(PLANES.map(([plane]) => `${this.id}-${plane}`));
  }

  // A slab of `millimetres` shown as its maximum intensity projection (0: a thin slice).
  setSlab(millimetres) {
    this.slab = millimetres;
    for (const viewport of this.viewports) {
      if (millimetres > 0) {
        viewport.setBlendMode(Enums.BlendModes.MAXIMUM_INTENSITY_BLEND);
        viewport.setSlabThickness(millimetres);
      } else {
        viewport.setBlendMode(Enums.BlendModes.COMPOSITE);
        viewport.resetSlabThickness();
      }
      viewport.render();
    }
  }

  close() {
    for (const [name] of PLANES) this.viewer.engine.disableElement(`${this.id}-${name}`);
    ToolGroupManager.destroyToolGroup(`${this.id}-tools`);
    cache.removeVolumeLoadObject(this.volumeId);
    this.container?.replaceChildren();
  }
}
