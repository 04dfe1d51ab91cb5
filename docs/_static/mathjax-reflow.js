// Display equations are broken over lines where they would not fit the text column (MathJax 4's
// line breaking, `displayOverflow: "linebreak"` in conf.py). MathJax measures the column once, when
// it typesets the page; when the window's width changes later (a window resized, a phone turned),
// this lays the equations out again for the new width. A resize during a layout is caught up with
// when the layout ends, so that a window dragged wider or narrower costs one layout at a time.
// `<html data-math-width>` holds the window width that the equations were last laid out for (the
// browser test waits on it).
(function () {
  "use strict";
  let laidOut = null;
  let running = false;

  function done(width) {
    laidOut = width;
    document.documentElement.dataset.mathWidth = String(width);
  }

  function relayout() {
    const width = window.innerWidth;
    if (running || width === laidOut) return;
    running = true;
    const metrics = (MathJax._ && MathJax._.core.MathItem.STATE.METRICS) || 110;
    MathJax.startup.document.rerenderPromise(metrics).then(
      () => { running = false; done(width); relayout(); },
      (error) => { running = false; console.error("MathJax could not lay the equations out again:", error); },
    );
  }

  function start() {
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      setTimeout(start, 50);
      return;
    }
    MathJax.startup.promise.then(() => {
      done(window.innerWidth);
      window.addEventListener("resize", relayout);
      relayout();  // the window may have changed while MathJax typeset the page
    });
  }

  function ready() {
    if (document.querySelector(".math")) start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
