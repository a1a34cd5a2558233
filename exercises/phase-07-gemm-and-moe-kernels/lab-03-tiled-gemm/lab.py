"""Grader-side code of lab-03: input generators and the claims checked as properties.

This file runs in the grader's process, never in the student's; students do not need it.
"""

from __future__ import annotations

import numpy as np

from grader.api import Tolerance, compare

# Values compared with the model's: generous for reordered float arithmetic, far below any bug.
MODEL_TOLERANCE = Tolerance(rtol=1e-7, atol=0.0)

# tiled_matmul's awkward shapes, tried first on every grading: (M, K, N, tile_m, tile_n, tile_k).
AWKWARD_SHAPES = [
    (1, 1, 1, 1, 1, 1),  # the smallest product
    (1, 7, 5, 1, 1, 1),  # a decode row, tiles of one element
    (5, 3, 7, 8, 8, 8),  # every tile larger than the matrix
    (7, 11, 13, 2, 3, 4),  # no size divisible by its tile
    (16, 16, 16, 4, 4, 4),  # everything divides
    (9, 20, 6, 4, 5, 7),  # ragged in all three loops
    (3, 17, 1, 16, 1, 16),  # one output column
    (33, 9, 17, 32, 16, 8),  # ragged by one element
    (12, 12, 12, 12, 12, 12),  # exactly one tile
    (6, 40, 10, 3, 5, 1),  # tile_k of one: a rank-1 update per step
    (8, 5, 8, 3, 3, 64),  # the whole K in one step
]

# Keep the students' Python loops short: at most this many (i, j, k) tile steps per call.
MAX_TILE_STEPS = 1500


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def model_loads(M: int, N: int, K: int, tile_m: int, tile_n: int) -> int:
    """Elements of a and b read by the tiled loops: gemm_traffic without the M*N store."""
    return M * K * ceil_div(N, tile_n) + K * N * ceil_div(M, tile_m)


# --- case generators ----------------------------------------------------------------------------


def as_given(rng: np.random.Generator, **dims: int) -> dict:
    """The model functions take plain integers: the case's dims are the inputs."""
    return dict(dims)


def time_inputs(
    rng: np.random.Generator,
    M: int,
    N: int,
    K: int,
    tile_m: int,
    tile_n: int,
    bytes_per_element: int,
    compute_bound: int,
) -> dict:
    """A GEMM and a machine on which it is clearly compute-bound (compute_bound=1) or clearly
    memory-bound (0): one of the two times is 1.5x to 6x the other, so the max of the two is
    never close to their sum, and both branches of the max are exercised."""
    flops = 2.0 * M * N * K
    moved = (M * K * ceil_div(N, tile_n) + K * N * ceil_div(M, tile_m) + M * N) * bytes_per_element
    peak_flops = float(10 ** rng.uniform(13.5, 15.5))  # 30 TFLOP/s .. 3 PFLOP/s
    compute_s = flops / peak_flops
    ratio = float(rng.uniform(1.5, 6.0))
    memory_s = compute_s / ratio if compute_bound else compute_s * ratio
    return {
        "M": M, "N": N, "K": K, "tile_m": tile_m, "tile_n": tile_n,
        "bytes_per_element": bytes_per_element,
        "peak_flops": peak_flops,
        "bandwidth": moved / memory_s,
    }  # fmt: skip


def tiled_inputs(rng: np.random.Generator, M: int, K: int, N: int, tile_m: int, tile_n: int, tile_k: int) -> dict:
    """Half-integers in [-3, 3]: every product and partial sum is exact in float64 (and in
    float32 at these sizes), so a @ b is exact whatever order the tiles add up in."""
    return {
        "a": rng.integers(-6, 7, size=(M, K)) / 2.0,
        "b": rng.integers(-6, 7, size=(K, N)) / 2.0,
        "tile_m": tile_m,
        "tile_n": tile_n,
        "tile_k": tile_k,
    }


def _random_shape(rng: np.random.Generator) -> tuple[int, int, int, int, int, int]:
    M, K, N = (int(v) for v in rng.integers(1, 41, size=3))
    tiles = [int(rng.integers(1, d + 5)) for d in (M, N, K)]
    while ceil_div(M, tiles[0]) * ceil_div(N, tiles[1]) * ceil_div(K, tiles[2]) > MAX_TILE_STEPS:
        smallest = int(np.argmin(tiles))
        tiles[smallest] *= 2
    return M, K, N, tiles[0], tiles[1], tiles[2]


def _tiled_shapes(rng: np.random.Generator, random: int) -> list[tuple[int, int, int, int, int, int]]:
    return AWKWARD_SHAPES + [_random_shape(rng) for _ in range(random)]


def _label(M: int, K: int, N: int, tm: int, tn: int, tk: int) -> str:
    return f"a ({M}x{K}) @ b ({K}x{N}) with tile_m={tm}, tile_n={tn}, tile_k={tk}"


# --- claims -------------------------------------------------------------------------------------


def tiled_product_is_exact(probe, rng: np.random.Generator, random: int = 8) -> str | None:
    """tiled_matmul's c equals a @ b exactly, on awkward and random shapes and tiles."""
    for shape in _tiled_shapes(rng, random):
        M, K, N, tm, tn, tk = shape
        inputs = tiled_inputs(rng, *shape)
        got = probe.submission("tiled_matmul", inputs, {"M": M, "N": N})["c"]
        result = compare("c", inputs["a"] @ inputs["b"], got, Tolerance(rtol=0.0, atol=0.0))
        if not result.ok:
            return f"{_label(*shape)}: {result.message} (the inputs are half-integers: a @ b has no rounding error in any summation order)"
    return None


