// The reader's workstation (the reading page with the viewer): the report panel beside the
// images collapses and comes back with its button (or Ctrl+\), and stays as the reader left
// it on the next case; the viewer follows the space it is given (its ResizeObserver). A
// prior's 并排对比 button opens it beside the current study.
(function () {
  "use strict";
  var reading = document.getElementById("reading");
  var button = document.getElementById("panel-toggle");
  if (!reading || !button) {
    return;
  }
  // A prior in the panel's list opens beside the current study in the viewer.
  document.addEventListener("click", function (event) {
    var compare = event.target.closest("[data-open-prior]");
    var viewer = window.yunyingViewer && window.yunyingViewer.viewers[0];
    if (!compare || !viewer) {
      return;
    }
    viewer.openPrior(compare.getAttribute("data-open-prior"));
  });
  var key = "yunying.reading.panelCollapsed";
  function set(collapsed) {
    reading.classList.toggle("panel-collapsed", collapsed);
    button.setAttribute("aria-expanded", String(!collapsed));
    button.textContent = collapsed ? button.getAttribute("data-show") : button.getAttribute("data-hide");
    try {
      window.localStorage.setItem(key, collapsed ? "1" : "0");
    } catch (error) {
      // Storage refused (private mode): the panel still toggles.
    }
  }
  var stored = null;
  try {
    stored = window.localStorage.getItem(key);
  } catch (error) {
    stored = null;
  }
  if (stored === "1") {
    set(true);
  }
  button.addEventListener("click", function () {
    set(!reading.classList.contains("panel-collapsed"));
  });
  document.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "\\") {
      event.preventDefault();
      set(!reading.classList.contains("panel-collapsed"));
    }
  });
})();
