"""How the stages compute: ``compute.portable`` in params.yaml.

portable: true (default) holds TensorFlow, XLA, oneDNN, numpy and OpenBLAS to
kernels that every x86-64 CPU with AVX2 and FMA runs alike, so a stage writes
the same bytes on an AVX2 machine and on an AVX-512 one (tests/test_portable.py
checks this under qemu's emulated CPU models). false: each library picks the
fastest kernels of the CPU it runs on, and the fourth digit of results depends
on that CPU.

These libraries read their settings from the environment once, when they load,
so ``stages.lib.run`` applies them before a stage imports any of them: when the
environment lacks them, it sets them and runs the stage again in a child process.
"""
from __future__ import annotations

import os
import sys

# Each entry, and why. Measured with tests/test_portable.py's driver on tiny params: natively on an
# AVX-512 Sapphire Rapids with 2 cores, and under qemu-x86_64 -cpu Haswell / EPYC-Milan (AVX2 only).
PORTABLE_ENV: dict[str, str] = {
    # One thread: the split of a reduction over threads otherwise changes the sum's order
    # (without these two, the trained VAE's weights moved by ~1e-7 on the same 2-core machine).
    # compute.threads raises the inter-op count (environment()): whole computations side by side,
    # each still on one thread.
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    # XLA's CPU code (the train steps). Max ISA AVX2: LLVM emits AVX2 and FMA code, which every
    # CPU this mode promises runs alike; without a cap it vectorises for the CPU it runs on
    # (AVX-512 here) and the VAE's weights and history differ. (Before commit a14c56e the cap was
    # AVX, no FMA: the same guarantee, ~1.3x slower per epoch; docs/speed.md.) Without the
    # empty YNNPACK fusion type, XLA hands dots to YNNPACK, which dispatches per CPU: weights,
    # history and metrics differ. Without multi_thread_eigen=false, XLA's own thread pool splits
    # the dots: weights differ. XNNPACK and platform-dependent math changed nothing here when
    # left out (this XLA does not use them for these models); they stay off against a new default.
    # The LLVM IR GEMM option: XLA otherwise hands large matrix products to Eigen, whose blocking
    # follows the cache sizes the CPU reports (our reading of the sources); without it the decoded
    # 1681-point grid, the CVAE's encodings and a CNN's predictions differed under -cpu Haswell.
    # XLA's own GEMM is code LLVM emits under max_isa, the same on every CPU. The two LLVM options
    # after it pin how the loop vectoriser splits a reduction (8 lanes, no interleaving): LLVM
    # otherwise picks them by the tuning of the CPU it runs on, and a sum's order moves with them
    # (with the AVX2 cap alone, a full-size VAE's evaluation differed when LLVM tuned for skylake or
    # alderlake: an experiment that changed the host CPU name LLVM sees, docs/reproducibility.md).
    "XLA_FLAGS": " ".join([
        "--xla_cpu_max_isa=AVX2",
        "--xla_cpu_experimental_ynn_fusion_type=",
        "--xla_cpu_use_xnnpack=false",
        "--xla_cpu_enable_platform_dependent_math=false",
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_backend_extra_options=xla_force_enable_experimental_llvm_ir_gemm,"
        "-force-vector-width=8,-force-vector-interleave=1",
    ]),
    # oneDNN picks kernels per CPU even with its graph rewrites off: cap it at AVX2. All the
    # arithmetic runs in XLA now, yet without these two the VAE's and the classifier's weights
    # still differed under -cpu Haswell: some TensorFlow work outside XLA reaches oneDNN.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # numpy dispatches float64 log, exp, log1p, expm1 to AVX-512 code where present (on this
    # machine each differs in some last bits from the AVX2 code a Haswell or Zen 3 runs; the
    # entropies in evaluation.json take a log). numpy 2.4's names for the AVX-512 groups,
    # accepted silently also on a CPU that lacks them (checked under qemu -cpu Haswell).
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # OpenBLAS (numpy's matrix products) picks its kernels per CPU: 784-wide float32 and float64
    # products differ between its Sapphire Rapids and Haswell kernels (Zen uses Haswell's), and
    # float32 ones between 1 and 2 threads. Fix them to Haswell's, one thread.
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic (after ``apply``)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def environment(portable: bool, threads: int = 1) -> dict[str, str]:
    """The environment variables a stage needs for ``compute.portable`` and ``compute.threads``.

    Portable, each computation stays on one thread; ``threads`` inter-op threads let that many of
    them run at once: the parts of a split train step (models.AE.train_step), whose bytes depend
    on the number of parts, not on how many run at once.
    """
    return {**PORTABLE_ENV, "TF_NUM_INTEROP_THREADS": str(threads)} if portable else {}


# With the vectoriser pinned, LLVM reports on stderr every loop it cannot vectorise at that width
# ("remark: <unknown>:0:0: loop not vectorized: ..."): hundreds of lines per run, a third of a full
# `dvc repro`'s output, that tell a user nothing. The stage's child process runs without them.
LLVM_REMARK = b"remark: <unknown>:0:0: loop not vectorized"


def apply(portable: bool, threads: int = 1) -> None:
    """Make this process compute as ``portable`` and ``threads`` say: if the settings are missing,
    run the stage again in a child process that has them, and exit with its exit code.

    Must run before numpy or TensorFlow compute anything; the child imports them afresh with
    the settings in place. This process only forwards the child's stderr, less LLVM's remarks.
    """
    wanted = environment(portable, threads)
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    os.environ.update(wanted)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(run_filtered([sys.executable, *sys.orig_argv[1:]]))


def run_filtered(argv: list[str]) -> int:
    """Run ``argv`` in this environment, its stderr forwarded but LLVM_REMARK lines; its exit code."""
    import signal
    import subprocess

    child = subprocess.Popen(argv, stderr=subprocess.PIPE)
    # Ctrl-C or a kill sent to this process is passed on; the child decides how to stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    assert child.stderr is not None
    for line in child.stderr:
        if not line.startswith(LLVM_REMARK):
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
    code = child.wait()
    return code if code >= 0 else 128 - code
