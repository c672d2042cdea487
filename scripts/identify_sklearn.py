#!/usr/bin/env python3
"""Cross-check `plastic identify` against scikit-learn on the same data and the same splits.

Reads DIR/dataset.npz (the data set) and RESULTS/splits.json (what `plastic identify` wrote:
the outer splits, the recording points, the feature sets, the grids and the setting its inner
search chose in each split), refits scikit-learn's RandomForestClassifier and LinearSVC on
every outer split, and prints their mean test accuracy beside the Rust classifiers'. Exits 1
when a mean differs by more than --tolerance percentage points, 2 on bad input (a missing
file, numpy or scikit-learn not importable).

The features are built as `plastic identify` builds them (and as the original's
`cls_dataset_transform`): the selected statistics at the selected points, flattened
observable-major (column = statistic * points + point), the three layer-position columns in
front, never scaled nor reduced; z-scored with the training rows' statistics when the run used
--zscore.

Models, as the original's: RandomForestClassifier(n_estimators, max_features) with
scikit-learn's other defaults; LinearSVC(C, dual=False, tol=1e-4, max_iter=1000) (LIBLINEAR's
primal solver for the problem the Rust side solves: squared hinge, L2, one-vs-rest, penalised
intercept), after a ColumnTransformer that passes the position columns through and reduces the
rest with PCA(n_components) when the setting has one. The Rust SVM solves that problem to
convergence; on raw observables at large C, LinearSVC stops early (its "failed to converge"
warnings are counted below), so the two SVMs agree to the extent that LinearSVC got close.

Forests are random on both sides; their test accuracies differ by a few points from seed to
seed on small test sets, so each split's scikit-learn forest accuracy is the mean of --repeats
forests with different random_state.

Hyper-parameters: by default each split's model uses the setting the Rust inner search chose
for that split, so the comparison is of the classifiers alone. With --inner-cv the script runs
its own search instead: scikit-learn's StratifiedKFold(inner_folds) over the same grid on each
outer training set, the first setting of best mean validation accuracy refit on the whole
outer training set (PCA settings with more components than samples are skipped, as the Rust
side does).

Needs numpy and scikit-learn (nothing is installed here), e.g. in a virtual environment:

    python3 -m venv ~/.cache/plastic-venv
    ~/.cache/plastic-venv/bin/pip install numpy scikit-learn
    target/release/plastic identify --dataset sweeps/tiny --classifiers forest,svm
    ~/.cache/plastic-venv/bin/python scripts/identify_sklearn.py sweeps/tiny
"""

