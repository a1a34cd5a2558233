"""lab-02: profile a real MoE decode step.

Implement the functions below; `grader submit starter.py` grades them. Read README.md first.
Everything is plain Python: a trace is the dict `json.load` gives (open the captures in
capture/ with `json.load(gzip.open(path))`), a kernel row is a dict, a category a string.
"""

import bisect  # noqa: F401
import math  # noqa: F401

EXERCISE = "lab-02-profile-fused-moe"

CATEGORIES = ["router", "topk_softmax", "permute", "expert_gemm", "activation", "combine", "attention", "norm", "other"]


def kernel_rows(trace):
    """The GPU work launched inside the recorded steps: one dict per kernel, memcpy or memset,
    sorted by start time (ts), ties by correlation id.

    Keep events of cat "kernel", "gpu_memcpy" and "gpu_memset" whose launch call (the
    cuda_runtime OR cuda_driver event with the same args["correlation"]) starts inside a
    ProfilerStep#N range (cat "user_annotation"). Each row has exactly these keys:

        name         the kernel's name
        kind         "kernel", "memcpy" or "memset"
        step         index (0, 1, ...) of the recorded step, in time order, holding the launch call
        ts, dur      the kernel's start and duration, microseconds, as the trace gives them
        stream       args["stream"]
        correlation  args["correlation"]
        op           name of the innermost cpu_op whose range holds the launch call's start, or None
        ops          names of all such cpu_ops, outermost first ([] when none)
        scope        dotted module name of the innermost "module:<name>:<class>" user_annotation
                     holding the launch call's start, or None
        module       that annotation's class name, or None

    Ranges hold a launch when they are on its thread (same pid and tid) and
    ts <= launch ts <= ts + dur.
    """
    raise NotImplementedError("kernel_rows")


def step_walls(trace):
    """The wall time (dur, microseconds) of each ProfilerStep#N user_annotation, in time order."""
    raise NotImplementedError("step_walls")


def categorize(rows):
    """One category (a string of CATEGORIES) per row of kernel_rows, in the same order.

    Rows may have their scope and module set to None (a trace taken without module annotations):
    then the operators and the position in the layer must do. README.md gives the rules.
    """
    raise NotImplementedError("categorize")


def breakdown(rows, categories, walls):
    """Where a steady decode step's GPU time goes, as a dict:

        shares     {category: share of device time} for all nine categories, summing to 1
        device_us  kernel time per step (the sum of the durations)
        busy_us    time per step the GPU runs anything (the union of kernel intervals)
        wall_us    wall time per step (from walls)
        idle       1 - busy_us / wall_us
        steps      how many steps the figures average over

    Leave out the first recorded step (step 0): it pays for warm-up. Average over the others.
    """
    raise NotImplementedError("breakdown")


def predict():
    """Before you read the annotated capture (Mixtral, grouped_mm, batch 1): your guess at its
    shares of device time, {category: share}, summing to 1. Only its form is graded; write it
    first, then compare."""
    raise NotImplementedError("predict")


def biggest_gap(prediction, measured):
    """The category where |prediction[c] - measured[c]| is largest (missing categories are 0)."""
    raise NotImplementedError("biggest_gap")


def napkin(config):
    """Expert GEMM time (microseconds) of one decode step of a configuration you have not seen,
    from the bytes of expert weights it must read and the bandwidth you measured.

    config: model, backend, batch, hidden, expert_intermediate, experts, top_k, moe_layers,
    shared_experts, dtype_bytes, gpu, hbm_tb_per_s.
    """
    raise NotImplementedError("napkin")
