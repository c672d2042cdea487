"""The PyTorch bridge on real images: a plastic run exported with `--format pytorch`, loaded with
plastic_torch, shown the same stimuli as `plastic ost`, must give the same per-step readout:
the same last-step predictions, the same probability of the true label, the same solution
times. Used by README's "From PyTorch" example (numpy and torch):

    python3 scripts/torch_bridge_demo.py EXPORT_DIR STIMULI.npz OST_DIR

STIMULI.npz holds `images` (uint8, [n, h, w] at the run's size) and `stimulus_id`; OST_DIR is
what `plastic ost --stimuli STIMULI.npz --out OST_DIR` wrote for the same run.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import torch


def main(export, stimuli, ost_dir):
    sys.path.insert(0, str(export))
    import plastic_torch

    model = plastic_torch.load(export)
    data = np.load(stimuli)
    images = torch.from_numpy(data["images"].astype(np.float32) / 255.0)
    if images.dim() == 3:
        images = images[:, None]
    ids = [str(s) for s in data["stimulus_id"]]
    with open(Path(ost_dir) / "ost.csv") as f:
        rows = {r["stimulus_id"]: r for r in csv.DictReader(f)}
    classes = model.class_names
    with torch.no_grad():
        out = model.run(model.normalize(images))
    probs = torch.stack([r.softmax(1) for r in out.readout])  # [steps, n, classes]
    steps = probs.shape[0]
    agree = correct = same_ost = 0
    worst = 0.0
    for i, sid in enumerate(ids):
        row = rows[sid]
        label = classes.index(row["label"])
        p = probs[:, i, label]
        prediction = classes[int(probs[-1, i].argmax())]
        agree += prediction == row["prediction_last"]
        correct += prediction == row["label"]
        worst = max(worst, abs(float(p[-1]) - float(row["p_label_last"])))
        # The first step from which p(true label) >= 0.5 holds to the last step.
        ost = next((t for t in range(steps) if bool((p[t:] >= 0.5).all())), None)
        same_ost += (str(ost) if ost is not None else "") == row["ost"]
    n = len(ids)
    print(f"{n} stimuli, {steps} steps: last-step predictions agree on {agree}/{n}, "
          f"accuracy {correct / n:.4f}, max |Δ p(label)| at the last step {worst:.1e}, "
          f"solution times equal on {same_ost}/{n}")
    t = min(6, steps - 1)
    name = model.feature_layers[-1]
    print(f"features: out.layers[{t}][{name!r}] is {tuple(out.layers[t][name].shape)}")
    return 0 if agree == n and same_ost == n and worst < 1e-4 else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
