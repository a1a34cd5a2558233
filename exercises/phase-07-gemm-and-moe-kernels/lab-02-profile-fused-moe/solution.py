"""lab-02 reference solution: read a torch.profiler trace of MoE decode steps and say where the
GPU's time goes.

Plain Python throughout: a trace is the dict ``json.load`` gives, a kernel row is a dict, a
category is a string. The grader's own labels are this file's ``categorize``.
"""

import bisect
import math

EXERCISE = "lab-02-profile-fused-moe"

CATEGORIES = ["router", "topk_softmax", "permute", "expert_gemm", "activation", "combine", "attention", "norm", "other"]

GPU_KINDS = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
STEP_PREFIX = "ProfilerStep#"
MODULE_PREFIX = "module:"


# --- reading the trace ---------------------------------------------------------------------------


def _recorded_steps(events):
    """The ProfilerStep#N ranges on the CPU timeline, in time order."""
    steps = [
        e for e in events
        if e.get("ph") == "X" and e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith(STEP_PREFIX)
    ]
    return sorted(steps, key=lambda e: e["ts"])


def step_walls(trace):
    """Wall time of each recorded decode step, in microseconds, in time order: the length of its
    ``ProfilerStep#N`` range on the CPU timeline."""
    return [float(step["dur"]) for step in _recorded_steps(trace["traceEvents"])]


def _enclosing(events, launches):
    """For each launch call, the CPU ranges (operators and module annotations) open on its
    thread when it started, outermost first.

    One sweep per thread in time order keeps a stack of the ranges still open: a range is
    pushed when it starts and dropped once it has ended."""
    ranges = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat")
        if cat == "cpu_op" or (cat == "user_annotation" and str(e.get("name", "")).startswith(MODULE_PREFIX)):
            ranges.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    chains = {}
    by_thread = {}
    for launch in launches:
        by_thread.setdefault((launch.get("pid"), launch.get("tid")), []).append(launch)
    for thread, calls in by_thread.items():
        # Ranges before launches at the same instant, and a parent before its child.
        timeline = [(r["ts"], 0, -r["dur"], i, r) for i, r in enumerate(ranges.get(thread, []))]
        timeline += [(c["ts"], 1, 0.0, i, c) for i, c in enumerate(calls)]
        timeline.sort(key=lambda item: item[:4])
        open_ranges = []
        for ts, is_launch, _, _, event in timeline:
            open_ranges = [r for r in open_ranges if r["ts"] + r["dur"] >= ts]
            if is_launch:
                chains[id(event)] = list(open_ranges)
            else:
                open_ranges.append(event)
    return chains


def kernel_rows(trace):
    """The GPU work launched inside the recorded steps, one dict per kernel, memcpy or memset,
    in start-time order (ties broken by correlation id).

    Each row: name, kind ("kernel", "memcpy" or "memset"), step (index of the recorded step
    whose range holds the launch call), ts and dur (microseconds), stream, correlation, op (the
    innermost operator around the launch call, or None), ops (every operator around it,
    outermost first), scope and module (the dotted name and class of the innermost
    ``module:<name>:<class>`` annotation around it, or None).
    """
    events = trace["traceEvents"]
    steps = _recorded_steps(events)
    starts = [s["ts"] for s in steps]
    launches = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {}):
            launches[e["args"]["correlation"]] = e
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_KINDS]
    chains = _enclosing(events, [launches[g["args"]["correlation"]] for g in gpu if g["args"].get("correlation") in launches])
    rows = []
    for g in gpu:
        launch = launches.get(g["args"].get("correlation"))
        if launch is None:
            continue  # no launch call: it cannot be tied to a step or an operator
        i = bisect.bisect_right(starts, launch["ts"]) - 1
        if i < 0 or launch["ts"] > steps[i]["ts"] + steps[i]["dur"]:
            continue  # launched outside the recorded steps
        chain = chains.get(id(launch), [])
        ops = [r["name"] for r in chain if r.get("cat") == "cpu_op"]
        modules = [r["name"] for r in chain if r.get("cat") == "user_annotation"]
        scope = module = None
        if modules:
            scope, _, module = modules[-1][len(MODULE_PREFIX):].rpartition(":")
        rows.append({
            "name": g["name"],
            "kind": GPU_KINDS[g["cat"]],
            "step": i,
            "ts": float(g["ts"]),
            "dur": float(g["dur"]),
            "stream": int(g["args"].get("stream", -1)),
            "correlation": int(g["args"]["correlation"]),
            "op": ops[-1] if ops else None,
            "ops": ops,
            "scope": scope,
            "module": module,
        })
    rows.sort(key=lambda r: (r["ts"], r["correlation"]))
    return rows


