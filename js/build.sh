#!/usr/bin/env bash
# Builds the widgets' bundled JavaScript into mlnb/widgets/ (the built files are committed and ship in
# the wheel, so users need no Node). Needs node and npm; run as `bash dev js`.
# The banner records a hash of the sources; tests/widgets/test_bundle.py fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
# regl-scatterplot, patched (see patches/regl-scatterplot.mjs): the bundle takes this copy.
node patches/regl-scatterplot.mjs node_modules/regl-scatterplot/dist/regl-scatterplot.esm.js \
  node_modules/.mlnb-patched/regl-scatterplot.esm.js
for name in explorer; do
  hash=$(cat "src/$name.js" package-lock.json patches/regl-scatterplot.mjs | sha256sum | cut -c1-16)
  ./node_modules/.bin/esbuild "src/$name.js" --bundle --format=esm --minify --target=es2020 \
    --alias:regl-scatterplot=./node_modules/.mlnb-patched/regl-scatterplot.esm.js \
    --legal-comments=eof --log-level=warning \
    --banner:js="// Built by js/build.sh from js/src/$name.js (source hash $hash). Do not edit: edit the source and rebuild." \
    --outfile="../mlnb/widgets/$name.js"
done
