// Date fields in the page's language: a calendar (flatpickr) on every input marked
// data-datepicker ("date", or "datetime" with the time of day), not the browser's own date
// input, which speaks the browser's locale whatever the page's. Without the script the
// field still takes a date typed as YYYY-MM-DD (HH:MM). Pages load it with _dates.html.
(function () {
  "use strict";

  function pickDates() {
    if (typeof flatpickr === "undefined") {
      return;
    }
    var chinese = (document.documentElement.lang || "zh-hans").indexOf("zh") === 0;
    document.querySelectorAll("input[data-datepicker]").forEach(function (input) {
      var withTime = input.dataset.datepicker === "datetime";
      var complete = withTime ? /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$/ : /^\d{4}-\d{2}-\d{2}$/;
      var picker = flatpickr(input, {
        dateFormat: withTime ? "Y-m-d H:i" : "Y-m-d",
        enableTime: withTime,
        time_24hr: true,
        allowInput: true,
        locale: chinese ? "zh" : "default",
      });
      // A date typed in full is taken and the calendar closed, so that it no longer covers
      // what is below the field (the form's button).
      var taking = false;
      input.addEventListener("input", function () {
        if (taking || !picker.isOpen || !complete.test(input.value.trim())) {
          return;
        }
        taking = true; // setDate writes the field again, which is another input event
        picker.setDate(input.value.trim(), false);
        picker.close();
        taking = false;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", pickDates);
})();
