import os

# Triton reads TRITON_INTERPRET when it is imported: set it before any test (or torch) imports triton, so the
# Triton kernels run on CPU tensors through the interpreter (tests/test_kernels_triton.py). CI sets it too.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
