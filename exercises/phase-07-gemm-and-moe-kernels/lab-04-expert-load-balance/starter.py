"""lab-04: expert load balance (loads, the straggler device, capacity, placement).

Implement the seven functions below; `grader submit starter.py` grades them. Read README.md
first. Arrays are numpy arrays; E experts, T tokens, k experts per token, and E is a multiple
of num_devices.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401

EXERCISE = "lab-04-expert-load-balance"


def expert_loads(topk_ids, num_experts):
    """How many assignments each expert receives.

    topk_ids (T, k) int (int32 or int64), num_experts: int -> loads (E,) int

    loads[e] counts the entries of topk_ids equal to e; experts nobody picks get 0, and the
    loads add up to T*k.
    """
    raise NotImplementedError("expert_loads")


def imbalance_factor(loads):
    """max(loads) / mean(loads) as a float: 1.0 is perfect balance; the mean is over all E experts."""
    raise NotImplementedError("imbalance_factor")


def device_loads(loads, num_devices, placement=None):
    """Load of each device: loads (E,), num_devices: int, placement (E,) int or None -> (num_devices,)

    placement[e] is the device that hosts expert e. None means contiguous blocks: experts
    0 .. E/num_devices - 1 on device 0, the next E/num_devices on device 1, and so on.
    A device that hosts no expert has load 0.
    """
    raise NotImplementedError("device_loads")


def ep_step_time(loads, num_devices, time_per_token, placement=None):
    """Seconds one expert-parallel step takes: the busiest device's load * time_per_token (a float).

    placement as in device_loads.
    """
    raise NotImplementedError("ep_step_time")


def capacity(num_tokens, k, num_experts, capacity_factor):
    """Per-expert token budget, an int: ceil(capacity_factor * num_tokens * k / num_experts).

    Exact: when the value is an integer, that integer (watch floating-point rounding).
    """
    raise NotImplementedError("capacity")


def capacity_drops(loads, capacity):
    """Assignments that do not fit: the sum over experts of max(load - capacity, 0), an int."""
    raise NotImplementedError("capacity_drops")


def balanced_placement(loads, num_devices):
    """A placement (E,) int that spreads the load: every device hosts exactly E/num_devices experts,
    the busiest device carries at most sum(loads)/num_devices + max(loads), and never more than
    under the contiguous placement (return the contiguous placement when it is the better one).
    """
    raise NotImplementedError("balanced_placement")