# --- categories ----------------------------------------------------------------------------------

GEMM_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::linear", "aten::matmul", "aten::_grouped_mm"}
ACT_OPS = {"aten::silu", "aten::silu_", "aten::gelu", "aten::gelu_", "aten::relu", "aten::relu_", "aten::sigmoid"}
# Operators that start handing tokens to the next expert (eager's loop) or sorting them.
DISPATCH_OPS = {
    "aten::nonzero", "aten::where", "aten::one_hot", "aten::sort", "aten::argsort", "aten::histc", "aten::bincount",
    "aten::cumsum", "aten::eq", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::repeat_interleave",
}
# What a router does after its last top-k: gather the chosen scores, renormalise, scale, cast.
ROUTER_TAIL_OPS = {"aten::gather", "aten::sum", "aten::add", "aten::div", "aten::div_", "aten::mul", "aten::to"}


def _top(row):
    return row["ops"][0] if row["ops"] else None


def _is_gemm(row):
    if row["ops"]:
        return any(op in GEMM_OPS for op in row["ops"])
    # No operator: a kernel launched straight from Python (Triton). In the experts, the
    # align kernel sorts tokens; the others are the expert GEMMs.
    return "align" not in row["name"].lower()


def _is_act(row):
    return bool(ACT_OPS.intersection(row["ops"])) or (row["scope"] or "").endswith("act_fn")


def _experts(rows, labels, idx):
    """Label one MoE block's expert part (rows ``idx``, in order) by position.

    Matrix products (and batched_mm's weight gathers, the index right before a bmm, and the
    masking of padded rows right after a GEMM) are expert GEMMs; the activation and the product
    right after it are the activation; after the expert GEMMs, until tokens are dispatched
    again, comes the combine; everything else (sorting, counting, gathering tokens, syncs)
    is permute."""
    state = "permute"
    after_gemm = pending_mul = False
    for n, i in enumerate(idx):
        row = rows[i]
        top = _top(row)
        nxt = rows[idx[n + 1]] if n + 1 < len(idx) else None
        if _is_gemm(row):
            labels[i] = "expert_gemm"
            after_gemm = True
            continue
        if top == "aten::index" and nxt is not None and "aten::bmm" in nxt["ops"]:
            labels[i] = "expert_gemm"  # batched_mm gathers whole expert weight matrices
            continue
        if after_gemm and top == "aten::masked_fill":
            labels[i] = "expert_gemm"  # zeroing the GEMM's padded rows
            continue
        if _is_act(row):
            labels[i] = "activation"
            pending_mul = True
            after_gemm = False
            continue
        if pending_mul and top == "aten::mul":
            labels[i] = "activation"
            pending_mul = False
            after_gemm = False
            continue
        if top in DISPATCH_OPS:
            state = "permute"
        elif after_gemm:
            state = "combine"
        after_gemm = False
        labels[i] = state


def _router(rows, labels, idx):
    """The router's GEMM (and the casts feeding it) is the router; the rest is top-k/softmax."""
    gemms = [n for n, i in enumerate(idx) if rows[i]["ops"] and _is_gemm(rows[i])]
    last = gemms[-1] if gemms else -1
    for n, i in enumerate(idx):
        labels[i] = "router" if n <= last else "topk_softmax"


def _runs(order, chosen):
    """The rows of ``chosen`` that follow each other in ``order``, as runs (lists of rows)."""
    out, last = [], None
    for n, i in enumerate(order):
        if i not in chosen:
            continue
        if out and last == n - 1:
            out[-1].append(i)
        else:
            out.append([i])
        last = n
    return out


