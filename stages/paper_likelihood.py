"""Stage paper_likelihood@<model>-<seed> (paper/dvc.yaml): the likelihood of one paper_train run.

On the test images (paper.likelihood.images of them: all 10 000 by default), binarized once as the
training's were (paper.train.binarize): everything stages/lib/marginal.py computes (-ELBO and its two
terms, IWAE bounds for each k of paper.likelihood.iwae_k, -log p(x) by quadrature), and beside it the
paper's columns in its signs (``paper``: LL = IWAE with 500 samples, L[q], RE, KL; LL_exact from the
quadrature). Writes artifacts/paper/<model>-<seed>/likelihood.json (DVC metrics).
"""
from __future__ import annotations

import sys

from stages.lib import mnist, params, run
from stages.lib.files import write_json
from stages.lib.paper import PUBLISHED, PUBLISHED_K, arguments, in_paper_convention, run_dir


def main() -> None:
    model, seed = arguments(sys.argv[1:])
    p = params.load("paper.likelihood", params.LikelihoodParams)
    binarize = params.load("paper.train", params.PaperTrainParams, keys=("binarize",)).binarize
    if PUBLISHED_K not in p.iwae_k:
        raise params.ParamsError(f"paper.likelihood.iwae_k: expected it to include {PUBLISHED_K} (the paper's "
                                 f"estimator), got {list(p.iwae_k)}")
    stage = f"paper_likelihood@{model}-{seed}"
    _, _, x_test, y_test = mnist.load(binarize=binarize)
    from stages.lib.marginal import evaluate  # TensorFlow loads only once params are valid

    print(f"{stage}: IWAE with up to {max(p.iwae_k)} samples and a {2 * p.grid.points - 1}-point grid per axis "
          f"on {min(p.images, len(x_test))} test images", flush=True)
    folder = run_dir(model, seed)
    result = evaluate(folder, False, x_test.reshape(len(x_test), -1), y_test, p, stage, terms=True)
    result["paper"] = in_paper_convention(result)
    write_json(folder / "likelihood.json", result)
    ours = result["paper"]
    print(f"{stage}: in Table 1's signs, ours against Davidson et al. 2018 (N-VAE, d = 2): "
          + ", ".join(f"{k} {ours[k]:.2f} ({PUBLISHED[k]:.2f})" for k in PUBLISHED)
          + f"; exact LL (quadrature) {ours['LL_exact']:.2f}")


if __name__ == "__main__":
    run(main)
