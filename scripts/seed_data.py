#!/usr/bin/env python3
"""Export the seed article's samples, so `coordinator demo parzen --data FILE` (and the
sweep's `--data`) run on exactly the numbers the article's table was computed from.

The article drew them with numpy's legacy global generator:
    np.random.seed(123)
    x_2Dgauss = np.random.multivariate_normal([0, 0], [[1, 0], [0, 1]], 10000)

Usage: python3 scripts/seed_data.py [OUT.npy]   (default: seed.npy; needs numpy, see
scripts/requirements.txt). Prints the article's table from those samples as a check.
"""

import sys

import numpy as np


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "seed.npy"
    np.random.seed(123)
    samples = np.random.multivariate_normal([0, 0], [[1, 0], [0, 1]], 10000)
    np.save(out, samples)
    print(f"wrote {out}: {samples.shape[0]} samples, {samples.shape[1]} dims, float64")
    # The article's own computation, vectorized: h**point_x.shape[1] with a (2, 1) point.
    for h in np.arange(0.1, 1.3, 0.1):
        k = int(np.all(np.abs(samples / h) <= 0.5, axis=1).sum())
        print(f"h = {h:.1f}, k = {k}, article p(x) = {k / len(samples) / h ** 1:.6g}")


if __name__ == "__main__":
    main()
