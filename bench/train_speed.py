"""Seconds per training epoch: the notebook's code, the project in its default mode, with two threads, in its fast mode.

    python -m bench.train_speed [--epochs 8] [--model ae|vae] [--images N]      (make bench)

Four setups, each in its own process, because TensorFlow, XLA and oneDNN read their settings
from the environment once, when they load:
  notebook  the notebook's own code: one ``model.fit`` on float64 arrays (uint8 / 255.0), batch
            128, Keras' mean binary cross-entropy, TensorFlow's defaults (bench/notebook_reference.py)
  default   the project as ``dvc repro`` trains, ``compute.portable: true`` (stages/lib/compute.py)
  threads   the same with ``compute.threads: 2``: each step's batch in two halves at once, one per core
  fast      the same code with ``compute.portable: false`` (each library's fastest kernels, all cores)
All train on the 60 000 training images at batch 128 with the test set evaluated after every epoch
(the notebook's VAE has no validation, so with --model vae the notebook does less work per epoch).
--images N takes the first N training images and N / 6 test images instead: a quick run of the
same code (tests/test_tools.py), whose times say little about a full epoch's.

The machines here are shared and their speed drifts within minutes, so the three run in lockstep:
each process runs its own single ``fit`` and waits at the start of every epoch until this one lets
it go; epoch e runs in one setup after the other (the order rotating), never two at once. Each ratio
is the median, over epochs, of the ratio of the two setups' times in that same epoch; the first
epoch (tracing and compiling) is excluded. Losses are in nats per image.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETUPS = ("notebook", "default", "threads", "fast")
THREADS = {"notebook": 1, "default": 1, "threads": 2, "fast": 1}  # compute.threads of each setup


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "flags", ...)."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
        if not line.strip():
            break
    return info


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo gives it: model name, family/model/stepping (a virtual machine's name
    may be generic) and the widest vector ISA, which decides the fast mode's kernels."""
    info = cpu_info()
    flags = info.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2+FMA" if {"avx2", "fma"} <= set(flags) else "no AVX2"
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')} stepping {info.get('stepping', '?')}, {isa})")


# --- a worker: one setup, one process ------------------------------------------------------------

