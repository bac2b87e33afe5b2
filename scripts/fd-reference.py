#!/usr/bin/env python3
"""Writes Tests/Fixtures/fd/reference.json: fixed feature sets and their Frechet distance as pytorch-fid
computes it (scipy.linalg.sqrtm of S1·S2), for PPEvalTests. Needs numpy and scipy.

    python3 scripts/fd-reference.py [--out Tests/Fixtures/fd/reference.json]
"""
import argparse
import json
import warnings

import numpy as np
from scipy import linalg


def frechet_distance(a, b):
    """pytorch-fid's calculate_frechet_distance on the statistics of a and b (rows = samples)."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # pytorch-fid passes disp=False, deprecated in scipy 1.16
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        raise SystemExit("singular product: choose other features")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise SystemExit("imaginary component %g" % np.max(np.abs(covmean.imag)))
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def case(name, a, b):
    # float32 values (what the classifier's features are), stored as the doubles they equal exactly.
    a = a.astype(np.float32).astype(np.float64)
    b = b.astype(np.float32).astype(np.float64)
    return {"name": name, "dim": a.shape[1], "a_rows": a.shape[0], "b_rows": b.shape[0],
            "a": [float(v) for v in a.ravel()], "b": [float(v) for v in b.ravel()],
            "fd": frechet_distance(a, b), "fd_a_a": frechet_distance(a, a)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="Tests/Fixtures/fd/reference.json")
    args = parser.parse_args()
    rng = np.random.default_rng(13)
    cases = []
    # Correlated Gaussians with different means and covariances.
    d = 12
    ma, mb = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    a = rng.normal(size=(120, d)) @ ma + 0.5
    b = rng.normal(size=(100, d)) @ (0.7 * ma + 0.3 * mb) - 0.2
    cases.append(case("gaussian-12d", a, b))
    # Rectified features (many zeros, skewed), as a ReLU layer gives.
    d = 16
    m = rng.normal(size=(d, d))
    a = np.maximum(rng.normal(size=(150, d)) @ m + 1.0, 0)
    b = np.maximum(rng.normal(size=(130, d)) @ (1.2 * m) + 0.6, 0)
    cases.append(case("relu-16d", a, b))
    with open(args.out, "w") as f:
        json.dump({"generator": "scripts/fd-reference.py (numpy %s, scipy %s; pytorch-fid's formula)"
                   % (np.__version__, __import__("scipy").__version__), "cases": cases}, f)
        f.write("\n")
    for c in cases:
        print(c["name"], "fd", repr(c["fd"]), "fd(a, a)", repr(c["fd_a_a"]))


if __name__ == "__main__":
    main()
