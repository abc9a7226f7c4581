"""Device discipline: a tensor reaches numpy only through saeflow.tensors.to_numpy (detach + CPU), so the
CUDA presets never hit `TypeError: can't convert cuda tensor to numpy`."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "src" / "saeflow" / "tensors.py"


def _numpy_calls(path: Path) -> list[int]:
    """Lines of `<expr>.numpy(...)` calls (pandas' `.to_numpy()` is another attribute)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "numpy"]


def test_no_numpy_call_outside_the_helper():
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "workflow" / "scripts").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    offenders = {str(f.relative_to(ROOT)): lines for f in files if f != HELPER and (lines := _numpy_calls(f))}
    assert offenders == {}, f"use saeflow.tensors.to_numpy instead of .numpy(): {offenders}"
    assert _numpy_calls(HELPER), "the helper itself converts"


def test_the_scan_sees_a_numpy_call(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import torch\nx = torch.zeros(2)\ny = x.cpu().numpy()\nz = df.to_numpy()\n")
    assert _numpy_calls(f) == [3]


def test_to_numpy_detaches_casts_and_accepts_arrays():
    torch = pytest.importorskip("torch")
    import numpy as np

    from saeflow.tensors import to_numpy

    t = torch.ones(3, requires_grad=True) * 2
    out = to_numpy(t)
    assert isinstance(out, np.ndarray) and out.tolist() == [2.0, 2.0, 2.0]
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    assert to_numpy(torch.arange(3), torch.float64).dtype == np.float64
    assert to_numpy(torch.arange(3), np.int32).dtype == np.int32
    assert to_numpy([1, 2]).tolist() == [1, 2]
    if torch.cuda.is_available():
        assert to_numpy(torch.ones(2, device="cuda")).tolist() == [1.0, 1.0]
