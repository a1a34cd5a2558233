"""Wrong: the tile counts use floor division, N // tile_n and M // tile_m, so a ragged
edge (or a tile larger than the matrix) is never loaded. With M=1 and tile_m > 1, b is not
loaded at all and the decode intensity goes far past 2."""
# expect: gemm-traffic-matches-model
# expect: decode-intensity-capped

import numpy as np

EXERCISE = "lab-03-tiled-gemm"


def _tiles(n, tile):
    """How many tiles of size `tile` cover n elements (the last one may be ragged)."""
    return n // tile


def tiled_matmul(a, b, tile_m, tile_n, tile_k):
    """c = a @ b, one (tile_m, tile_n) output tile at a time, stepping through K by tile_k.

    Returns c and the number of elements of a and b the loops read: each output tile reads its
    (rows, tile_k) slice of a and (tile_k, cols) slice of b once per k step; ragged edge tiles
    read only the elements that exist.
    """
    M, K = a.shape
    N = b.shape[1]
    c = np.zeros((M, N), dtype=np.result_type(a, b, np.float64))
    loaded = 0
    for i in range(0, M, tile_m):
        for j in range(0, N, tile_n):
            acc = np.zeros((min(tile_m, M - i), min(tile_n, N - j)), dtype=c.dtype)
            for k in range(0, K, tile_k):
                a_tile = a[i : i + tile_m, k : k + tile_k]
                b_tile = b[k : k + tile_k, j : j + tile_n]
                acc += a_tile @ b_tile
                loaded += a_tile.size + b_tile.size
            c[i : i + tile_m, j : j + tile_n] = acc
    return c, loaded


def tile_reuse(tile_m, tile_n):
    """FLOPs per element loaded for one output tile: 2*tm*tn*tk / ((tm + tn)*tk)."""
    return 2.0 * tile_m * tile_n / (tile_m + tile_n)


def gemm_traffic(M, N, K, tile_m, tile_n):
    """Elements moved by the tiled algorithm: a re-read once per column of tiles, b once per
    row of tiles, and c written once."""
    return M * K * _tiles(N, tile_n) + K * N * _tiles(M, tile_m) + M * N


def arithmetic_intensity(M, N, K, tile_m, tile_n, bytes_per_element):
    """FLOPs per byte moved."""
    return 2.0 * M * N * K / (gemm_traffic(M, N, K, tile_m, tile_n) * bytes_per_element)


def gemm_time_estimate(M, N, K, tile_m, tile_n, bytes_per_element, peak_flops, bandwidth):
    """Roofline estimate in seconds: the slower of doing the math and moving the bytes."""
    compute_s = 2.0 * M * N * K / peak_flops
    memory_s = gemm_traffic(M, N, K, tile_m, tile_n) * bytes_per_element / bandwidth
    return max(compute_s, memory_s)
