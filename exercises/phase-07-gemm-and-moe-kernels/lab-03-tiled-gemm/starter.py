"""lab-03: a tiled matmul and the memory-traffic model of tiling.

Implement the five functions below; `grader submit starter.py` grades them. Read README.md
first. a and b are numpy arrays; every other argument is a plain Python int or float.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401

EXERCISE = "lab-03-tiled-gemm"


def tiled_matmul(a, b, tile_m, tile_n, tile_k):
    """c = a @ b, computed one (tile_m, tile_n) block of c at a time.

    a (M, K), b (K, N), tile sizes: ints >= 1 -> (c (M, N) float, elements_loaded int)

    For each output tile, step through K in slices of tile_k, multiply the (rows, tile_k)
    slice of a by the (tile_k, cols) slice of b and accumulate. Any sizes must work: the last
    tile of a loop may be smaller than the others, and a tile may be larger than the matrix.
    Never multiply the whole of a by the whole of b in one call.

    elements_loaded counts the elements of a and b your loops read (the sizes of the slices,
    summed over every k step of every output tile). It equals
    M*K*ceil(N/tile_n) + K*N*ceil(M/tile_m).
    """
    raise NotImplementedError("tiled_matmul")


def tile_reuse(tile_m, tile_n):
    """FLOPs per element loaded for one output tile over the K loop: 2*tm*tn/(tm+tn) (float)."""
    raise NotImplementedError("tile_reuse")


def gemm_traffic(M, N, K, tile_m, tile_n):
    """Elements the tiled GEMM moves (int): M*K*ceil(N/tile_n) + K*N*ceil(M/tile_m) reads of
    a and b, plus the M*N elements of c stored once."""
    raise NotImplementedError("gemm_traffic")


def arithmetic_intensity(M, N, K, tile_m, tile_n, bytes_per_element):
    """FLOPs per byte (float): 2*M*N*K / (gemm_traffic(...) * bytes_per_element)."""
    raise NotImplementedError("arithmetic_intensity")


def gemm_time_estimate(M, N, K, tile_m, tile_n, bytes_per_element, peak_flops, bandwidth):
    """Seconds (float): the larger of the compute time 2*M*N*K / peak_flops and the memory
    time gemm_traffic(...) * bytes_per_element / bandwidth (peak_flops in FLOP/s, bandwidth in
    bytes/s)."""
    raise NotImplementedError("gemm_time_estimate")
