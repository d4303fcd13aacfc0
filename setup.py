"""Packaging glue that pyproject.toml cannot express: the built-in models, calibrations and example
images live in ``assets/`` at the repository root (where the README's commands, the app and the
tests use them) and ship inside the wheel as the package ``lowdim_app.assets``
(``lowdim_app.config.DEFAULT_ASSETS`` finds them in either place). Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["lowdim_app", "lowdim_app.*"]) + ["lowdim_app.assets"],
    package_dir={"lowdim_app.assets": "assets"},
    package_data={"lowdim_app.assets": ["models/*/*.json", "models/*/*.md", "models/*/*.png",
                                        "models/*/*/*.json", "models/*/*/*.safetensors",
                                        "calibrations/*.json", "calibrations/*.csv", "examples/*.png"],
                  "lowdim_app.data": ["memorization_prompts/*.jsonl", "memorization_prompts/*.txt",
                                      "memorization_prompts/*.md"]},
)
