// A township's page shows critical findings (危急值) the moment they are flagged: the alert
// list is fetched again every few seconds and swapped in place, without a reload (poll.js).
(function () {
  "use strict";
  var holder = document.getElementById("critical-alerts-poll");
  if (!holder || !window.yunyingPoll) {
    return;
  }
  window.yunyingPoll({
    url: holder.getAttribute("data-poll-url"),
    seconds: parseInt(holder.getAttribute("data-poll-seconds"), 10) || 15,
    apply: function (html) {
      holder.innerHTML = html;
    },
  });
})();
