// The viewer and the upload form. The only script of the UI (the CSP
// allows no inline script); it talks to this server only (connect-src
// 'self'): page images, the upload, and a safe PDF's progress.
//
// Viewer: every page starts as an empty <img> of the first page's size
// (width/height from the server's probe), so the document has its full
// height before any page is drawn. A page's image is requested only when
// it comes within one screen of the viewport (IntersectionObserver), at
// the resolution the zoom and the screen need (?dpi=N, which the server
// bounds); zooming in asks again for the pages in view at the new
// resolution, zooming out keeps the sharper image it has.
"use strict";
(function () {
  function ready(f) {
    if (document.readyState !== "loading") f();
    else document.addEventListener("DOMContentLoaded", f);
  }

  var CSS_PX_PER_PT = 96 / 72;
  var ZOOM_STEPS = [0.25, 0.33, 0.5, 0.67, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5];
  var DPI_STEP = 12; // resolutions are asked in steps, so a small zoom change does not redraw

  function clamp(x, lo, hi) { return Math.min(Math.max(x, lo), hi); }

  function viewer(root) {
    var base = root.dataset.base;
    var n = Number(root.dataset.pages);
    var minDPI = Number(root.dataset.minDpi), maxDPI = Number(root.dataset.maxDpi);
    var list = document.getElementById("page-list");
    var thumbs = document.getElementById("thumbs");
    var pagebox = document.getElementById("pagebox");
    var zoomSel = document.getElementById("zoom");
    var zoomCustom = document.getElementById("zoom-custom");
    var imgs = [], figs = [], thumbImgs = [], thumbLinks = [];
    var pages = []; // per page: size in points, what was asked and got
    for (var i = 0; i < n; i++) {
      imgs.push(document.getElementById("page-" + (i + 1)));
      figs.push(document.getElementById("fig-" + (i + 1)));
      pages.push({ w: Number(root.dataset.wpt), h: Number(root.dataset.hpt), sized: false,
        asked: 0, have: 0, drawn: false, failed: false, near: false });
    }
    thumbs.querySelectorAll("a.thumb").forEach(function (a) {
      thumbLinks.push(a);
      thumbImgs.push(a.querySelector("img"));
    });

    var mode = "fit-width", zoom = 1, current = 0;
    var drawn = 0, failed = 0;

    function dpr() { return window.devicePixelRatio || 1; }

    // neededDPI is the resolution that shows a page sharp at the zoom:
    // 96 CSS px per inch times the device pixel ratio, rounded up to a
    // step and kept within the server's bounds.
    function neededDPI() {
      return clamp(Math.ceil(zoom * 96 * dpr() / DPI_STEP) * DPI_STEP, minDPI, maxDPI);
    }

    function widestPt() {
      var w = 0;
      pages.forEach(function (p) { w = Math.max(w, p.w); });
      return w;
    }

    function fitZoom() {
      var availW = list.clientWidth - 32, availH = list.clientHeight - 40;
      var zw = availW / (widestPt() * CSS_PX_PER_PT);
      if (mode === "fit-width") return zw;
      var p = pages[current];
      return Math.min(zw, availH / (p.h * CSS_PX_PER_PT));
    }

    function showZoom() {
      if (mode !== "zoom") {
        zoomSel.value = mode;
        return;
      }
      var v = String(zoom);
      var opt = Array.prototype.find.call(zoomSel.options, function (o) { return o.value === v; });
      if (opt && opt !== zoomCustom) {
        zoomSel.value = v;
      } else {
        zoomCustom.hidden = false;
        zoomCustom.textContent = Math.round(zoom * 100) + "%";
        zoomSel.value = "custom";
      }
    }

    // layout sizes every placeholder for the zoom, keeping the current
    // page where it was on screen.
    function layout() {
      var fig = figs[current];
      var offset = list.scrollTop - fig.offsetTop;
      var before = fig.offsetHeight || 1;
      if (mode !== "zoom") zoom = fitZoom();
      zoom = clamp(zoom, ZOOM_STEPS[0], ZOOM_STEPS[ZOOM_STEPS.length - 1]);
      var s = zoom * CSS_PX_PER_PT;
      for (var i = 0; i < n; i++) {
        imgs[i].width = Math.max(1, Math.round(pages[i].w * s));
        imgs[i].height = Math.max(1, Math.round(pages[i].h * s));
      }
      list.scrollTop = fig.offsetTop + offset * (fig.offsetHeight / before);
      showZoom();
      refresh();
    }

    function setZoom(m, z) {
      mode = m;
      if (m === "zoom") zoom = z;
      layout();
    }

    function step(dir) {
      var z = zoom, next = z;
      if (dir > 0) next = ZOOM_STEPS.find(function (s) { return s > z * 1.01; }) || z;
      else for (var i = ZOOM_STEPS.length - 1; i >= 0; i--) if (ZOOM_STEPS[i] < z / 1.01) { next = ZOOM_STEPS[i]; break; }
      setZoom("zoom", next);
    }

    // load asks for page i at the needed resolution unless it has it.
    function load(i) {
      var p = pages[i], dpi = neededDPI();
      if (p.failed || p.asked >= dpi) return;
      p.asked = dpi;
      imgs[i].src = base + "/page/" + (i + 1) + ".png?dpi=" + dpi;
    }

    // refresh loads the pages near the viewport: after a zoom, those
    // the observer already reported stay near without a new report.
    function refresh() {
      for (var i = 0; i < n; i++) if (pages[i].near) load(i);
    }

    function learnSize(i, w, h, dpi) {
      var p = pages[i];
      if (p.sized || !(w > 0 && h > 0)) return;
      p.sized = true;
      p.w = w * 72 / dpi;
      p.h = h * 72 / dpi;
      var s = zoom * CSS_PX_PER_PT;
      imgs[i].width = Math.max(1, Math.round(p.w * s));
      imgs[i].height = Math.max(1, Math.round(p.h * s));
      thumbImgs[i].height = Math.max(8, Math.round(thumbImgs[i].width * p.h / p.w));
    }

    function status() {
      document.getElementById("progress").textContent = String(drawn);
      document.getElementById("failed-count").textContent = String(failed);
      document.getElementById("failed").hidden = failed === 0;
    }

    imgs.forEach(function (img, i) {
      img.addEventListener("load", function () {
        var p = pages[i];
        p.have = p.asked;
        learnSize(i, img.naturalWidth, img.naturalHeight, p.asked);
        if (!p.drawn) { p.drawn = true; drawn++; status(); }
        figs[i].classList.add("drawn");
      });
      img.addEventListener("error", function () {
        var p = pages[i];
        if (p.failed) return;
        p.failed = true;
        if (p.drawn) { p.drawn = false; drawn--; }
        failed++;
        status();
        var note = document.createElement("p");
        note.className = "err page-err";
        note.textContent = "Page " + (i + 1) + " could not be drawn. ";
        var a = document.createElement("a");
        a.href = img.getAttribute("src");
        a.textContent = "Why?";
        note.appendChild(a);
        img.hidden = true;
        figs[i].classList.add("failed");
        figs[i].insertBefore(note, img);
        thumbLinks[i].classList.add("failed");
      });
    });

    var near = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        var i = Number(e.target.dataset.page) - 1;
        pages[i].near = e.isIntersecting;
        if (e.isIntersecting) load(i);
      });
    }, { root: list, rootMargin: "100% 0px" });
    figs.forEach(function (f) { near.observe(f); });

    // Thumbnails: the lowest resolution that fills their width.
    function thumbDPI(i) {
      var pxPerInch = thumbImgs[i].width * dpr() / (pages[i].w / 72);
      return clamp(Math.ceil(pxPerInch / DPI_STEP) * DPI_STEP, minDPI, maxDPI);
    }
    var thumbNear = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        var i = Number(e.target.dataset.page) - 1;
        var img = thumbImgs[i];
        thumbNear.unobserve(e.target);
        var dpi = thumbDPI(i);
        img.addEventListener("load", function () {
          learnSize(i, img.naturalWidth, img.naturalHeight, dpi);
          thumbLinks[i].classList.add("drawn");
        });
        img.addEventListener("error", function () { thumbLinks[i].classList.add("failed"); });
        img.src = base + "/page/" + (i + 1) + ".png?dpi=" + dpi;
      });
    }, { root: thumbs, rootMargin: "50% 0px" });
    thumbLinks.forEach(function (a) { thumbNear.observe(a); });

    // The current page is the last one whose top is above the middle
    // of the view.
    function findCurrent() {
      var mid = list.scrollTop + list.clientHeight / 2;
      var lo = 0, hi = n - 1;
      while (lo < hi) {
        var m = (lo + hi + 1) >> 1;
        if (figs[m].offsetTop <= mid) lo = m; else hi = m - 1;
      }
      return lo;
    }

    function setCurrent(i) {
      if (i === current && pagebox.value === String(i + 1)) return;
      thumbLinks[current].classList.remove("current");
      current = i;
      thumbLinks[i].classList.add("current");
      thumbLinks[i].setAttribute("aria-current", "page");
      if (document.activeElement !== pagebox) pagebox.value = String(i + 1);
      var t = thumbLinks[i];
      if (t.offsetTop < thumbs.scrollTop || t.offsetTop + t.offsetHeight > thumbs.scrollTop + thumbs.clientHeight) {
        thumbs.scrollTop = t.offsetTop - thumbs.clientHeight / 3;
      }
    }

    var scrollPending = false;
    list.addEventListener("scroll", function () {
      if (scrollPending) return;
      scrollPending = true;
      requestAnimationFrame(function () {
        scrollPending = false;
        setCurrent(findCurrent());
      });
    });

    function goTo(i) {
      i = clamp(i, 0, n - 1);
      list.scrollTop = figs[i].offsetTop - 8;
      setCurrent(i);
    }

    pagebox.addEventListener("change", function () {
      var v = parseInt(pagebox.value, 10);
      if (isFinite(v)) goTo(v - 1);
      pagebox.value = String(current + 1);
    });
    pagebox.addEventListener("keydown", function (e) {
      if (e.key === "Enter") {
        var v = parseInt(pagebox.value, 10);
        if (isFinite(v)) goTo(v - 1);
        list.focus();
        e.preventDefault();
      }
    });
    document.getElementById("prev").addEventListener("click", function () { goTo(current - 1); });
    document.getElementById("next").addEventListener("click", function () { goTo(current + 1); });
    document.getElementById("zoom-in").addEventListener("click", function () { step(1); });
    document.getElementById("zoom-out").addEventListener("click", function () { step(-1); });
    zoomSel.addEventListener("change", function () {
      var v = zoomSel.value;
      if (v === "fit-width" || v === "fit-page") setZoom(v);
      else if (v !== "custom") setZoom("zoom", Number(v));
    });
    thumbLinks.forEach(function (a, i) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        goTo(i);
      });
    });

    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
      switch (e.key) {
        case "ArrowRight": case "j": case "n": goTo(current + 1); break;
        case "ArrowLeft": case "k": case "p": goTo(current - 1); break;
        case "Home": goTo(0); break;
        case "End": goTo(n - 1); break;
        case "+": case "=": step(1); break;
        case "-": step(-1); break;
        case "w": setZoom("fit-width"); break;
        case "f": setZoom("fit-page"); break;
        case "g": pagebox.focus(); pagebox.select(); break;
        default: return;
      }
      e.preventDefault();
    });

    var resizePending = false;
    window.addEventListener("resize", function () {
      if (mode === "zoom" || resizePending) return;
      resizePending = true;
      requestAnimationFrame(function () { resizePending = false; layout(); });
    });

    safeDownload(base);
    setCurrent(0);
    layout();
  }

  // safeDownload shows a safe PDF's conversion progress while the
  // browser downloads it (the link works without script too).
  function safeDownload(base) {
    var link = document.getElementById("download");
    var out = document.getElementById("safe-status");
    var timer = 0;
    link.addEventListener("click", function () {
      if (timer) return;
      var seen = false, idle = 0;
      out.className = "";
      out.textContent = " · safe PDF: starting";
      timer = setInterval(function () {
        fetch(base + "/safe.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (p) {
          switch (p.state) {
            case "queued": seen = true; out.textContent = " · safe PDF: waiting for a turn"; return;
            case "converting": seen = true; out.textContent = " · safe PDF: page " + p.done + " of " + p.total; return;
            case "done": out.textContent = " · safe PDF: " + p.total + (p.total === 1 ? " page" : " pages") + ", downloading"; break;
            case "failed": out.className = "err-text"; out.textContent = " · safe PDF failed: " + p.error; break;
            default:
              if (!seen && ++idle < 10) return;
              if (seen) out.textContent = " · safe PDF downloaded";
          }
          clearInterval(timer);
          timer = 0;
        }).catch(function () { clearInterval(timer); timer = 0; });
      }, 400);
    });
  }

  // uploader sends the chosen or dropped file with progress, then opens
  // its viewer. Without script the form posts and the server redirects.
  function uploader(form) {
    var input = document.getElementById("file");
    var bar = document.getElementById("upload-progress");
    var out = document.getElementById("upload-status");
    var max = Number(form.dataset.max);
    var busy = false;

    function say(text, isErr) {
      out.textContent = text;
      out.className = isErr ? "err" : "note";
    }

    function send(file) {
      if (!file || busy) return;
      if (file.size > max) {
        say(file.name + " is too large: the limit is " + Math.floor(max / 1048576) + " MiB.", true);
        return;
      }
      busy = true;
      var fd = new FormData();
      fd.append("file", file, file.name);
      var x = new XMLHttpRequest();
      x.open("POST", "/upload");
      x.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      bar.value = 0;
      say("Uploading " + file.name + "…");
      x.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total);
      });
      x.addEventListener("load", function () {
        busy = false;
        if (x.status === 201) {
          bar.value = 100;
          say("Opening " + file.name + " in a sandbox…");
          var url = JSON.parse(x.responseText).url;
          if (typeof url === "string" && url.indexOf("/u/") === 0) window.location.assign(url);
          return;
        }
        bar.hidden = true;
        say("Upload refused: " + x.responseText.trim(), true);
      });
      x.addEventListener("error", function () {
        busy = false;
        bar.hidden = true;
        say("Upload failed: the connection broke.", true);
      });
      x.send(fd);
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      send(input.files[0]);
    });
    input.addEventListener("change", function () { send(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (t) {
      form.addEventListener(t, function (e) {
        e.preventDefault();
        form.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (t) {
      form.addEventListener(t, function () { form.classList.remove("over"); });
    });
    form.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
    });
  }

  // Last: a deferred script runs once the document is parsed, so ready
  // calls at once, and every constant above must be set by then.
  ready(function () {
    var v = document.getElementById("viewer");
    if (v) viewer(v);
    var f = document.getElementById("upload-form");
    if (f) uploader(f);
  });
})();