def _layer_of(scope):
    parts = scope.split(".")
    for n, part in enumerate(parts[:-1]):
        if part == "layers" and parts[n + 1].isdigit():
            return ".".join(parts[: n + 2])
    return None


def _label_scoped(rows, idx, labels):
    """Label by module scope (the trace was annotated)."""
    moe_layers = {_layer_of(rows[i]["scope"]) for i in idx if rows[i]["scope"] and ".mlp.experts" in rows[i]["scope"]}
    router, experts = [], []
    for i in idx:
        scope = rows[i]["scope"]
        if scope is None:
            labels[i] = "other"
            continue
        leaf = scope.rsplit(".", 1)[-1]
        layer = _layer_of(scope)
        if ".mlp" in scope and layer not in moe_layers:
            labels[i] = "other"  # a dense MLP layer has no experts
        elif scope.endswith(".mlp.gate") or (rows[i]["module"] or "").endswith("Router"):
            router.append(i)
        elif ".mlp.experts" in scope or ".mlp.shared_expert" in scope:
            experts.append(i)
        elif "norm" in leaf:
            labels[i] = "norm"
        elif ".self_attn" in scope or "rotary_emb" in scope:
            labels[i] = "attention"
        elif scope.endswith(".mlp"):
            labels[i] = "combine"  # the MoE block adding its parts (routed + shared experts)
        else:
            labels[i] = "other"
    for run in _runs(idx, set(router)):
        _router(rows, labels, run)
    for run in _runs(idx, set(experts)):
        _experts(rows, labels, run)


def _norm_spans(rows, idx):
    """RMSNorms found by their operators (to, pow, mean, add, rsqrt, mul, to, mul), as lists of
    positions in ``idx``."""
    spans = []
    n = 0
    while n < len(idx):
        if _top(rows[idx[n]]) != "aten::pow":
            n += 1
            continue
        start = n - 1 if n > 0 and _top(rows[idx[n - 1]]) == "aten::to" else n
        end = n
        while end + 1 < len(idx) and _top(rows[idx[end]]) != "aten::rsqrt":
            end += 1
        want = ["aten::mul", "aten::to", "aten::mul"]
        for op in want:
            if end + 1 < len(idx) and _top(rows[idx[end + 1]]) == op:
                end += 1
        spans.append(list(range(start, end + 1)))
        n = end + 1
    return spans


def _label_unscoped(rows, idx, labels):
    """Label by operators and position alone (the trace has no module annotations): norms by
    their operators, the segments between them as attention, an MoE block (it has a top-k) or a
    dense MLP (an activation, no top-k)."""
    spans = _norm_spans(rows, idx)
    for span in spans:
        for n in span:
            labels[idx[n]] = "norm"
    if not spans:
        for i in idx:
            labels[i] = "other"
        return
    bounds = [(spans[k][-1] + 1, spans[k + 1][0]) for k in range(len(spans) - 1)]
    for n in range(spans[0][0]):  # before the first norm: embedding, positions, rotary table
        i = idx[n]
        labels[i] = "other" if _top(rows[i]) in ("aten::embedding", "aten::arange", "aten::add") else "attention"
    for n in range(spans[-1][-1] + 1, len(idx)):  # after the last norm: lm_head, argmax
        labels[idx[n]] = "other"
    for lo, hi in bounds:
        seg = [idx[n] for n in range(lo, hi)]
        if not seg:
            continue
        tops = [_top(rows[i]) for i in seg]
        body = list(seg)
        if tops[-1] == "aten::add":  # the residual connection closing the block
            labels[body.pop()] = "other"
        if "aten::topk" in tops:
            last_topk = max(n for n, op in enumerate(tops) if op == "aten::topk")
            end = last_topk
            while end + 1 < len(body) and tops[end + 1] in ROUTER_TAIL_OPS:
                end += 1
            first_topk = tops.index("aten::topk")
            gemms = [n for n in range(first_topk) if rows[body[n]]["ops"] and _is_gemm(rows[body[n]])]
            last_gemm = gemms[-1] if gemms else -1
            for n, i in enumerate(body[: end + 1]):
                labels[i] = "router" if n <= last_gemm else "topk_softmax"
            rest = body[end + 1 :]
            if rest and _top(rows[rest[-1]]) == "aten::add" and len(rest) > 1:
                labels[rest.pop()] = "combine"  # routed + shared experts
            _experts(rows, labels, rest)
        elif any(_is_act(rows[i]) for i in body):
            for i in body:
                labels[i] = "other"  # a dense MLP layer
        else:
            for i in body:
                labels[i] = "attention"


