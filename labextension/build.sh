#!/usr/bin/env bash
# Builds the JupyterLab 4 / Notebook 7 extension that highlights %%mlsql cells as SQL into
# mlnb/labextension/ (committed; pyproject's data-files install it into
# <prefix>/share/jupyter/labextensions/mlnb-sql, so users need no Node). Needs node, npm and a
# Python with jupyterlab (its staging/package.json lists the packages JupyterLab shares).
# The built package.json records a hash of the sources; tests/magics/test_labextension.py fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
npm ci --no-audit --no-fund --silent
"$PY" keywords.py  # src/keywords.js: DuckDB's keywords and mlnb's statement words
core=$("$PY" -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')
rm -rf ../mlnb/labextension
node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$core" .
hash=$(cat src/index.js src/keywords.js package.json package-lock.json | sha256sum | cut -c1-16)
node -e '
const fs = require("fs"); const f = "../mlnb/labextension/package.json";
const p = JSON.parse(fs.readFileSync(f)); p.mlnbSourceHash = process.argv[1];
fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' "$hash"
# The labextension's own folder under the venv, for a checkout installed with pip install -e.
if [ -d "../.venv/share/jupyter" ]; then
  rm -rf ../.venv/share/jupyter/labextensions/mlnb-sql
  mkdir -p ../.venv/share/jupyter/labextensions
  cp -r ../mlnb/labextension ../.venv/share/jupyter/labextensions/mlnb-sql
fi