import argparse
import json
import os
import sys
import warnings


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="folder with dataset.npz")
    p.add_argument("--results", help="folder with splits.json (default: the data set's folder, as `plastic identify --out`)")
    p.add_argument("--tolerance", type=float, default=5.0, help="largest allowed |Rust - scikit-learn| mean accuracy, in percentage points (default 5)")
    p.add_argument("--classifiers", default="forest,svm", help="comma-separated: forest, svm (default both)")
    p.add_argument("--inner-cv", action="store_true", help="run scikit-learn's own inner grid search instead of reusing the Rust choices")
    p.add_argument("--seed", type=int, default=0, help="random_state base of the forests")
    p.add_argument("--repeats", type=int, default=3, help="forests fitted per split with different random_state, their accuracies averaged (default 3: halves the sklearn side's share of the random difference between two forests)")
    return p.parse_args()


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main():
    args = parse_args()
    try:
        import numpy as np
        from sklearn.compose import ColumnTransformer
        from sklearn.decomposition import PCA
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import Pipeline
        from sklearn.svm import LinearSVC
    except ImportError as e:
        fail(f"{e}; install numpy and scikit-learn (see this script's docstring)")

    results = args.results or args.dataset
    npz_path = os.path.join(args.dataset, "dataset.npz")
    splits_path = os.path.join(results, "splits.json")
    for path in (npz_path, splits_path):
        if not os.path.isfile(path):
            fail(f"{path}: not found (run `plastic identify --dataset {args.dataset}` first)")
    data = np.load(npz_path)
    with open(splits_path) as f:
        spec = json.load(f)

    X = data["X"]  # [N, P, S], view 0
    X_cat = data["X_cat"]  # [N, 3]
    y = np.asarray(spec["y"])
    points = spec["points"]
    if X.shape[0] != len(y):
        fail(f"{npz_path} has {X.shape[0]} samples, {splits_path} {len(y)}")

    def features(cols):
        sub = X[:, points, :][:, :, cols]  # [N, P', S']
        return sub.transpose(0, 2, 1).reshape(len(y), -1)  # observable-major

    def make_model(name, setting, seed):
        if name == "forest":
            mf = setting["max_features"]
            return RandomForestClassifier(n_estimators=setting["n_estimators"], max_features=None if mf == "all" else mf, random_state=seed)
        svc = LinearSVC(C=setting["C"], dual=False, tol=1e-4, max_iter=1000)
        if setting.get("pca") is None:
            return svc
        pre = ColumnTransformer([("position", "passthrough", [0, 1, 2]), ("pca", PCA(n_components=setting["pca"]), slice(3, None))])
        return Pipeline([("pre", pre), ("svc", svc)])

    def admissible(setting, n_train, n_traj):
        return setting.get("pca") is None or setting["pca"] <= min(n_train, n_traj)

    def fit_score(name, setting, seed, Xtr, ytr, Xte, yte):
        model = make_model(name, setting, seed)
        model.fit(Xtr, ytr)
        return float(np.mean(model.predict(Xte) == yte))

    wanted = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    for c in wanted:
        if c not in ("forest", "svm"):
            fail(f"--classifiers: {c!r} is not forest or svm")
    rows = []
    convergence = 0
    for name in wanted:
        if name not in spec["chosen"]:
            fail(f"{splits_path}: no {name} results (run `plastic identify` with {name} among --classifiers)")
        for set_name, chosen in spec["chosen"][name].items():
            traj = features(spec["feature_sets"][set_name])
            accs = []
            for s, split in enumerate(spec["splits"]):
                tr, te = np.asarray(split["train"]), np.asarray(split["test"])
                t = traj
                if spec["zscore"]:
                    mean = traj[tr].mean(axis=0)
                    sd = np.maximum(traj[tr].std(axis=0), 1e-5)
                    t = (traj - mean) / sd
                full = np.hstack([X_cat, t])
                seed = args.seed + s
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if args.inner_cv:
                        setting = inner_search(name, spec["grids"][name], full[tr], y[tr], spec["inner_folds"], seed, t.shape[1], StratifiedKFold, admissible, fit_score)
                    else:
                        setting = chosen[s]
                    repeats = max(1, args.repeats) if name == "forest" else 1
                    accs.append(float(np.mean([fit_score(name, setting, seed + 1000 * r, full[tr], y[tr], full[te], y[te]) for r in range(repeats)])))
                convergence += sum(1 for w in caught if "converge" in str(w.message).lower())
            rust = spec["test_accuracy"][name][set_name]
            rows.append((name, set_name, 100 * float(np.mean(rust)), 100 * float(np.mean(accs)), 100 * float(np.std(accs))))

    print(f"{'classifier':<10} {'features':<17} {'rust %':>8} {'sklearn %':>10} {'sd':>6} {'diff':>7}")
    worst = 0.0
    for name, set_name, rust, sk, sd in rows:
        diff = rust - sk
        worst = max(worst, abs(diff))
        flag = "" if abs(diff) <= args.tolerance else "  <-- beyond tolerance"
        print(f"{name:<10} {set_name:<17} {rust:8.1f} {sk:10.1f} {sd:6.1f} {diff:+7.1f}{flag}")
    how = "own inner search" if args.inner_cv else "the Rust side's chosen settings"
    print(f"{len(spec['splits'])} outer splits, scikit-learn with {how}; largest |difference| {worst:.1f} points (tolerance {args.tolerance:g})")
    if convergence:
        print(f"note: LinearSVC warned {convergence} times that it did not converge")
    if worst > args.tolerance:
        sys.exit(1)


def inner_search(name, grid, Xtr, ytr, folds, seed, n_traj, StratifiedKFold, admissible, fit_score):
    """The first setting of best mean validation accuracy over StratifiedKFold(folds)."""
    import numpy as np

    splitter = StratifiedKFold(n_splits=folds)
    parts = list(splitter.split(Xtr, ytr))
    smallest = min(len(a) for a, _ in parts)
    best, best_score = None, -1.0
    for setting in grid:
        if not admissible(setting, smallest, n_traj):
            continue
        score = float(np.mean([fit_score(name, setting, seed, Xtr[a], ytr[a], Xtr[b], ytr[b]) for a, b in parts]))
        if score > best_score:
            best, best_score = setting, score
    return best


if __name__ == "__main__":
    main()
