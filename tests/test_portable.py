"""compute.portable: the same bytes on an AVX-512 CPU and on emulated AVX2-only ones.

Every kind of computation the stages make runs natively (here an AVX-512 Sapphire Rapids, or
whatever CI has) and under qemu-user emulating an AVX2-only AMD Zen 3 (EPYC-Milan) and an Intel
Haswell, with the environment of ``compute.environment(True)``; every output file must agree byte
for byte. What runs is STEPS below (the figures on one of the two AVX2 models: ONE_AVX2_STEPS).
The XLA steps of TUNINGS, the paper's training (make paper) among them, also run natively as
XLA compiles them on AVX2 machines that LLVM tunes otherwise (tests/llvmhost.c).

qemu-user emulates only the process it starts (a re-exec or a spawned child would run natively),
so the stages do not go through ``dvc repro`` or ``stages.lib.run`` here: tests/portable_driver.py
calls their main() one after another in one process, on tiny params and fewer images.

Without the recipe (compute.portable: false) the trained VAE's encoder.keras and decoder.keras
already differ between this machine and emulated Haswell (weights by up to ~1e-7), and so do
numpy's float64 log and exp: the test fails.
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, copy_project, deep_update, run

# Emulated TensorFlow is slow (about ten times: the VAE's training step took 617 s emulated against
# 65 s natively on a 2-core Zen 3, beside other tests): the test's own limits, not pytest.ini's.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(4800)]
DRIVER_TIMEOUT = 4500  # seconds per driver run
# The drivers yield the CPU to the other workers' tests (whose stages have their own time limits)
# and take what those leave idle, above all while the shared tiny pipeline builds, which every
# pipeline test waits for. Measured with CI=true on the 2-core Zen 3 (2026-12-03): niced, `make
# test` took 47 min, the emulated Haswell alone on one core for its last 8; at the suite's own
# priority the tiny pipeline was ready after about 20 min instead of 10, and the run took longer.
NICE = 10

QEMU = shutil.which("qemu-x86_64")
CPUS = ["native", "Haswell", "EPYC-Milan"]  # Haswell and Zen 3: AVX2 and FMA, no AVX-512
# LLVM tunes XLA's code for the CPU's name only on an AVX2 machine: where --xla_cpu_max_isa=AVX2 takes
# features away (AVX-512), XLA tunes for "haswell" whatever the CPU (xla::cpu::JitCompiler::InferTargetMachine
# in TensorFlow 2.21). qemu 7.2's TCG has no AVX-512, so the emulated models are AVX2 machines to it, tuned
# for haswell and znver3. Other tunings run natively with tests/llvmhost.c preloaded: XLA then sees this
# machine's features less AVX-512 and the name below, and compiles the code such an AVX2 machine runs (other
# machine code for each name than this machine's: XLA's dumps, docs/reproducibility.md). icelake-server was
# an emulated Ice Lake server until 2026-12-06 (LLVM tuned for that name there too): 293 CPU-s for these
# steps against 23 natively; alderlake, like skylake, changed a full-size evaluation before the recipe
# pinned the vectoriser.
# The XLA code paths only, trainings and full-size products (generate's 41 x 41 grid among them):
# the classifier's; compute.threads: 2's (each step in two halves), in place of the plain VAE training
# the emulated models run; the paper's (docs/paper.md: batch 64 and a shorter last batch, dynamic
# binarization, the warm-up's variable KL weight, a validation split, early stopping), whose full-size
# runs differed between an Intel Xeon and an AMD Zen 3 before the recipe (docs/reproducibility.md).
# Their TensorFlow work outside XLA is the plain training's, which the emulated models run.
TUNINGS = {cpu: ["train_in_parts", "train_classifier", "full_size_products", "paper_train"]
           for cpu in ("icelake-server", "alderlake")}
SHIM = ROOT / "tests" / "llvmhost.c"
CC = shutil.which("cc")
# The qemu model of the CPU this runs on, where it has one: emulating it repeats the native run (the
# same instructions, and LLVM tunes for the same CPU name), so it is left out; the others still run.
# (vendor, family, model) as /proc/cpuinfo gives them.
QEMU_MODEL_OF = {("AuthenticAMD", 25, 1): "EPYC-Milan",  # Zen 3 Milan
                 **{("GenuineIntel", 6, m): "Haswell" for m in (60, 63, 69, 70)}}
DRIVER = ROOT / "tests" / "portable_driver.py"
# TINY, and smaller still: under emulation TensorFlow computes 10 to 50 times slower, and XLA
# compiles there too (each compiled function costs tens of seconds). The VAE's latent grid keeps
# its 41 x 41 = 1681 points: predictions of that many rows went through Eigen, blocked by the
# CPU's cache sizes, before the recipe routed them to XLA's own matrix products.
PARAMS = deep_update(copy.deepcopy(TINY), {
    "data": {"train_limit": 512}, "evaluate": {"n_samples": 200}, "vae": {"epochs": 2},
    "likelihood": {"images": 20, "iwae_k": [1, 10], "grid": {"points": 21, "tolerance": 50.0}},
    # 412 of the 512 images train: six batches of 64 and one of 28, like the full run's 781 and one of 16.
    "paper": {"train": {"epochs": 3, "kl_warmup_epochs": 2, "validation": 100, "patience": 1}}})
# Every kind of computation the stages make, each once: XLA training of the dense models (the
# VAE: dense layers, the Sampling layer, Adam) and of the classifier; XLA predictions of
# encoders, decoders and the classifier (encode, generate, evaluate); the likelihood's XLA
# functions and float64 numpy; evaluate's kNN, entropies and latent statistics; matplotlib's
# figures (plot); the recorded weights and every epoch's codes by them with their percentiles
# (evolution); and numpy's own maths on fixed inputs (numpy_math). The AE, the CVAE and the
# beta sweep run the same code paths with other shapes.
STEPS = ["train:vae", "train_classifier", "encode:vae", "evolution:vae", "generate:vae", "evaluate:vae",
         "likelihood:vae", "plot:vae", "numpy_math", "full_size_products"]
PLOT_OUTPUTS = [f"artifacts/vae/{f}" for f in ("latent_scatter.png", "latent_histograms.png", "training_curves.png",
                                               "manifold.png", "generated.png")]  # plot:vae's figures
EXPECTED = [f"artifacts/vae/{f}" for f in (
    "encoder.keras", "decoder.keras", "metrics.json", "history.tsv", "encodings.npz", "manifold.npy",
    "snapshots.npz", "evolution.npz", "evolution.tsv",
    "generated.npy", "evaluation.json", "likelihood.json")] + PLOT_OUTPUTS + [
    "artifacts/classifier/model.keras", "artifacts/classifier/metrics.json",
    "artifacts/numpy_math.npz", "artifacts/numpy_math.json", "artifacts/full_size_products.npz"]
PAPER_OUTPUTS = [f"artifacts/paper/davidson-0/{f}" for f in ("encoder.keras", "decoder.keras", "history.tsv", "metrics.json")]
PARTS_OUTPUTS = [f"artifacts/vae_parts/{f}" for f in ("encoder.keras", "decoder.keras", "history.tsv", "metrics.json")]
# What the native run computes: every step, and those only the tunings add.
NATIVE_STEPS = STEPS + [s for steps in TUNINGS.values() for s in steps if s not in STEPS]
# Steps whose code paths are the same on both AVX2 models, so one of them runs the step: plot:vae draws
# with matplotlib's Agg (no dispatch per CPU), palettes and writes PNGs with Pillow and its zlib 1.2.13
# (none), and numpy dispatches by ISA features, which qemu's Haswell and EPYC-Milan share (AVX2, FMA,
# F16C; neither AVX-512 nor VPCLMULQDQ). No XLA, whose LLVM tunes for each model's name, and no oneDNN,
# whose blocking may follow the vendor's cache sizes. Emulated, plot:vae costs 30 to 40 CPU-s.
ONE_AVX2_STEPS = ["plot:vae"]


def native_model() -> str | None:
    """The qemu CPU model this machine is, if QEMU_MODEL_OF knows it."""
    from bench.train_speed import cpu_info

    info = cpu_info()
    try:
        return QEMU_MODEL_OF.get((info["vendor_id"], int(info["cpu family"]), int(info["model"])))
    except (KeyError, ValueError):
        return None


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "artifacts").rglob("*")) if p.is_file()}


def portable_env(base: dict[str, str], project: Path) -> dict[str, str]:
    """The stages' environment with compute.portable true, as ``stages.lib.run`` would set it."""
    from stages.lib import compute  # the project copy's compute.py is a copy of this one

    wanted = compute.environment(True)
    assert wanted, "compute.environment(True) sets nothing"
    return {**base, **wanted, "PYTHONPATH": str(project)}


