"""How the stages compute: ``compute.portable`` in params.yaml.

portable: true (default) holds TensorFlow, XLA, oneDNN, numpy and OpenBLAS to
kernels that every x86-64 CPU with AVX2 and FMA runs alike, so a stage writes
the same bytes on an AVX2 machine and on an AVX-512 one (tests/test_portable.py
checks this under qemu's emulated CPU models). false: each library picks the
fastest kernels of the CPU it runs on, and the fourth digit of results depends
on that CPU.

These libraries read their settings from the environment once, when they load,
so ``stages.lib.run`` applies them before a stage imports any of them: when the
environment lacks them, it sets them and re-executes the stage.
"""
from __future__ import annotations

import os
import sys

# Each entry, and why (measured with the qemu test; see README "Reproducibility").
PORTABLE_ENV: dict[str, str] = {
    # One thread: the split of a reduction over threads otherwise changes the sum's order.
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    # XLA's CPU code: no FMA contraction chosen per CPU model (max ISA AVX), no run-time
    # dispatched dot libraries (YNNPACK, XNNPACK), no CPU-dependent fast math, one thread.
    "XLA_FLAGS": " ".join([
        "--xla_cpu_max_isa=AVX",
        "--xla_cpu_experimental_ynn_fusion_type=",
        "--xla_cpu_use_xnnpack=false",
        "--xla_cpu_enable_platform_dependent_math=false",
        "--xla_cpu_multi_thread_eigen=false",
    ]),
    # TensorFlow's own matmuls and convolutions (predict outside XLA) go through oneDNN,
    # which picks kernels per CPU even with its graph rewrites off: cap it at AVX2.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # numpy dispatches float64 log/exp and friends to AVX-512 where present: only up to AVX2/FMA.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # OpenBLAS (numpy's matrix products) picks its kernels per CPU: fix them to Haswell's, one thread.
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
}


def environment(portable: bool) -> dict[str, str]:
    """The environment variables a stage needs for this ``compute.portable`` setting."""
    return dict(PORTABLE_ENV) if portable else {}


def apply(portable: bool) -> None:
    """Make this process compute as ``portable`` says: re-execute it with the settings if they are missing.

    Must run before numpy or TensorFlow compute anything; the re-executed process
    imports them afresh with the settings in place.
    """
    wanted = environment(portable)
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    os.environ.update(wanted)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
