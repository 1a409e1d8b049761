// Loaded by templates/cloudpacs/_viewer_embed.html, just before the viewer's element, as a
// plain (not deferred) script so that it starts at once; its one input is the script
// element's data-metadata-url, the first series' /metadata.
//
// The first series' metadata is asked for now, in parallel with the viewer's code, and as
// soon as it is in, the first image's frame: its answer is cacheable, so the image loader
// finds it in the HTTP cache (or waits on this request) instead of asking again once
// Cornerstone is ready. The first image is the one main.js puts first.
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
    for (var node = script.nextElementSibling; node; node = node.nextElementSibling) {
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
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", watch); } else { watch(); }
  function showPreview(instanceUrl) {
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
    image.src = instanceUrl + "/rendered?accept=image/jpeg" + (width > 0 && height > 0 ? "&viewport=" + width + "," + height : "");
    image.decode().then(function () {
      if (preview.replaced !== null) { return; }
      picture = image;
      pane.insertBefore(image, pane.querySelector("[data-overlay]"));
      requestAnimationFrame(function () { preview.shown = performance.now(); });
    }).catch(function () {});
  }
  var url = script.getAttribute("data-metadata-url");
  var series = url.slice(0, -"/metadata".length);
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
      if (first) {
        showPreview(series + "/instances/" + value(first, "00080018"));
        fetch(series + "/instances/" + value(first, "00080018") + "/frames/1", {
          credentials: "same-origin",
          headers: {Accept: "multipart/related; type=application/octet-stream; transfer-syntax=*"}
        }).then(function (response) { return response.arrayBuffer(); }).catch(function () {});
      }
      return instances;
    });
})();
