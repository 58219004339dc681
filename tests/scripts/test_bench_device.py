"""--device of the benchmark scripts: accepted values, clear refusals, a description with the thread count."""

import pytest
import torch

from gengs_lightning.bench_device import describe, parse_device, peak_memory_mib


def test_cpu_is_accepted_and_described_with_its_threads():
    device = parse_device("cpu")
    assert device == torch.device("cpu")
    assert describe(device) == f"CPU, {torch.get_num_threads()} threads"
    assert peak_memory_mib(device) > 0  # the process's resident peak


@pytest.mark.parametrize(
    ("text", "message"), [("tpu", "--device must be cpu, cuda or cuda:N; got 'tpu'"), ("x:1", "got 'x:1'")]
)
def test_an_unknown_device_is_refused_by_name(text, message):
    with pytest.raises(SystemExit, match=message):
        parse_device(text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(SystemExit, match="--device cuda: no CUDA device here"):
        parse_device("cuda")