@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 (Debian's qemu-user) is not installed")
@pytest.mark.skipif(CC is None, reason="no C compiler (cc) for tests/llvmhost.c: install Debian's gcc")
def test_same_bytes_on_avx512_zen3_and_haswell(tmp_path: Path, mnist_dir: Path) -> None:
    base = copy_project(tmp_path / "base", mnist_dir)
    base.set_params(PARAMS)
    run([sys.executable, "-m", "stages.fetch"], base.path, base.env)  # natively, once

    native_is = native_model()
    emulated = [c for c in CPUS[1:] if c != native_is]
    print(f"native CPU: qemu model {native_is}; emulated: {emulated}; native as AVX2 CPUs: {list(TUNINGS)}")
    shim = tmp_path / "llvmhost.so"
    run([CC, "-O2", "-shared", "-fPIC", "-o", str(shim), str(SHIM), "-ldl"], tmp_path)
    # The one AVX2 model that runs ONE_AVX2_STEPS: Haswell, or EPYC-Milan where Haswell runs natively.
    steps_of = {c: [s for s in STEPS if s not in ONE_AVX2_STEPS or c == emulated[0]] for c in emulated}
    jobs = {}
    for cpu, steps in {"native": NATIVE_STEPS, **steps_of, **TUNINGS}.items():
        folder = tmp_path / cpu
        shutil.copytree(base.path, folder, symlinks=True)
        env = portable_env(base.env, folder)
        cmd = [sys.executable, str(DRIVER), *steps]
        if cpu in TUNINGS:
            env.update(LD_PRELOAD=str(shim), LLVM_HOST_CPU=cpu, LLVM_HOST_LOG=str(folder / "llvmhost.log"))
        elif cpu != "native":
            cmd = [QEMU, "-cpu", cpu, *cmd]
        log = open(tmp_path / f"{cpu}.log", "w")
        jobs[cpu] = (folder, log, subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                   preexec_fn=lambda: os.nice(NICE)), time.monotonic())

    results, timings = {}, {}
    for cpu, (folder, log, proc, start) in jobs.items():
        try:
            rc = proc.wait(timeout=max(1, DRIVER_TIMEOUT - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for _, _, other, _ in jobs.values():
                other.kill()
            raise AssertionError(f"{cpu}: the driver did not finish within {DRIVER_TIMEOUT} s") from None
        timings[cpu] = time.monotonic() - start
        log.close()
        out = (tmp_path / f"{cpu}.log").read_text()
        assert rc == 0, f"{cpu}: the driver failed ({rc}):\n{out[-4000:]}"
        results[cpu] = digests(folder)
        if cpu in TUNINGS:  # XLA asked for the name, so LLVM tuned for it (not for haswell, as on an AVX-512 CPU)
            log_file = folder / "llvmhost.log"
            asked = set(log_file.read_text().splitlines()) if log_file.exists() else set()
            assert f"name {cpu}" in asked and any(a.startswith("features ") for a in asked), \
                f"{cpu}: XLA did not ask tests/llvmhost.c for the CPU's features and name: {sorted(asked)}"
    print("seconds per CPU:", {k: round(v) for k, v in timings.items()})

    native = results["native"]
    missing = set(EXPECTED + PAPER_OUTPUTS + PARTS_OUTPUTS) - set(native)
    assert not missing, f"missing outputs: {sorted(missing)}"
    assert set(PLOT_OUTPUTS) <= set(results[emulated[0]]), sorted(results[emulated[0]])
    for cpu in emulated:  # every file but those of the steps only the tunings run (and the other the plots)
        skipped = {*PAPER_OUTPUTS, *PARTS_OUTPUTS, *([] if cpu == emulated[0] else PLOT_OUTPUTS)}
        differ = sorted(f for f in (native.keys() - skipped) | results[cpu].keys()
                        if native.get(f) != results[cpu].get(f))
        assert not differ, f"{cpu} (emulated) wrote other bytes than this CPU in: {differ}"
    for cpu in TUNINGS:
        wrote = set(results[cpu]) - set(digests(base.path))  # what its steps wrote
        assert {"artifacts/full_size_products.npz", *PARTS_OUTPUTS, *PAPER_OUTPUTS} <= wrote, sorted(wrote)
        differ = sorted(f for f in wrote if native.get(f) != results[cpu][f])
        assert not differ, f"XLA tuned for {cpu} wrote other bytes than for this CPU in: {differ}"
