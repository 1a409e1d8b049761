// The viewer: its panes, the series thumbnails, the toolbar and the keys, bound to the
// markup of templates/cloudpacs/_viewer_embed.html (the labels come translated from Django).
import { cache, utilities } from '@cornerstonejs/core';

import { cpuFirst, createEngine, start } from './cornerstone.js';
import { fetchSeriesList } from './dicomweb.js';
import { Marks, parseImageId } from './marks.js';
import { Pane } from './pane.js';
import { MEASURING, STACK_SCROLL, TOOL_NAMES } from './toolnames.js';

// Key object selections and presentation states are shown on the images, not hung.
const NOT_HUNG = new Set(['KO', 'PR']);
// The tools are asked for at the first image, or after this long without one (an empty
// series), or at the reader's first click or key.
const TOOLS_AT_THE_LATEST_MS = 3000;

const { windowLevel } = utilities;

export class Viewer {
  constructor(root, index) {
    this.root = root.dataset.dicomwebRoot.replace(/\/$/, '');
    this.element = root;
    this.id = `yunying-${index}`;
    this.labels = { ...root.querySelector('[data-labels]')?.dataset };
    // The consoles' study and series descriptions as the page's language shows them
    // (cloudpacs.descriptions, written by the server): {as written: as shown}.
    this.descriptions = JSON.parse(this.labels.descriptions || '{}');
    this.listeners = {};
    this.cineTimer = null;
    this.thumbnailList = root.querySelector('[data-series-list]');
    this.panes = [...root.querySelectorAll('[data-pane]')].map((section, i) => new Pane(this, i, section));
    this.active = this.panes[0];
    this.studies = new Map();
    this.currentUid = '';
    this.priorUid = '';
    this.layout = root.dataset.layout || '1x1';
    // Whether the layout became 1x2 only to show a prior (and goes back without one).
    this.layoutForPrior = false;
    this.sync = true;
    this.links = null;
    this.marks = new Marks(this);
    // Cornerstone's tools (tools.js) and this viewer's tool group, once loaded; the tool
    // the reader chose is kept until then.
    this.tools = null;
    this.toolGroup = null;
    this.selectedTool = 'WindowLevel';
    this.toolsReady = new Promise((resolve) => {
      this.wantTools = resolve;
    })
      .then(() => this.loadTools())
      .catch((error) => console.error('the viewer tools were not loaded', error));
  }

  label(key) {
    return this.labels[key] || key;
  }

  described(text) {
    return this.descriptions[text] || text;
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
    if (name === 'first-image' || name === 'stack') {
      this.showThumbnails();
      this.wantTools();
    }
    for (const callback of this.listeners[name] || []) callback(pane);
    this.element.dispatchEvent(new CustomEvent(`yunying:${name}`, { detail: { pane: pane.index } }));
  }

  async mount() {
    await start();
    // One turn of the event loop before the first series is opened. It let the decode
    // workers, created in start() until 2026-12-07, start before the series' metadata was
    // parsed and its stack set in one stretch of microtasks; they are now created only for a
    // frame they must decode (cornerstone.js, startDecodeWorkers), and the turn is kept.
    await new Promise((resolve) => setTimeout(resolve));
    this.engine = createEngine(this.id);
    // The panes' first series drawn on the CPU first (pane.js, toGpu); a series of one image
    // on the CPU throughout, where the page has WebGL to move the others to.
    this.webgl = cpuFirst();
    this.cpuFirst = this.webgl;
    this.selectTool(this.selectedTool);
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
    // Without a first image (an empty or failed series) the thumbnails and tools still come.
    setTimeout(() => this.showThumbnails(), 5000);
    setTimeout(() => this.wantTools(), TOOLS_AT_THE_LATEST_MS);
    this.currentUid = this.element.dataset.studyUid;
    await this.loadStudy(this.currentUid, 'current', initialSeries.length ? initialSeries : null);
    const prior = this.element.dataset.priorStudyUid;
    // The kept key images and measurements, asked for once the first images are set (so
    // as not to compete with them) and drawn as their series open.
    const hung = prior ? this.openPrior(prior) : this.hang();
    this.marksReady = hung
      .then(() => this.marks.load())
      .catch((error) => console.warn('key images not read', error))
      .then(() => this.toolsReady);
    await hung;
    // Series opened from now on go to WebGL at once (but a series of one image).
    this.cpuFirst = false;
  }

