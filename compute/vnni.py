"""An int8 dot-product micro-kernel (AVX-512 VNNI) with the transcript's fold inside it.

Where the CPU has AVX-512 VNNI (``vpdpbusd``: 64 int8 multiply-adds into 16 int32
lanes per instruction, four times the float32 FMA rate), the CPU engine multiplies
A' and B' as int8 into exact int32 accumulators instead of float32 sgemm. Numba
cannot emit that instruction, so this module writes one small function in LLVM IR,
compiles it with llvmlite (already a dependency of Numba) for the host CPU, checks it
against NumPy, and hands its address to the Numba kernels as a C function pointer.
Nothing is downloaded or built ahead of time; on a CPU without the feature, with an
LLVM older than 15 (the IR uses opaque pointers), or when the self-test fails,
``find_vnni`` returns None and the engine stays on sgemm.

The micro-kernel updates an ``MR x NR`` tile of C' (MR rows of A', NR = 16 * NV
columns of B') over ``steps`` r-steps, each ``qps`` = ceil(r / 4) groups of four k:

* ``a``: A' packed by strips of MR rows: per quad, MR rows x 4 bytes (signed int8);
  the step's quads are contiguous, the next step ``a_step`` bytes further.
* ``b``: B' + 128 packed by strips of NR columns: per quad, NR columns x 4 bytes
  (unsigned: ``vpdpbusd`` multiplies unsigned by signed bytes); steps ``b_step`` apart.
* ``corr``: per step, MR int32: 128 * (sum of A' row up to the end of that step), so
  raw - corr is the exact partial sum (the +128 on B' adds 128 * sum of A' row).
* ``acc``: the raw int32 accumulators (row-major, ``ldacc``), ``state``: the fold
  states (row-major, ``ldst``).

Flags: INIT (accumulators and fold states start at zero, nothing is read), FOLD
(after every step: state = rotl32(state, 1) ^ (raw - corr), in registers), FINAL
(store raw - corr of the last step, the exact C' entries, instead of raw). The packed
operands are laid out once per product by kernels.build_noisy_panel, so a step's
slices are contiguous runs that every block reads in place: no per-step conversion
and no packing inside the product.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("pouw.compute")

FLAG_INIT = 1
FLAG_FOLD = 2
FLAG_FINAL = 4
B_OFFSET = 128  # B' + 128 is in [1, 254]: an unsigned byte
NAME = "pouw_vnni_tile"
REQUIRED = ("+avx512f", "+avx512bw", "+avx512vnni")

# ctypes signature: a, a_step, b, b_step, corr, acc, ldacc, state, ldst, steps, qps, flags
_PROTO = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
)


@dataclass(frozen=True)
class Vnni:
    mr: int  # rows of A' per micro-tile
    nr: int  # columns of B' per micro-tile (16 per vector)
    tile: Any  # the ctypes function (callable from Numba nopython code)
    keep: Any  # the llvmlite engine that owns the machine code


def kernel_ir(mr: int, nv: int) -> str:
    """LLVM IR of the micro-kernel for MR = mr rows and NR = 16 * nv columns."""
    v16 = "<16 x i32>"
    regs = [(i, v) for i in range(mr) for v in range(nv)]
    out: list[str] = []
    emit = out.append
    emit(f"declare {v16} @llvm.x86.avx512.vpdpbusd.512({v16}, {v16}, {v16})")
    emit(f"declare {v16} @llvm.fshl.v16i32({v16}, {v16}, {v16})")
    emit(
        f"define void @{NAME}(ptr noalias %a, i64 %astep, ptr noalias %b, i64 %bstep, "
        "ptr noalias %corr, "
        "ptr noalias %acc, i64 %ldacc, ptr noalias %state, i64 %ldst, i64 %steps, "
        "i64 %qps, i64 %flags) {"
    )
    emit("entry:")
    emit("  %finit = and i64 %flags, 1")
    emit("  %init = icmp ne i64 %finit, 0")
    emit("  %ffold = and i64 %flags, 2")
    emit("  %fold = icmp ne i64 %ffold, 0")
    emit("  %ffinal = and i64 %flags, 4")
    emit("  %final = icmp ne i64 %ffinal, 0")
    for i, v in regs:
        emit(f"  %ro{i}_{v} = mul i64 %ldacc, {i}")
        emit(f"  %o{i}_{v} = add i64 %ro{i}_{v}, {v * 16}")
        emit(f"  %pc{i}_{v} = getelementptr i32, ptr %acc, i64 %o{i}_{v}")
        emit(f"  %ld{i}_{v} = load {v16}, ptr %pc{i}_{v}, align 4")
        emit(f"  %c0_{i}_{v} = select i1 %init, {v16} zeroinitializer, {v16} %ld{i}_{v}")
        emit(f"  %so{i}_{v} = mul i64 %ldst, {i}")
        emit(f"  %sq{i}_{v} = add i64 %so{i}_{v}, {v * 16}")
        emit(f"  %ps{i}_{v} = getelementptr i32, ptr %state, i64 %sq{i}_{v}")
    emit("  %any = icmp sgt i64 %steps, 0")
    emit("  br i1 %any, label %step, label %done")

    # step loop header
    emit("step:")
    emit("  %s = phi i64 [0, %entry], [%s1, %stepend]")
    for i, v in regs:
        emit(f"  %sa{i}_{v} = phi {v16} [%c0_{i}_{v}, %entry], [%sf{i}_{v}, %stepend]")
    emit("  %sa = mul i64 %s, %astep")
    emit("  %sb = mul i64 %s, %bstep")
    emit("  %pas = getelementptr i8, ptr %a, i64 %sa")
    emit("  %pbs = getelementptr i8, ptr %b, i64 %sb")
    emit("  br label %quad")

    # quad loop
    emit("quad:")
    emit("  %q = phi i64 [0, %step], [%q1, %quad]")
    for i, v in regs:
        emit(f"  %qa{i}_{v} = phi {v16} [%sa{i}_{v}, %step], [%qn{i}_{v}, %quad]")
    emit(f"  %aoff = mul i64 %q, {mr * 4}")
    emit(f"  %boff = mul i64 %q, {nv * 64}")
    emit("  %pa = getelementptr i8, ptr %pas, i64 %aoff")
    emit("  %pb = getelementptr i8, ptr %pbs, i64 %boff")
    for v in range(nv):
        emit(f"  %pbv{v} = getelementptr i8, ptr %pb, i64 {v * 64}")
        emit(f"  %bv{v} = load {v16}, ptr %pbv{v}, align 1")
    for i in range(mr):
        emit(f"  %pai{i} = getelementptr i8, ptr %pa, i64 {i * 4}")
        emit(f"  %as{i} = load i32, ptr %pai{i}, align 1")
        emit(f"  %ai{i} = insertelement {v16} poison, i32 %as{i}, i64 0")
        emit(f"  %ab{i} = shufflevector {v16} %ai{i}, {v16} poison, <16 x i32> zeroinitializer")
        for v in range(nv):
            emit(
                f"  %qn{i}_{v} = call {v16} @llvm.x86.avx512.vpdpbusd.512("
                f"{v16} %qa{i}_{v}, {v16} %bv{v}, {v16} %ab{i})"
            )
    emit("  %q1 = add i64 %q, 1")
    emit("  %qmore = icmp slt i64 %q1, %qps")
    emit("  br i1 %qmore, label %quad, label %quadend")

    # after the step's quads: fold (optional)
    emit("quadend:")
    emit("  br i1 %fold, label %dofold, label %stepend")
    emit("dofold:")
    emit(f"  %cbase = mul i64 %s, {mr}")
    emit("  %first = icmp eq i64 %s, 0")
    emit("  %fresh = and i1 %first, %init")
    for i in range(mr):
        emit(f"  %ci{i} = add i64 %cbase, {i}")
        emit(f"  %pci{i} = getelementptr i32, ptr %corr, i64 %ci{i}")
        emit(f"  %cs{i} = load i32, ptr %pci{i}, align 4")
        emit(f"  %cv{i} = insertelement {v16} poison, i32 %cs{i}, i64 0")
        emit(f"  %cb{i} = shufflevector {v16} %cv{i}, {v16} poison, <16 x i32> zeroinitializer")
        for v in range(nv):
            emit(f"  %x{i}_{v} = sub {v16} %qn{i}_{v}, %cb{i}")
            emit(f"  %st{i}_{v} = load {v16}, ptr %ps{i}_{v}, align 4")
            emit(f"  %sp{i}_{v} = select i1 %fresh, {v16} zeroinitializer, {v16} %st{i}_{v}")
            ones = "<16 x i32> <" + ", ".join(["i32 1"] * 16) + ">"
            emit(
                f"  %rl{i}_{v} = call {v16} @llvm.fshl.v16i32({v16} %sp{i}_{v}, "
                f"{v16} %sp{i}_{v}, {ones})"
            )
            emit(f"  %nw{i}_{v} = xor {v16} %rl{i}_{v}, %x{i}_{v}")
            emit(f"  store {v16} %nw{i}_{v}, ptr %ps{i}_{v}, align 4")
    emit("  br label %stepend")

    emit("stepend:")
    for i, v in regs:
        emit(f"  %sf{i}_{v} = phi {v16} [%qn{i}_{v}, %quadend], [%qn{i}_{v}, %dofold]")
    emit("  %s1 = add i64 %s, 1")
    emit("  %smore = icmp slt i64 %s1, %steps")
    emit("  br i1 %smore, label %step, label %store")

    # store raw accumulators, or raw - corr of the last step with FINAL
    emit("store:")
    emit("  %slast = sub i64 %steps, 1")
    emit(f"  %clast = mul i64 %slast, {mr}")
    for i in range(mr):
        emit(f"  %fi{i} = add i64 %clast, {i}")
        emit(f"  %pfi{i} = getelementptr i32, ptr %corr, i64 %fi{i}")
        emit(f"  %fs{i} = load i32, ptr %pfi{i}, align 4")
        emit(f"  %fz{i} = select i1 %final, i32 %fs{i}, i32 0")
        emit(f"  %fv{i} = insertelement {v16} poison, i32 %fz{i}, i64 0")
        emit(f"  %fb{i} = shufflevector {v16} %fv{i}, {v16} poison, <16 x i32> zeroinitializer")
        for v in range(nv):
            emit(f"  %out{i}_{v} = sub {v16} %sf{i}_{v}, %fb{i}")
            emit(f"  store {v16} %out{i}_{v}, ptr %pc{i}_{v}, align 4")
    emit("  br label %done")
    emit("done:")
    emit("  ret void")
    emit("}")
    return "\n".join(out) + "\n"


def _compile(mr: int, nv: int) -> tuple[int, Any]:
    import llvmlite.binding as llvm

    for init in (llvm.initialize_native_target, llvm.initialize_native_asmprinter):
        try:
            init()
        except RuntimeError:  # newer llvmlite initializes LLVM itself
            pass
    features = llvm.get_host_cpu_features().flatten()
    if not all(f in features.split(",") for f in REQUIRED):
        raise OSError("no AVX-512 VNNI on this CPU")
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3, codemodel="jitdefault"
    )
    module = llvm.parse_assembly(kernel_ir(mr, nv))
    module.verify()
    try:
        builder = llvm.create_pass_builder(machine, llvm.PipelineTuningOptions(speed_level=3))
        builder.getModulePassManager().run(module, builder)
    except Exception as exc:  # the IR is already what it should be; passes only polish
        log.debug("vnni: LLVM passes not run (%s)", exc)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return engine.get_function_address(NAME), engine


def pack_reference(x: np.ndarray, strip: int, r: int, offset: int) -> np.ndarray:
    """The packed layout of ``x`` (k x cols, int): one r-step after the other, inside a
    step the strips of ``strip`` columns one after the other, inside a strip the
    step's quads of 4 k (zero padded), inside a quad each column's 4 bytes adjacent.
    For tests and the self-test (int8_kernels.build_packed_panel writes the same)."""
    k, cols = x.shape
    steps, qps = k // r, (r + 3) // 4
    strips = -(-cols // strip)
    out = np.zeros((steps, strips, qps * 4, strip), np.int64)
    padded = np.zeros((k, strips * strip), np.int64)
    padded[:, :cols] = x
    for s in range(steps):
        block = padded[s * r : (s + 1) * r].reshape(r, strips, strip).transpose(1, 0, 2)
        out[s, :, :r] = block + offset
    out = out.reshape(steps, strips, qps, 4, strip).transpose(0, 1, 2, 4, 3)
    return (out & 0xFF).astype(np.uint8).ravel()


def _self_test(vnni: Vnni) -> bool:
    rng = np.random.default_rng(11)
    mr, nr = vnni.mr, vnni.nr
    for r, steps in ((8, 3), (2, 5), (128, 2)):
        k = r * steps
        qps = (r + 3) // 4
        a = rng.integers(-127, 127, (mr, k))
        b = rng.integers(-127, 127, (k, nr))
        a_pack = pack_reference(a.T, mr, r, 0)
        b_pack = pack_reference(b, nr, r, B_OFFSET)
        corr = np.empty((steps, mr), np.int32)
        for s in range(steps):
            corr[s] = B_OFFSET * a[:, : (s + 1) * r].sum(axis=1)
        acc = np.full((mr, nr), 7, np.int32)
        state = np.full((mr, nr), 3, np.uint32)
        half = steps // 2
        calls = ((0, half, FLAG_INIT | FLAG_FOLD), (half, steps, FLAG_FOLD | FLAG_FINAL))
        for lo, hi, flags in calls:
            vnni.tile(
                a_pack.ctypes.data + lo * qps * mr * 4, qps * mr * 4,
                b_pack.ctypes.data + lo * qps * nr * 4, qps * nr * 4,
                corr.ctypes.data + lo * mr * 4,
                acc.ctypes.data, nr, state.ctypes.data, nr, hi - lo, qps, flags,
            )  # fmt: skip
        expect_state = np.zeros((mr, nr), np.uint32)
        for s in range(steps):
            part = (a[:, : (s + 1) * r] @ b[: (s + 1) * r]).astype(np.int64)
            rot = (expect_state << np.uint32(1)) | (expect_state >> np.uint32(31))
            expect_state = rot ^ (part & 0xFFFFFFFF).astype(np.uint32)
        if not (np.array_equal(acc, a @ b) and np.array_equal(state, expect_state)):
            return False
    return True


MR = 8
NV = 2

_found: Vnni | None = None
_searched = False
_lock = threading.Lock()


def find_vnni() -> Vnni | None:
    """The compiled micro-kernel when this CPU has AVX-512 VNNI and it passes its
    self-test; None otherwise (the engine then multiplies with float32 sgemm)."""
    global _found, _searched
    with _lock:
        if not _searched:
            _searched = True
            try:
                address, engine = _compile(MR, NV)
                vnni = Vnni(MR, 16 * NV, _PROTO(address), engine)
                if _self_test(vnni):
                    _found = vnni
                else:
                    log.warning("vnni: the int8 micro-kernel failed its self-test; using sgemm")
            except Exception as exc:  # no such CPU feature, or no LLVM backend for it
                log.info("vnni: not used (%s)", exc)
        return _found
