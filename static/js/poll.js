// One polling helper for the pages that refresh a part of themselves without a reload
// (the worklist, the township's critical-finding alerts): every few seconds it fetches a
// URL and hands the HTML to the page, skipping a tick while the tab is hidden, while a
// request is still out, and for good once a form on the page is being submitted (the
// page is about to change anyway, and swapping the form away would lose the submission).
//   yunyingPoll({url: ..., seconds: 15, headers: {...}, apply: function (html) {...}})
window.yunyingPoll = function (options) {
  "use strict";
  if (!window.fetch) {
    return;
  }
  var busy = false;
  var waiting = false;
  document.addEventListener("submit", function () {
    busy = true;
  });
  function url() {
    return typeof options.url === "function" ? options.url() : options.url;
  }
  function tick() {
    if (busy || waiting || document.hidden) {
      return;
    }
    waiting = true;
    fetch(url(), { credentials: "same-origin", headers: options.headers || {} })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && !busy) {
          options.apply(html);
        }
      })
      .catch(function () {
        // The network hiccuped: the next tick tries again.
      })
      .then(function () {
        waiting = false;
      });
  }
  window.setInterval(tick, (options.seconds || 15) * 1000);
};
