// The worklist's filters apply as soon as one changes; the button stays for keyboards and no-JS.
// The list refreshes itself every few seconds without a reload (poll.js), so a consult that
// arrives or is claimed by a colleague shows at once; it stops once a claim form is submitted.
(function () {
  "use strict";
  var form = document.getElementById("worklist-filters");
  if (form) {
    form.addEventListener("change", function () {
      form.submit();
    });
  }
  var panel = document.getElementById("worklist-panel");
  if (!panel || !window.yunyingPoll || !window.DOMParser) {
    return;
  }
  window.yunyingPoll({
    url: function () {
      return window.location.href;
    },
    seconds: parseInt(panel.getAttribute("data-refresh-seconds"), 10) || 15,
    headers: { "X-Requested-With": "worklist-refresh" },
    apply: function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("worklist-panel");
      var current = document.getElementById("worklist-panel");
      if (fresh && current) {
        current.replaceWith(fresh);
      }
    },
  });
})();
