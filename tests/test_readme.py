"""The README's usage example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(capsys):
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README-usage", "exec"), {})
    out = capsys.readouterr().out
    assert "(4, 32)" in out


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    cmd = re.search(r"```bash\n(pip install[^\n]*-e[^\n]*pytest[^\n]*)\n```", README.read_text())
    assert cmd, "README must show the test command"
    install, test = cmd.group(1).split(" && ")
    assert install.replace("pip install", "python3 -m pip install") in ci
    assert test.replace("python ", "python3 ") in ci


def test_readme_real_models_example_runs(shared_dir):
    text = README.read_text()
    section = text.split("## Real models", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"../shared/data/encode422"', repr(str(shared_dir / "data" / "encode422")))
    ns = {}
    exec(compile(code, "README-real-models", "exec"), ns)
    hits = ns["hits"]
    assert len(hits) == 3 and hits["rank"].min() == 1 and "CTCF" in set(hits["best_name"])


def test_readme_wrapper_for_extra_inputs_runs():
    """The 'Channel, then input' wrapper makes a forward(x, covariate) model usable there."""
    import torch
    from deepresolve_captum.adapters import channel_attributions

    section = README.read_text().split("## Channel, then input", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns = {"torch": torch}
    exec(compile(code, "README-wrapper", "exec"), ns)

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.fc = torch.nn.Conv1d(4, 3, 5), torch.nn.Linear(3 + 2, 1)

        def forward(self, x, covariate):
            return self.fc(torch.cat([torch.relu(self.conv(x)).amax(2), covariate], 1))

    m = TwoInputs()
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 30)), 4).permute(0, 2, 1).float()
    w = ns["WithCovariate"](m, torch.tensor([[0.5, -1.0]]))
    attr = channel_attributions(w, m.conv, [0, 2], X, n_shuffles=2)
    assert attr.shape == (2, 3, 4, 30) and torch.isfinite(attr).all()


def test_readme_block_example_resumes_the_usage_run(tmp_path, capsys):
    """The 'Long runs' snippet, run after the usage example: its blocks give the usage run's
    FIVs (same seed, l2='auto' chosen once for all targets)."""
    import numpy as np

    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    first, blocks = re.findall(r"```python\n(.*?)```", usage, re.S)[:2]
    assert "attribute_in_blocks" in blocks
    ns = {}
    exec(compile(first, "README-usage", "exec"), ns)
    blocks = blocks.replace('"run_deepsea"', repr(str(tmp_path / "run")))
    exec(compile(blocks, "README-blocks", "exec"), ns)
    fivs, fims = ns["fivs"].numpy(), ns["fims"].flatten(3).mean(3).numpy()
    assert fivs.shape == fims.shape == (4, 10, 32)
    np.testing.assert_allclose(fivs, fims, atol=2e-3 * np.abs(fims).max())
    assert (tmp_path / "run" / "run.json").exists()
