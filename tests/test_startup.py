"""Start-up cost: the CLI imports torch only for commands that need it; loading a toy text
encoder on the meta device does not pull in torch's compiler (about a second on a small CPU)."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    """Names in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_does_not_import_torch():
    modules = _modules_after("from zoetrope.cli import main\n"
                             "assert main(['--help']) == main(['generate', '--help']) == 0")
    assert "zoetrope.cli" in modules
    assert "torch" not in modules


def test_loading_the_toy_text_encoder_skips_the_compiler(tmp_path):
    code = (f"import torch\nfrom zoetrope.config import TextConfig\n"
            f"from zoetrope.text import ToyTextEncoder, load_text_encoder\n"
            f"ToyTextEncoder(TextConfig(dim=16, depth=1, num_heads=2)).save_pretrained({str(tmp_path)!r})\n"
            f"import sys\nassert 'torch._dynamo' not in sys.modules\n"
            f"load_text_encoder({str(tmp_path)!r})")
    assert "torch._dynamo" not in _modules_after(code)
