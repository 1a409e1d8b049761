// Loaded by templates/cloudpacs/_viewer_embed.html, right after the viewer's element, as a
// plain (not deferred) script so that it starts at once; its inputs are the script
// element's data-metadata-url, the first series' /metadata, and, when the server could
// tell, data-first-instance-url, the first image's instance, and data-stand-in-url, its
// server-rendered stand-in at the image's own size, which the page's head preloads.
//
// The first series' metadata is asked for now, in parallel with the viewer's code, and the
// first image's frame as soon as its instance is known (at once with
// data-first-instance-url, else when the metadata is in): its answer is cacheable, so the
// image loader finds it in the HTTP cache (or waits on this request) instead of asking
// again once Cornerstone is ready. The first image is the one main.js puts first.
// Meanwhile the server renders that image (/rendered, the file's own window, at the pane's
// size) and it stands in the first pane until Cornerstone draws its first frame: the
// viewer's code takes a while to compile, the JPEG does not. It takes no input
// (pointer-events: none) and is removed at the "yunying:first-image" event.
// window.yunyingPreview records when it was shown and when Cornerstone replaced it.
(function () {
  var script = document.currentScript;
  var preview = window.yunyingPreview = {shown: null, replaced: null, skipped: false};
  var picture = null;
  function viewerElement() {
    for (var node = script.previousElementSibling; node; node = node.previousElementSibling) {
      if (node.hasAttribute("data-yunying-viewer")) { return node; }
    }
    return null;
  }
  function watch() {
    var root = viewerElement();
    if (!root) { return; }
    root.addEventListener("yunying:first-image", function (event) {
      if (event.detail && event.detail.pane !== 0) { return; }
      preview.replaced = performance.now();
      if (picture) { picture.remove(); picture = null; } else { preview.skipped = true; }
    });
  }
  watch();
  function showPreview(instanceUrl, fixedUrl) {
    var root = viewerElement();
    var pane = root && root.querySelector('[data-pane="0"]');
    if (!pane || preview.replaced !== null) { return; }
    var ratio = window.devicePixelRatio || 1;
    var width = Math.min(Math.round(pane.clientWidth * ratio), 4096);
    var height = Math.min(Math.round(pane.clientHeight * ratio), 4096);
    var image = new Image();
    image.alt = "";
    image.setAttribute("data-preview", "");
    // Set through the CSSOM, which the Content-Security-Policy allows (a style attribute
    // in markup would need style-src-attr).
    image.style.cssText = "position:absolute;inset:0;width:100%;height:100%;object-fit:contain;z-index:1;pointer-events:none;background:#000";
    // The page's own URL when it gave one: the head preloaded exactly that (the image's
    // size, which the browser scales to the pane); else the pane's size.
    image.src = fixedUrl || instanceUrl + "/rendered?accept=image/jpeg" + (width > 0 && height > 0 ? "&viewport=" + width + "," + height : "");
    image.decode().then(function () {
      if (preview.replaced !== null) { return; }
      picture = image;
      pane.insertBefore(image, pane.querySelector("[data-overlay]"));
      requestAnimationFrame(function () { preview.shown = performance.now(); });
    }).catch(function () {});
  }
  function firstFrame(instanceUrl) {
    fetch(instanceUrl + "/frames/1", {
      credentials: "same-origin",
      headers: {Accept: "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    }).then(function (response) { return response.arrayBuffer(); }).catch(function () {});
  }
  var url = script.getAttribute("data-metadata-url");
  var series = url.slice(0, -"/metadata".length);
  // The server named the first image: no need to wait for the metadata to know it.
  var known = script.getAttribute("data-first-instance-url");
  if (known) {
    showPreview(known, script.getAttribute("data-stand-in-url"));
    firstFrame(known);
  }
  function value(json, tag) { return json[tag] && json[tag].Value ? json[tag].Value[0] : undefined; }
  window.yunyingEarly = window.yunyingEarly || {};
  window.yunyingEarly[url] = fetch(url, {credentials: "same-origin", headers: {Accept: "application/dicom+json"}})
    .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.status === 204 ? [] : response.json(); })
    .then(function (instances) {
      var first = null;
      instances.forEach(function (json) {
        var order = (value(json, "00200013") || 0) - (first ? value(first, "00200013") || 0 : 0);
        if (!first || order < 0 || (order === 0 && String(value(json, "00080018")).localeCompare(String(value(first, "00080018"))) < 0)) { first = json; }
      });
      if (first && !known) {
        showPreview(series + "/instances/" + value(first, "00080018"));
        firstFrame(series + "/instances/" + value(first, "00080018"));
      }
      return instances;
    });
})();
