"""Grader-side code of lab-04: input generators and the claims checked as properties.

This file runs in the grader's process, never in the student's; students do not need it.
Every generator draws skewed routing (real routers are never uniform) and keeps the awkward
cases the checks rely on deterministic, whatever the seed: experts nobody picks, devices that
host no expert, capacities exactly at an integer boundary, loads that trap greedy placements.
"""

from __future__ import annotations

import math

import numpy as np

# --- routing ----------------------------------------------------------------------------------


def skewed_ids(rng: np.random.Generator, T: int, E: int, k: int, cold: bool = False) -> np.ndarray:
    """(T, k) expert ids, k distinct per row, drawn from a skewed popularity with one hot expert.

    Sampling without replacement by the Gumbel top-k trick. With ``cold``, the first and the
    last expert are never picked (when k leaves room for that).
    """
    popularity = rng.dirichlet(np.full(E, 0.4))
    popularity[rng.integers(E)] += 0.5  # one hot expert, as real routers have
    if cold and E - 2 >= k:
        popularity[[0, E - 1]] = 0.0
    with np.errstate(divide="ignore"):
        scores = np.log(popularity / popularity.sum()) + rng.gumbel(size=(T, E))
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    # Routers hand out int32 ids (vLLM) or int64 ones (torch.topk): accept both.
    return ids.astype(np.int32 if rng.random() < 0.5 else np.int64)


def loads_of(ids: np.ndarray, E: int) -> np.ndarray:
    return np.bincount(ids.reshape(-1).astype(np.int64), minlength=E)


def routing_inputs(rng: np.random.Generator, T: int, E: int, k: int, cold: int) -> dict:
    return {"topk_ids": skewed_ids(rng, T, E, k, bool(cold)), "num_experts": E}


def imbalance_inputs(rng: np.random.Generator, T: int, E: int, k: int) -> dict:
    return {"loads": loads_of(skewed_ids(rng, T, E, k), E)}


# --- devices ----------------------------------------------------------------------------------

NONE, BALANCED, UNEVEN = 0, 1, 2


def device_inputs(rng: np.random.Generator, devices: int, per_device: int, T: int, k: int, mode: int) -> dict:
    """Loads of E = devices * per_device experts, and a placement.

    mode 0: placement None (contiguous blocks); 1: a random placement with per_device experts on
    every device; 2: any device for any expert, the last device hosting none (when there are two
    or more devices).
    """
    E = devices * per_device
    loads = loads_of(skewed_ids(rng, T, E, min(k, E)), E)
    if mode == NONE:
        placement = None
    elif mode == BALANCED:
        placement = rng.permutation(np.repeat(np.arange(devices), per_device))
    else:
        placement = rng.integers(0, max(devices - 1, 1), size=E)
    placement = None if placement is None else placement.astype(np.int32 if rng.random() < 0.5 else np.int64)
    time_per_token = float(rng.uniform(0.5, 4.0) * 1e-6)  # seconds per token-expert assignment
    return {"loads": loads, "num_devices": devices, "placement": placement, "time_per_token": time_per_token}


# --- capacity ---------------------------------------------------------------------------------