  // The tools' chunk, fetched and run once the first image is drawn: the tool group of
  // this viewer (wheel scrolls, middle button pans, right button zooms, the left button
  // the chosen tool, measurements drawn whatever it is), given every pane enabled so far;
  // panes enabled later join it in Pane.enable.
  async loadTools() {
    const tools = await import('./tools.js');
    tools.setUp();
    const { MouseBindings } = tools;
    const group = tools.ToolGroupManager.createToolGroup(`${this.id}-tools`);
    for (const name of [...Object.values(TOOL_NAMES), STACK_SCROLL]) group.addTool(name);
    group.setToolActive(STACK_SCROLL, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    group.setToolActive(TOOL_NAMES.Pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(TOOL_NAMES.Zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    // Measurements are drawn (and can be moved) whichever tool the left button has; a tool
    // never chosen would be disabled, and a kept measurement of it not drawn.
    for (const name of MEASURING) group.setToolPassive(name);
    this.tools = tools;
    this.toolGroup = group;
    for (const pane of this.panes) {
      if (pane.enabled) group.addViewport(pane.viewportId, this.engine.id);
    }
    this.selectTool(this.selectedTool);
    for (const pane of this.panes) {
      if (pane.enabled) this.marks.draw(pane);
    }
    this.element.dispatchEvent(new CustomEvent('yunying:tools'));
    return tools;
  }

  // A study's series, listed once (from the page's markup for the current study, else by
  // QIDO-RS) and kept in this.studies for the thumbnails and the hanging.
  async loadStudy(uid, role, seriesList) {
    let study = this.studies.get(uid);
    if (!study) {
      const list = (seriesList || (await fetchSeriesList(this.root, uid))).filter((s) => !NOT_HUNG.has(s.modality));
      list.sort((a, b) => (Number(a.number) || 0) - (Number(b.number) || 0));
      study = { uid, role, seriesList: list };
      this.studies.set(uid, study);
    }
    study.role = role;
    return study;
  }

  activate(pane) {
    if (this.active === pane) return;
    this.active = pane;
    for (const other of this.panes) other.section.classList.toggle('is-active', other === pane);
    this.updateKeyButton();
  }

  // The panes a layout shows: 1x1 one, 1x2 two side by side, 2x2 four.
  paneCount() {
    return { '1x1': 1, '1x2': 2, '2x2': 4 }[this.layout] || 1;
  }

  async setLayout(layout) {
    if (!['1x1', '1x2', '2x2'].includes(layout)) return;
    this.layout = layout;
    this.layoutForPrior = false;
    await this.hang();
  }

  // The hanging: which series each pane shows. Without a prior, the current study's series
  // in order (pane 1 keeps what the reader put in it); with a prior, the current study on
  // the left and the prior on the right, row by row, each prior series beside the current
  // series it matches (same modality and description, else same series number, else the
  // same place in the list).
  async hang() {
    const count = Math.min(this.paneCount(), this.panes.length);
    const panesElement = this.element.querySelector('[data-panes]');
    panesElement.dataset.grid = this.layout;
    for (const button of this.element.querySelectorAll('button[data-layout]')) {
      button.setAttribute('aria-pressed', String(button.dataset.layout === this.layout));
    }
    const current = this.studies.get(this.currentUid);
    const prior = this.priorUid ? this.studies.get(this.priorUid) : null;
    const first = this.panes[0].seriesUid || current.seriesList[0]?.uid;
    const currentSeries = [first, ...current.seriesList.map((s) => s.uid).filter((uid) => uid !== first)];
    const plan = [];
    if (prior) {
      for (let row = 0; plan.length < count; row++) {
        const uid = currentSeries[row];
        plan.push(uid ? [current, uid] : null);
        if (plan.length < count) plan.push(this.matchPrior(current, uid, prior, row));
      }
    } else {
      for (let i = 0; i < count; i++) plan.push(currentSeries[i] ? [current, currentSeries[i]] : null);
    }
    for (const [index, pane] of this.panes.entries()) {
      const shown = index < count;
      pane.section.hidden = !shown;
      if (!shown || !plan[index]) pane.clear();
    }
    if (this.panes.indexOf(this.active) >= count) this.activate(this.panes[0]);
    // A new layout fits each image to its new pane.
    this.engine.resize(true, false);
    this.renderThumbnails();
    const opening = [];
    for (const [index, assignment] of plan.entries()) {
      if (!assignment) continue;
      const [study, seriesUid] = assignment;
      const pane = this.panes[index];
      if (pane.studyUid === study.uid && pane.seriesUid === seriesUid) continue;
      opening.push(pane.open(study, seriesUid));
    }
    await Promise.all(opening);
  }

  matchPrior(current, seriesUid, prior, row) {
    const list = prior.seriesList;
    if (!list.length) return null;
    const series = current.seriesList.find((s) => s.uid === seriesUid);
    const same = (a, b) => a && b && a.modality === b.modality && a.description && a.description === b.description;
    const found =
      (series && list.find((s) => same(s, series))) ||
      (series && series.number !== '' && list.find((s) => String(s.number) === String(series.number))) ||
      list[Math.min(row, list.length - 1)];
    return [prior, found.uid];
  }

  async openPrior(studyUid) {
    const select = this.element.querySelector('[data-prior]');
    if (select) select.value = studyUid;
    this.priorUid = studyUid || '';
    if (studyUid) {
      await this.loadStudy(studyUid, 'prior', null);
      // The prior goes beside the current study: a single pane becomes two.
      if (this.layout === '1x1') {
        this.layout = '1x2';
        this.layoutForPrior = true;
      }
      this.links = null;
    } else if (this.layoutForPrior) {
      this.layout = '1x1';
      this.layoutForPrior = false;
    }
    await this.hang();
    if (studyUid && this.panes[1] && !this.panes[1].section.hidden) this.activate(this.panes[1]);
  }

  // Linked scrolling: while on, scrolling one pane moves every other shown pane the same
  // distance through the patient (by slice positions; by the same fraction of the stack
  // when a series has none), from where each pane was when they were linked.
  setSync(on) {
    this.sync = on;
    this.links = null;
    const button = this.element.querySelector('[data-action="sync"]');
    if (button) button.setAttribute('aria-pressed', String(on));
  }

  onScrolled(pane, index, previous) {
    if (!this.sync || !pane.imageIds.length) return;
    const shown = this.panes.filter((p) => !p.section.hidden && p.imageIds.length && p.enabled);
    if (shown.length < 2) return;
    if (!this.links || shown.some((p) => this.links.get(p)?.seriesUid !== p.seriesUid)) {
      // Linked now: each pane's present slice is where it stands against the others (the
      // pane that moved, where it was before this move).
      this.links = new Map(
        shown.map((p) => [
          p,
          { seriesUid: p.seriesUid, index: p === pane ? previous : p.viewport.getCurrentImageIdIndex() },
        ]),
      );
    }
    const base = this.links.get(pane);
    for (const other of shown) {
      if (other === pane) continue;
      const target = this.linkedIndex(pane, base.index, index, other, this.links.get(other).index);
      const clamped = Math.max(0, Math.min(other.imageIds.length - 1, target));
      if (clamped === other.viewport.getCurrentImageIdIndex()) continue;
      other.syncTarget = clamped;
      other.scrollTo(clamped);
    }
  }

  linkedIndex(pane, baseIndex, index, other, otherBase) {
    const from = pane.positions;
    const to = other.positions;
    if (from[index] != null && from[baseIndex] != null && to.length && to.every((p) => p != null)) {
      const target = to[otherBase] + (from[index] - from[baseIndex]) * this.direction(from, to);
      let best = 0;
      for (let i = 1; i < to.length; i++) if (Math.abs(to[i] - target) < Math.abs(to[best] - target)) best = i;
      return best;
    }
    const fraction = pane.imageIds.length > 1 ? (index - baseIndex) / (pane.imageIds.length - 1) : 0;
    return Math.round(otherBase + fraction * (other.imageIds.length - 1));
  }

  // +1 when both stacks run the same way along the patient, -1 when one runs head to feet
  // and the other feet to head, so that moving down in one moves down in the other.
  direction(from, to) {
    const a = Math.sign(from[from.length - 1] - from[0]) || 1;
    const b = Math.sign(to[to.length - 1] - to[0]) || 1;
    return a === b ? 1 : -1;
  }

  // MPR of the active pane's series: its code is fetched the first time (a chunk of its
  // own), the panes give way to the three planes, and the slab box appears.
  async toggleMpr() {
    const panes = this.element.querySelector('[data-panes]');
    const container = this.element.querySelector('[data-mpr]');
    const slab = this.element.querySelector('[data-slab]');
    const button = this.element.querySelector('[data-action="mpr"]');
    if (!container) return;
    if (this.mpr) {
      this.mpr.close();
      this.mpr = null;
      container.hidden = true;
      panes.hidden = false;
      if (slab) slab.closest('label').hidden = true;
      button?.setAttribute('aria-pressed', 'false');
      this.engine.resize(true, false);
      return;
    }
    const pane = this.active;
    this.wantTools();
    await this.toolsReady;
    const { Mpr, canReformat } = await import('./mpr.js');
    if (!canReformat(pane)) {
      pane.setStatus(this.label('noMpr'));
      return;
    }
    if (this.cineTimer !== null) this.toggleCine(false);
    panes.hidden = true;
    container.hidden = false;
    if (slab) {
      slab.value = '0';
      slab.closest('label').hidden = false;
    }
    button?.setAttribute('aria-pressed', 'true');
    this.mpr = new Mpr(this, pane);
    await this.mpr.open(container);
  }

  // Full screen: the viewer takes the whole screen (the Fullscreen API where the browser
  // allows it, and a fixed layer over the page in any case); Escape or the button leaves.
  toggleFullscreen() {
    const on = !this.element.classList.contains('is-fullscreen');
    this.element.classList.toggle('is-fullscreen', on);
    document.body.classList.toggle('yv-fullscreen', on);
    const button = this.element.querySelector('[data-action="fullscreen"]');
    if (button) button.setAttribute('aria-pressed', String(on));
    if (on && this.element.requestFullscreen && !document.fullscreenElement) {
      this.element.requestFullscreen().catch(() => {});
    } else if (!on && document.fullscreenElement === this.element) {
      document.exitFullscreen().catch(() => {});
    }
    this.element.focus({ preventScroll: true });
    this.engine.resize(true, true);
  }

  renderThumbnails() {
    if (!this.thumbnailList) return;
    const list = this.thumbnailList;
    list.replaceChildren();
    this.renderKeyStrip(list);
    const keyCounts = new Map();
    for (const key of this.marks.keys.values()) keyCounts.set(key.series_uid, (keyCounts.get(key.series_uid) || 0) + 1);
    const studies = [this.studies.get(this.currentUid), this.priorUid && this.studies.get(this.priorUid)];
    for (const study of studies) {
      if (!study) continue;
      const group = document.createElement('div');
      group.className = 'yv-series-group';
      group.dataset.study = study.role;
      if (this.priorUid) {
        const heading = document.createElement('div');
        heading.className = 'yv-series-heading';
        heading.textContent = study.role === 'current' ? this.label('current') : this.label('prior');
        group.append(heading);
      }
      for (const series of study.seriesList) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'yv-thumb';
        button.dataset.seriesUid = series.uid;
        const showing = this.panes.filter((p) => p.studyUid === study.uid && p.seriesUid === series.uid);
        if (showing.length) button.classList.add('is-current');
        button.dataset.inPanes = showing.map((p) => p.index).join(' ');
        const image = document.createElement('img');
        image.alt = '';
        image.loading = 'lazy';
        // Thumbnails are rendered by the server: asked for once the first image is up, so
        // that they do not compete with it.
        image.dataset.src = `${this.root}/studies/${study.uid}/series/${series.uid}/thumbnail?viewport=128,128`;
        if (this.thumbnailsWanted) image.src = image.dataset.src;
        image.addEventListener('error', () => image.remove(), { once: true });
        const caption = document.createElement('span');
        caption.className = 'yv-thumb-caption';
        caption.textContent = [
          series.modality,
          series.number !== '' ? `#${series.number}` : '',
          this.described(series.description),
        ]
          .filter(Boolean)
          .join(' ');
        const count = document.createElement('span');
        count.className = 'yv-thumb-count';
        count.textContent = series.count !== '' ? String(series.count) : '';
        button.append(image, caption, count);
        const keys = study.uid === this.currentUid ? keyCounts.get(series.uid) : 0;
        if (keys) {
          const badge = document.createElement('span');
          badge.className = 'yv-thumb-keys';
          badge.title = this.label('keyImages');
          badge.textContent = `★${keys}`;
          button.append(badge);
        }
        // A click hangs the series in the active pane.
        button.addEventListener('click', () => this.active.open(study, series.uid));
        group.append(button);
      }
      list.append(group);
    }
  }

  // The key images of the current study, above its series: a click shows the image in the
  // active pane.
  renderKeyStrip(list) {
    const keys = [...this.marks.keys.values()];
    if (!keys.length) return;
    const group = document.createElement('div');
    group.className = 'yv-series-group yv-key-strip';
    group.dataset.keyImages = '';
    const heading = document.createElement('div');
    heading.className = 'yv-series-heading';
    heading.textContent = `★ ${this.label('keyImages')} (${keys.length})`;
    group.append(heading);
    const study = this.studies.get(this.currentUid);
    for (const key of keys) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'yv-key-thumb';
      button.dataset.keyImage = `${key.sop_instance_uid}:${key.frame}`;
      const image = document.createElement('img');
      image.alt = '';
      image.loading = 'lazy';
      image.dataset.src =
        `${this.root}/studies/${this.currentUid}/series/${key.series_uid}` +
        `/instances/${key.sop_instance_uid}/frames/${key.frame}/thumbnail?viewport=96,96`;
      if (this.thumbnailsWanted) image.src = image.dataset.src;
      image.addEventListener('error', () => image.remove(), { once: true });
      button.append(image);
      button.addEventListener('click', () => this.showKeyImage(study, key));
      group.append(button);
    }
    list.append(group);
  }

  async showKeyImage(study, key) {
    if (!study) return;
    const pane = this.active;
    await pane.open(study, key.series_uid);
    const index = pane.imageIds.findIndex((imageId) => {
      const ref = parseImageId(imageId);
      return ref && ref.sop === key.sop_instance_uid && ref.frame === key.frame;
    });
    if (index >= 0) pane.scrollTo(index);
  }

  // Key images changed (marked, unmarked, read from the server): the strip, the badges,
  // the panes' marks and the button follow.
  onMarksChanged() {
    this.renderThumbnails();
    for (const pane of this.panes) pane.renderKeyMark();
    this.updateKeyButton();
  }

  updateKeyButton() {
    const button = this.element.querySelector('[data-action="key-image"]');
    const viewport = this.active?.enabled ? this.active.viewport : null;
    if (button) button.setAttribute('aria-pressed', String(Boolean(viewport && this.marks.isKey(viewport.getCurrentImageId()))));
  }

  async saveMarks() {
    const button = this.element.querySelector('[data-action="save-marks"]');
    const original = button?.dataset.label || button?.textContent;
    if (button) {
      button.dataset.label = original;
      button.disabled = true;
      button.textContent = this.label('saving');
    }
    let text = this.label('saved');
    try {
      const answer = await this.marks.save();
      this.marks.lastError = '';
      if (button) button.title = '';
      this.emit('marks-saved', this.active);
      return answer;
    } catch (error) {
      text = this.label('saveFailed');
      this.marks.lastError = String(error.message || error);
      if (button) button.title = this.marks.lastError;
      return null;
    } finally {
      if (button) {
        button.disabled = false;
        button.textContent = text;
        clearTimeout(this.saveLabelTimer);
        this.saveLabelTimer = setTimeout(() => {
          button.textContent = original;
        }, 4000);
      }
    }
  }

  // One row of tools: while the row is wider than the viewer, the groups marked
  // data-overflow go into the 更多 menu, the lowest number first; they come back when
  // there is room again.
  fitToolbar() {
    const toolbar = this.element.querySelector('[data-toolbar]');
    const menu = this.element.querySelector('[data-more-menu]');
    const more = this.element.querySelector('[data-more]');
    if (!toolbar || !menu || !more) return;
    const groups = [...this.element.querySelectorAll('[data-overflow]')];
    groups.sort((a, b) => Number(b.dataset.overflow) - Number(a.dataset.overflow));
    // Back in the row, in their own order (by their number, highest first), before 更多.
    for (const group of groups) toolbar.insertBefore(group, more);
    more.hidden = true;
    const overflowing = () => toolbar.scrollWidth > toolbar.clientWidth + 1;
    for (const group of [...groups].reverse()) {
      if (!overflowing()) break;
      more.hidden = false;
      menu.prepend(group);
    }
    if (!menu.children.length) this.toggleMore(false);
  }

  toggleMore(force) {
    const menu = this.element.querySelector('[data-more-menu]');
    const more = this.element.querySelector('[data-more]');
    if (!menu || !more) return;
    const open = force ?? menu.hidden;
    menu.hidden = !open;
    more.setAttribute('aria-expanded', String(open));
  }

  // The left button's tool; chosen before the tools are in, it is taken when they arrive.
  selectTool(name) {
    this.selectedTool = name;
    for (const button of this.element.querySelectorAll('[data-tool]')) {
      button.setAttribute('aria-pressed', String(button.dataset.tool === name));
    }
    const group = this.toolGroup;
    if (!group) return;
    const { MouseBindings } = this.tools;
    const current = group.getActivePrimaryMouseButtonTool();
    if (current) group.setToolPassive(current);
    group.setToolActive(TOOL_NAMES[name], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    // Middle and right buttons keep pan and zoom whatever the left button does.
    if (name !== 'Pan') {
      group.setToolActive(TOOL_NAMES.Pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    }
    if (name !== 'Zoom') {
      group.setToolActive(TOOL_NAMES.Zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
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
    if (action === 'sync') {
      this.setSync(!this.sync);
      return;
    }
    if (action === 'fullscreen') {
      this.toggleFullscreen();
      return;
    }
    if (action === 'mpr') {
      this.toggleMpr();
      return;
    }
    const pane = this.active;
    const viewport = pane.viewport;
    if (!viewport) return;
    const presentation = viewport.getViewPresentation();
    switch (action) {
      case 'fit':
        pane.resetCamera();
        break;
      case 'rotate':
        viewport.setViewPresentation({ rotation: ((presentation.rotation || 0) + 90) % 360 });
        break;
      case 'flip-h':
        pane.flip({ flipHorizontal: !presentation.flipHorizontal });
        break;
      case 'flip-v':
        pane.flip({ flipVertical: !presentation.flipVertical });
        break;
      case 'invert':
        viewport.setProperties({ invert: !viewport.getProperties().invert });
        break;
      case 'reset':
        pane.resetProperties();
        pane.resetCamera();
        break;
      case 'cine':
        this.toggleCine();
        return;
      case 'clear':
        this.clearMeasurements(pane);
        break;
      case 'key-image':
        this.marks.toggle(pane);
        return;
      case 'save-marks':
        this.saveMarks();
        return;
      default:
        return;
    }
    viewport.render();
  }

  // The measurements drawn, with what they measure (mm, or px without a pixel spacing).
  measurements() {
    if (!this.tools) return [];
    return this.tools.annotation.state.getAllAnnotations().map((item) => {
      const stats = Object.values(item.data?.cachedStats || {})[0] || {};
      return { tool: item.metadata.toolName, length: stats.length, angle: stats.angle, unit: stats.unit };
    });
  }

  clearMeasurements(pane) {
    this.tools?.annotation.state.removeAllAnnotations();
    this.marks.pending = [];
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
      k: () => this.marks.canSave && this.marks.toggle(pane),
      K: () => this.marks.canSave && this.marks.toggle(pane),
      Escape: () => this.element.classList.contains('is-fullscreen') && this.toggleFullscreen(),
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
      button.addEventListener('click', () => {
        this.wantTools();
        this.selectTool(button.dataset.tool);
      });
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
    for (const button of root.querySelectorAll('button[data-layout]')) {
      button.addEventListener('click', () => this.setLayout(button.dataset.layout));
    }
    // Leaving the browser's full screen (Escape, F11) leaves the viewer's too.
    document.addEventListener('fullscreenchange', () => {
      if (!document.fullscreenElement && this.element.classList.contains('is-fullscreen')) this.toggleFullscreen();
    });
    root.querySelector('[data-more]')?.addEventListener('click', () => this.toggleMore());
    document.addEventListener('pointerdown', (event) => {
      if (!event.target.closest('[data-more-menu], [data-more]')) this.toggleMore(false);
    });
    const toolbar = root.querySelector('[data-toolbar]');
    if (toolbar) new ResizeObserver(() => this.fitToolbar()).observe(toolbar);
    this.fitToolbar();
    const slab = root.querySelector('[data-slab]');
    slab?.addEventListener('change', () => this.mpr?.setSlab(Number(slab.value)));
    const prior = root.querySelector('[data-prior]');
    prior?.addEventListener('change', () => this.openPrior(prior.value));
    root.addEventListener('keydown', (event) => this.onKey(event));
    root.addEventListener('pointerdown', (event) => {
      this.wantTools();
      if (!event.target.closest('input, select, textarea, button')) root.focus({ preventScroll: true });
    });
  }
}
