"""Wrong: int() truncates: capacity rounds down, so an expert cannot even take its fair share."""
# expect: capacity-exact

import math
from fractions import Fraction

import numpy as np

EXERCISE = "lab-04-expert-load-balance"


def expert_loads(topk_ids, num_experts):
    """How many of the T*k assignments each expert receives: (E,) int."""
    flat = np.asarray(topk_ids).reshape(-1).astype(np.int64)
    return np.bincount(flat, minlength=num_experts)


def imbalance_factor(loads):
    """The busiest expert's load over the mean expert load (1.0 is perfect balance)."""
    loads = np.asarray(loads, dtype=np.float64)
    return float(loads.max() / loads.mean())


def _contiguous(num_experts, num_devices):
    """Experts 0..E/n-1 on device 0, the next E/n on device 1, and so on."""
    return np.arange(num_experts) // (num_experts // num_devices)


def device_loads(loads, num_devices, placement=None):
    """Sum of the loads of the experts each device hosts: (num_devices,)."""
    loads = np.asarray(loads)
    if placement is None:
        placement = _contiguous(loads.size, num_devices)
    out = np.zeros(num_devices, dtype=loads.dtype if np.issubdtype(loads.dtype, np.integer) else np.float64)
    np.add.at(out, np.asarray(placement, dtype=np.int64), loads)
    return out


def ep_step_time(loads, num_devices, time_per_token, placement=None):
    """An expert-parallel step waits for its busiest device: max device load * time per token."""
    return float(device_loads(loads, num_devices, placement).max() * time_per_token)


def capacity(num_tokens, k, num_experts, capacity_factor):
    """ceil(capacity_factor * T * k / E), computed exactly (no float rounding at integer boundaries)."""
    return int(capacity_factor * num_tokens * k / num_experts)


def capacity_drops(loads, capacity):
    """Assignments beyond each expert's capacity, summed over experts."""
    return int(np.maximum(np.asarray(loads, dtype=np.int64) - capacity, 0).sum())


def balanced_placement(loads, num_devices):
    """E/num_devices experts per device, spreading the load (greedy, heaviest expert first).

    Each expert, heaviest first, goes to the least-loaded device that still has a free slot.
    The contiguous placement is returned instead when it is at least as good.
    """
    loads = np.asarray(loads, dtype=np.int64)
    E = loads.size
    per_device = E // num_devices
    placement = np.empty(E, dtype=np.int64)
    total = np.zeros(num_devices, dtype=np.int64)
    slots = np.full(num_devices, per_device)
    for e in np.argsort(-loads, kind="stable"):
        open_devices = np.flatnonzero(slots > 0)
        d = open_devices[np.argmin(total[open_devices])]
        placement[e] = d
        total[d] += loads[e]
        slots[d] -= 1
    contiguous = _contiguous(E, num_devices)
    if device_loads(loads, num_devices, contiguous).max() <= total.max():
        return contiguous
    return placement
