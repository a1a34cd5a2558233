"""Accepted: a stronger placement: greedy, then pairwise swaps between the busiest device and
any other while they lower the busiest load (a small taste of what EPLB solvers do). Device
loads come back as float64 from a weighted bincount; step time as a Python float."""

from fractions import Fraction

import numpy as np

EXERCISE = "lab-04-expert-load-balance"


def expert_loads(topk_ids, num_experts):
    ids = np.asarray(topk_ids).ravel()
    return (ids[:, None] == np.arange(num_experts)[None, :]).sum(axis=0)


def imbalance_factor(loads):
    return float(np.max(loads)) * len(loads) / float(np.sum(loads))


def device_loads(loads, num_devices, placement=None):
    if placement is None:
        placement = np.repeat(np.arange(num_devices), len(loads) // num_devices)
    return np.bincount(placement, weights=loads, minlength=num_devices)


def ep_step_time(loads, num_devices, time_per_token, placement=None):
    return float(np.max(device_loads(loads, num_devices, placement))) * time_per_token


def capacity(num_tokens, k, num_experts, capacity_factor):
    value = Fraction(capacity_factor) * num_tokens * k / num_experts
    return int(value.numerator // value.denominator + (value.denominator != 1))


def capacity_drops(loads, capacity):
    over = np.asarray(loads) - capacity
    return int(over[over > 0].sum())


def _greedy(loads, num_devices):
    E = len(loads)
    per = E // num_devices
    placement = np.zeros(E, dtype=np.int64)
    total = np.zeros(num_devices)
    hosted = np.zeros(num_devices, dtype=np.int64)
    for e in np.argsort(loads)[::-1]:
        d = min((d for d in range(num_devices) if hosted[d] < per), key=lambda d: (total[d], d))
        placement[e], total[d], hosted[d] = d, total[d] + loads[e], hosted[d] + 1
    return placement


def balanced_placement(loads, num_devices):
    loads = np.asarray(loads)
    placement = _greedy(loads, num_devices)
    improved = True
    while improved:
        improved = False
        total = device_loads(loads, num_devices, placement)
        hot = int(np.argmax(total))
        for a in np.flatnonzero(placement == hot):
            for b in np.flatnonzero(placement != hot):
                delta = loads[a] - loads[b]
                other = placement[b]
                if delta > 0 and total[other] + delta < total[hot]:
                    placement[a], placement[b] = other, hot
                    improved = True
                    break
            if improved:
                break
    contiguous = np.arange(len(loads)) // (len(loads) // num_devices)
    if device_loads(loads, num_devices, contiguous).max() <= device_loads(loads, num_devices, placement).max():
        return contiguous
    return placement
