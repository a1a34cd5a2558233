"""GPU checks without a GPU: the floor from the device's ceilings, the refusal of an unknown
device, the timing harness's warm-up discipline, and errors that name their case."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from grader import hardware
from grader.checkers import gpu as gpu_checks
from grader.checkers.base import CheckContext
from grader.errors import InfrastructureError
from grader.lab import Case
from grader.results import Status
from grader.sandbox.boot import gpu as harness
from grader.sandbox.values import SubmissionFault

GB = 1e9
# Two fake GPUs, one four times faster in both bandwidth and matrix rate.
SLOW = hardware.Ceilings(1000 * GB, {"bfloat16": 100e12}, "fake slow datasheet")
FAST = hardware.Ceilings(4000 * GB, {"bfloat16": 400e12}, "fake fast datasheet")
TABLE = {"Fake GPU Slow": SLOW, "Fake GPU Fast": FAST}
MEASURED = hardware.Ceilings(900 * GB, {"bfloat16": 80e12}, "fake measured")

# A memory-bound call: 2 GB to move, few FLOPs.
WORK = (1e9, 2 * GB, "bfloat16")


def no_measure() -> hardware.Ceilings:
    raise AssertionError("the datasheet path must not need a measurement")


def speed_check(**kw: Any) -> gpu_checks.GpuSpeedOptions:
    return gpu_checks.GpuSpeedOptions(
        kind="gpu-speed", title="t", function="fused_moe", points=6, cases="timed", fresh="fresh", work="work", **kw
    )


def fake_context(monkeypatch: pytest.MonkeyPatch, device: str, submission_us: float, reference_us: float) -> Any:
    """A context whose GPU is ``device`` (a fake table entry) and whose timings are given."""
    monkeypatch.setattr(hardware, "cuda_device", lambda: device)
    monkeypatch.setattr(hardware, "DATASHEET", TABLE)
    monkeypatch.delenv(hardware.CEILINGS_ENV, raising=False)
    monkeypatch.setattr(hardware, "measured_ceilings", lambda dtypes: MEASURED)
    monkeypatch.setattr(hardware, "gpu_facts", lambda: {"gpu": device, "gpu_driver": "fake", "gpu_sm_clock_mhz": 1})
    print_ = [1.0, 2.0, 3.0, *[0.5] * harness.PROJECTIONS]
    monkeypatch.setattr(harness, "time_calls", lambda fn, sets, warmup, budget_s: ([reference_us] * (len(sets) - warmup), [print_] * (len(sets) - warmup)))
    case = Case("timed", 0, 1, {"T": 8}, {"x": 0})
    lab = types.SimpleNamespace(
        support_function=lambda name: {"fresh": lambda rng, inputs: dict(inputs), "work": lambda inputs: WORK}[name],
        implementation=lambda function, reference: (lambda *a: None),
        arguments=lambda function, inputs, device: [inputs["x"]],
    )
    submission = types.SimpleNamespace(
        time=lambda function, sets, limit, warmup, budget_s: (
            [submission_us] * (len(sets) - warmup), [print_] * (len(sets) - warmup), 60.0
        ),
        check_frozen=lambda function: None,
    )
    return types.SimpleNamespace(
        lab=lab, submission=submission, device="cuda", cases=lambda *a: [case], rng=lambda *key: np.random.default_rng(0),
        attempt=0,
    )


def test_floor_uses_the_ceilings_of_the_device_at_hand() -> None:
    slow = hardware.datasheet_ceilings("Fake GPU Slow", no_measure, "", TABLE)
    fast = hardware.datasheet_ceilings("fake gpu  fast", no_measure, "", TABLE)  # names match loosely
    floor_slow, floor_fast = slow.floor_us(*WORK), fast.floor_us(*WORK)
    assert floor_fast < floor_slow
    between = (floor_fast + floor_slow) / 2
    assert gpu_checks.floor_verdict("case 1", [between] * 10, floor_fast, "Fake GPU Fast", fast) is None
    rejected = gpu_checks.floor_verdict("case 1", [between] * 10, floor_slow, "Fake GPU Slow", slow)
    assert rejected is not None and rejected.status is Status.error
    assert "under the" in rejected.message and "Fake GPU Slow" in rejected.message and "fake slow datasheet" in rejected.message


@pytest.mark.parametrize("device,accepted", [("Fake GPU Fast", True), ("Fake GPU Slow", False)])
def test_the_speed_check_accepts_a_time_between_the_floors_only_on_the_faster_device(
    monkeypatch: pytest.MonkeyPatch, device: str, accepted: bool
) -> None:
    floor_fast, floor_slow = FAST.floor_us(*WORK), SLOW.floor_us(*WORK)
    between = (floor_fast + floor_slow) / 2
    # the reference is slower than either floor: the ceilings are sound on both devices
    ctx = fake_context(monkeypatch, device, submission_us=between, reference_us=floor_slow * 2)
    verdict = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), ctx)
    if accepted:
        assert verdict.status is Status.passed, verdict.message
        assert verdict.details["gpu"] == device and verdict.details["floor_source"] == "fake fast datasheet"
        assert verdict.details["measured_bandwidth_gbps"] == 900.0 and verdict.details["floor_safety"] == hardware.SAFETY
        row = verdict.table[0]
        assert row["floor_us"] == round(floor_fast, 1)
        assert row["pct_of_roofline"] == round(100 * MEASURED.roofline_us(*WORK) / between, 1)
        assert device in verdict.message
    else:
        assert verdict.status is Status.error and "no correct kernel can be that fast" in verdict.message


def test_a_reference_under_the_floor_means_wrong_ceilings_not_a_student_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = fake_context(monkeypatch, "Fake GPU Slow", submission_us=1e6, reference_us=SLOW.floor_us(*WORK) / 2)
    with pytest.raises(InfrastructureError, match="those ceilings are wrong for this GPU"):
        gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), ctx)


def test_issue_15_h200_times_pass_with_h200_ceilings_and_fail_with_h100_ones() -> None:
    """The case that broke the selftest: lab-05's reference on an H200 (issue 15's run, measured
    2026-12-01: DeepSeek-V3 at 64 tokens in 4413.4 us, with 4574.7 us as bytes over the 4.275 TB/s
    copy rate measured in that run) was under a floor computed from an H100's rates."""
    nbytes = 4574.7e-6 * 4.275e12
    work = (6.0 * 64 * 8 * 7168 * 2048, nbytes, "bfloat16")
    h200 = hardware.datasheet_ceilings("NVIDIA H200", no_measure, "")
    h100 = hardware.datasheet_ceilings("NVIDIA H100 80GB HBM3", no_measure, "")
    assert h200.floor_us(*work) < 4413.4 < h100.floor_us(*work)


