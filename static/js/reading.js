// The reporting page: fill the report from a template, and hide thumbnails not yet rendered.
(function () {
  "use strict";
  var data = document.getElementById("report-templates");
  var select = document.getElementById("template-select");
  if (data && select) {
    var templates = JSON.parse(data.textContent);
    select.addEventListener("change", function () {
      var chosen = templates.find(function (t) { return String(t.id) === select.value; });
      if (!chosen) { return; }
      var findings = document.getElementById("findings");
      var impression = document.getElementById("impression");
      if ((findings.value.trim() || impression.value.trim()) && !window.confirm(select.dataset.confirm || "替换当前报告内容？")) {
        return;
      }
      findings.value = chosen.findings;
      impression.value = chosen.impression;
    });
  }
  document.querySelectorAll("img[data-thumbnail]").forEach(function (img) {
    img.addEventListener("error", function () { img.classList.add("missing"); });
  });
})();
