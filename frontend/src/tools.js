// Cornerstone3D's tools (window/level, pan, zoom, wheel scrolling, length, angle, ellipse,
// annotations): a chunk of their own, loaded after the first image is drawn (viewer.js
// loadTools), so that the first frame never waits for their code to be compiled and run.
import { getRenderingEngines } from '@cornerstonejs/core';
import {
  AngleTool,
  EllipticalROITool,
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
  store,
} from '@cornerstonejs/tools';

import { STACK_SCROLL, TOOL_NAMES } from './toolnames.js';

export { ToolGroupManager, annotation };
export const { MouseBindings } = ToolEnums;

const CLASSES = {
  [TOOL_NAMES.WindowLevel]: WindowLevelTool,
  [TOOL_NAMES.Pan]: PanTool,
  [TOOL_NAMES.Zoom]: ZoomTool,
  [TOOL_NAMES.Length]: LengthTool,
  [TOOL_NAMES.Angle]: AngleTool,
  [TOOL_NAMES.EllipticalROI]: EllipticalROITool,
  [STACK_SCROLL]: StackScrollTool,
};

let ready = false;

// Once per page: the tools' state and listeners, the tools registered, and the viewports
// enabled before the tools arrived given what the tools give a viewport enabled after
// (their SVG layer and pointer, wheel and key listeners), all in one synchronous step so
// that no viewport is missed or given them twice.
export function setUp() {
  if (ready) return;
  for (const [name, tool] of Object.entries(CLASSES)) {
    if (tool.toolName !== name) throw new Error(`Cornerstone renamed the tool ${name} to ${tool.toolName}`);
  }
  initTools();
  for (const tool of Object.values(CLASSES)) addTool(tool);
  for (const engine of getRenderingEngines()) {
    for (const viewport of engine.getViewports()) {
      store.addEnabledElement({
        detail: { element: viewport.element, viewportId: viewport.id, renderingEngineId: engine.id },
      });
    }
  }
  ready = true;
  performance.mark('yunying:tools');
}
