// Patches regl-scatterplot's ESM build for the explorer (run by js/build.sh before bundling).
// Each replacement must match exactly once, so a version bump that moves the code fails the
// build instead of shipping an unpatched library.
//
// 1. `ownHover`: the library hit-tests on every mouse move and redraws all points to highlight
//    the hovered one. At a million points a software-GL redraw takes ~300 ms, so the explorer
//    hit-tests in its own grid index and draws the ring in SVG: no WebGL redraw on hover.
// 2. `deferRender(isViewChanged)` / `onRendered(ms)`: while the user drags or wheels and a
//    redraw is slow, the explorer moves the last frame with a CSS transform and asks for one
//    real redraw when the gesture ends (as map viewers do), instead of queueing slow redraws.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [src, out] = process.argv.slice(2);
let code = readFileSync(src, "utf8");

function replaceOnce(anchor, replacement) {
  const first = code.indexOf(anchor);
  if (first < 0 || code.indexOf(anchor, first + 1) >= 0) {
    throw new Error(`regl-scatterplot patch: anchor found ${first < 0 ? "nowhere" : "more than once"}:\n${anchor}`);
  }
  code = code.slice(0, first) + replacement + code.slice(first + anchor.length);
}

replaceOnce(
  "      hover(raycast()); // eslint-disable-line no-use-before-define",
  "      if (!initialProperties.ownHover) hover(raycast()); // mlnb patch",
);
replaceOnce(
  "    renderer.render(() => {\n      const widthRatio = canvas.width / renderer.canvas.width;",
  `    if (initialProperties.deferRender?.(isViewChanged)) { // mlnb patch
      if (isViewChanged) {
        updateScales();
        pubSub.publish('view', { view: camera.view, isViewChanged, camera, xScale, yScale });
      }
      draw = false;
      drawReticleOnce = false;
      return;
    }
    const mlnbRenderStart = performance.now();
    renderer.render(() => {
      const widthRatio = canvas.width / renderer.canvas.width;`,
);
replaceOnce(
  "    }, canvas);\n\n    const renderView = {",
  "    }, canvas);\n    initialProperties.onRendered?.(performance.now() - mlnbRenderStart); // mlnb patch\n\n    const renderView = {",
);

mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, code);
