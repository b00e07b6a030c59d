import json

from pipelines.recipe import load_recipe, parse_recipe
from pipelines.runner import run_recipe


def test_shipped_recipes_validate_and_unstructured_does_not_end_in_lce():
    for name in ("mnist_latent", "fashion_mnist_latent"):
        recipe = load_recipe(f"pipelines/{name}.yaml")
        latent = next(s for s in recipe.stages if s.name == "prune")
        assert latent.params["method"] == "latent"
        if latent.params.get("level", "weight") == "weight":
            assert "convert" not in [s.name for s in recipe.stages]


def test_latent_stage_structured_run(tmp_path):
    recipe = parse_recipe({
        "name": "latent_small", "seed": 0,
        "data": {"name": "mnist5k", "limit": 600},
        "model": {"name": "mnist_bnn", "width": 0.25},
        "training": {"epochs": 2},
        "stages": ["train",
                   {"prune": {"method": "latent", "level": "channel", "budget": 0.7,
                              "grid": [0.25, 0.5, 0.75], "epochs": 1, "eval_samples": 100}},
                   {"convert": {"split": "test"}}, "report"]})
    run_dir = run_recipe(recipe, tmp_path, log=lambda *a: None)
    manifest = json.loads((run_dir / "stages" / "01-prune.json").read_text())
    assert manifest["metrics"]["operations_reduction"] > 0.2
    assert (run_dir / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    convert = json.loads((run_dir / "stages" / "02-convert.json").read_text())
    assert convert["metrics"]["verify"]["argmax_agreement"] == 1.0
    report = (run_dir / "report.md").read_text()
    assert "Pruning: `latent`" in report and "level channel" in report
    assert "sensitivity.png" in report