def test_an_unknown_device_is_refused_with_what_to_do() -> None:
    with pytest.raises(InfrastructureError) as err:
        hardware.datasheet_ceilings("NVIDIA Imaginary 9000", no_measure, "", TABLE)
    text = str(err.value)
    assert "NVIDIA Imaginary 9000" in text and hardware.CEILINGS_ENV in text and "Fake GPU Fast" in text


def test_the_environment_can_give_ceilings_or_accept_measured_ones() -> None:
    given = hardware.datasheet_ceilings("NVIDIA Imaginary 9000", no_measure, "bandwidth=2e12, bfloat16=5e14", TABLE)
    assert given.bandwidth == 2e12 and given.rates == {"bfloat16": 5e14} and hardware.CEILINGS_ENV in given.source
    widened = hardware.datasheet_ceilings("NVIDIA Imaginary 9000", lambda: MEASURED, "measured", TABLE)
    assert widened.bandwidth == MEASURED.bandwidth * hardware.MEASURED_WIDENING
    assert widened.rates["bfloat16"] == MEASURED.rates["bfloat16"] * hardware.MEASURED_WIDENING
    for bad in ("bandwidth=fast", "bfloat16=1e14", "bandwidth=1e12"):
        with pytest.raises(InfrastructureError, match=hardware.CEILINGS_ENV):
            hardware.datasheet_ceilings("NVIDIA H200", no_measure, bad, TABLE)


