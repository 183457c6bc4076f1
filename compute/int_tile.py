"""Integer dot-product micro-kernels with the transcript's fold inside them.

The CPU engine multiplies A' and B' as integers into exact int32 accumulators,
instead of float32 sgemm, with the first of these forms (``ISAS``) the CPU has:

* ``int8-vnni`` (AVX-512 VNNI, ``vpdpbusd``: 64 int8 multiply-adds into 16 int32
  lanes per instruction, four times the float32 FMA rate);
* ``int8-avxvnni`` (AVX-VNNI: the same instruction on 256 bits, VEX-encoded, on Intel
  cores since Alder Lake that lack AVX-512). Compiled and checked in the tests for
  such a CPU, not yet run on one: where its self-test fails, the next form is used;
* ``int16-avx2`` (AVX2, ``vpmaddwd``: 16 int16 products summed in pairs into 8 int32
  lanes, then an add). On AVX2 CPUs without VNNI. Measured on a 2-core AMD EPYC
  (Zen 3) at r = 32 (devnet), 512 x 4096 x 4096 on one core: product and fold 0.17 s
  against 0.38 s for the engine's sgemm path and 0.19 s for a plain float32 sgemm of
  the same shape (no fold). The gain is mostly the fold kept in registers: per-step
  sgemm at small r is far from its peak. The int8 byte form (``vpmaddubsw``) would
  saturate its int16 pair sums on noisy entries near 127. Its packed operands take
  twice the memory of the int8 forms' (B' of 4096 x 4096: 32 MiB against 16).

Numba cannot emit these instructions, so this module writes one small function in
LLVM IR, compiles it with llvmlite (already a dependency of Numba) for the host CPU,
checks it against NumPy, and hands its address to the Numba kernels as a C function
pointer. Nothing is downloaded or built ahead of time; on a CPU with none, with
an LLVM older than 15 (the IR uses opaque pointers), or when the self-test fails,
``find_int_tile`` returns None and the engine stays on sgemm.

The micro-kernel updates an ``MR x NR`` tile of C' (MR rows of A', NR = lanes * NV
columns of B') over ``steps`` r-steps, each ``qps`` = ceil(r / group) words of
``group`` k values (a word: 4 bytes, or 2 sign-extended int16: 32 bits either way):

* ``a``: A' packed by strips of MR rows: per word, MR rows x 4 bytes (signed); the
  step's words are contiguous, the next step ``a_step`` bytes further.
* ``b``: B' + offset packed by strips of NR columns: per word, NR columns x 4 bytes;
  steps ``b_step`` apart. The int8 form adds 128 (``vpdpbusd`` multiplies unsigned by
  signed bytes); the int16 form adds nothing (``vpmaddwd`` is signed by signed).
* ``corr``: per step, MR int32: offset * (sum of A' row up to the end of that step),
  so raw - corr is the exact partial sum (zero for the int16 form).
* ``acc``: the raw int32 accumulators (row-major, ``ldacc``), ``state``: the fold
  states (row-major, ``ldst``).

Flags: INIT (accumulators and fold states start at zero, nothing is read), FOLD
(after every step: state = rotl32(state, 1) ^ (raw - corr), in registers), FINAL
(store raw - corr of the last step, the exact C' entries, instead of raw). The packed
operands are laid out once per product by int8_kernels.build_packed_panel, so a
step's slices are contiguous runs that every block reads in place: no per-step
conversion and no packing inside the product.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("pouw.compute")

FLAG_INIT = 1
FLAG_FOLD = 2
FLAG_FINAL = 4
B_OFFSET = 128  # B' + 128 is in [1, 254]: an unsigned byte (vpdpbusd's operand)
NAME = "pouw_int_tile"

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
class Isa:
    """One instruction set's form of the micro-kernel."""

    path: str  # how the engine says it multiplies (bench: engine_path)
    dot: str  # "vpdpbusd" (AVX-512 VNNI) or "pmaddwd" (AVX2)
    lanes: int  # int32 lanes per vector register
    group: int  # k values in one 32-bit word of a packed operand: 4 bytes, or 2 int16
    b_offset: int  # added to every entry of B' in its packed words
    required: tuple[str, ...]  # the LLVM CPU features it needs
    mr: int  # rows of A' per micro-tile
    nv: int  # vectors of B' columns per micro-tile


