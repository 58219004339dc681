"""The README's commands and worked example stay true."""

from __future__ import annotations

import re
import runpy

from helpers import REPO

README = (REPO / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_worked_example_subclassing_discrete_latent_module_runs(tmp_path, capsys):
    script = tmp_path / "readme_example.py"
    script.write_text(python_block_after("## Write your own model"))
    namespace = runpy.run_path(str(script))
    loss = float(capsys.readouterr().out.rsplit(":", 1)[1])
    assert loss == loss and loss < 1e4  # finite
    model = namespace["model"]
    assert model.encoder[-1].out_features == 4  # 4 latents x 1 Poisson rate each


def test_ci_runs_exactly_the_readme_test_command():
    test_command = bash_blocks()[1].strip()
    assert "pytest" in test_command
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_main_command_runs_the_toy_config():
    assert "python -m gengs_lightning fit --config configs/toy/poisson.yaml" in bash_blocks()[0]