def test_the_table_covers_the_course_gpus_with_dense_rates() -> None:
    for name in ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S", "NVIDIA H100 80GB HBM3",
                 "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA B200"):  # fmt: skip
        sheet = hardware.DATASHEET[name]
        assert sheet.bandwidth > 0 and set(sheet.rates) >= {"bfloat16", "float16", "float32"} and sheet.source
    assert hardware.DATASHEET["NVIDIA H200"].bandwidth > hardware.DATASHEET["NVIDIA H100 80GB HBM3"].bandwidth
    with pytest.raises(InfrastructureError, match="no float8 matrix rate"):
        hardware.DATASHEET["NVIDIA H200"].roofline_us(1, 1, "float8")


def test_a_speed_checks_device_facts_come_from_the_one_nvidia_smi_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    props = types.SimpleNamespace(name="NVIDIA H200", multi_processor_count=132, L2_cache_size=60 << 20,
                                  total_memory=141 * 10**9, uuid="bbbb")  # fmt: skip
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_properties=lambda device: props))
    monkeypatch.setitem(sys.modules, "torch", fake)
    seen = []

    def details(uuid: str | None = None) -> dict:
        seen.append(uuid)
        return {"gpu_driver": "580.159.04", "gpu_uuid": uuid, "gpu_clocks_mhz": {"sm": 345, "sm_max": 1980}}

    monkeypatch.setattr(hardware, "gpu_details", details)
    facts = hardware.gpu_facts()
    assert seen == ["GPU-bbbb"]  # the row of this very device
    assert facts == {
        "gpu": "NVIDIA H200", "gpu_sms": 132, "gpu_l2_mb": 60.0, "gpu_memory_gb": 141.0, "gpu_driver": "580.159.04",
        "gpu_sm_clock_mhz": 345, "gpu_max_sm_clock_mhz": 1980, "gpu_mem_clock_mhz": None,  # unreadable: None
    }  # fmt: skip


# --- a timed answer that is wrong is reported as wrong, before any floor judgement -------------


def real_print(seed: int, noise: float = 0.0, base: int | None = None) -> list[float]:
    """The harness's fingerprint of a bf16-like MoE output (8 x 4096), computed by the real code:
    the answer for inputs ``base`` (default: ``seed``) with relative noise added."""
    import torch

    out = torch.randn(8, 4096, generator=torch.Generator().manual_seed(seed if base is None else base))
    out = out + noise * torch.randn(8, 4096, generator=torch.Generator().manual_seed(seed + 10_000))
    return harness.fingerprint(out)


def test_a_stale_answer_has_the_right_sums_but_not_the_right_signed_sums() -> None:
    want = real_print(1)
    right = real_print(1, noise=0.014)  # a right answer at the bf16 tolerance, against the reference's
    stale = real_print(2)  # the answer to another input set drawn alike
    assert len(want) == 3 + harness.PROJECTIONS
    assert all(abs(a - b) <= 2e-2 * abs(b) for a, b in zip(stale[1:3], want[1:3]))  # what fooled the old check
    assert gpu_checks.fingerprints_agree(right, want, 2e-2, 0.1)
    assert not gpu_checks.fingerprints_agree(stale, want, 2e-2, 0.1)
    assert not gpu_checks.fingerprints_agree(want[:3], want, 2e-2, 0.1)  # a short fingerprint is no match