def capacity_inputs(rng: np.random.Generator, T: int, k: int, E: int, cf8: int, exact: int) -> dict:
    """capacity_factor = cf8 / 8: a multiple of 1/8, exactly representable in binary, so the
    exact value of capacity_factor * T * k / E is unambiguous. With ``exact``, T is raised to
    the next value that makes it an integer (where a rounding error turns into a wrong ceil).
    """
    if exact:
        step = 8 * E // math.gcd(8 * E, cf8 * k)
        T = -(-T // step) * step
    return {"num_tokens": T, "k": k, "num_experts": E, "capacity_factor": cf8 / 8}


def drops_inputs(rng: np.random.Generator, T: int, E: int, k: int, cf8: int, at_load: int) -> dict:
    """Skewed loads and a capacity: the usual ceil(cf * T * k / E), or (``at_load``) exactly one
    expert's load, so an expert sits right at its capacity and must drop nothing."""
    loads = loads_of(skewed_ids(rng, T, E, k), E)
    if at_load:
        cap = int(rng.choice(loads[loads > 0]))
    else:
        cap = -(-cf8 * T * k // (8 * E))
    return {"loads": loads, "capacity": cap}


# --- claims -----------------------------------------------------------------------------------

# (E, devices, k): Mixtral on 8 GPUs, a 64-expert top-2 model on 8, DeepSeek-V3-like on 32.
STRAGGLER_SHAPES = [(8, 8, 2), (64, 8, 2), (64, 16, 6), (256, 32, 8)]
MIN_SLOWDOWN = 2.5


# (T, E, k, cold) tried by the counting claim first: one expert, idle experts at both ends, top-8.
LOAD_SHAPES = [(1, 1, 1, 0), (3, 16, 2, 1), (64, 8, 2, 0), (257, 60, 4, 1), (1000, 256, 8, 0)]


def loads_count_every_assignment(probe, rng: np.random.Generator) -> str | None:
    """The loads are non-negative and add up to T*k, and one more token adds exactly 1 to each
    of its k experts and nothing elsewhere, for two different extra tokens.

    Two extra tokens of the same shape that pick different experts must change the loads
    differently: counts derived from T, k and E alone (an even split, say) cannot.
    """
    E = int(rng.integers(3, 65))
    drawn = (int(rng.integers(1, 600)), E, int(rng.integers(1, min(E - 1, 8) + 1)), int(rng.integers(0, 2)))
    for T, E, k, cold in [*LOAD_SHAPES, drawn]:
        ids = skewed_ids(rng, T, E, k, bool(cold))
        where = f"topk_ids ({T}x{k}), {E} experts"
        loads = np.asarray(probe.submission("expert_loads", {"topk_ids": ids, "num_experts": E}, {"E": E})["loads"])
        if np.any(loads < 0):
            return f"{where}: expert {int(np.flatnonzero(loads < 0)[0])} has a negative load"
        if int(loads.sum()) != T * k:
            return f"{where}: the loads add up to {int(loads.sum())}, not T*k = {T * k}: every assignment counts exactly once"
        if k == E:
            continue  # every token picks every expert: only one extra token exists
        first = rng.choice(E, size=k, replace=False)
        second = np.concatenate([first[:-1], rng.choice(np.setdiff1d(np.arange(E), first), size=1)])
        for extra in (first, second):
            more = np.concatenate([ids, extra[None].astype(ids.dtype)])
            after = np.asarray(probe.submission("expert_loads", {"topk_ids": more, "num_experts": E}, {"E": E})["loads"])
            grew = after.astype(np.int64) - loads
            want = np.bincount(extra, minlength=E)
            if np.any(grew != want):
                changed = {int(e): int(grew[e]) for e in np.flatnonzero(grew)}
                return (
                    f"{where}, then one more token picking experts {sorted(extra.tolist())}: the loads changed by "
                    f"(expert: change) {changed or 'nothing'}; that token adds exactly 1 to each of its experts and nothing elsewhere"
                )
    return None


def uniform_ids(T: int, E: int, k: int) -> np.ndarray:
    """Token t takes experts t*k .. t*k+k-1 (mod E): every expert gets exactly T*k/E."""
    return (np.arange(T)[:, None] * k + np.arange(k)[None, :]) % E


def hot_ids(T: int, E: int, k: int) -> np.ndarray:
    """Every token takes expert 0, and k-1 others spread evenly over experts 1..E-1."""
    others = (np.arange(T)[:, None] * (k - 1) + np.arange(k - 1)[None, :]) % (E - 1) + 1
    return np.concatenate([np.zeros((T, 1), dtype=np.int64), others], axis=1)


def _relabel(rng: np.random.Generator, ids: np.ndarray, E: int) -> np.ndarray:
    """Rename the experts at random and shuffle each row: same loads up to the renaming."""
    ids = rng.permutation(E)[ids]
    return rng.permuted(ids, axis=1).astype(np.int64)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 + 1e-5 * abs(b)


def hot_expert_straggler(probe, rng: np.random.Generator) -> str | None:
    """At identical total work (T*k assignments), one hot expert slows the EP step > 2.5x.

    Loads and step times come from the submission's expert_loads and ep_step_time, on routing
    built here: uniform (every expert T*k/E) and hot (every token also picks one expert). Each
    value is checked against the reference, so only correct functions can make the claim.
    """
    E, devices, k = STRAGGLER_SHAPES[int(rng.integers(len(STRAGGLER_SHAPES)))]
    T = E * int(rng.integers(2, 9))
    tpt = float(rng.uniform(0.5, 4.0) * 1e-6)
    placements = [None, rng.permutation(np.repeat(np.arange(devices), E // devices))]
    times: dict[str, list[float]] = {}
    for name, ids in (("uniform", uniform_ids(T, E, k)), ("hot", hot_ids(T, E, k))):
        ids = _relabel(rng, ids, E)
        inputs = {"topk_ids": ids, "num_experts": E}
        loads = probe.submission("expert_loads", inputs, {"E": E})["loads"]
        want = probe.reference("expert_loads", inputs)["loads"]
        if loads.shape != want.shape or np.any(loads != want):
            return (
                f"{name} routing (T={T}, E={E}, k={k}): expert_loads gives {loads.tolist()[:8]}..., "
                f"expected {want.tolist()[:8]}..."
            )
        if int(loads.sum()) != T * k:
            return f"{name} routing: the loads add up to {int(loads.sum())}, not T*k = {T * k}"
        times[name] = []
        for placement in placements:
            args = {"loads": want, "num_devices": devices, "time_per_token": tpt, "placement": placement}
            got = float(probe.submission("ep_step_time", args, {})["step_time"])
            ref = float(probe.reference("ep_step_time", args)["step_time"])
            where = "contiguous placement" if placement is None else "a random placement"
            if not _close(got, ref):
                return f"{name} routing, {where}: ep_step_time gives {got:.6g} s, expected {ref:.6g} s"
            times[name].append(got)
    for i, where in enumerate(("contiguous placement", "a random placement")):
        slowdown = times["hot"][i] / times["uniform"][i]
        if not slowdown > MIN_SLOWDOWN:
            return (
                f"E={E}, {devices} devices, k={k}, T={T}, {where}: the hot expert's step takes "
                f"{slowdown:.2f}x the uniform step, expected more than {MIN_SLOWDOWN}x"
            )
    return None


def placement_instances(rng: np.random.Generator) -> list[tuple[np.ndarray, int, str]]:
    """(loads, devices, what) for balanced_placement: the awkward ones are always present."""
    out: list[tuple[np.ndarray, int, str]] = []

    # 1. A hot cluster: one device's contiguous block holds the heaviest experts, so the
    #    contiguous placement breaks the mean + max bound; the rest is light.
    devices = int(rng.choice([4, 8]))
    per = int(rng.integers(2, 5))
    E = devices * per
    H = int(rng.integers(400, 2000))
    loads = rng.integers(0, max(H // (4 * E), 1), size=E)
    block = int(rng.integers(devices))
    loads[block * per : (block + 1) * per] = H + rng.integers(0, H // 20, size=per)
    out.append((loads, devices, "a cluster of hot experts on one contiguous block"))

    # 2. The trap: the contiguous placement is perfect, greedy and round-robin are not.
    devices = int(rng.choice([2, 4, 6, 8]))
    s = int(rng.integers(1, 50))
    kinds = rng.permutation(np.repeat([0, 1], devices // 2))
    blocks = [rng.permutation(np.array([3, 3, 0]) if kind == 0 else np.array([2, 2, 2])) * s for kind in kinds]
    out.append((np.concatenate(blocks), devices, "loads whose contiguous placement is already perfect"))

    # 3. One expert heavier than all the others together.
    devices = int(rng.choice([2, 4, 8]))
    per = int(rng.integers(2, 5))
    E = devices * per
    loads = rng.integers(0, 20, size=E)
    loads[rng.integers(E)] = 20 * E + int(rng.integers(0, 100))
    out.append((loads, devices, "one expert heavier than all the others together"))

    # 4. Skewed routing, experts in random order.
    devices = int(rng.choice([1, 2, 4, 8]))
    per = int(rng.integers(1, 9))
    E = devices * per
    T = int(rng.integers(1, 400))
    out.append((loads_of(skewed_ids(rng, T, E, int(rng.integers(1, min(E, 8) + 1))), E), devices, "skewed routing"))

    # 5. Edges: one expert per device, a single device, no load at all.
    devices = int(rng.choice([2, 3, 8]))
    out.append((rng.integers(0, 100, size=devices), devices, "one expert per device"))
    out.append((rng.integers(0, 100, size=int(rng.integers(1, 6))), 1, "a single device"))
    out.append((np.zeros(8, dtype=np.int64), 4, "no load at all"))
    return [(np.asarray(l, dtype=np.int64), d, what) for l, d, what in out]


def _check_valid(placement: np.ndarray, E: int, devices: int) -> str | None:
    placement = np.asarray(placement).reshape(-1)
    if placement.size != E:
        return f"the placement has {placement.size} entries, expected one per expert ({E})"
    if placement.size and (placement.min() < 0 or placement.max() >= devices):
        bad = int(placement.min() if placement.min() < 0 else placement.max())
        return f"the placement names device {bad}; devices are 0..{devices - 1}"
    counts = np.bincount(placement.astype(np.int64), minlength=devices)
    if np.any(counts != E // devices):
        d = int(np.flatnonzero(counts != E // devices)[0])
        return (
            f"device {d} hosts {int(counts[d])} experts, every device must host exactly "
            f"E/num_devices = {E // devices} (experts per device: {counts.tolist()})"
        )
    return None


def _busiest(loads: np.ndarray, devices: int, placement: np.ndarray) -> int:
    return int(np.bincount(np.asarray(placement, dtype=np.int64), weights=loads, minlength=devices).max())


def _describe(loads: np.ndarray, devices: int, what: str) -> str:
    shown = loads.tolist() if loads.size <= 16 else loads.tolist()[:16] + ["..."]
    return f"{what} (loads={shown}, num_devices={devices})"


def _placement_of(probe, loads: np.ndarray, devices: int) -> np.ndarray:
    dims = {"devices": devices, "per_device": loads.size // devices}
    return probe.submission("balanced_placement", {"loads": loads, "num_devices": devices}, dims)["placement"]


def placement_is_balanced(probe, rng: np.random.Generator) -> str | None:
    """A valid placement (E/num_devices experts on every device, ids 0..num_devices-1) whose
    busiest device carries at most mean device load + max(loads), and no more than under the
    contiguous placement. Many placements qualify: none is compared with the reference's.

    Validity alone is not a check of its own: the contiguous placement, which ignores the
    loads, is valid. The hot cluster makes it break the bound."""
    for loads, devices, what in placement_instances(rng):
        E = loads.size
        got = _placement_of(probe, loads, devices)
        problem = _check_valid(got, E, devices)
        if problem:
            return f"{_describe(loads, devices, what)}: not a valid placement: {problem}"
        busiest = _busiest(loads, devices, got)
        total, heaviest = int(loads.sum()), int(loads.max())
        if busiest * devices > total + devices * heaviest:
            return (
                f"{_describe(loads, devices, what)}: the busiest device carries {busiest}, above mean device load "
                f"+ max(loads) = {total / devices:g} + {heaviest} = {total / devices + heaviest:g}"
            )
        contiguous = _busiest(loads, devices, np.arange(E) // (E // devices))
        if busiest > contiguous:
            return (
                f"{_describe(loads, devices, what)}: the busiest device carries {busiest}, but the contiguous "
                f"placement's busiest carries only {contiguous}; return it when it is the better one"
            )
    return None
