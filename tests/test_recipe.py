import pytest
import yaml

from bnnprune_tf.errors import RecipeError
from pipelines.recipe import load_recipe, parse_recipe


def base(**over):
    recipe = {"name": "t", "data": {"name": "mnist5k"}, "model": {"name": "mnist_bnn"},
              "training": {"epochs": 2}, "stages": ["train", {"evaluate": {"splits": ["test"]}}]}
    recipe.update(over)
    return recipe


def test_the_shipped_recipe_validates():
    recipe = load_recipe("pipelines/mnist_bnn.yaml")
    assert recipe.data.name == "mnist5k" and recipe.model.name == "mnist_bnn"
    assert [s.name for s in recipe.stages][:2] == ["train", "evaluate"]
    assert [s.name for s in recipe.stages][-1] == "report"
    assert recipe.stages[1].params == {"splits": ["val", "test"]}


def test_defaults_and_stage_forms():
    r = parse_recipe(base())
    assert r.training.learning_rate == 0.01 and r.training.schedule == "cosine"
    assert r.stages[0].params == {} and r.stages[1].params == {"splits": ["test"]}


@pytest.mark.parametrize("change, message", [
    ({"training": {"epochs": "ten"}},
     "training.epochs: Input should be a valid integer, unable to parse string as an integer (got 'ten')"),
    ({"training": {"epochs": 0}}, "training.epochs: Input should be greater than 0 (got 0)"),
    ({"data": {"name": "imagenet"}},
     "data.name: unknown dataset 'imagenet', expected one of mnist5k, digits, fashion_mnist, cifar10"),
    ({"model": {"name": "mnist_bnn", "widht": 2}}, "model.widht: Extra inputs are not permitted"),
    ({"data": {"augment": ["rotate"]}}, "data.augment[0]: Input should be 'shift' or 'flip'"),
    ({"stages": []}, "stages: List should have at least 1 item"),
    ({"stages": ["train", "deploy"]}, "stages[1]: unknown stage 'deploy', expected one of"),
    ({"stages": [{"evaluate": {"splits": ["dev"]}}]},
     "stages[0].evaluate.splits[0]: Input should be 'train', 'val' or 'test' (got 'dev')"),
    ({"stages": [{"train": {}, "report": {}}]}, "each stage is a name (`- train`) or a one-key mapping"),
    ({"name": "has space"}, "name: String should match pattern"),
])
def test_errors_name_the_field_and_expectation(change, message):
    with pytest.raises(RecipeError) as info:
        parse_recipe(base(**change), "r.yaml")
    assert str(info.value).startswith("invalid recipe r.yaml:")
    assert message in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe .*nope.yaml not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump(["train"]))
    with pytest.raises(RecipeError, match="the top level must be a mapping, got list"):
        load_recipe(bad)
