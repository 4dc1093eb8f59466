"""Trains the remote predictor tests' model and writes what the tests
compare against, into DIR:

- model.joblib: a scikit-learn LogisticRegression, 3 classes of 4 features;
- instances.jsonl: 300 instances {"key": k, "x": [4 floats]};
- expected.jsonl: the model's own predictions for them, in process:
  {"key": k, "label": int, "probabilities": [3 floats]}.

    python train.py DIR
"""

import json
import sys

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

directory = sys.argv[1]
rng = np.random.default_rng(7)
centers = np.array([[0, 0, 0, 0], [2, 1, 0, -1], [-1, 2, 1, 1]], dtype=np.float64)
y = rng.integers(0, 3, 600)
x = centers[y] + rng.normal(0, 0.8, (600, 4))
model = LogisticRegression(max_iter=500).fit(x, y)
joblib.dump(model, f"{directory}/model.joblib")

test = np.round(rng.normal(0.5, 1.5, (300, 4)), 3)
labels = model.predict(test)
probabilities = model.predict_proba(test)
with open(f"{directory}/instances.jsonl", "w") as f, open(f"{directory}/expected.jsonl", "w") as g:
    for k, row in enumerate(test):
        f.write(json.dumps({"key": k, "x": row.tolist()}) + "\n")
        g.write(json.dumps({"key": k, "label": int(labels[k]), "probabilities": probabilities[k].tolist()}) + "\n")
