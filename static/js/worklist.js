// The worklist's filters apply as soon as one changes; the button stays for keyboards and no-JS.
(function () {
  "use strict";
  var form = document.getElementById("worklist-filters");
  if (!form) {
    return;
  }
  form.addEventListener("change", function () {
    form.submit();
  });
})();
