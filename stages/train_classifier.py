"""Stage train_classifier: the digit classifier that judges generated images; artifacts/classifier/."""
from __future__ import annotations

from pathlib import Path

from stages.lib import mnist, params, run

OUT = Path("artifacts/classifier")


def main() -> None:
    p = params.load("classifier", params.ClassifierParams)
    limit = params.load("data", params.DataParams, keys=("train_limit",)).train_limit
    from stages.lib import models, training
    from stages.lib.compute import seed_everything
    from stages.lib.files import atomic_folder, json_text, write_text

    x_train, y_train, x_test, y_test = mnist.load(train_limit=limit)
    seed_everything(p.seed)
    model = models.build_classifier()
    # Compiled as the other trainings (XLA on the CPU): with compute.portable, the same bytes on every CPU.
    training.compile_fast(model, p.learning_rate, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(training.dataset((x_train, y_train), p.batch_size, shuffle_seed=p.seed), epochs=p.epochs,
              shuffle=False, verbose=2)
    test = model.evaluate(training.dataset((x_test, y_test), training.EVAL_BATCH_SIZE), return_dict=True,
                          verbose=0)
    # Both files or neither: the metrics are checked (no NaN) before anything is written.
    metrics = json_text({"test_accuracy": test["accuracy"], "test_loss": test["loss"]},
                        name=OUT / "metrics.json")
    with atomic_folder(OUT) as staging:
        models.save(model, staging / "model.keras")
        write_text(staging / "metrics.json", metrics)
    print(f"train_classifier: test accuracy {test['accuracy']:.4f}")


if __name__ == "__main__":
    run(main)
