"""Recipes: declarations of end-to-end experiments, one module per family (DESIGN.md "Recipes").

The machinery is split by job: `registry` (Recipe, Setup, Study and the registry), `options` (typed,
read-only options), `runner` (run folders, resume) and `verify` (expected results). Every other module
here only declares recipes.
"""

from .options import Config, make_config, parse_value, trainer_config
from .registry import Recipe, Setup, Study, get_recipe, list_recipes, register_recipe
from .runner import run_recipe
from .verify import verify_recipe

__all__ = ["Config", "Recipe", "Setup", "Study", "get_recipe", "list_recipes", "make_config", "parse_value",
           "register_recipe", "run_recipe", "trainer_config", "verify_recipe"]
