// A township's page shows critical findings (危急值) the moment they are flagged: the alert
// list is fetched again every few seconds and swapped in place, without a reload.
(function () {
  "use strict";
  var holder = document.getElementById("critical-alerts-poll");
  if (!holder || !window.fetch) {
    return;
  }
  var url = holder.getAttribute("data-poll-url");
  var seconds = parseInt(holder.getAttribute("data-poll-seconds"), 10) || 15;
  var busy = false;
  holder.addEventListener("submit", function () {
    busy = true;
  });
  window.setInterval(function () {
    if (busy) {
      return;
    }
    fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && !busy) {
          holder.innerHTML = html;
        }
      })
      .catch(function () {
        // Try again on the next tick.
      });
  }, seconds * 1000);
})();