def worker(setup: str, model: str, epochs: int, images: int) -> None:
    """Train one setup, epoch by epoch as the coordinator (on stdin/stdout) allows."""
    from stages.lib import compute

    if setup != "notebook":
        compute.apply(setup != "fast", THREADS[setup])  # re-executes this worker with the settings, as a stage would
    import keras
    import numpy as np

    from stages.lib import mnist, models

    class Gate(keras.callbacks.Callback):
        """Waits for "go" before each epoch; reports the epoch's time (validation included) after it."""

        def on_epoch_begin(self, epoch, logs=None) -> None:
            sys.stdin.readline()
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            seconds = time.perf_counter() - self.start
            scale = models.N_PIXELS if setup == "notebook" and model == "ae" else 1  # Keras' mean BCE
            print(json.dumps({"seconds": seconds, "loss": logs["loss"] * scale,
                              "test_loss": logs.get("val_loss", float("nan")) * scale}), flush=True)

    x_train, _, x_test, _ = mnist.load(train_limit=images)
    x_test = x_test[:images // 6]
    if setup == "notebook":
        from bench import notebook_reference as nb

        keras.utils.set_random_seed(0)
        x64, xt64 = x_train.astype(np.float64), x_test.astype(np.float64)  # the notebook's / 255.0
        if model == "ae":
            net = nb.notebook_ae()
            net.compile(optimizer="adam", loss="binary_crossentropy")
            fit = lambda cb: net.fit(x64, x64, epochs=epochs, batch_size=128, validation_data=(xt64, xt64),  # noqa: E731
                                     callbacks=cb, verbose=0)
        else:
            net = nb.notebook_vae()
            net.compile(optimizer=keras.optimizers.Adam())
            fit = lambda cb: net.fit(x64, x64, epochs=epochs, batch_size=128, callbacks=cb, verbose=0)  # noqa: E731
    else:
        from stages.lib import training

        compute.seed_everything(0)
        net = models.build(model, 2, (128, 16), seed=0)
        training.compile_fast(net, 0.001, parts=THREADS[setup])
        train = training.dataset(training.as_vectors(x_train), 128, shuffle_seed=0)
        test = training.dataset(training.as_vectors(x_test), training.EVAL_BATCH_SIZE)
        fit = lambda cb: net.fit(train, epochs=epochs, validation_data=test, callbacks=cb, verbose=0)  # noqa: E731
    print(json.dumps({"ready": setup}), flush=True)
    fit([Gate()])


# --- the coordinator -----------------------------------------------------------------------------

def worker_env(setup: str) -> dict[str, str]:
    """The environment a setup starts with: the notebook and the fast mode without the portable settings."""
    from stages.lib import compute

    env = {k: v for k, v in os.environ.items() if k not in compute.PORTABLE_ENV}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each setup (the first one excluded)")
    parser.add_argument("--model", choices=["ae", "vae"], default="ae")
    parser.add_argument("--images", type=int, default=60000,
                        help="training images (the first N; the test set's first N / 6): fewer for a quick run")
    parser.add_argument("--worker", choices=SETUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, which compiles, is excluded)")
    if not 128 <= args.images <= 60000:
        parser.error(f"--images must be between 128 (one batch) and 60000, got {args.images}")
    if args.worker:
        return worker(args.worker, args.model, args.epochs, args.images)

    load = os.getloadavg()[0]
    procs = {s: subprocess.Popen([sys.executable, "-m", "bench.train_speed", "--worker", s, "--epochs",
                                  str(args.epochs), "--model", args.model, "--images", str(args.images)],
                                 env=worker_env(s),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
             for s in SETUPS}

    def receive(setup: str) -> dict:
        line = procs[setup].stdout.readline()
        if not line:
            raise SystemExit(f"bench: the {setup} worker stopped (exit {procs[setup].wait()})")
        return json.loads(line)

    for setup in SETUPS:  # data loaded and models built, one at a time
        receive(setup)
    logs: dict[str, list[dict]] = {s: [] for s in SETUPS}
    for epoch in range(args.epochs):
        order = SETUPS[epoch % len(SETUPS):] + SETUPS[:epoch % len(SETUPS)]
        for setup in order:
            procs[setup].stdin.write("go\n")
            procs[setup].stdin.flush()
            logs[setup].append(receive(setup))
    for setup in SETUPS:
        procs[setup].stdin.close()
        if procs[setup].wait() != 0:
            raise SystemExit(f"bench: the {setup} worker failed")

    times = {s: [e["seconds"] for e in logs[s]][1:] for s in SETUPS}
    print(f"{args.model.upper()}, batch 128, {args.images} training images, {args.epochs} epochs per setup in "
          f"lockstep, first epoch excluded; {cpu_model()}, {os.cpu_count()} cores, "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("epoch times (s), " + " / ".join(SETUPS) + ": "
          + "  ".join("/".join(f"{times[s][i]:.2f}" for s in SETUPS) for i in range(len(times["notebook"]))))
    print(f"{'setup':10} {'compute':26} {'s/epoch':>8} {'notebook / this':>16} {'train loss':>11} {'test loss':>10}")
    mode = {"notebook": "TensorFlow's defaults", "default": "compute.portable: true",
            "threads": "portable, threads: 2", "fast": "compute.portable: false"}
    for s in SETUPS:
        ratio = statistics.median(a / b for a, b in zip(times["notebook"], times[s]))
        print(f"{s:10} {mode[s]:26} {statistics.median(times[s]):8.3f} {ratio:15.2f}x "
              f"{logs[s][-1]['loss']:11.2f} {logs[s][-1]['test_loss']:10.2f}")
    for s in ("default", "threads"):
        against_fast = statistics.median(a / b for a, b in zip(times["fast"], times[s]))
        print(f"{mode[s]} against the fast mode (fast / {s}, median of paired epochs): {against_fast:.2f}x")


if __name__ == "__main__":
    main()
