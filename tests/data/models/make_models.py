"""Makes the model-family test models and their oracle: each model trained by
its own library, converted to ONNX by the converter its users run, and the
outputs the original library computes (`predict`, `predict_proba`, Keras
`predict`) for a few instances. The tests run the committed files through
whole jobs and compare (tests/integration/models.rs), so CI needs no Python
ML stack. Run with these versions (a fresh virtual environment):

    python3 -m venv target/models-venv
    target/models-venv/bin/pip install scikit-learn==1.9.1 skl2onnx==1.20.0 \
        xgboost==3.2.0 lightgbm==4.7.0 onnxmltools==1.16.0 onnxruntime==1.32.0 \
        onnx==1.23.2 numpy==2.4.6 pandas==3.1.1 tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    target/models-venv/bin/python tests/data/models/make_models.py

Writes, next to this script, NAME.onnx for each model, future_opset.onnx
(a model no runtime accepts) and expected.json:

    {"NAME": {"family": "...", "instances": [{...}], "expected": [{OUTPUT: value}],
              "exact": [OUTPUT, ...]}, ...}

`expected` holds each instance's outputs as a user expects them in JSON: a
label as the library's class (int or string), probabilities as an array in
class order, or, for a model converted with a ZipMap, an object
{label: probability}; a regression value as a number. Outputs in `exact`
compare exactly, the rest within 1e-5. Before writing, the script checks
that onnxruntime agrees with the library on every instance, so a converter
bug is found here, not in the Rust tests.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIES = np.array(["setosa", "versicolor", "virginica"])
N_TEST = 12
TOLERANCE = 1e-5

MODELS = {}


def data(n_classes, seed=0, n=400):
    """float32 features (as ONNX computes) and labels; the last N_TEST rows are held out."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n, n_features=4, n_informative=3, n_redundant=0,
        n_classes=n_classes, n_clusters_per_class=1, random_state=seed,
    )
    x = x.astype(np.float32)
    return x[:-N_TEST], y[:-N_TEST], x[-N_TEST:]


def regression_data(seed=0, n=400):
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=n, n_features=4, n_informative=4, noise=5.0, random_state=seed)
    x = x.astype(np.float32)
    return x[:-N_TEST], y[:-N_TEST], x[-N_TEST:]


def features(x):
    return [{"features": [float(v) for v in row]} for row in x]


def labels_json(labels):
    return [v.item() if hasattr(v, "item") else v for v in labels]


def zipmap_json(classes, proba):
    return [{str(c.item() if hasattr(c, "item") else c): float(p) for c, p in zip(classes, row)} for row in proba]


def close(a, b, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.all(np.abs(a - b) <= TOLERANCE * np.maximum(np.abs(b), 1.0)):
        sys.exit(f"{what}: onnxruntime {a} vs the library's {b}")


def check_and_save(name, family, onx, feeds, instances, expected, exact):
    """Runs the ONNX model on onnxruntime against `expected`, then records it."""
    data = onx.SerializeToString()
    with open(os.path.join(HERE, name + ".onnx"), "wb") as f:
        f.write(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feeds)))
    for i, want in enumerate(expected):
        for output, value in want.items():
            g = got[output][i]
            if isinstance(value, dict):
                by_key = {str(k): v for k, v in g.items()}
                if set(by_key) != set(value):
                    sys.exit(f"{name} {output} {i}: onnxruntime's classes {sorted(by_key)} vs {sorted(value)}")
                close([by_key[k] for k in value], list(value.values()), f"{name} {output} {i}")
            elif output in exact:
                g = g.item() if hasattr(g, "item") else g
                g = g[0] if isinstance(g, (list, np.ndarray)) and len(g) == 1 else g
                g = g.item() if hasattr(g, "item") else g
                if g != value:
                    sys.exit(f"{name} {output} {i}: onnxruntime {g!r} vs the library's {value!r}")
            else:
                close(np.ravel(g), np.ravel(value), f"{name} {output} {i}")
    MODELS[name] = {"family": family, "instances": instances, "expected": expected, "exact": exact}


def classifier_case(name, family, model, x_test, onx, zipmap, string_labels=False):
    proba = model.predict_proba(x_test)
    labels = labels_json(model.predict(x_test))
    classes = model.classes_
    probabilities = zipmap_json(classes, proba) if zipmap else proba.tolist()
    label, probability = (o.name for o in onx.graph.output)  # the converter's names
    expected = [{label: l, probability: p} for l, p in zip(labels, probabilities)]
    check_and_save(name, family, onx, {"features": x_test}, features(x_test), expected, [label])