# vpdpbusd: 64 int8 multiply-adds into 16 int32 lanes in one instruction; it multiplies
# unsigned by signed bytes, hence B' + 128.
VNNI512 = Isa(
    "int8-vnni", "vpdpbusd", 16, 4, B_OFFSET, ("+avx512f", "+avx512bw", "+avx512vnni"), 8, 2
)
# AVX-VNNI (Intel cores since Alder Lake without AVX-512): the same instruction on 256
# bits, VEX-encoded; 16 vector registers, so a 6 x 16 tile as for AVX2.
AVXVNNI = Isa("int8-avxvnni", "vpdpbusd", 8, 4, B_OFFSET, ("+avxvnni",), 6, 2)
# vpmaddwd: 16 int16 products summed in pairs into 8 int32 lanes, plus an add: as many
# multiply-adds per instruction as two float32 FMAs (one vpmaddwd a cycle measured on
# Zen 3: about 55 G multiply-adds/s per core from L1). The byte form (vpmaddubsw) would
# saturate on noisy entries near 127, so the operands are packed as int16, signed, with
# no offset. A 6 x 16 tile measured fastest on Zen 3 (against 4 x 16, 4 x 24, 8 x 8,
# 2 x 32).
AVX2 = Isa("int16-avx2", "pmaddwd", 8, 2, 0, ("+avx2",), 6, 2)
ISAS = (VNNI512, AVXVNNI, AVX2)  # the first this CPU has, and passes its self-test, is used


@dataclass(frozen=True)
class IntTile:
    isa: Isa
    mr: int  # rows of A' per micro-tile
    nr: int  # columns of B' per micro-tile (lanes per vector x vectors)
    tile: Any  # the ctypes function (callable from Numba nopython code)
    keep: Any  # the llvmlite engine that owns the machine code

    @property
    def group(self) -> int:
        return self.isa.group

    @property
    def b_offset(self) -> int:
        return self.isa.b_offset


