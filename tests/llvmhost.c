/* LD_PRELOAD for tests/test_portable.py: XLA's LLVM sees this machine as an AVX2 CPU named $LLVM_HOST_CPU.
 *
 * XLA (TensorFlow 2.21, xla::cpu JitCompiler::InferTargetMachine) tunes its code for the host's CPU
 * name only when --xla_cpu_max_isa removed none of the host's features, i.e. on an AVX2 machine; on
 * an AVX-512 one it tunes for "haswell" whatever the CPU. So these two LLVM functions, which
 * libtensorflow_framework calls through its PLT, are replaced: the host's features with every
 * AVX-512, AMX and AVX10 one off, and the name from the environment. The compiled code is then the
 * code an AVX2 machine of that name would run (tests/test_portable.py checks it was asked for).
 *
 * Each call is logged to $LLVM_HOST_LOG when it is set: "name <cpu>", "features <n> of <m> off".
 * Built by the test: cc -O2 -shared -fPIC -o llvmhost.so tests/llvmhost.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llvm::StringRef, returned in two registers. */
typedef struct { const char *data; size_t length; } StringRef;
/* llvm::StringMap<bool>: a table of entries, each {key length, value} with the key's bytes after it. */
typedef struct { void **table; unsigned buckets, items, tombstones, item_size; } StringMap;
typedef struct { size_t key_length; bool value; } Entry;
#define TOMBSTONE ((uintptr_t)-8) /* StringMapImpl's deleted-entry marker: -1 shifted by 3 low bits */

static void note(const char *what, const char *detail) {
    const char *path = getenv("LLVM_HOST_LOG");
    FILE *log = path ? fopen(path, "a") : NULL;
    if (log) {
        fprintf(log, "%s %s\n", what, detail);
        fclose(log);
    }
}

static void fail(const char *why) {
    fprintf(stderr, "llvmhost: %s\n", why);
    abort();
}

/* llvm::sys::getHostCPUName() */
StringRef _ZN4llvm3sys14getHostCPUNameEv(void) {
    const char *name = getenv("LLVM_HOST_CPU");
    if (!name || !*name) fail("LLVM_HOST_CPU is not set");
    note("name", name);
    return (StringRef){name, strlen(name)};
}

static bool beyond_avx2(const char *feature) {
    return !strncmp(feature, "avx512", 6) || !strcmp(feature, "evex512") || !strncmp(feature, "amx", 3) ||
           !strncmp(feature, "avx10", 5);
}

/* llvm::sys::getHostCPUFeatures(): a StringMap returned through the caller's buffer. */
StringMap *_ZN4llvm3sys18getHostCPUFeaturesEv(StringMap *out) {
    StringMap *(*real)(StringMap *) = (StringMap * (*)(StringMap *))
        dlsym(RTLD_NEXT, "_ZN4llvm3sys18getHostCPUFeaturesEv");
    if (!real) fail("no llvm::sys::getHostCPUFeatures after this library");
    real(out);
    unsigned seen = 0, off = 0;
    for (unsigned i = 0; i < out->buckets; i++) {
        Entry *entry = out->table[i];
        if (!entry || (uintptr_t)entry == TOMBSTONE) continue;
        const char *key = (const char *)(entry + 1);
        if (entry->key_length != strnlen(key, entry->key_length + 1)) fail("a feature name of unexpected layout");
        seen++;
        if (entry->value && beyond_avx2(key)) {
            entry->value = false;
            off++;
        }
    }
    if (seen != out->items || !seen) fail("the feature map has an unexpected layout");
    char counts[64];
    snprintf(counts, sizeof counts, "%u of %u off", off, seen);
    note("features", counts);
    return out;
}
