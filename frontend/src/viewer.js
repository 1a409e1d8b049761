// The viewer: its panes, the series thumbnails, the toolbar and the keys, bound to the
// markup of templates/cloudpacs/_viewer_embed.html (the labels come translated from Django).
import { RenderingEngine, cache, utilities } from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  ZoomTool,
  annotation,
} from '@cornerstonejs/tools';

import { TOOL_NAMES, start } from './cornerstone.js';
import { Pane } from './pane.js';

const { MouseBindings } = ToolEnums;
const { windowLevel } = utilities;

export class Viewer {
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
