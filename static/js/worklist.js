// The worklist's filters apply as soon as one changes; the button stays for keyboards and no-JS.
// The list refreshes itself every few seconds without a reload, so a consult that arrives or
// is claimed by a colleague shows at once; it pauses while a claim form is being submitted.
(function () {
  "use strict";
  var form = document.getElementById("worklist-filters");
  if (form) {
    form.addEventListener("change", function () {
      form.submit();
    });
  }
  var panel = document.getElementById("worklist-panel");
  if (!panel || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = parseInt(panel.getAttribute("data-refresh-seconds"), 10) || 15;
  var busy = false;
  document.addEventListener("submit", function () {
    busy = true;
  });
  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "worklist-refresh" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html || busy) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("worklist-panel");
        var current = document.getElementById("worklist-panel");
        if (fresh && current) {
          current.replaceWith(fresh);
        }
      })
      .catch(function () {
        // The network hiccuped: the next tick tries again.
      });
  }
  window.setInterval(refresh, seconds * 1000);
})();
