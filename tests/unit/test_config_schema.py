"""The config schema in Hydra's ConfigStore (t2vturbo/config.py): keys and values are checked while Hydra
composes or by validate(), one schema per objective, the yaml files hold only what differs from the
dataclass defaults, and the tree resolves to the values recorded before the schema moved into the
ConfigStore (tests/unit/data/resolved_configs.yaml)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from t2vturbo.config import (
    OBJECTIVES,
    ConfigError,
    ConsistencyDistillationConfig,
    DiffusionConfig,
    PlanConfig,
    PrecomputeConfig,
    RewardFinetuneConfig,
    RootConfig,
    validate,
)
from t2vturbo.precompute import split_config

CONF = Path(__file__).resolve().parents[2] / "conf"
RECORDED = yaml.safe_load((Path(__file__).parent / "data" / "resolved_configs.yaml").read_text())


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _compose(*overrides: str) -> DictConfig:
    return compose(config_name="config", overrides=list(overrides))


def _error_text(e: BaseException) -> str:
    """Hydra's message and its causes' (the key is named in OmegaConf's cause)."""
    parts = []
    while e is not None:
        parts.append(str(e))
        e = e.__cause__
    return " | ".join(parts)


def _flat(d: dict, schema=RootConfig, prefix: str = "") -> dict:
    """Dotted keys down to the schema's leaves (objective, dict and list fields stay whole)."""
    hints = typing.get_type_hints(schema)
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(hints.get(k)) and k != "objective":
            out.update(_flat(v, hints[k], f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---- unknown keys and bad values ----------------------------------------------------------------


def test_unknown_key_fails_naming_it(hydra_conf):
    for raw, key in [
        ({"train": {"lrr": 1e-3}}, "train.lrr"),
        ({"model": {"tiny": {"vea": "x"}}}, "model.tiny.vea"),
        ({"precompute": {"outt": "/x"}}, "precompute.outt"),
        ({"bogus": 1}, "bogus"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(raw)
    for override, key in [
        ("train.lrr=1", "train.lrr"),
        ("guidance.lamda=1", "guidance.lamda"),
        ("precompute.outt=/x", "precompute.outt"),
    ]:
        with pytest.raises(Exception) as e:  # Hydra's composition error, caused by OmegaConf's
            _compose(override)
        assert key in _error_text(e.value), _error_text(e.value)


def test_bad_literal_value_names_key_and_choices(hydra_conf):
    with pytest.raises(ConfigError, match=r"data\.kind='tar': expected one of 'toy', 'shards', 'mixture'"):
        validate({"data": {"kind": "tar"}})
    with pytest.raises(ConfigError, match=r"data\.directions='sideways': expected one of 'left', 'right'"):
        validate({"data": {"directions": ["left", "sideways"]}})
    with pytest.raises(ConfigError, match=r"train\.precision='fp16': expected one of 'fp32', 'bf16'"):
        validate(_compose("train.precision=fp16"))
    with pytest.raises(ConfigError, match=r"objective\.finetune='both'"):
        validate(_compose("objective=reward_finetune", "reward=toy", "objective.finetune=both"))
    with pytest.raises(
        ConfigError, match=r"objective\.name='distill': expected one of 'consistency_distillation'"
    ):
        validate({"objective": {"name": "distill"}})
    with pytest.raises(ConfigError, match=r"train\.max_steps"):  # a wrong type
        validate({"train": {"max_steps": "many"}})


def _annotated_fields(schema, prefix=""):
    """(full key, field, its Annotated metadata) of every field under ``schema``, nested schemas included."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        inner = typing.get_type_hints(schema)[f.name]
        if dataclasses.is_dataclass(inner) and f.name != "objective":
            yield from _annotated_fields(inner, f"{prefix}{f.name}.")
        elif getattr(hints[f.name], "__metadata__", None):
            yield f"{prefix}{f.name}", hints[f.name].__metadata__


def _nest(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


@pytest.mark.parametrize("schema", [RootConfig, *OBJECTIVES.values()], ids=lambda s: s.__name__)
def test_every_enumerated_field_is_checked_with_its_choices(schema):
    prefix = "" if schema is RootConfig else "objective."
    checked = 0
    for key, meta in _annotated_fields(schema, prefix):
        for rule in meta:
            if typing.get_origin(rule) is not typing.Literal or key == "objective.name":
                continue
            raw = _nest(key, ["not-a-choice"] if key == "data.directions" else "not-a-choice")
            if prefix:
                raw["objective"]["name"] = schema().name
            with pytest.raises(ConfigError) as e:
                validate(raw)
            assert f"{key}='not-a-choice': expected one of " in str(e.value)
            assert all(repr(c) in str(e.value) for c in typing.get_args(rule))
            checked += 1
    assert (
        checked
        == {RootConfig: 13, ConsistencyDistillationConfig: 3, DiffusionConfig: 0, RewardFinetuneConfig: 2}[
            schema
        ]
    )


def test_ranges_name_the_key():
    with pytest.raises(ConfigError, match=r"objective\.min_timestep=-1 must be >= 0"):
        validate({"objective": {"name": "diffusion", "min_timestep": -1}})
    with pytest.raises(ConfigError, match=r"objective\.ema_decay=1\.5 must be in \[0\.0, 1\.0\]"):
        validate({"objective": {"ema_decay": 1.5}})
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.weight=-1\.0 must be >= 0"):
        validate(
            {
                "data": {
                    "kind": "mixture",
                    "sources": [{"name": "a", "urls": "a.tar"}, {"name": "b", "urls": "b.tar", "weight": -1}],
                }
            }
        )
    with pytest.raises(ConfigError, match=r"guidance\.topk=0 must be >= 1"):
        validate({"guidance": {"topk": 0}})


# ---- one schema per objective -------------------------------------------------------------------


def test_each_objective_has_only_its_fields():
    solver = {
        "name",
        "num_ddim_timesteps",
        "w_min",
        "w_max",
        "guidance_form",
        "sigma_data",
        "timestep_scaling",
        "init_from",
        "init_from_time_cond_proj_seed",
    }
    fields = {n: {f.name for f in dataclasses.fields(s)} for n, s in OBJECTIVES.items()}
    assert fields["consistency_distillation"] == solver | {"skip", "loss", "huber_c", "target", "ema_decay"}
    assert fields["diffusion"] == {"name", "min_timestep"}
    assert fields["reward_finetune"] == solver | {"finetune", "sample_steps", "grad_steps"}
    assert (ConsistencyDistillationConfig().w_min, RewardFinetuneConfig().w_min) == (5.0, 2.0)
    assert DiffusionConfig(min_timestep=800).name == "diffusion"


def test_objective_schemas_reject_other_objectives_keys(hydra_conf):
    for overrides, key in [
        (["objective=consistency_distillation", "objective.min_timestep=5"], "objective.min_timestep"),
        (["objective=diffusion", "objective.w_min=1"], "objective.w_min"),
        (["objective=reward_finetune", "reward=toy", "objective.skip=2"], "objective.skip"),
        (["experiment=toy_vader", "objective.ema_decay=0.9"], "objective.ema_decay"),
    ]:
        with pytest.raises(Exception) as e:
            _compose(*overrides)
        assert key in _error_text(e.value), (overrides, _error_text(e.value))
    with pytest.raises(
        ConfigError, match="objective.min_timestep=5 is used by objective.name=diffusion only"
    ):
        validate({"objective": {"min_timestep": 5}})
    with pytest.raises(
        ConfigError, match="objective.skip=2 is used by objective.name=consistency_distillation only"
    ):
        validate(
            {"objective": {"name": "reward_finetune", "skip": 2}, "reward": {"weights": {"toy_color": 1.0}}}
        )
    with pytest.raises(
        ConfigError, match="objective.sample_steps=2 is used by objective.name=reward_finetune only"
    ):
        validate({"objective": {"name": "diffusion", "sample_steps": 2}})
    with pytest.raises(
        ConfigError,
        match=r"objective\.w_max=3 is used by objective\.name=consistency_distillation or "
        r"reward_finetune only",
    ):
        validate({"objective": {"name": "diffusion", "w_max": 3}})
    # the composed objective is typed by its own schema
    for name, schema in OBJECTIVES.items():
        extra = ["reward=toy"] if name == "reward_finetune" else []
        assert OmegaConf.get_type(_compose(f"objective={name}", *extra).objective) is schema
        assert OmegaConf.get_type(validate(_compose(f"objective={name}", *extra)).objective) is schema


def test_target_auto_and_cross_field_rules():
    assert validate({}).objective.target == "ema"
    assert validate({"model": {"lora": {"enabled": True}}}).objective.target == "student"
    with pytest.raises(ConfigError, match="set reward weights"):
        validate({"objective": {"name": "reward_finetune"}})
    with pytest.raises(ConfigError, match="needs data.urls"):
        validate({"data": {"kind": "shards"}})
    with pytest.raises(ConfigError, match="w_min=9.0 > objective.w_max=2.0"):
        validate(
            {
                "objective": {"name": "reward_finetune", "w_min": 9.0, "w_max": 2.0},
                "reward": {"weights": {"toy_color": 1.0}},
            }
        )
    with pytest.raises(
        ConfigError, match="guidance.motion=true needs objective.name=consistency_distillation"
    ):
        validate({"objective": {"name": "diffusion"}, "guidance": {"motion": True}})


# ---- defaults written once ---------------------------------------------------------------------


def _yaml_leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _yaml_leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(CONF).as_posix()
        for g in ("model", "data", "objective", "guidance", "reward")
        for p in (CONF / g).glob("*.yaml")
    ),
)
def test_group_yaml_holds_only_what_differs_from_the_defaults(path):
    text = (CONF / path).read_text()
    group = path.split("/")[0]
    body = yaml.safe_load(text) or {}
    body.pop("defaults", None)
    root = OmegaConf.structured(RootConfig)
    root.objective = OmegaConf.structured(OBJECTIVES.get(Path(path).stem, ConsistencyDistillationConfig))
    base = root if "@package _global_" in text else root[group]
    for key, value in _yaml_leaves(body):
        parent, _, leaf = key.rpartition(".")
        if OmegaConf.is_missing(OmegaConf.select(base, parent) if parent else base, leaf):
            continue  # a required default (???, e.g. model.path): any value the option sets differs from it
        default = OmegaConf.select(base, key, throw_on_missing=False)
        if (
            isinstance(default, ListConfig)
            and isinstance(value, list)
            and value
            and isinstance(value[0], dict)
        ):
            element = OmegaConf.structured(default._metadata.element_type)
            for i, item in enumerate(value):
                for k, v in item.items():
                    assert v != element[k], f"{path}: {key}[{i}].{k}={v!r} is the default"
            continue
        if isinstance(default, (DictConfig, ListConfig)):
            default = OmegaConf.to_container(default)
        assert value == "???" or value != default, f"{path}: {key}={value!r} is the dataclass default"


# ---- the tree resolves as recorded ---------------------------------------------------------------


@pytest.mark.parametrize("overrides", ["", *RECORDED["cases"]])
def test_tree_resolves_to_the_recorded_values(hydra_conf, overrides):
    cfg = OmegaConf.to_container(validate(_compose(*overrides.split())))
    assert cfg.pop("precompute") == dataclasses.asdict(PrecomputeConfig())
    assert cfg.pop("plan") == dataclasses.asdict(PlanConfig())  # t2vturbo.plan only
    expected = {**RECORDED["default"], **(RECORDED["cases"][overrides] if overrides else {})}
    expected = OmegaConf.to_container(OmegaConf.create(expected), resolve=True)  # ${t2vturbo.asset:...}
    assert _flat(cfg) == expected


def test_every_experiment_is_recorded():
    recorded = {
        ov.split()[0].removeprefix("experiment=") for ov in RECORDED["cases"] if ov.startswith("experiment=")
    }
    assert recorded == {p.stem for p in (CONF / "experiment").glob("*.yaml")}


def test_validated_config_is_typed_resolved_and_converts_to_a_container(hydra_conf):
    cfg = validate(_compose("experiment=toy", "experiment_name=other"))
    assert cfg.output_dir == "outputs/other" and OmegaConf.get_type(cfg) is RootConfig
    c = OmegaConf.to_container(cfg)  # as stored in a student export
    assert c["output_dir"] == "outputs/other" and c["objective"]["num_ddim_timesteps"] == 50
    assert validate(c) == cfg  # a stored config validates again to the same config


# ---- precompute options in the schema ---------------------------------------------------------------


def test_precompute_options_are_in_the_schema(hydra_conf, tmp_path):
    cfg, pre = split_config(
        _compose(
            "data=toy_shards",
            f"precompute.out={tmp_path}",
            "precompute.dtype=fp32",
            "precompute.shard_index=1",
            "precompute.num_shard_lists=2",
        )
    )
    assert (pre.out, pre.dtype, pre.shard_index, pre.num_shard_lists, pre.batch_size) == (
        str(tmp_path),
        "fp32",
        1,
        2,
        1,
    )
    assert pre["shard_size"] == 0 and cfg.precompute == pre
    with pytest.raises(ConfigError, match=r"precompute\.out is required \(precompute\.out=DIR\)"):
        split_config(_compose("data=toy_shards"))
    with pytest.raises(ConfigError, match=r"precompute\.dtype='fp8': expected one of 'fp32', 'fp16', 'bf16'"):
        split_config(_compose("data=toy_shards", "precompute.out=x", "precompute.dtype=fp8"))
    with pytest.raises(ConfigError, match=r"precompute\.shard_index=2 not in \[0, num_shard_lists=2\)"):
        split_config(
            _compose(
                "data=toy_shards",
                "precompute.out=x",
                "precompute.shard_index=2",
                "precompute.num_shard_lists=2",
            )
        )
    with pytest.raises(ConfigError, match="precompute reads clip shards"):
        split_config(_compose("precompute.out=x"))


def test_model_family_choices_are_the_family_registry():
    """config.py's Literal of model.family and backbones.FAMILIES name the same families."""
    import typing

    from t2vturbo.backbones import FAMILIES
    from t2vturbo.config import ModelConfig

    hint = typing.get_type_hints(ModelConfig, include_extras=True)["family"]
    (literal,) = [m for m in hint.__metadata__ if typing.get_origin(m) is typing.Literal]
    assert set(typing.get_args(literal)) == set(FAMILIES)


def test_shards_from_the_command_line_over_the_default_toy_data(hydra_conf):
    """`data.kind=shards data.urls=...` over the default data=toy (the README's form) composes; it used to fail
    with "Key 'urls' is not in struct"."""
    cfg = validate(_compose("data.kind=shards", "data.urls='/data/x-{000000..000009}.tar'"))
    assert cfg.data.kind == "shards" and cfg.data.urls == "/data/x-{000000..000009}.tar"


# ---- model.path: ??? is required ------------------------------------------------------------------

MODEL_PATH_HINT = r"model\.path=/local/teacher/folder \(docs/TEACHERS\.md\); model\.path=null builds the tiny"


@pytest.mark.parametrize(
    "option, family",
    [("modelscope", "unet3d"), ("videocrafter2", "videocrafter2"), ("wan2_1_t2v_1_3b", "wan")],
)
def test_a_model_option_with_path_missing_requires_model_path(hydra_conf, option, family):
    """`path: ???` in a model option survives composition: without model.path validate fails naming it, the
    family and the way out. It used to compose to path=None, i.e. a random full-size teacher (issue 20, #8a)."""
    cfg = _compose(f"model={option}")
    assert OmegaConf.is_missing(cfg.model, "path")
    with pytest.raises(ConfigError, match=r"^model\.path is missing") as e:
        validate(cfg)
    assert f"model.family={family!r}" in str(e.value)
    assert e.match(MODEL_PATH_HINT)
    with pytest.raises(ConfigError, match=r"^model\.path is missing"):
        split_config(_compose(f"model={option}", "data=toy_shards", "precompute.out=/tmp/x"))
    good = validate(_compose(f"model={option}", "model.path=/x"))
    assert (good.model.path, good.model.family) == ("/x", family)
    tiny = validate(_compose(f"model={option}", "model.path=null"))  # the hint's tiny random teacher
    assert tiny.model.path is None


def test_a_users_model_option_with_path_missing_requires_model_path(hydra_conf, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("family: videocrafter2\npath: ???\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    with pytest.raises(ConfigError, match=r"^model\.path is missing .*model\.family='videocrafter2'"):
        validate(_compose(searchpath, "model=mine"))
    assert validate(_compose(searchpath, "model=mine", "model.path=/m")).model.path == "/m"


def test_the_default_model_is_the_tiny_random_teacher(hydra_conf):
    """The default option (tiny_unet3d) and a partial dict without model.path (the rest from the defaults)
    give path=None; a ModelConfig built in Python keeps path=None too."""
    from t2vturbo.config import ModelConfig

    assert _compose().model.path is None
    assert validate(_compose()).model.path is None
    assert validate({}).model.path is None
    assert validate({"model": {"family": "videocrafter2"}}).model.path is None
    assert validate({"model": {"path": "/y"}}).model.path == "/y"
    assert ModelConfig().path is None
    with pytest.raises(ConfigError, match=r"^model\.path is missing"):
        validate({"model": {"path": "???"}})


def test_distill_without_model_path_exits_with_a_config_error():
    """`python -m t2vturbo.distill model=modelscope` fails at once (exit 2) instead of building a teacher."""
    import subprocess
    import sys
    import time

    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "t2vturbo.distill", "model=modelscope", "train.max_steps=1"],
        cwd=CONF.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert (
        "config error: model.path is missing" in r.stderr and "model.path=/local/teacher/folder" in r.stderr
    )
    assert time.monotonic() - t0 < 30  # nothing built (it built a random full-size teacher: 16 GB)
