// Display equations are broken over lines where they would not fit the text column (MathJax 4's
// line breaking, `displayOverflow: "linebreak"` in conf.py). MathJax measures the column once, when
// it typesets the page; when the column's width changes later (a window resized, a phone turned),
// this lays the equations out again for the new width.
//
// The column does not take its new width at once: when a window widens past the theme's breakpoint,
// the sidebars come in over about a tenth of a second and the column narrows behind them (measured:
// 1625, 699, 678, then 676 pixels for a window of 1280). A layout measured in between breaks the
// equations for a column that is gone, so a layout counts as done only if the column kept its width
// while it ran; otherwise the equations are laid out again. A change during a layout is caught up
// with when the layout ends, so that a window dragged wider or narrower costs one layout at a time.
// `<html data-math-width>` holds the window width that the equations were last laid out for (the
// browser test waits on it); it is absent while a layout runs.
(function () {
  "use strict";
  let laidOut = { window: null, column: null };
  let running = false;

  // The width that MathJax breaks the display equations for: their container's (div.math, a block
  // as wide as the text column).
  function column() {
    const math = document.querySelector("div.math");
    return math ? Math.round(math.getBoundingClientRect().width) : null;
  }

  function done(width, columnWidth) {
    laidOut = { window: width, column: columnWidth };
    document.documentElement.dataset.mathWidth = String(width);
  }

  function relayout() {
    const width = window.innerWidth;
    const before = column();
    if (running || (width === laidOut.window && before === laidOut.column)) return;
    if (before === laidOut.column) {  // the window changed, the column did not: nothing to break again
      done(width, before);
      return;
    }
    running = true;
    delete document.documentElement.dataset.mathWidth;
    const metrics = (MathJax._ && MathJax._.core.MathItem.STATE.METRICS) || 110;
    MathJax.startup.document.rerenderPromise(metrics).then(
      () => {
        running = false;
        if (column() === before) done(width, before);
        relayout();  // the window or the column changed while the equations were laid out
      },
      (error) => { running = false; console.error("MathJax could not lay the equations out again:", error); },
    );
  }

  function start() {
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      setTimeout(start, 50);
      return;
    }
    MathJax.startup.promise.then(() => {
      done(window.innerWidth, column());
      window.addEventListener("resize", relayout);
      const math = document.querySelector("div.math");
      if (math && window.ResizeObserver) new ResizeObserver(relayout).observe(math);
      relayout();  // the window may have changed while MathJax typeset the page
    });
  }

  function ready() {
    if (document.querySelector(".math")) start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