def regressor_case(name, family, model, x_test, onx):
    (output,) = (o.name for o in onx.graph.output)
    values = model.predict(x_test).astype(np.float64).ravel().tolist()
    expected = [{output: v} for v in values]
    check_and_save(name, family, onx, {"features": x_test}, features(x_test), expected, [])


def sklearn_models():
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor,
                                  RandomForestClassifier, RandomForestRegressor)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    inputs = [("features", FloatTensorType([None, 4]))]

    def convert(model, zipmap=True):
        options = {id(model): {"zipmap": False}} if not zipmap else None
        return to_onnx(model, initial_types=inputs, target_opset={"": 17, "ai.onnx.ml": 3}, options=options)

    x, y, t = data(2)
    m = LogisticRegression().fit(x, y)
    classifier_case("sklearn_logistic_binary", "scikit-learn LogisticRegression (binary, ZipMap)", m, t, convert(m), zipmap=True)

    x, y, t = data(3, seed=1)
    m = LogisticRegression(max_iter=500).fit(x, SPECIES[y])
    classifier_case("sklearn_logistic_multiclass", "scikit-learn LogisticRegression (multiclass, string labels)", m, t, convert(m, zipmap=False), zipmap=False)

    m = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(x, y)
    classifier_case("sklearn_random_forest_classifier", "scikit-learn RandomForestClassifier", m, t, convert(m, zipmap=False), zipmap=False)

    x, y, t = data(2, seed=2)
    m = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    classifier_case("sklearn_gradient_boosting_binary", "scikit-learn GradientBoostingClassifier (binary, ZipMap)", m, t, convert(m), zipmap=True)

    x, y, t = data(3, seed=3)
    m = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, SPECIES[y])
    classifier_case("sklearn_gradient_boosting_multiclass", "scikit-learn GradientBoostingClassifier (multiclass, string labels, ZipMap)", m, t, convert(m), zipmap=True)

    x, y, t = regression_data()
    m = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(x, y)
    regressor_case("sklearn_random_forest_regressor", "scikit-learn RandomForestRegressor", m, t, convert(m))

    m = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0).fit(x, y)
    regressor_case("sklearn_gradient_boosting_regressor", "scikit-learn GradientBoostingRegressor", m, t, convert(m))

    x, y, t = data(3, seed=4)
    x, t = x * 10 + 3, t * 10 + 3
    m = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=500))]).fit(x, y)
    classifier_case("sklearn_pipeline_scaler", "scikit-learn Pipeline(StandardScaler, LogisticRegression)", m, t, convert(m, zipmap=False), zipmap=False)

    # A string column one-hot encoded, two number columns with gaps imputed.
    rng = np.random.default_rng(5)
    n = 300
    frame = pd.DataFrame({
        "color": rng.choice(["red", "green", "blue"], n),
        "size": rng.normal(5, 2, n).astype(np.float32),
        "weight": rng.normal(1, 0.5, n).astype(np.float32),
    })
    target = ((frame.color == "red") ^ (frame["size"] > 5)).astype(np.int64).to_numpy()
    frame.loc[rng.choice(n, 30, replace=False), "size"] = np.nan
    test = pd.DataFrame({
        "color": ["red", "green", "blue", "red", "purple", "green", "blue", "red"],
        "size": np.array([6.5, np.nan, 3.0, 2.5, 5.5, 7.0, np.nan, 4.0], dtype=np.float32),
        "weight": np.array([1.0, 0.5, 1.5, 0.2, 1.1, 0.9, 1.3, 0.7], dtype=np.float32),
    })
    m = Pipeline([
        ("columns", ColumnTransformer([
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("impute", SimpleImputer(strategy="mean"), ["size", "weight"]),
        ])),
        ("classify", LogisticRegression()),
    ]).fit(frame, target)
    onx = to_onnx(
        m,
        initial_types=[("color", StringTensorType([None, 1])), ("size", FloatTensorType([None, 1])), ("weight", FloatTensorType([None, 1]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={id(m): {"zipmap": False}},
    )
    proba = m.predict_proba(test)
    labels = labels_json(m.predict(test))
    label, probability = (o.name for o in onx.graph.output)
    expected = [{label: l, probability: p} for l, p in zip(labels, proba.tolist())]
    instances = [
        {"color": c, "size": None if np.isnan(s) else float(s), "weight": float(w)}
        for c, s, w in zip(test.color, test["size"], test.weight)
    ]
    feeds = {
        "color": test.color.to_numpy().reshape(-1, 1),
        "size": test["size"].to_numpy().reshape(-1, 1),
        "weight": test.weight.to_numpy().reshape(-1, 1),
    }
    check_and_save("sklearn_column_transformer", "scikit-learn ColumnTransformer(OneHotEncoder on a string column, SimpleImputer)", onx, feeds, instances, expected, [label])


def boosted_models():
    import lightgbm
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    inputs = [("features", FloatTensorType([None, 4]))]

    x, y, t = data(2, seed=6)
    m = xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    classifier_case("xgboost_binary", "XGBoost XGBClassifier (binary)", m, t, onnxmltools.convert_xgboost(m, initial_types=inputs, target_opset=15), zipmap=False)
    x, y, t = data(3, seed=7)
    m = xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    classifier_case("xgboost_multiclass", "XGBoost XGBClassifier (multiclass)", m, t, onnxmltools.convert_xgboost(m, initial_types=inputs, target_opset=15), zipmap=False)
    x, y, t = regression_data(seed=8)
    m = xgboost.XGBRegressor(n_estimators=40, max_depth=4, random_state=0).fit(x, y)
    regressor_case("xgboost_regressor", "XGBoost XGBRegressor", m, t, onnxmltools.convert_xgboost(m, initial_types=inputs, target_opset=15))

    x, y, t = data(2, seed=9)
    m = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, random_state=0, verbose=-1).fit(x, y)
    classifier_case("lightgbm_binary", "LightGBM LGBMClassifier (binary)", m, t, onnxmltools.convert_lightgbm(m, initial_types=inputs, target_opset=15, zipmap=False), zipmap=False)
    x, y, t = data(3, seed=10)
    m = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, random_state=0, verbose=-1).fit(x, y)
    classifier_case("lightgbm_multiclass", "LightGBM LGBMClassifier (multiclass, ZipMap)", m, t, onnxmltools.convert_lightgbm(m, initial_types=inputs, target_opset=15, zipmap=True), zipmap=True)
    x, y, t = regression_data(seed=11)
    m = lightgbm.LGBMRegressor(n_estimators=40, num_leaves=8, random_state=0, verbose=-1).fit(x, y)
    regressor_case("lightgbm_regressor", "LightGBM LGBMRegressor", m, t, onnxmltools.convert_lightgbm(m, initial_types=inputs, target_opset=15))


def keras_model():
    """A small Keras model, saved as a SavedModel and converted with tf2onnx's
    command line, the route the README gives TensorFlow users."""
    import onnx
    import tensorflow as tf

    tf.keras.utils.set_random_seed(12)
    x, y, t = data(3, seed=12)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(4,), name="features"),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(3, activation="softmax", name="probabilities"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)
    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model")
        out = os.path.join(saved, "model.onnx")
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--output", out, "--opset", "17"], check=True, capture_output=True)
        onx = onnx.load(out)
    # The SavedModel's signature names the input and output; read them from the file.
    input_name = onx.graph.input[0].name
    output_name = onx.graph.output[0].name
    proba = model.predict(t, verbose=0)
    expected = [{output_name: p} for p in proba.astype(np.float64).tolist()]
    instances = [{input_name: [float(v) for v in row]} for row in t]
    check_and_save("keras_mlp", "Keras Sequential MLP (SavedModel, tf2onnx)", onx, {input_name: t}, instances, expected, [])


def future_opset():
    """future_opset.onnx: a valid graph importing opset 99 of the standard
    domain, newer than any runtime supports (not in expected.json: the
    tests expect every runtime to refuse it)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("same", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["same"])], "future", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)], producer_name="batch-prediction")
    model.ir_version = 8
    onnx.save(model, os.path.join(HERE, "future_opset.onnx"))


def main():
    only = set(sys.argv[1:])
    for make in (sklearn_models, boosted_models, keras_model, future_opset):
        if not only or make.__name__ in only:
            make()
    path = os.path.join(HERE, "expected.json")
    if only and os.path.exists(path):
        with open(path) as f:
            MODELS.update({k: v for k, v in json.load(f).items() if k not in MODELS})
    with open(path, "w") as f:
        json.dump(dict(sorted(MODELS.items())), f, indent=1)
        f.write("\n")
    print(f"wrote {len(MODELS)} models to {HERE}")


if __name__ == "__main__":
    main()
