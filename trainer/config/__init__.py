"""What a run is told: each setting declared once, and everything derived from the declarations.

- `declare`: how a setting is declared (a dataclass field with its help text and check);
- `run_config`: the job's settings (`Job`) and a run's whole configuration (`RunConfig`: job + recipe);
- `recipes`: the training recipes (seed, fast, strong, speedrun), every field a setting;
- `flags`: the settings as absl flags, checked while the command line is parsed;
- `tables`: the README's flag tables, written from the declarations.

No module here imports TensorFlow when it is imported (tests/unit/test_layers.py holds that boundary).
"""
