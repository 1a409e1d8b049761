// The reporting page: fill the report from a template, hide thumbnails not yet rendered,
// ask before signing (a signed report is final), and the keyboard shortcuts:
// Ctrl+S saves the draft, Ctrl+Enter signs, Ctrl+Shift+Enter signs and opens the next case.
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

  var form = document.getElementById("report-form");
  if (!form) { return; }
  var dialog = document.getElementById("sign-confirm");
  var pending = null;

  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (!dialog || !button || !button.hasAttribute("data-confirm-sign") || form.dataset.confirmed === "1") {
      return;
    }
    event.preventDefault();
    pending = button;
    var impression = document.getElementById("impression");
    var shown = dialog.querySelector("[data-confirm-impression]");
    if (shown && impression) {
      var text = impression.value.trim();
      shown.textContent = text.length > 120 ? text.slice(0, 120) + "…" : text;
    }
    if (typeof dialog.showModal === "function") {
      dialog.showModal();
    } else if (window.confirm(dialog.querySelector("h2").textContent)) {
      confirmPending();
    }
  });

  function confirmPending() {
    if (!pending) { return; }
    form.dataset.confirmed = "1";
    var button = pending;
    pending = null;
    form.requestSubmit(button);
  }

  if (dialog) {
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "confirm") {
        confirmPending();
      } else {
        pending = null;
      }
    });
  }

  // The sign buttons are served disabled: one clicked before this script had bound the
  // confirmation above would have signed without it.
  form.querySelectorAll("button[data-confirm-sign]").forEach(function (button) {
    button.disabled = false;
  });

  function press(selector) {
    var button = form.querySelector(selector);
    if (button) { form.requestSubmit(button); }
  }

  document.addEventListener("keydown", function (event) {
    if (!(event.ctrlKey || event.metaKey) || (dialog && dialog.open)) { return; }
    if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      press("button[value='save']");
    } else if (event.key === "Enter" && event.shiftKey) {
      event.preventDefault();
      press("button[value='sign_next']");
    } else if (event.key === "Enter") {
      event.preventDefault();
      press("button[value='sign']");
    }
  });
})();
