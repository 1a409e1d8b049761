// Loaded by templates/cloudpacs/_viewer_embed.html, right after the viewer's element, as a
// plain (not deferred) script so that it starts at once; its inputs are the script
// element's data-metadata-url, the first series' /metadata, and, when the server could
// tell, data-first-instance-url, the first image's instance.
//
// The first series' metadata is asked for now, in parallel with the viewer's code, and the
// first image's frame as soon as its instance is known (at once with
// data-first-instance-url, else when the metadata is in; a large image's once its stand-in
// is painted): the image loader decodes it from this request's bytes (window.yunyingEarly)
// instead of asking again once Cornerstone is ready. The first image is the one main.js puts first.
// Meanwhile the server renders that image (/rendered, the file's own window) and it stands
// in the first pane until Cornerstone draws its first frame: the viewer's code takes a while
// to compile, the JPEG does not. When the server knew the image's size, the stand-in is
// already in the page's markup (img[data-preview]: the picture itself for an image of at
// most 1024 x 1024 pixels, else its URL, preloaded by the head), so the browser paints it
// as soon as it has it, without waiting for this script; otherwise this
// script asks for it at the pane's size once the metadata names the image. It takes no input
// (pointer-events: none) and is removed at the "yunying:first-image" event.
// window.yunyingPreview records when it was painted (shown) and when Cornerstone replaced it.
(function () {
  var script = document.currentScript;
  var preview = window.yunyingPreview = {shown: null, replaced: null, skipped: false};
  var picture = null;
  var TIMING = "yunying-stand-in";
  // When the stand-in was painted: the Element Timing API's renderTime (the frame that put it
  // on screen), where the browser has it; else the first frame after it was decoded.
  function recordShown(image) {
    var types = window.PerformanceObserver && PerformanceObserver.supportedEntryTypes;
    if (types && types.indexOf("element") >= 0) {
      var observer = new PerformanceObserver(function (list) {
        list.getEntries().forEach(function (entry) {
          if (entry.identifier !== TIMING || preview.shown !== null) { return; }
          var at = entry.renderTime || entry.loadTime;
          if (preview.replaced !== null && at > preview.replaced) { return; }
          preview.shown = at;
          preview.skipped = false;
          observer.disconnect();
        });
      });
      observer.observe({type: "element", buffered: true});
      return;
    }
    image.decode().then(function () {
      requestAnimationFrame(function () {
        if (preview.shown === null && preview.replaced === null) { preview.shown = performance.now(); }
      });
    }).catch(function () {});
  }
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
      if (preview.shown === null) { preview.skipped = true; }
      if (picture) { picture.remove(); picture = null; }
    });
  }
  watch();
  // The stand-in the server put in the markup: an image that cannot be rendered (400) is
  // taken away rather than left as an empty black box over the pane.
  function adopt() {
    var root = viewerElement();
    var image = root && root.querySelector('[data-pane="0"] > img[data-preview]');
    if (!image) { return false; }
    picture = image;
    var failed = function () { if (picture === image) { image.remove(); picture = null; } };
    if (image.complete && image.naturalWidth === 0) { failed(); return true; }
    image.addEventListener("error", failed);
    recordShown(image);
    return true;
  }
  var inMarkup = adopt();
  // The viewer's entry, when the head only had the browser fetch and compile it
  // (link[data-yunying-entry]: the server renders this stand-in quickly): run once the
  // stand-in is painted. Running it is one task of about 0.3 s on the main thread, and no
  // frame is painted during it: begun before the stand-in's bytes were in, it held the
  // stand-in's paint until it ended (cloudpacs.views.viewer.stand_in_first). Run anyway
  // if the stand-in fails, or has not come ENTRY_WAIT ms after the entry was ready.
  var ENTRY_WAIT = 3000;
  var entry = document.querySelector("link[data-yunying-entry]");
  var entryStarted = false;
  // Settled in the task after the frame that paints the stand-in in the markup (or at once
  // when it fails): decoded first (off the main thread), so that the frame that paints it
  // need not; the task after the next animation frame's callbacks comes after that paint.
  var painted = picture && new Promise(function (resolve) {
    picture.decode().then(function () {
      requestAnimationFrame(function () { setTimeout(resolve, 0); });
    }, resolve);
  });
  // The tools' chunks, when the stand-in is in the page (data-later): the viewer imports
  // them after its first image, so they are asked for once the stand-in is painted, not from
  // the head beside it (their fetch and compile are not on the path to its paint).
  var later = (script.getAttribute("data-later") || "").split(" ").filter(Boolean);
  function startEntry() {
    if (entryStarted || !entry) { return; }
    entryStarted = true;
    later.forEach(function (href) {
      var link = document.createElement("link");
      link.rel = "modulepreload";
      link.href = href;
      document.head.appendChild(link);
    });
    var module = document.createElement("script");
    module.type = "module";
    module.src = entry.href;
    document.head.appendChild(module);
  }
  if (entry) {
    if (!painted) {
      startEntry();
    } else {
      painted.then(startEntry);
      var entryReady = function () { setTimeout(startEntry, ENTRY_WAIT); };
      if (performance.getEntriesByName(entry.href).length) { entryReady(); }
      else { entry.addEventListener("load", entryReady); entry.addEventListener("error", startEntry); }
    }
  }
  // Without a stand-in in the markup (the index did not know the image's size): at the
  // pane's size, put in the pane once decoded.
  function showPreview(instanceUrl) {
    var root = viewerElement();
    var pane = root && root.querySelector('[data-pane="0"]');
    if (!pane || picture || preview.replaced !== null) { return; }
    var ratio = window.devicePixelRatio || 1;
    var width = Math.min(Math.round(pane.clientWidth * ratio), 4096);
    var height = Math.min(Math.round(pane.clientHeight * ratio), 4096);
    var image = new Image();
    image.alt = "";
    image.className = "yv-stand-in";
    image.setAttribute("data-preview", "");
    image.setAttribute("elementtiming", TIMING);
    image.src = instanceUrl + "/rendered?accept=image/jpeg" + (width > 0 && height > 0 ? "&viewport=" + width + "," + height : "");
    image.decode().then(function () {
      if (preview.replaced !== null || picture) { return; }
      picture = image;
      recordShown(image);
      pane.insertBefore(image, pane.querySelector("[data-overlay]"));
    }).catch(function () {});
  }
  // The first frame's answer is kept for the viewer's image loader, which decodes it from
  // these bytes (frontend/src/dicomweb.js, earlyFrame) instead of asking again.
  // A large image's frame (its stand-in in the markup but not a quick one: no
  // link[data-yunying-entry], a 15 MB DX) is asked for only once that stand-in is painted:
  // asked for at once, its transfer competed on two cores with the server's rendering of
  // the stand-in and put the stand-in's paint back by 60-270 ms (docs/viewer.md). The loader
  // still takes this request: what it finds is a thenable that asks at once if the loader
  // wants the frame before the stand-in is painted, so Cornerstone never waits for it.
  window.yunyingEarly = window.yunyingEarly || {};
  var holdFrame = entry ? null : painted;
  function firstFrame(instanceUrl) {
    var frameUrl = instanceUrl + "/frames/1";
    var asked = null;
    function ask() {
      if (asked) { return asked; }
      asked = fetch(frameUrl, {
        credentials: "same-origin",
        headers: {Accept: "multipart/related; type=application/octet-stream; transfer-syntax=*"}
      }).then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.arrayBuffer().then(function (body) {
          return {contentType: response.headers.get("Content-Type") || "", body: body};
        });
      });
      asked.catch(function () {});
      return asked;
    }
    if (!holdFrame) {
      window.yunyingEarly[frameUrl] = ask();
      return;
    }
    window.yunyingEarly[frameUrl] = {then: function (done, failed) { return ask().then(done, failed); }};
    // A refused frame (a video's: 406) is the loader's to report; this chain only starts it.
    holdFrame.then(ask).catch(function () {});
  }
  var url = script.getAttribute("data-metadata-url");
  var series = url.slice(0, -"/metadata".length);
  // The server named the first image: no need to wait for the metadata to know it.
  var known = script.getAttribute("data-first-instance-url");
  if (known) {
    if (!inMarkup) { showPreview(known); }
    firstFrame(known);
  }
  function value(json, tag) { return json[tag] && json[tag].Value ? json[tag].Value[0] : undefined; }
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
