#!/usr/bin/env python3
"""Cross-checks `plastic neural-fit` against scikit-learn on the same features and folds.

    neural_sklearn.py stimuli OUT             # writes OUT/stimuli.npz (digits as images)
    neural_sklearn.py responses OUT ARRAY     # from OUT/features.npz: OUT/responses.npz
    neural_sklearn.py responses OUT V4=conv2.t04,IT=conv3.t06   # a source array per region
    neural_sklearn.py compare OUT FITDIR ridge|pls [--tolerance 0.01]

`compare` refits every layer × step of OUT/features.npz on the folds that plastic used
(FITDIR/neural_fit.json): PCA to plastic's number of components (its --pca) fitted on the
training fold when a layer is wider than that (Brain-Score's reduction, 1000 by default), then `RidgeCV(alphas, alpha_per_target=True)`
with plastic's penalty grid or `PLSRegression(25, scale=False)`; Pearson r per neuroid on the
held-out stimuli, averaged over folds, the median over each region's neuroids. It fails when a
raw score differs from plastic's by more than the tolerance, or a ceiling by more than 0.03.
Needs numpy and scikit-learn; installs nothing.
"""
import json
import sys

import numpy as np
from sklearn.cross_decomposition import PLSRegression
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV


def stimuli(out, n=150):
    digits = load_digits()
    images = (digits.images[:n] * 255.0 / 16.0).round().astype(np.uint8)
    ids = np.array([f"d{i:03d}" for i in range(n)])
    np.savez(f"{out}/stimuli.npz", images=images, stimulus_id=ids)


def responses(out, sources, reps=4, sigma2=0.4, per_region=10):
    """Synthetic recordings: for each `REGION=ARRAY` of `sources` (or one ARRAY, split into V4
    and IT), `per_region` neuroids that are a random linear map of that feature array,
    standardised to unit variance, plus repetition noise of variance `sigma2`."""
    f = np.load(f"{out}/features.npz")
    rng = np.random.default_rng(5)
    pairs = [p.split("=", 1) for p in sources.split(",")] if "=" in sources else [["V4", sources], ["IT", sources]]
    signal, region = [], []
    for name, array in pairs:
        x = f[array].astype(np.float64)
        s = x @ rng.standard_normal((x.shape[1], per_region))
        signal.append((s - s.mean(0)) / s.std(0))
        region += [name] * per_region
    signal = np.concatenate(signal, axis=1)
    noisy = signal[None] + np.sqrt(sigma2) * rng.standard_normal((reps,) + signal.shape)
    np.savez(f"{out}/responses.npz", responses=noisy, stimulus_id=f["stimulus_id"], region=np.array(region))


def pearson_columns(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def compare(out, fit_dir, method, tolerance):
    f = np.load(f"{out}/features.npz")
    r = np.load(f"{out}/responses.npz")
    report = json.load(open(f"{fit_dir}/neural_fit.json"))["report"]
    ids = list(f["stimulus_id"])
    rows = [ids.index(s) for s in r["stimulus_id"]]
    y = r["responses"].mean(0)  # [stimuli, neuroids]
    regions = list(r["region"])
    folds = report["folds"]
    max_components = report["options"]["pca_components"]
    n = len(rows)
    worst = 0.0
    for name in f["arrays"]:
        layer, step = name.rsplit(".t", 1)
        x = f[name].astype(np.float64)[rows]
        per_fold = []
        for held in folds:
            train = np.setdiff1d(np.arange(n), held)
            xtr, xte = x[train], x[held]
            if x.shape[1] > max_components:
                pca = PCA(n_components=min(max_components, len(train)), svd_solver="full").fit(xtr)
                xtr, xte = pca.transform(xtr), pca.transform(xte)
            if np.allclose(xtr.std(0), 0):
                per_fold.append(np.full(y.shape[1], np.nan))
                continue
            if method == "ridge":
                trace = ((xtr - xtr.mean(0)) ** 2).sum()
                alphas = trace * 10.0 ** (np.arange(-12, 3) / 2.0)
                model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(xtr, y[train])
            else:
                model = PLSRegression(n_components=min(25, xtr.shape[1]), scale=False).fit(xtr, y[train])
            per_fold.append(pearson_columns(model.predict(xte), y[held]))
        mean_r = np.nanmean(np.array(per_fold), axis=0) if not np.all(np.isnan(per_fold)) else np.full(y.shape[1], np.nan)
        for region in dict.fromkeys(regions):
            members = [j for j, g in enumerate(regions) if g == region]
            ours = [s for s in report["scores"] if s["layer"] == layer and s["step"] == int(step) and s["region"] == region][0]
            theirs = np.nanmedian(mean_r[members]) if not np.all(np.isnan(mean_r[members])) else None
            if theirs is None or ours["raw"] is None:
                if (theirs is None) != (ours["raw"] is None):
                    sys.exit(f"neural_sklearn: {name} {region}: plastic {ours['raw']}, scikit-learn {theirs}")
                continue
            diff = abs(ours["raw"] - theirs)
            worst = max(worst, diff)
            print(f"{method:5s} {name:14s} {region:3s} plastic {ours['raw']:+.4f}  scikit-learn {theirs:+.4f}  |Δ| {diff:.4f}")
            if diff > tolerance:
                sys.exit(f"neural_sklearn: {name} {region}: raw score {ours['raw']:.4f} against scikit-learn's {theirs:.4f} (|Δ| {diff:.4f} > {tolerance})")
    # The ceiling: split-half reliability over all ways of halving 4 repetitions, Spearman–Brown.
    reps = r["responses"]
    for i, region in enumerate(report["regions"]):
        members = [j for j, g in enumerate(regions) if g == region]
        halves = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
        rel = []
        for a, b in halves:
            c = pearson_columns(reps[list(a)].mean(0)[:, members], reps[list(b)].mean(0)[:, members])
            rel.append(2 * c / (1 + c))
        theirs = float(np.median(np.mean(rel, axis=0)))
        ours = report["ceilings"][i][0]
        print(f"ceiling {region}: plastic {ours:.4f}  exhaustive split-halves {theirs:.4f}")
        if abs(ours - theirs) > 0.03:
            sys.exit(f"neural_sklearn: ceiling of {region}: {ours:.4f} against {theirs:.4f}")
    print(f"neural_sklearn: {method}: every raw score within {worst:.4f} of scikit-learn's")


if __name__ == "__main__":
    command, out = sys.argv[1], sys.argv[2]
    if command == "stimuli":
        stimuli(out, int(sys.argv[3]) if len(sys.argv) > 3 else 150)
    elif command == "responses":
        responses(out, sys.argv[3])
    elif command == "compare":
        tolerance = float(sys.argv[sys.argv.index("--tolerance") + 1]) if "--tolerance" in sys.argv else 0.01
        compare(out, sys.argv[3], sys.argv[4], tolerance)
    else:
        sys.exit(f"neural_sklearn: unknown command {command!r}")
