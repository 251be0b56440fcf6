/* Inserts the form as an iframe into the element named by data-target, or after this script. */
(function () {
  "use strict";
  var script = document.currentScript;
  var frame = document.createElement("iframe");
  frame.src = {{ src|safe }};
  frame.title = {{ title|safe }};
  frame.loading = "lazy";
  frame.style.cssText = "display:block;width:100%;max-width:40rem;min-height:48rem;border:0";
  var targetId = script && script.getAttribute("data-target");
  var target = targetId && document.getElementById(targetId);
  if (target) {
    target.appendChild(frame);
  } else if (script && script.parentNode) {
    script.parentNode.insertBefore(frame, script.nextSibling);
  }
  // The form page reports its height so the frame grows and shrinks with it (no scrollbar).
  window.addEventListener("message", function (event) {
    if (event.origin !== {{ origin|safe }} || event.source !== frame.contentWindow) return;
    var height = event.data && event.data.intakeFormHeight;
    if (typeof height === "number" && height > 0) {
      frame.style.minHeight = "0";
      frame.style.height = Math.ceil(height) + "px";
    }
  });
})();
