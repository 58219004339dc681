"""An estimator swapped in on the command line trains with at least the samples per example it needs."""

from __future__ import annotations

import pytest
from jsonargparse import Namespace

import gengs_lightning.estimators as estimators
from gengs_lightning.cli import main
from gengs_lightning.cli_samples import raise_num_samples_to_minimum
from gengs_lightning.estimators.registry import registered

#: Every registered estimator with a minimum above one sample.
MINIMUM = {cls.__name__: cls.min_samples for cls in registered() if cls.min_samples > 1}


def test_the_leave_one_out_and_set_estimators_declare_a_minimum_of_two():
    assert MINIMUM == {"ReinforceLOO": 2, "VIMCO": 2, "UnOrd": 2}


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_a_swap_from_a_one_sample_config_trains_with_the_minimum(name, toy_args):
    args = toy_args("poisson", f"--model.estimator=gengs_lightning.estimators.{name}", "--trainer.max_steps=2")
    cli = main(["fit", *args])  # configs/toy/poisson.yaml says num_samples: 1
    assert cli.model.estimator.num_samples == MINIMUM[name]
    assert cli.trainer.global_step == 2


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_python_code_below_the_minimum_is_still_refused(name):
    with pytest.raises(ValueError, match=r"num_samples .*2.*got 1"):
        getattr(estimators, name)(num_samples=1)


def test_the_notice_names_the_flag_and_both_values_and_larger_values_are_kept():
    config = Namespace(
        model=Namespace(
            class_path="gengs_lightning.models.ToyTask",
            init_args=Namespace(
                estimator=Namespace(class_path="gengs_lightning.estimators.VIMCO", init_args=Namespace(num_samples=1))
            ),
        ),
        trainer=Namespace(callbacks=[Namespace(class_path="gengs_lightning.callbacks.HParamsTable")]),
    )
    assert raise_num_samples_to_minimum(config) == [
        "VIMCO needs num_samples >= 2: training with --model.estimator.num_samples 2 (the configuration gave 1)"
    ]
    assert config.model.init_args.estimator.init_args.num_samples == 2
    config.model.init_args.estimator.init_args.num_samples = 3
    assert raise_num_samples_to_minimum(config) == []
    assert config.model.init_args.estimator.init_args.num_samples == 3