def tiled_loads_match_model(probe, rng: np.random.Generator, random: int = 8) -> str | None:
    """tiled_matmul's elements_loaded is M*K*ceil(N/tn) + K*N*ceil(M/tm)."""
    for shape in _tiled_shapes(rng, random):
        M, K, N, tm, tn, tk = shape
        inputs = tiled_inputs(rng, *shape)
        got = int(probe.submission("tiled_matmul", inputs, {"M": M, "N": N})["elements_loaded"])
        want = model_loads(M, N, K, tm, tn)
        if got == want:
            continue
        steps = ceil_div(M, tm) * ceil_div(N, tn) * ceil_div(K, tk)
        why = {
            want + M * N: "that includes the M*N elements of c, which are stored, not read",
            steps * (tm * tk + tk * tn): "that counts whole tiles at the ragged edges; an edge tile reads only the elements that exist",
            M * K + K * N: "that counts every element once; the tiled loops read a again for every column of tiles and b for every row of tiles",
            model_loads(M, N, K, tn, tm): "tile_m and tile_n are swapped: a is re-read once per column of tiles (ceil(N/tile_n) times)",
        }.get(got, "each output tile reads its strip of a and its strip of b once per k step")
        return (
            f"{_label(*shape)}: elements_loaded is {got}, expected M*K*ceil(N/tile_n) + K*N*ceil(M/tile_m) "
            f"= {M}*{K}*{ceil_div(N, tn)} + {K}*{N}*{ceil_div(M, tm)} = {want}; {why}"
        )
    return None


def square_tiles_win(probe, rng: np.random.Generator, areas: int = 3) -> str | None:
    """Among all tiles of one area, the square one has strictly the highest reuse.

    The areas are perfect squares s*s; every factor pair (d, s*s/d), both orientations, goes
    through the submission's tile_reuse. Equal reuse for every shape (reuse = area) fails too:
    the claim is that the square is strictly better.
    """
    sides = rng.choice(np.array([6, 8, 10, 12, 16, 18, 20, 24, 30, 36, 48, 60]), size=areas, replace=False)
    for s in (int(v) for v in sides):
        area = s * s
        square = float(probe.submission("tile_reuse", {"tile_m": s, "tile_n": s})["reuse"])
        for d in range(1, s):
            if area % d:
                continue
            for tm, tn in ((d, area // d), (area // d, d)):
                other = float(probe.submission("tile_reuse", {"tile_m": tm, "tile_n": tn})["reuse"])
                if not other < square:
                    return (
                        f"tiles of area {area}: tile_reuse({tm}, {tn}) = {other:.6g}, but the square tile "
                        f"tile_reuse({s}, {s}) = {square:.6g}; the square should have the highest reuse"
                    )
    return None


def decode_intensity_capped(probe, rng: np.random.Generator, sizes: int = 3) -> str | None:
    """With M=1, arithmetic_intensity * bytes_per_element stays below 2 for every tile shape.

    Sweeps tile shapes from 1 to beyond the matrix (including the best one, tile_n >= N) on
    small and large N, K, through the submission's function. The values must also be the
    model's: an intensity that is too low would satisfy the cap for the wrong reason.
    """
    lows = [2, 64, 2048]
    highs = [64, 2048, 65536]
    wrong_value = None
    for i in range(sizes):
        lo, hi = lows[i % 3], highs[i % 3]
        N, K = (int(v) for v in np.exp(rng.uniform(np.log(lo), np.log(hi), size=2)).round())
        tile_ms = [1, 128, int(rng.integers(2, 300))]  # with M=1 every tile_m covers the one row
        tile_ns = sorted({1, 8, 64, 128, 256, N, 2 * N, int(rng.integers(1, N + 1))})
        for tm in tile_ms:
            for tn in tile_ns:
                bpe = int(rng.choice([1, 2, 4]))
                inputs = {"M": 1, "N": N, "K": K, "tile_m": tm, "tile_n": tn, "bytes_per_element": bpe}
                call = f"arithmetic_intensity(1, {N}, {K}, {tm}, {tn}, {bpe})"
                got = float(probe.submission("arithmetic_intensity", inputs, None)["intensity"])
                flops_per_element = got * bpe
                if not flops_per_element < 2.0:
                    return (
                        f"{call} = {got:.6g} FLOP/byte, i.e. {flops_per_element:.6g} FLOPs per element moved: "
                        "with M=1 each element of b serves a single multiply-add, so no tile can reach 2"
                    )
                want = float(probe.reference("arithmetic_intensity", inputs)["intensity"])
                result = compare("intensity", np.asarray(want), np.asarray(got), MODEL_TOLERANCE)
                if wrong_value is None and not result.ok:
                    wrong_value = (
                        f"{call} = {got:.6g}, the model gives {want:.6g}: the cap is a claim about the "
                        "model's intensity, 2*M*N*K / (gemm_traffic * bytes_per_element), and an "
                        "intensity that is too low stays under 2 for the wrong reason"
                    )
    return wrong_value
