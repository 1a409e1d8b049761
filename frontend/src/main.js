// 云影 viewer: a Cornerstone3D stack viewer over the platform's own DICOMweb (WADO-RS),
// mounted on every element carrying `data-yunying-viewer` (templates/cloudpacs/_viewer_embed.html).
// The page renders the toolbar, the labels (translated by Django) and the current study's
// series; viewer.js wires them to the panes (pane.js). DICOMweb requests and DICOM JSON are
// dicomweb.js's and tags.js's, Cornerstone's set-up and the VOI LUT loader cornerstone.js's.
import { Viewer } from './viewer.js';
import './viewer.css';

// The moment the module ran, for the benchmark's breakdown of the time to the first image.
performance.mark('yunying:code');

async function mountAll() {
  const viewers = [];
  const roots = document.querySelectorAll('[data-yunying-viewer]');
  roots.forEach((root, index) => viewers.push(new Viewer(root, index)));
  window.yunyingViewer = {
    viewers,
    ready: Promise.all(viewers.map((viewer) => viewer.mount())),
  };
  await window.yunyingViewer.ready;
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', mountAll, { once: true });
} else {
  mountAll();
}