def scripted_context(monkeypatch: pytest.MonkeyPatch, cases: list[dict[str, Any]]) -> Any:
    """Cases given as {"sub_us", "ref_us", "stale_calls"}: the submission's timed calls listed in
    stale_calls return another input's answer. Every round records the rng keys it drew."""
    monkeypatch.setattr(hardware, "cuda_device", lambda: "Fake GPU Fast")
    monkeypatch.setattr(hardware, "DATASHEET", TABLE)
    monkeypatch.delenv(hardware.CEILINGS_ENV, raising=False)
    monkeypatch.setattr(hardware, "measured_ceilings", lambda dtypes: MEASURED)
    monkeypatch.setattr(hardware, "gpu_facts", lambda: {"gpu": "Fake GPU Fast"})
    made = [Case("timed", i, len(cases), {"T": 8 * (i + 1)}, {"x": i}) for i in range(len(cases))]
    keys: list[tuple[Any, ...]] = []
    seen: list[set[Any]] = []

    def fresh(rng: Any, inputs: dict) -> dict:
        return dict(inputs, seed=rng.key)

    def prints(sets: list[dict], warmup: int, case: int, stale: set[int] = frozenset()) -> list[list[float]]:
        seeds = [hash(s["seed"]) % 10_000 for s in sets[warmup:]]
        return [real_print(seed, base=seeds[-1] + 1 if i in stale else None) for i, seed in enumerate(seeds)]

    def reference_times(fn: Any, sets: list, warmup: int, budget_s: float) -> tuple[list[float], list[list[float]]]:
        case = sets[0][0]["x"]
        return [cases[case]["ref_us"]] * (len(sets) - warmup), prints([s[0] for s in sets], warmup, case)

    def submission_times(function: str, sets: list[dict], limit: float, warmup: int, budget_s: float) -> Any:
        case = sets[0]["x"]
        spec = cases[case]
        seen.append({s["seed"] for s in sets})
        return [spec["sub_us"]] * (len(sets) - warmup), prints(sets, warmup, case, set(spec.get("stale_calls", ()))), 60.0

    def rng(*key: Any) -> Any:
        keys.append(key)
        return types.SimpleNamespace(key=key)

    monkeypatch.setattr(harness, "time_calls", reference_times)
    lab = types.SimpleNamespace(
        support_function=lambda name: {"fresh": fresh, "work": lambda inputs: WORK}[name],
        implementation=lambda function, reference: (lambda *a: None),
        arguments=lambda function, inputs, device: [inputs],
    )
    submission = types.SimpleNamespace(time=submission_times, check_frozen=lambda function: None)
    return types.SimpleNamespace(
        lab=lab, submission=submission, device="cuda", cases=lambda *a: made, rng=rng, keys=keys, seen=seen, attempt=0
    )


def test_a_stale_answer_on_a_refilled_buffer_fails_as_wrong_even_under_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: pointer_cache's first timed call (a warm-up buffer, refilled) was fast and stale; its
    sums matched, so the floor spoke first and the student read 'impossible time'."""
    floor = FAST.floor_us(*WORK)
    ctx = scripted_context(monkeypatch, [{"sub_us": floor / 10, "ref_us": floor * 2, "stale_calls": [0]}])
    verdict = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), ctx)
    assert verdict.status is Status.failed
    assert verdict.message.startswith("case 1 of 1 (T=8): timed call 1 ran on a warm-up call's buffers refilled")
    assert "a wrong answer" in verdict.message and "floor" not in verdict.message
    assert verdict.hint == gpu_checks.WRONG_HINT


def test_a_wrong_answer_in_a_later_shape_is_judged_before_an_earlier_shapes_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    floor = FAST.floor_us(*WORK)
    ctx = scripted_context(monkeypatch, [
        {"sub_us": floor / 10, "ref_us": floor * 2},  # impossibly fast, but right
        {"sub_us": floor * 3, "ref_us": floor * 2, "stale_calls": [4]},
    ])  # fmt: skip
    verdict = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), ctx)
    assert verdict.status is Status.failed
    assert verdict.message.startswith("case 2 of 2 (T=16): timed call 5 returned a different answer from the reference's")
    honest = scripted_context(monkeypatch, [{"sub_us": floor / 10, "ref_us": floor * 2}])
    impossible = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), honest)
    assert impossible.status is Status.error and "no correct kernel can be that fast" in impossible.message


def test_a_near_miss_is_measured_again_on_inputs_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second measurement on the inputs of the first could be answered from memory: the second
    round draws its own warm-up and timed inputs, and the better round counts."""
    floor = FAST.floor_us(*WORK)
    ctx = scripted_context(monkeypatch, [{"sub_us": floor * 2 / 0.85, "ref_us": floor * 2}])  # 0.85x: 5.6% short of 0.9
    verdict = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), ctx)
    assert verdict.status is Status.failed and verdict.details["rounds"] == 2 and "measured twice" in verdict.message
    assert len(ctx.seen) == 2 and len(ctx.seen[0]) == len(ctx.seen[1]) == 13  # 3 warm-up + 10 timed sets each
    assert not ctx.seen[0] & ctx.seen[1]  # no input set of the first round comes back in the second
    far = scripted_context(monkeypatch, [{"sub_us": floor * 2 / 0.5, "ref_us": floor * 2}])
    once = gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), far)
    assert once.status is Status.failed and "rounds" not in once.details and all("round" not in k for k in far.keys)
    assert speed_check().retry_near == 0.0  # the session's same-input retry is off for this kind