def kernel_ir(mr: int, nv: int, isa: Isa | None = None) -> str:
    """LLVM IR of the micro-kernel for MR = mr rows and NR = lanes * nv columns."""
    isa = isa or VNNI512
    lanes = isa.lanes
    # 512 bits: AVX-512 VNNI; 256 bits: EVEX (AVX512VL) or VEX (AVX-VNNI) by the CPU
    dpbusd = f"llvm.x86.avx512.vpdpbusd.{lanes * 32}"
    if isa.dot == "pmaddwd" and lanes != 8:
        raise ValueError("the pmaddwd form is built for AVX2 (8 lanes) only")
    vec = f"<{lanes} x i32>"
    regs = [(i, v) for i in range(mr) for v in range(nv)]
    out: list[str] = []
    emit = out.append
    if isa.dot == "vpdpbusd":
        emit(f"declare {vec} @{dpbusd}({vec}, {vec}, {vec})")
    else:
        emit(f"declare {vec} @llvm.x86.avx2.pmadd.wd(<16 x i16>, <16 x i16>)")
    emit(f"declare {vec} @llvm.fshl.v{lanes}i32({vec}, {vec}, {vec})")
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
        emit(f"  %o{i}_{v} = add i64 %ro{i}_{v}, {v * lanes}")
        emit(f"  %pc{i}_{v} = getelementptr i32, ptr %acc, i64 %o{i}_{v}")
        emit(f"  %ld{i}_{v} = load {vec}, ptr %pc{i}_{v}, align 4")
        emit(f"  %c0_{i}_{v} = select i1 %init, {vec} zeroinitializer, {vec} %ld{i}_{v}")
        emit(f"  %so{i}_{v} = mul i64 %ldst, {i}")
        emit(f"  %sq{i}_{v} = add i64 %so{i}_{v}, {v * lanes}")
        emit(f"  %ps{i}_{v} = getelementptr i32, ptr %state, i64 %sq{i}_{v}")
    emit("  %any = icmp sgt i64 %steps, 0")
    emit("  br i1 %any, label %step, label %done")

    # step loop header
    emit("step:")
    emit("  %s = phi i64 [0, %entry], [%s1, %stepend]")
    for i, v in regs:
        emit(f"  %sa{i}_{v} = phi {vec} [%c0_{i}_{v}, %entry], [%sf{i}_{v}, %stepend]")
    emit("  %sa = mul i64 %s, %astep")
    emit("  %sb = mul i64 %s, %bstep")
    emit("  %pas = getelementptr i8, ptr %a, i64 %sa")
    emit("  %pbs = getelementptr i8, ptr %b, i64 %sb")
    emit("  br label %quad")

    # quad loop
    emit("quad:")
    emit("  %q = phi i64 [0, %step], [%q1, %quad]")
    for i, v in regs:
        emit(f"  %qa{i}_{v} = phi {vec} [%sa{i}_{v}, %step], [%qn{i}_{v}, %quad]")
    emit(f"  %aoff = mul i64 %q, {mr * 4}")
    emit(f"  %boff = mul i64 %q, {nv * lanes * 4}")
    emit("  %pa = getelementptr i8, ptr %pas, i64 %aoff")
    emit("  %pb = getelementptr i8, ptr %pbs, i64 %boff")
    for v in range(nv):
        emit(f"  %pbv{v} = getelementptr i8, ptr %pb, i64 {v * lanes * 4}")
        emit(f"  %bv{v} = load {vec}, ptr %pbv{v}, align 1")
        if isa.dot == "pmaddwd":
            emit(f"  %bw{v} = bitcast {vec} %bv{v} to <16 x i16>")
    for i in range(mr):
        emit(f"  %pai{i} = getelementptr i8, ptr %pa, i64 {i * 4}")
        emit(f"  %as{i} = load i32, ptr %pai{i}, align 1")
        emit(f"  %ai{i} = insertelement {vec} poison, i32 %as{i}, i64 0")
        emit(
            f"  %ab{i} = shufflevector {vec} %ai{i}, {vec} poison, <{lanes} x i32> zeroinitializer"
        )
        if isa.dot == "pmaddwd":
            emit(f"  %aw{i} = bitcast {vec} %ab{i} to <16 x i16>")
        for v in range(nv):
            if isa.dot == "vpdpbusd":
                emit(
                    f"  %qn{i}_{v} = call {vec} @{dpbusd}("
                    f"{vec} %qa{i}_{v}, {vec} %bv{v}, {vec} %ab{i})"
                )
            else:  # 16 int16 products summed in pairs into 8 int32 lanes, then added
                emit(
                    f"  %pm{i}_{v} = call {vec} @llvm.x86.avx2.pmadd.wd("
                    f"<16 x i16> %bw{v}, <16 x i16> %aw{i})"
                )
                emit(f"  %qn{i}_{v} = add {vec} %qa{i}_{v}, %pm{i}_{v}")
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
        emit(f"  %cv{i} = insertelement {vec} poison, i32 %cs{i}, i64 0")
        emit(
            f"  %cb{i} = shufflevector {vec} %cv{i}, {vec} poison, <{lanes} x i32> zeroinitializer"
        )
        for v in range(nv):
            emit(f"  %x{i}_{v} = sub {vec} %qn{i}_{v}, %cb{i}")
            emit(f"  %st{i}_{v} = load {vec}, ptr %ps{i}_{v}, align 4")
            emit(f"  %sp{i}_{v} = select i1 %fresh, {vec} zeroinitializer, {vec} %st{i}_{v}")
            ones = f"{vec} <" + ", ".join(["i32 1"] * lanes) + ">"
            emit(
                f"  %rl{i}_{v} = call {vec} @llvm.fshl.v{lanes}i32({vec} %sp{i}_{v}, "
                f"{vec} %sp{i}_{v}, {ones})"
            )
            emit(f"  %nw{i}_{v} = xor {vec} %rl{i}_{v}, %x{i}_{v}")
            emit(f"  store {vec} %nw{i}_{v}, ptr %ps{i}_{v}, align 4")
    emit("  br label %stepend")

    emit("stepend:")
    for i, v in regs:
        emit(f"  %sf{i}_{v} = phi {vec} [%qn{i}_{v}, %quadend], [%qn{i}_{v}, %dofold]")
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
        emit(f"  %fv{i} = insertelement {vec} poison, i32 %fz{i}, i64 0")
        emit(
            f"  %fb{i} = shufflevector {vec} %fv{i}, {vec} poison, <{lanes} x i32> zeroinitializer"
        )
        for v in range(nv):
            emit(f"  %out{i}_{v} = sub {vec} %sf{i}_{v}, %fb{i}")
            emit(f"  store {vec} %out{i}_{v}, ptr %pc{i}_{v}, align 4")
    emit("  br label %done")
    emit("done:")
    emit("  ret void")
    emit("}")
    return "\n".join(out) + "\n"


