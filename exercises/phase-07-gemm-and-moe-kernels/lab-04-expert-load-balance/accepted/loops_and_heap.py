"""Accepted: everything with plain loops, capacity in integer arithmetic (as_integer_ratio),
and the greedy placement driven by a heap of (load, device) with a different tie-break from
the solution's. Many placements are valid; the checks accept any that meets the bounds."""

import heapq

import numpy as np

EXERCISE = "lab-04-expert-load-balance"


def expert_loads(topk_ids, num_experts):
    loads = np.zeros(num_experts, dtype=np.int64)
    for row in topk_ids:
        for e in row:
            loads[e] += 1
    return loads


def imbalance_factor(loads):
    return max(int(x) for x in loads) / (sum(int(x) for x in loads) / len(loads))


def device_loads(loads, num_devices, placement=None):
    per = len(loads) // num_devices
    out = [0] * num_devices
    for e, load in enumerate(loads):
        d = e // per if placement is None else int(placement[e])
        out[d] += int(load)
    return np.array(out)


def ep_step_time(loads, num_devices, time_per_token, placement=None):
    return max(device_loads(loads, num_devices, placement)) * time_per_token


def capacity(num_tokens, k, num_experts, capacity_factor):
    num, den = float(capacity_factor).as_integer_ratio()
    return -(-(num * num_tokens * k) // (den * num_experts))


def capacity_drops(loads, capacity):
    return sum(max(int(x) - capacity, 0) for x in loads)


def balanced_placement(loads, num_devices):
    E = len(loads)
    per = E // num_devices
    heap = [(0, -d, d) for d in range(num_devices)]  # ties go to the highest device id
    heapq.heapify(heap)
    hosted = [0] * num_devices
    placement = np.zeros(E, dtype=np.int64)
    for e in sorted(range(E), key=lambda i: (-int(loads[i]), -i)):
        load, tie, d = heapq.heappop(heap)
        placement[e] = d
        hosted[d] += 1
        if hosted[d] < per:  # a full device leaves the heap for good
            heapq.heappush(heap, (load + int(loads[e]), tie, d))
    greedy = max(device_loads(loads, num_devices, placement))
    contiguous = max(device_loads(loads, num_devices))
    return np.arange(E) // per if contiguous <= greedy else placement