def test_a_whole_second_grading_of_the_check_draws_inputs_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a course turns retry_near on, the session grades the check again (ctx.attempt = 1):
    that grading must not see the first one's inputs either."""
    floor = FAST.floor_us(*WORK)
    first = scripted_context(monkeypatch, [{"sub_us": floor * 2 / 0.5, "ref_us": floor * 2}])
    gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), first)
    again = scripted_context(monkeypatch, [{"sub_us": floor * 2 / 0.5, "ref_us": floor * 2}])
    again.attempt = 1
    gpu_checks.GpuSpeedChecker().run("fused-moe-speed", speed_check(), again)
    assert first.seen and again.seen and not first.seen[0] & again.seen[0]


# --- the timing harness, with a stand-in for torch's CUDA API --------------------------------


class FakeTensor:
    def __init__(self, value: float) -> None:
        self.value = value

    def data_ptr(self) -> int:
        return id(self)

    def copy_(self, other: FakeTensor) -> FakeTensor:
        self.value = other.value
        return self


def fake_torch() -> Any:
    event = type("Event", (), {"__init__": lambda self, enable_timing: None, "record": lambda self: None,
                               "synchronize": lambda self: None, "elapsed_time": lambda self, end: 0.25})  # fmt: skip
    cuda = types.SimpleNamespace(
        Event=event, synchronize=lambda: None, current_device=lambda: 0,
        get_device_properties=lambda i: types.SimpleNamespace(L2_cache_size=60 << 20),
    )  # fmt: skip
    flush = types.SimpleNamespace(zero_=lambda: None)
    return types.SimpleNamespace(Tensor=FakeTensor, int32="int32", cuda=cuda, empty=lambda n, dtype, device: flush)


def test_warm_up_inputs_are_never_timed_and_a_refilled_buffer_catches_a_pointer_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "_torch", fake_torch)
    monkeypatch.setattr(harness, "fingerprint", lambda out: [out, abs(out), out * out])
    weights = FakeTensor(0.5)  # shared by every set, like the expert weights

    def sets() -> list[list[Any]]:
        return [[FakeTensor(float(v)), weights, 3] for v in (101, 102, 103, 1, 2, 3, 4, 5, 6, 7)]

    seen: list[tuple[int, float]] = []

    def honest(x: FakeTensor, w: FakeTensor, k: int) -> float:
        seen.append((x.data_ptr(), x.value))
        return x.value * w.value * k

    inputs = sets()
    times, prints = harness.time_calls(honest, inputs, warmup=3, budget_s=60.0)
    assert len(times) == len(prints) == 7 and times[0] == 250.0
    assert [v for _, v in seen[:3]] == [101, 102, 103]  # warm-up calls, on their own sets
    timed = seen[3:]
    assert [v for _, v in timed] == [1, 2, 3, 4, 5, 6, 7]  # every timed call on new values
    assert timed[0][0] == inputs[0][0].data_ptr()  # the first in a warm-up buffer, refilled
    assert len({p for p, _ in timed}) == 7
    assert [p[0] for p in prints] == [v * 0.5 * 3 for v in (1, 2, 3, 4, 5, 6, 7)]

    answers: dict[int, float] = {}

    def pointer_cache(x: FakeTensor, w: FakeTensor, k: int) -> float:
        return answers.setdefault(x.data_ptr(), x.value * w.value * k)

    _, cached = harness.time_calls(pointer_cache, sets(), warmup=3, budget_s=60.0)
    assert cached[0] != prints[0] and cached[1:] == prints[1:]  # stale on the refilled buffer only

    with pytest.raises(ValueError, match="warm-up"):
        harness.time_calls(honest, sets()[:3], warmup=3, budget_s=60.0)


