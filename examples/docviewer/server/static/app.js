// Counts pages as they arrive and replaces a page that failed to render with
// a note linking to the error text. No network access of its own (the CSP
// has no connect-src); the browser fetches the <img> sources in parallel.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var progress = document.getElementById("progress");
  var done = 0;
  function tick() {
    done++;
    if (progress) progress.textContent = String(done);
  }
  document.querySelectorAll("img.page").forEach(function (img) {
    function failed() {
      var p = document.createElement("p");
      p.className = "err";
      p.textContent = img.alt + " could not be rendered. ";
      var a = document.createElement("a");
      a.href = img.getAttribute("src");
      a.textContent = "Why?";
      p.appendChild(a);
      img.replaceWith(p);
      tick();
    }
    if (img.complete) {
      if (img.naturalWidth > 0) tick(); else if (img.getAttribute("loading") !== "lazy") failed();
    }
    img.addEventListener("load", tick);
    img.addEventListener("error", failed);
  });
});
