"""The GPU engine's self-test: every compiled transcript kernel against the NumPy
reference, the device tickets against hashlib, and the device commitments and noise
lines against consensus, on small adversarial cases (run once per device by
``prepare``; a kernel that fails is never used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME
from compute.cupy_device import TRANSCRIPT_KERNELS
from compute.cupy_host import (
    be_words,
    kernel_r_multiple,
    noise_template,
    split_levels,
    tag_prefix,
    ticket_prefix,
)
from compute.gpu_backends import CupyBackend
from consensus.commitments import row_tree
from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_B_RIGHT,
    dense_noise_lines,
)
from consensus.transcript import (
    fold_transcript,
    ticket,
    tile_origin,
)


class SelfTest:
    """CupyEngine.self_test (a mixin: the attributes are CupyEngine's)."""

    device_id: int | None
    _backend: Any

    def self_test(self, seed: int = 0) -> dict[str, Any]:
        """Compare every compiled transcript kernel with the NumPy reference transcript,
        and the GPU ticket hash with hashlib, on small cases (padding, r = 16/32/128,
        the extreme entries -127 and 126; the mma kernel also against the plain kernel
        on a larger product), the GPU ticket hash with hashlib, and the GPU commitments
        and noise lines with consensus; then the mma tuning variants (MMA_VARIANTS) on the
        same cases, with and without the fold. Returns {"mma", "plain", "wmma",
        "wmma_ptx", "tickets", "commit", "noise", each variant's name: bool, "compiled",
        "variants_passed", "variants_failed": [...], and any errors}."""
        be = self._backend if self._backend is not None else CupyBackend(self.device_id)
        self._backend = be
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {"compiled": list(be.kernels.compiled)}
        for name, err in be.kernels.wmma_errors.items():
            out[f"{name}_compile_error"] = err[-600:]
        cases = [
            (200, 96, 136, 32),
            (128, 256, 256, 128),
            (64, 128, 16, 16),
            (136, 64, 8, 32),
            (384, 576, 264, 32),  # 9 k-stages, partial block tiles
            (256, 1024, 384, 128),
            (256, 640, 256, 128),  # extremes, 10 k-stages
        ]
        variants = [x for x in be.kernels.compiled if x in MMA_VARIANT_BY_NAME]
        names = TRANSCRIPT_KERNELS + tuple(variants)
        ok = {name: name in be.kernels.compiled for name in names}
        case_data = []
        for ci, (m, k, n, r) in enumerate(cases):
            if ci in (1, 6):
                a_n = np.full((m, k), -127, dtype=np.int8)
                b_n = np.full((n, k), -127, dtype=np.int8)
                a_n[::3] = 126
                if ci == 6:
                    b_n[1::2] = 126
                    a_n[:, ::5] = 126
            else:
                a_n = rng.integers(-127, 127, size=(m, k), dtype=np.int8)
                b_n = rng.integers(-127, 127, size=(n, k), dtype=np.int8)
            ref_c, ref_s = fold_transcript(a_n.astype(np.int64), b_n.T.astype(np.int64), r)
            case_data.append((m, k, n, r, a_n, b_n, ref_c, ref_s))

        def small_cases(group: list[str]) -> None:
            for m, k, n, r, a_n, b_n, ref_c, ref_s in case_data:
                ap, btp = self.pad_operands(be.to_device(a_n), be.to_device(b_n))
                for kern in group:
                    if not ok[kern] or r % kernel_r_multiple(kern):
                        continue
                    try:
                        c, s, _ = self.transcript_device(ap, btp, k, r, kernel=kern)
                        be.synchronize()
                        c_h = be.to_host(c[:m, :n])
                        s_h = be.to_host(s[:m, :n]).view(np.uint32)
                        good = np.array_equal(c_h, ref_c) and np.array_equal(s_h, ref_s)
                    except Exception as exc:  # noqa: BLE001 - report, fall back
                        good = False
                        out[f"{kern}_error"] = repr(exc)[-600:]
                    if not good:
                        ok[kern] = False
                        out.setdefault(f"{kern}_failed_case", (m, k, n, r))

        def large_case(group: list[str]) -> None:
            """The kernels of group against the verified plain kernel on a larger product
            (640 rows: partial 256-row tiles; 384 columns: partial 256-column tiles),
            with and without the fold."""
            big = [x for x in group if ok[x]]
            if not big:
                return
            try:
                for r in (32, 128):
                    a_n = rng.integers(-127, 127, size=(640, 2048), dtype=np.int8)
                    b_n = rng.integers(-127, 127, size=(384, 2048), dtype=np.int8)
                    ap, btp = self.pad_operands(be.to_device(a_n), be.to_device(b_n))
                    c2, s2, _ = self.transcript_device(ap, btp, 2048, r, kernel="plain")
                    for kern in big:
                        try:
                            c1, s1, _ = self.transcript_device(ap, btp, 2048, r, kernel=kern)
                            good = bool((c1 == c2).all()) and bool((s1 == s2).all())
                            c0, s0, _ = self.transcript_device(
                                ap, btp, 2048, r, fold=False, kernel=kern
                            )
                            good = good and bool((c0 == c2).all()) and not bool(s0.any())
                        except Exception as exc:  # noqa: BLE001
                            good = False
                            out[f"{kern}_error"] = repr(exc)[-600:]
                        if not good:
                            ok[kern] = False
                            out.setdefault(f"{kern}_failed_case", (640, 2048, 384, r))
            except Exception as exc:  # noqa: BLE001
                for kern in big:
                    ok[kern] = False
                out["large_case_error"] = repr(exc)[-600:]

        # The verified kernels first; the tuning variants last (a variant that breaks
        # the device cannot take the others' results with it).
        small_cases(list(TRANSCRIPT_KERNELS))
        out.update({name: ok[name] for name in TRANSCRIPT_KERNELS})
        # Tickets: random states, odd tile shapes, a threshold in the middle.
        tickets_ok = True
        try:
            for m, n, th, tw in ((16, 24, 8, 8), (12, 20, 3, 5), (64, 64, 16, 16)):
                s_h = rng.integers(0, 1 << 32, size=(m, n), dtype=np.uint64).astype(np.uint32)
                s_pad = np.zeros((m + 3, n + 5), dtype=np.uint32)
                s_pad[:m, :n] = s_h
                sigma = rng.bytes(32)
                threshold = 1 << 255
                digests_d, wins_d = be.kernels.tickets(
                    be.to_device(s_pad.view(np.int32)),
                    m,
                    n,
                    th,
                    tw,
                    be.to_device(be_words(ticket_prefix())),
                    be.to_device(be_words(sigma)),
                    be.to_device(be_words(threshold.to_bytes(32, "big"))),
                    False,
                )
                raw = be.to_host(digests_d).tobytes()
                wins = be.to_host(wins_d)
                for t in range((m // th) * (n // tw)):
                    i, j = tile_origin(t, n, th, tw)
                    want = ticket(sigma, t, s_h[i : i + th, j : j + tw])
                    if raw[32 * t : 32 * t + 32] != want or bool(wins[t]) != (
                        int.from_bytes(want, "big") < threshold
                    ):
                        tickets_ok = False
        except Exception as exc:  # noqa: BLE001
            tickets_ok = False
            out["tickets_error"] = repr(exc)[-600:]
        out["tickets"] = tickets_ok
        # The mma kernel against the verified plain kernel on a larger product.
        large_case(["mma"])
        out["mma"] = ok["mma"]
        # Commitments and noise lines against consensus.
        out["commit"] = out["noise"] = False
        if be.kernels.has_commit:
            try:
                good = True
                leaf_p = be.to_device(be_words(tag_prefix(TAG_MERKLE_LEAF)))
                node_p = be.to_device(be_words(tag_prefix(TAG_MERKLE_NODE)))
                for rows, width in ((1, 64), (2, 1), (5, 100), (13, 128), (37, 63), (64, 8192)):
                    mat = rng.integers(-64, 64, size=(rows, width), dtype=np.int8)
                    leaves = be.kernels.line_leaves(be.to_device(mat), leaf_p)
                    got = split_levels(be.to_host(be.kernels.merkle_tree(leaves, node_p)), rows)
                    good = good and got == row_tree(mat)
                # Columns of a transposed device matrix, as mine() hashes B.
                b_n = rng.integers(-64, 64, size=(200, 7), dtype=np.int8)
                bt = be.xp.ascontiguousarray(be.to_device(b_n).T)
                got = split_levels(
                    be.to_host(be.kernels.merkle_tree(be.kernels.line_leaves(bt, leaf_p), node_p)),
                    7,
                )
                good = good and got == row_tree(b_n.T)
                out["commit"] = bool(good)
            except Exception as exc:  # noqa: BLE001
                out["commit_error"] = repr(exc)[-600:]
            try:
                good = True
                for r, rows, first in ((32, 40, 0), (128, 70, 3), (16, 5, 0), (160, 9, 65530)):
                    seed = rng.bytes(32)
                    for label in (LABEL_A_LEFT, LABEL_B_RIGHT):
                        got = be.to_host(
                            be.kernels.noise_lines(
                                be.to_device(noise_template(seed, label)), first, rows, r
                            )
                        )
                        want = dense_noise_lines(seed, label, range(first, first + rows), r)
                        good = good and np.array_equal(got, want)
                out["noise"] = bool(good)
            except Exception as exc:  # noqa: BLE001
                out["noise_error"] = repr(exc)[-600:]
        else:
            out["commit_error"] = be.kernels.commit_error[-600:]
        # The tuning variants: the same small cases, then the larger product.
        small_cases(variants)
        large_case(variants)
        out.update({name: ok[name] for name in variants})
        out["variants_passed"] = [x for x in variants if ok[x]]
        out["variants_failed"] = [x for x in variants if not ok[x]]
        return out