def categorize(rows):
    """One category per row (a string of CATEGORIES), from the module scopes when the trace has
    them, else from the operators and their position in the layer."""
    labels = ["other"] * len(rows)
    for step in sorted({r["step"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["step"] == step]
        # A second stream interleaves in start order; launch order is what the model code did.
        idx.sort(key=lambda i: (rows[i]["correlation"],))
        if any(rows[i]["scope"] is not None for i in idx):
            _label_scoped(rows, idx, labels)
        else:
            _label_unscoped(rows, idx, labels)
    return labels


# --- the breakdown -------------------------------------------------------------------------------


def _union(intervals):
    """Total length covered by (start, end) intervals."""
    total, end = 0.0, -math.inf
    for lo, hi in sorted(intervals):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def breakdown(rows, categories, walls):
    """Where a steady decode step's GPU time goes.

    The first recorded step is left out (it pays for warm-up the others do not); every figure
    is per step, averaged over the others. shares: each category's share of device time (the
    sum of kernel durations), summing to 1; device_us: kernel time per step; busy_us: time the
    GPU runs anything (the union of kernel intervals over all streams); wall_us: the step's wall
    time; idle: 1 - busy_us / wall_us; steps: how many steps were averaged.
    """
    steady = range(1, len(walls))
    if not steady:
        raise ValueError("a breakdown needs at least two recorded steps (the first is warm-up)")
    time = {c: 0.0 for c in CATEGORIES}
    spans = {s: [] for s in steady}
    for row, category in zip(rows, categories):
        if row["step"] in spans:
            time[category] += row["dur"]
            spans[row["step"]].append((row["ts"], row["ts"] + row["dur"]))
    device = sum(time.values())
    n = len(steady)
    busy = sum(_union(spans[s]) for s in steady) / n
    wall = sum(walls[s] for s in steady) / n
    return {
        "shares": {c: (t / device if device else 0.0) for c, t in time.items()},
        "device_us": device / n,
        "busy_us": busy,
        "wall_us": wall,
        "idle": 1.0 - busy / wall,
        "steps": n,
    }


# --- predictions ---------------------------------------------------------------------------------


def predict():
    """My guess at the shares of device time of the annotated capture (Mixtral, grouped_mm,
    batch 1), written before reading it."""
    return {
        "router": 0.02, "topk_softmax": 0.03, "permute": 0.07, "expert_gemm": 0.45, "activation": 0.03,
        "combine": 0.03, "attention": 0.2, "norm": 0.05, "other": 0.12,
    }


def biggest_gap(prediction, measured):
    """The category whose predicted share is furthest from the measured one (a category missing
    from either side counts as 0)."""
    def gap(c):
        return abs(prediction.get(c, 0.0) - measured.get(c, 0.0))

    return max(CATEGORIES, key=gap)


def napkin(config):
    """Expert GEMM time of one decode step (microseconds) from bytes moved: decode reads each
    touched expert's weights once, and it is bandwidth-bound.

    Distinct experts a batch touches (lab-04): E * (1 - (1 - k/E)**T) per MoE layer, plus the
    shared experts every token uses. batched_mm instead copies one weight set per assignment
    (T*k of them) and reads the copy again: three times the bytes of every assignment. The
    effective bandwidth comes from the shipped captures (about 2.7 TB/s on the course's H100)."""
    E, k, T = config["experts"], config["top_k"], config["batch"]
    per_expert = 3 * config["hidden"] * config["expert_intermediate"] * config["dtype_bytes"]
    if config["backend"] == "batched_mm":
        weight_bytes = 3 * T * k * per_expert
    else:
        weight_bytes = E * (1 - (1 - k / E) ** T) * per_expert
    weight_bytes += config.get("shared_experts", 0) * per_expert
    return config["moe_layers"] * weight_bytes / 2.7e12 * 1e6


# --- capture (lab02cap) -----------------------------------------------------------------------
# The capture function (warm-up, steady-state decode steps under torch.profiler) goes below this line.
#
# torch and transformers are imported inside the functions: the reading functions above stay
# plain Python, and only a capture needs the two.

CAPTURE_WARMUP = 4
"""Decode steps taken before the profiler starts: the first calls of every kernel (cuBLAS
handles, lazily loaded modules, Triton compilation, allocator growth) happen in them."""


def capture(config, backend, batch, prompt_len, steps):
    """The Chrome trace (a dict) of ``steps`` steady decode steps of a random-weight model of
    ``config`` (a transformers config as a dict, with ``model_type``), its experts computed by
    ``backend``, ``batch`` sequences of ``prompt_len`` random tokens each: prefill first, then
    CAPTURE_WARMUP unrecorded decode steps and the profiler's own warm-up step, then ``steps``
    recorded ones, each a ProfilerStep#N range, every module's forward annotated."""
    import torch

    model = build_model(config, "cuda" if torch.cuda.is_available() else "cpu")
    trace, _ = decode_capture(model, backend, batch, prompt_len, steps)
    return trace


def build_model(config, device, seed=0):
    """A causal LM of ``config`` with random weights on ``device`` (bf16 on CUDA, float32 on the
    CPU), sdpa attention, every submodule's forward annotated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)  # built here from the dict: nothing is read from the hub
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.eval()
    annotate_modules(model)
    return model


def annotate_modules(model):
    """Wrap every submodule's forward in a profiler range ``module:<dotted name>:<class name>``
    (entered by a forward pre-hook, left by a forward hook)."""
    import torch

    def enter(label):
        def hook(module, args):
            scope = torch.profiler.record_function(label)
            scope.__enter__()
            module.__dict__.setdefault("_capture_scopes", []).append(scope)

        return hook

    def leave(module, args, output):
        scopes = module.__dict__.get("_capture_scopes")
        if scopes:
            scopes.pop().__exit__(None, None, None)

    for name, module in model.named_modules():
        if name:
            module.register_forward_pre_hook(enter(f"module:{name}:{type(module).__name__}"))
            module.register_forward_hook(leave)


def decode_capture(model, backend, batch, prompt_len, steps, warmup=CAPTURE_WARMUP, profiler_warmup=1,
                   prefill_backend=None, seed=0):
    """Prefill a random prompt per sequence (with ``prefill_backend``, default ``backend``), pin
    ``backend``, take ``warmup`` unrecorded decode steps, then profile ``profiler_warmup`` +
    ``steps`` decode steps, recording the last ``steps``. Returns (the Chrome trace as a dict, the
    recorded steps' wall times in seconds, the device synchronised at the end of each)."""
    import json
    import os
    import tempfile
    import time

    import torch
    from transformers import DynamicCache

    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len),
                           generator=torch.Generator().manual_seed(seed)).to(model.device)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    traces, walls = [], []

    def export(prof):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path, encoding="utf-8") as f:
                traces.append(json.load(f))

    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model.set_experts_implementation(prefill_backend or backend)
        token = model(input_ids=prompt, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        model.set_experts_implementation(backend)

        def step(token):
            return model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)

        for _ in range(warmup):
            token = step(token)
        sync()
        # repeat=1: one cycle, exported when it completes (a repeating schedule would open a
        # second, empty cycle before the profiler closes).
        schedule = torch.profiler.schedule(wait=0, warmup=profiler_warmup, active=steps, repeat=1)
        with torch.profiler.profile(activities=activities, record_shapes=True, schedule=schedule,
                                    on_trace_ready=export) as prof:
            for i in range(profiler_warmup + steps):
                started = time.perf_counter()
                token = step(token)
                sync()
                if i >= profiler_warmup:
                    walls.append(time.perf_counter() - started)
                prof.step()
    if len(traces) != 1:
        raise RuntimeError(f"the profiler produced {len(traces)} traces, not one")
    return traces[0], walls
