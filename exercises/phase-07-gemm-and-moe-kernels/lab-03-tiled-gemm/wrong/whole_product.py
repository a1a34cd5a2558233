"""Wrong (breaks the rule): c is the whole product a @ b in one call, and the count is the
model's closed form. Right values, no tiling."""
# expect: tiled-matmul-is-tiled error

import numpy as np

EXERCISE = "lab-03-tiled-gemm"


def _tiles(n, tile):
    """How many tiles of size `tile` cover n elements (the last one may be ragged)."""
    return -(-n // tile)


def tiled_matmul(a, b, tile_m, tile_n, tile_k):
    """The whole product in one call, and the count the tiled loops would have made."""
    M, K = a.shape
    N = b.shape[1]
    c = a @ b
    return c, M * K * _tiles(N, tile_n) + K * N * _tiles(M, tile_m)


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
