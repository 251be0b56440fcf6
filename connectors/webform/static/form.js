/* Optional: when framed by embed.js, report the page height to the parent. The form works
   without this script. */
(function () {
  "use strict";
  if (window.parent === window) return;
  function report() {
    window.parent.postMessage({ intakeFormHeight: document.documentElement.scrollHeight }, "*");
  }
  window.addEventListener("load", report);
  window.addEventListener("resize", report);
})();
