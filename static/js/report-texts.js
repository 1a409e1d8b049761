// The report panel's texts: the normal report for the study's parts in one click (Alt+N),
// and phrases inserted at the cursor of the findings or impression: typed by their
// shortcut then Tab, or searched (Alt+P) and chosen by click or Enter.
(function () {
  "use strict";
  var findings = document.getElementById("findings");
  var impression = document.getElementById("impression");
  if (!findings || !impression) { return; }

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function changed(area) {
    area.dispatchEvent(new Event("input", { bubbles: true }));
  }

  // --- The normal report ----------------------------------------------------------------
  var normal = readJSON("normal-report-data");
  var normalButton = document.getElementById("normal-report");

  function fillNormal() {
    if (!normal) { return; }
    var written = findings.value.trim() || impression.value.trim();
    var same = findings.value === normal.findings && impression.value === normal.impression;
    if (written && !same && !window.confirm(normalButton.dataset.confirm)) { return; }
    findings.value = normal.findings;
    impression.value = normal.impression;
    changed(findings);
    changed(impression);
    // Ready to read over and sign (Ctrl+Enter) from the impression's end.
    impression.focus();
    impression.setSelectionRange(impression.value.length, impression.value.length);
  }
  if (normalButton) { normalButton.addEventListener("click", fillNormal); }

  // --- Phrases -----------------------------------------------------------------------------
  var phrases = readJSON("report-phrases") || [];
  var byShortcut = {};
  phrases.forEach(function (phrase) {
    // The reader's own come first, so theirs wins over the department's of the same shortcut.
    if (phrase.shortcut && !byShortcut[phrase.shortcut]) { byShortcut[phrase.shortcut] = phrase; }
  });
  var byId = {};
  phrases.forEach(function (phrase) { byId[phrase.id] = phrase; });

  // Where a phrase goes: the text area last written in (its caret stays put when the
  // focus moves to the search box or a phrase's button), the findings at first.
  var target = findings;
  [findings, impression].forEach(function (area) {
    area.addEventListener("focus", function () { target = area; });
  });

  function insert(text, area, from, to) {
    area = area || target;
    var start = from === undefined ? area.selectionStart : from;
    var end = to === undefined ? area.selectionEnd : to;
    area.focus();
    area.setRangeText(text, start, end, "end");
    changed(area);
  }

  [findings, impression].forEach(function (area) {
    area.addEventListener("keydown", function (event) {
      if (event.key !== "Tab" || event.shiftKey || event.ctrlKey || event.altKey || event.metaKey || event.isComposing) {
        return;
      }
      if (area.selectionStart !== area.selectionEnd) { return; }
      var before = area.value.slice(0, area.selectionStart);
      var typed = /[A-Za-z0-9]+$/.exec(before);
      var phrase = typed && byShortcut[typed[0].toLowerCase()];
      if (!phrase) { return; }  // an ordinary Tab: the focus moves on
      event.preventDefault();
      insert(phrase.text, area, area.selectionStart - typed[0].length, area.selectionStart);
    });
  });

  var search = document.getElementById("phrase-search");
  var list = document.getElementById("phrase-list");
  var buttons = list ? Array.prototype.slice.call(list.querySelectorAll("button[data-phrase]")) : [];

  buttons.forEach(function (button) {
    // Keep the caret where it was: a mouse press would move the focus first.
    button.addEventListener("mousedown", function (event) { event.preventDefault(); });
    button.addEventListener("click", function () {
      var phrase = byId[button.dataset.phrase];
      if (phrase) { insert(phrase.text); }
    });
  });

  function visible() {
    return buttons.filter(function (button) { return !button.parentNode.hidden; });
  }

  if (search) {
    search.addEventListener("input", function () {
      var query = search.value.trim().toLowerCase();
      buttons.forEach(function (button) {
        var phrase = byId[button.dataset.phrase];
        var text = (phrase.shortcut + " " + phrase.text).toLowerCase();
        button.parentNode.hidden = Boolean(query) && text.indexOf(query) === -1;
      });
    });
    search.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        var first = visible()[0];
        if (first) {
          insert(byId[first.dataset.phrase].text);
          search.value = "";
          search.dispatchEvent(new Event("input"));
        }
      } else if (event.key === "Escape") {
        search.value = "";
        search.dispatchEvent(new Event("input"));
        target.focus();
      }
    });
  }

  document.addEventListener("keydown", function (event) {
    if (!event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.code === "KeyN" && normalButton) {
      event.preventDefault();
      fillNormal();
    } else if (event.code === "KeyP" && search) {
      event.preventDefault();
      search.focus();
    }
  });
})();
