// The Cornerstone tools the viewer uses, by the toolbar's names: their `toolName`s, known
// before the tools' code is loaded (tools.js checks them against the classes).
export const TOOL_NAMES = Object.freeze({
  WindowLevel: 'WindowLevel',
  Pan: 'Pan',
  Zoom: 'Zoom',
  Length: 'Length',
  Angle: 'Angle',
  EllipticalROI: 'EllipticalROI',
});

export const STACK_SCROLL = 'StackScroll';

// The measuring tools: their drawings are kept with the report (marks.js) and drawn
// whichever tool the left button has.
export const MEASURING = [TOOL_NAMES.Length, TOOL_NAMES.Angle, TOOL_NAMES.EllipticalROI];
