// The header's account menu (a <details>, usable without this file): closed by a click
// outside it, by Escape, and when the page is left, as a menu is expected to close.
(function () {
  "use strict";
  const menu = document.querySelector(".account-menu");
  if (!menu) return;
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  window.addEventListener("pagehide", () => {
    menu.open = false;
  });
})();