def _llvm() -> Any:
    """llvmlite's binding, with LLVM's native target initialized."""
    import llvmlite.binding as llvm

    for init in (llvm.initialize_native_target, llvm.initialize_native_asmprinter):
        try:
            init()
        except RuntimeError:  # newer llvmlite initializes LLVM itself
            pass
    return llvm


def _optimized(isa: Isa, mr: int, nv: int, cpu: str, features: str) -> tuple[Any, Any]:
    """(target machine, optimized module) of the micro-kernel for ``cpu``."""
    llvm = _llvm()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(
        cpu=cpu, features=features, opt=3, codemodel="jitdefault"
    )
    module = llvm.parse_assembly(kernel_ir(mr, nv, isa))
    module.verify()
    try:
        builder = llvm.create_pass_builder(machine, llvm.PipelineTuningOptions(speed_level=3))
        builder.getModulePassManager().run(module, builder)
    except Exception as exc:  # the IR is already what it should be; passes only polish
        log.debug("%s: LLVM passes not run (%s)", isa.path, exc)
    return machine, module


def assembly(isa: Isa, mr: int, nv: int, cpu: str) -> str:
    """The micro-kernel's machine code as text for ``cpu`` (any x86 CPU LLVM knows,
    whatever this one is): tests check every form compiles on any machine."""
    machine, module = _optimized(isa, mr, nv, cpu, ",".join(isa.required))
    return str(machine.emit_assembly(module))


def _compile(isa: Isa, mr: int, nv: int) -> tuple[int, Any]:
    llvm = _llvm()
    features = llvm.get_host_cpu_features().flatten()
    if not all(f in features.split(",") for f in isa.required):
        raise OSError(f"this CPU lacks {', '.join(isa.required)}")
    machine, module = _optimized(isa, mr, nv, llvm.get_host_cpu_name(), features)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return engine.get_function_address(NAME), engine


