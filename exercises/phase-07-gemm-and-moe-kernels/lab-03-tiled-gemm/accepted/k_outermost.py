"""Accepted: tiled_matmul with the k loop outermost (each k step updates every output tile,
a partial sum at a time), the count taken from the slices actually read, math.ceil in the
traffic model, and the time estimate written as an if/else."""

import math

import numpy as np

EXERCISE = "lab-03-tiled-gemm"


def tiled_matmul(a, b, tile_m, tile_n, tile_k):
    M, K = a.shape
    N = b.shape[1]
    c = np.zeros((M, N))
    loaded = 0
    for k0 in range(0, K, tile_k):
        k1 = min(k0 + tile_k, K)
        for j0 in range(0, N, tile_n):
            j1 = min(j0 + tile_n, N)
            for i0 in range(0, M, tile_m):
                i1 = min(i0 + tile_m, M)
                c[i0:i1, j0:j1] += a[i0:i1, k0:k1] @ b[k0:k1, j0:j1]
                loaded += (i1 - i0) * (k1 - k0) + (k1 - k0) * (j1 - j0)
    return c, loaded


def tile_reuse(tile_m, tile_n):
    flops = 2 * tile_m * tile_n  # per unit of k
    loads = tile_m + tile_n
    return flops / loads


def gemm_traffic(M, N, K, tile_m, tile_n):
    reads_a = M * K * math.ceil(N / tile_n)
    reads_b = K * N * math.ceil(M / tile_m)
    return reads_a + reads_b + M * N


def arithmetic_intensity(M, N, K, tile_m, tile_n, bytes_per_element):
    bytes_moved = gemm_traffic(M, N, K, tile_m, tile_n) * bytes_per_element
    return 2 * M * N * K / bytes_moved


def gemm_time_estimate(M, N, K, tile_m, tile_n, bytes_per_element, peak_flops, bandwidth):
    compute = 2 * M * N * K / peak_flops
    memory = gemm_traffic(M, N, K, tile_m, tile_n) * bytes_per_element / bandwidth
    if compute >= memory:
        return compute
    return memory
