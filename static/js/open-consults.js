// The administrators' open consults: "select all" ticks every movable consult of the page,
// and the button counts what is ticked. Without script the boxes work one by one.
(function () {
  "use strict";
  var form = document.getElementById("bulk-reassign");
  if (!form) {
    return;
  }
  var all = document.getElementById("select-all");
  var count = document.getElementById("selected-count");
  function boxes() {
    return form.querySelectorAll("input[name='consults']");
  }
  function update() {
    var ticked = 0;
    boxes().forEach(function (box) {
      if (box.checked) {
        ticked += 1;
      }
    });
    if (count) {
      count.textContent = String(ticked);
    }
  }
  if (all) {
    all.addEventListener("change", function () {
      boxes().forEach(function (box) {
        box.checked = all.checked;
      });
      update();
    });
  }
  form.addEventListener("change", update);
  update();
})();
