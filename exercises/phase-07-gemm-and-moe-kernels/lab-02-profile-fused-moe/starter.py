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


# --- capture (lab02cap) -----------------------------------------------------------------------
# The capture function goes below this line.
#
# Needs torch and transformers (pip install -e '.[transformers]'); import them inside capture().
# On a laptop it runs on the tiny configurations the grader sends; on a GPU at real sizes.


def capture(config, backend, batch, prompt_len, steps):
    """The Chrome trace (the dict json.load gives of what prof.export_chrome_trace writes) of
    `steps` steady decode steps, as the shipped captures were taken:

    - the model: transformers.AutoConfig.for_model(**config) (config is a dict with
      "model_type"; never from_pretrained: nothing comes from the hub), then
      AutoModelForCausalLM.from_config(cfg, dtype=...) under `with torch.device(device):`, with
      cfg._attn_implementation = "sdpa", model.eval(), random weights; bf16 on a GPU, float32 on
      the CPU; annotate_modules(model) below, so the trace shows each module's scope;
    - its experts computed by `backend` ("grouped_mm", "batched_mm" or "eager"):
      model.set_experts_implementation(backend);
    - `batch` sequences of `prompt_len` random token ids each, prefilled into a
      transformers.DynamicCache under torch.no_grad();
    - then decode stepped by hand, one new token per sequence a step:
      model(input_ids=token, past_key_values=cache, use_cache=True), the next token the argmax of
      the last logits (never generate(): it runs a prefill of its own and, on a GPU, switches the
      experts backend for decode);
    - some decode steps before profiling (their first calls compile, load and allocate), then
      torch.profiler.profile(activities=[CPU] (+ CUDA on a GPU), record_shapes=True,
      schedule=torch.profiler.schedule(wait=0, warmup=1, active=steps, repeat=1)) with
      prof.step() after each decode step: exactly `steps` recorded steps.
    """
    raise NotImplementedError("capture")


def annotate_modules(model):
    """Given: wrap every submodule's forward in a profiler range "module:<dotted name>:<class>"
    (the scopes kernel_rows reads), entered by a forward pre-hook and left by a forward hook."""
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