# --- errors name their case ----------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.error, Status.failed])
def test_a_call_that_raises_names_its_case(status: Status) -> None:
    def call(*args: Any, **kw: Any) -> Any:
        raise SubmissionFault(status, "moe_align_block_size raised KeyError: 256 (line 140, in moe_align_block_size)")

    submission = types.SimpleNamespace(call=call, defines=lambda function: True)
    ctx = CheckContext(types.SimpleNamespace(manifest=None), submission, None)  # type: ignore[arg-type]
    case = Case("align", 4, 10, {"T": 3, "block_m": 256}, {})
    with pytest.raises(SubmissionFault) as err:
        ctx.call("moe_align_block_size", case)
    assert err.value.status is status
    assert err.value.message.startswith("case 5 of 10 (T=3, block_m=256): moe_align_block_size raised KeyError: 256")


def test_a_missing_function_is_not_blamed_on_a_case() -> None:
    def call(*args: Any, **kw: Any) -> Any:
        raise SubmissionFault(Status.error, "the submission defines no function moe_align_block_size(...)")

    submission = types.SimpleNamespace(call=call, defines=lambda function: False)
    ctx = CheckContext(types.SimpleNamespace(manifest=None), submission, None)  # type: ignore[arg-type]
    with pytest.raises(SubmissionFault) as err:
        ctx.call("moe_align_block_size", Case("align", 0, 1, {}, {}))
    assert err.value.message.startswith("the submission defines no function")


# --- the profile -------------------------------------------------------------------------------


def profile_verdict(monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]) -> Any:
    monkeypatch.setattr(hardware, "cuda_device", lambda: "Fake GPU Fast")
    submission = types.SimpleNamespace(profile=lambda function, inputs, limit: (rows, ["_gemm1_kernel", "_gemm2_kernel"]))
    case = Case("timed", 0, 1, {"T": 8}, {})
    ctx = types.SimpleNamespace(submission=submission, cases=lambda *a: [case])
    check = gpu_checks.GpuProfileOptions(kind="gpu-profile", title="t", function="fused_moe", points=2, cases="timed")
    return gpu_checks.GpuProfileChecker().run("triton-kernels-on-the-profile", check, ctx)


def row(name: str, us: float) -> dict[str, Any]:
    return {"name": name, "device_time_us": us, "calls": 1}


def test_the_profile_passes_own_kernels_and_rejects_any_library_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    own = [row("_gemm1_kernel", 600.0), row("_gemm2_kernel", 300.0), row("void at::native::vectorized_elementwise_kernel<4>", 5.0)]
    ok = profile_verdict(monkeypatch, own)
    assert ok.status is Status.passed and "Fake GPU Fast" in ok.message
    for library in ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "ampere_sgemm_128x64_tn", "internal::gemvx<float>",
                    "cutlass::Kernel2<cutlass_80_tensorop_s1688gemm>", "triton_tem_fused_mm_0"):  # fmt: skip
        verdict = profile_verdict(monkeypatch, [*own, row(library, 1.0)])
        assert verdict.status is Status.failed and "library GEMM kernels ran" in verdict.message, library
    empty = profile_verdict(monkeypatch, [])
    assert empty.status is Status.error and "no GPU kernels" in empty.message