def pack_reference(x: np.ndarray, strip: int, r: int, offset: int, group: int = 4) -> np.ndarray:
    """The packed layout of ``x`` (k x cols, int) as bytes: one r-step after the other,
    inside a step the strips of ``strip`` columns one after the other, inside a strip
    the step's groups of ``group`` k (zero padded), inside a group each column's word
    (4 bytes, or 2 little-endian int16) adjacent. For tests and the self-test
    (int8_kernels.build_packed_panel writes the same)."""
    k, cols = x.shape
    steps, gps = k // r, -(-r // group)
    strips = -(-cols // strip)
    out = np.zeros((steps, strips, gps * group, strip), np.int64)
    padded = np.zeros((k, strips * strip), np.int64)
    padded[:, :cols] = x
    for s in range(steps):
        block = padded[s * r : (s + 1) * r].reshape(r, strips, strip).transpose(1, 0, 2)
        out[s, :, :r] = block + offset
    out = out.reshape(steps, strips, gps, group, strip).transpose(0, 1, 2, 4, 3)
    if group == 4:
        return (out & 0xFF).astype(np.uint8).ravel()
    return np.ascontiguousarray(out.astype("<i2")).view(np.uint8).ravel()


def _self_test(found: IntTile) -> bool:
    rng = np.random.default_rng(11)
    mr, nr, group, offset = found.mr, found.nr, found.group, found.b_offset
    for r, steps in ((8, 3), (2, 5), (128, 2), (6, 2)):
        k = r * steps
        gps = -(-r // group)
        a = rng.integers(-127, 127, (mr, k))
        b = rng.integers(-127, 127, (k, nr))
        a_pack = pack_reference(a.T, mr, r, 0, group)
        b_pack = pack_reference(b, nr, r, offset, group)
        corr = np.empty((steps, mr), np.int32)
        for s in range(steps):
            corr[s] = offset * a[:, : (s + 1) * r].sum(axis=1)
        acc = np.full((mr, nr), 7, np.int32)
        state = np.full((mr, nr), 3, np.uint32)
        half = steps // 2
        calls = ((0, half, FLAG_INIT | FLAG_FOLD), (half, steps, FLAG_FOLD | FLAG_FINAL))
        for lo, hi, flags in calls:
            found.tile(
                a_pack.ctypes.data + lo * gps * mr * 4, gps * mr * 4,
                b_pack.ctypes.data + lo * gps * nr * 4, gps * nr * 4,
                corr.ctypes.data + lo * mr * 4,
                acc.ctypes.data, nr, state.ctypes.data, nr, hi - lo, gps, flags,
            )  # fmt: skip
        expect_state = np.zeros((mr, nr), np.uint32)
        for s in range(steps):
            part = (a[:, : (s + 1) * r] @ b[: (s + 1) * r]).astype(np.int64)
            rot = (expect_state << np.uint32(1)) | (expect_state >> np.uint32(31))
            expect_state = rot ^ (part & 0xFFFFFFFF).astype(np.uint32)
        if not (np.array_equal(acc, a @ b) and np.array_equal(state, expect_state)):
            return False
    return True


def build(isa: Isa, mr: int | None = None, nv: int | None = None) -> IntTile:
    """Compile ``isa``'s micro-kernel (OSError where this CPU lacks it); not self-tested."""
    mr, nv = mr or isa.mr, nv or isa.nv
    address, engine = _compile(isa, mr, nv)
    return IntTile(isa, mr, isa.lanes * nv, _PROTO(address), engine)


# POUW_CPU_PATH: how the CPU engine multiplies. "auto" (the default) takes the first
# form of ISAS that this CPU runs and that passes its self-test; a form's name takes
# that form only; "sgemm" takes none (float32 BLAS). An escape hatch for an operator
# whose CPU runs a form badly, and a way to time or test one form on a CPU with more.
CPU_PATH_ENV = "POUW_CPU_PATH"
AUTO = "auto"
SGEMM = "sgemm"
CPU_PATHS = (AUTO, *(isa.path for isa in ISAS), SGEMM)


def cpu_path_setting(value: str | None = None) -> str:
    """``value``, else $POUW_CPU_PATH (empty counts as unset), else "auto"; ValueError
    naming the choices when it is none of them."""
    chosen = (value if value is not None else os.environ.get(CPU_PATH_ENV, "")).strip()
    chosen = chosen or AUTO
    if chosen not in CPU_PATHS:
        raise ValueError(
            f"{CPU_PATH_ENV}={chosen!r} is not a CPU path: use one of {', '.join(CPU_PATHS)}"
        )
    return chosen


_found: dict[str, IntTile | None] = {}
_lock = threading.Lock()


def find_int_tile(path: str = AUTO) -> IntTile | None:
    """The micro-kernel for ``path`` (a form of ISAS, or "auto": the first this CPU
    runs) that passes its self-test; None when there is none (the engine then
    multiplies with float32 sgemm). Built once per path."""
    if path == SGEMM:
        return None
    forms = ISAS if path == AUTO else tuple(isa for isa in ISAS if isa.path == path)
    if not forms:
        raise ValueError(f"no integer form named {path!r}: {', '.join(CPU_PATHS)}")
    with _lock:
        if path not in _found:
            _found[path] = None
            for isa in forms:
                try:
                    found = build(isa)
                except Exception as exc:  # no such CPU feature, or no LLVM backend for it
                    log.info("%s: not used (%s)", isa.path, exc)
                    continue
                try:
                    passed = _self_test(found)
                except Exception as exc:  # a broken build must not take the engine down
                    log.warning("%s: the micro-kernel's self-test failed (%s)", isa.path, exc)
                    passed = False
                if passed:
                    _found[path] = found
                    break
                log.warning("%s: the micro-kernel failed its self-test; not used", isa.path)
        return _found[path]


def cpu_path_problem(cpu_mines: bool = True) -> str | None:
    """What is wrong with $POUW_CPU_PATH, for a command to say before it starts
    anything; None when it is fine. A value that names no path is always wrong; a form
    this CPU does not run only where the CPU engine will mine (``cpu_mines``: not on a
    GPU host, where the value is not used)."""
    try:
        path = cpu_path_setting()
    except ValueError as exc:
        return str(exc)
    if not cpu_mines or path in (AUTO, SGEMM) or find_int_tile(path) is not None:
        return None
    return (
        f"{CPU_PATH_ENV}={path}: this CPU does not run that form (the log says why); unset "
        f"it or use one of {', '.join(CPU_PATHS)}"
    )
