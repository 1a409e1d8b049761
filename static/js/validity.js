// A field the browser refuses before posting (left empty, under its min, not a number) is
// told in the page's language: the browser's own message is in the browser's language
// (an English Chromium wrote "Value must be greater than or equal to 1." on a Chinese page).
// The words are Django's, as the form says them after posting (facilities/templatetags/
// validity.py); a field may name its own with data-invalid.
(function () {
  "use strict";
  const source = document.getElementById("validity-messages");
  if (!source) return;
  const words = JSON.parse(source.textContent);

  function limit(text, value) {
    return text.replace("%(limit_value)s", value);
  }

  function wholeNumbers(field) {
    return !field.step || field.step === "1";
  }

  function message(field) {
    const v = field.validity;
    if (field.dataset.invalid && !v.valueMissing) return field.dataset.invalid;
    if (v.valueMissing) return words.required;
    if (field.type === "number" && (v.badInput || v.stepMismatch)) {
      return wholeNumbers(field) ? words.whole : words.number;
    }
    if (v.rangeUnderflow) return limit(words.min, field.min);
    if (v.rangeOverflow) return limit(words.max, field.max);
    if (v.typeMismatch && field.type === "email") return words.email;
    if (v.badInput && field.type === "date") return words.date;
    return words.invalid;
  }

  document.addEventListener(
    "invalid",
    function (event) {
      const field = event.target;
      if (!field.setCustomValidity) return;
      field.setCustomValidity("");
      if (!field.validity.valid) field.setCustomValidity(message(field));
    },
    true,
  );
  // A message set stays until the field changes: then the browser checks afresh.
  function clear(event) {
    if (event.target.setCustomValidity) event.target.setCustomValidity("");
  }
  document.addEventListener("input", clear, true);
  document.addEventListener("change", clear, true);
})();
