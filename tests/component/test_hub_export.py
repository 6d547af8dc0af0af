"""Hub-ready student exports (t2vturbo/student_export.py, t2vturbo/train/export.py, t2vturbo/hub.py): normal file
modes under the umask, no absolute path of this machine, a relative teacher reference that loads from a copy
elsewhere, a model card huggingface_hub parses, and a push (against a local fake of the hub API) that uploads a
complete, loadable tree."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from t2vturbo import hub
from t2vturbo.sample import sample_student
from t2vturbo.student_export import (
    STUDENT_FILE,
    STUDENT_META,
    StudentExport,
    current_umask,
    package_root,
    portable_path,
    resolve_teacher,
    teacher_reference,
)

UMASK = 0o027  # not the usual 022: the export must follow the umask, whatever it is
SIZE = dict(num_frames=4, height=16, width=16)
PROMPTS = ["a red circle moving left"]
TEXT_SUFFIXES = {".json", ".md", ".py", ".txt", ".yaml"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-step LoRA distillation of a tiny random teacher (AutoencoderKL, so the diffusers pipeline is
    written too), exported under umask 027. Returns (root of the tmp tree, export folder)."""
    from t2vturbo.config import validate
    from t2vturbo.train.trainer import Trainer

    root = tmp_path_factory.mktemp("hubrun")
    cfg = validate(
        {
            "output_dir": str(root / "run"),
            "model": {
                "path": None,
                **SIZE,
                "tiny": {"block_out_channels": [16, 32], "vae": "autoencoder_kl"},
                "lora": {"enabled": True, "rank": 4, "alpha": 8},
            },
            "train": {
                "max_steps": 1,
                "micro_batch_size": 1,
                "log_every": 1,
                "progress": False,
                "eval_every": 0,
                "ckpt_every": 0,
            },
        }
    )
    old = os.umask(UMASK)
    try:
        Trainer(cfg).train()
    finally:
        os.umask(old)
    return root, root / "run" / "export"


def test_export_modes_follow_the_umask(run):
    _, export = run
    paths = [export, *export.rglob("*")]
    assert any(p.name == STUDENT_FILE for p in paths) and any(p.suffix == ".safetensors" for p in paths[2:])
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~UMASK, (p, oct(mode))


def test_export_has_no_absolute_path_of_this_machine(run):
    root, export = run
    meta = json.loads((export / STUDENT_META).read_text())
    assert meta["teacher"] == {"path": "teacher", "name": "teacher"} and "teacher_path" not in meta
    assert meta["config"]["output_dir"] == "run"  # outside the working directory: its last component
    checked = 0
    for f in export.rglob("*"):
        if f.suffix in TEXT_SUFFIXES:
            text = f.read_text()
            assert str(root) not in text and str(Path.cwd()) not in text, f
            checked += 1
    assert checked > 10  # meta, card, the pipeline's and the teacher's configs


def test_copied_export_loads_and_samples_like_the_original(run, tmp_path):
    _, export = run
    copy = shutil.copytree(export, tmp_path / "elsewhere" / "export")
    ex = StudentExport.resolve(copy)
    assert Path(ex.meta["teacher_path"]) == (copy / "teacher").resolve()  # found beside the copy
    ours = StudentExport.resolve(export)
    assert Path(ours.meta["teacher_path"]) == (export / "teacher").resolve()
    videos = []
    for e in (ex, ours):
        bb, net = e.load()
        videos.append(sample_student(bb, net, PROMPTS, steps=2, guidance=7.0, seed=1, decode=False, **SIZE))
    torch.testing.assert_close(videos[0], videos[1], rtol=0, atol=0)


def test_teacher_outside_the_export_is_relative_and_missing_teacher_is_explained(tiny_dirs, tmp_path):
    teacher, legacy = tiny_dirs  # legacy: an old export, absolute teacher_path
    assert StudentExport.resolve(legacy).find_teacher() == Path(teacher)
    root = tmp_path / "a"
    shutil.copytree(teacher, root / "models" / "teacher")
    export = root / "runs" / "r1" / "export"
    shutil.copytree(legacy, export)
    meta = json.loads((export / STUDENT_META).read_text())
    del meta["teacher_path"]
    meta["teacher"] = teacher_reference(root / "models" / "teacher", export)
    assert meta["teacher"]["path"] == "../../../models/teacher"
    StudentExport.write(export, StudentExport.resolve(legacy).state_dict(), meta)
    # moved as a whole: found
    moved = shutil.move(str(root), tmp_path / "b")
    ex = StudentExport.resolve(Path(moved) / "runs" / "r1" / "export")
    assert ex.find_teacher() == (Path(moved) / "models" / "teacher").resolve()
    ex.load()
    # the export alone: a clear error, and teacher= points at it
    alone = shutil.copytree(Path(moved) / "runs" / "r1" / "export", tmp_path / "alone" / "export")
    ex = StudentExport.resolve(alone)
    assert "teacher_path" not in ex.meta
    with pytest.raises(
        FileNotFoundError, match=r"teacher `?teacher.* was not found: looked for .*models/teacher"
    ):
        ex.load()
    with pytest.raises(FileNotFoundError, match="pass teacher=PATH"):
        ex.find_teacher()
    bb, _ = ex.load(teacher=Path(moved) / "models" / "teacher")
    assert bb.latent_channels == 48


def test_package_teacher_reference_and_portable_paths(tmp_path):
    toy = package_root() / "assets" / "toy_teacher"
    ref = teacher_reference(toy, tmp_path / "export", arch=None)
    assert ref == {"package": "t2vturbo", "path": "assets/toy_teacher", "name": "toy_teacher"}
    assert resolve_teacher(ref, tmp_path / "anywhere") == toy
    with pytest.raises(FileNotFoundError, match="hf download org/model --local-dir"):
        resolve_teacher({"path": "../nope", "hub_id": "org/model"}, tmp_path / "export")
    cwd = Path.cwd()
    assert portable_path(str(cwd / "artifacts" / "toy_shards" / "toy-{000000..000003}.tar")) == (
        "artifacts/toy_shards/toy-{000000..000003}.tar"
    )
    assert portable_path("/data/x/shard-{0..9}.tar") == "shard-{0..9}.tar"
    assert portable_path("pipe:cat /data/x/a.tar") == "pipe:cat a.tar"
    assert portable_path("/data/a.tar::relative/b.tar") == "a.tar::relative/b.tar"
    assert portable_path("file:///srv/s.tar") == "file://s.tar"
    assert portable_path("https://host/data/a.tar") == "https://host/data/a.tar"
    assert portable_path(str(toy)) == "t2vturbo/assets/toy_teacher"
    assert hub.command_line(["experiment=toy", "model.path=/models/Wan2.1", "train.lr=1e-4"]) == (
        "python -m t2vturbo.distill experiment=toy model.path=Wan2.1 train.lr=1e-4"
    )


def _fake_report(run_dir: Path) -> None:
    line = dict(color_acc=0.9, shape_acc=0.8, direction_acc=0.7, score_ci95=[0.71, 0.79])
    rep = {
        "settings": {"num_prompts": 60, "samples_per_prompt": 4, "seed": 0},
        "toybench": {
            "teacher_reference": {**line, "label": "teacher DDIM 50 reference, w=4", "score": 0.812},
            "student": {**line, "label": "student 4 steps, w=10", "score": 0.7531},
        },
        "comparisons": {
            "teacher_reference": {
                "label": "student minus teacher DDIM 50 reference, w=4",
                "score": {"diff": -0.0589, "ci95": [-0.09, -0.02]},
            }
        },
        "command": f"python -m t2vturbo.eval.report {run_dir}",
    }
    (run_dir / "report.json").write_text(json.dumps(rep))


def test_model_card_metadata_and_refresh_from_the_report(run, capsys):
    root, export = run
    card = ModelCard.load(export / "README.md")
    d = card.data
    assert (d.library_name, d.pipeline_tag, d.license) == ("diffusers", "text-to-video", "apache-2.0")
    assert {"text-to-video", "t2v-turbo", "consistency-distillation", "lora", "unet3d"} <= set(d.tags)
    assert d.base_model is None  # a tiny random teacher: not on the hub
    assert "w ~ U[5.0, 15.0]" in card.text and "LoRA rank 4, alpha 8" in card.text
    assert "pytorch_lora_weights.safetensors" in card.text and "guidance_layers.safetensors" in card.text
    assert "No report yet" in card.text
    _fake_report(root / "run")
    assert hub.main(["card", str(export), "--repo-id", "me/toy-student"]) == 0
    assert "README.md" in capsys.readouterr().out
    card = ModelCard.load(export / "README.md")
    assert "| student 4 steps, w=10 | 0.753 [0.710, 0.790] | 0.900 | 0.800 | 0.700 |" in card.text
    assert "| -0.059 | [-0.090, -0.020] |" in card.text
    assert "Measured with `python -m t2vturbo.eval.report run`" in card.text
    assert "hf download me/toy-student" in card.text and str(root) not in card.text
    assert stat.S_IMODE((export / "README.md").stat().st_mode) == 0o666 & ~current_umask()


def test_card_toybench_columns_are_the_reports_worlds(tiny_dirs, tmp_path):
    """The card's ToyBench table has the accuracies of the report's world: a crowd report's colour / count /
    direction / speed (no shape), a report of before the worlds (no ``world``) the toy world's."""
    _, export = tiny_dirs
    line = dict(color_acc=0.9, count_acc=0.6, direction_acc=0.7, speed_acc=0.5, score_ci95=[0.6, 0.74])
    rep = {
        "world": "crowd",
        "settings": {"num_prompts": 108, "samples_per_prompt": 4, "seed": 0},
        "toybench": {"student": {**line, "label": "student 4 steps, w=7.5", "score": 0.675}},
    }
    f = tmp_path / "report.json"
    f.write_text(json.dumps(rep))
    text = hub.card_for(export, report=f).text
    assert "108 held-out crowd-world prompts, 4 samples per prompt" in text
    assert (
        "| run | score [95 % CI] | colour | count | direction | speed |\n| --- | --- | --- | --- | --- | --- |\n"
        in text
    )
    assert "| student 4 steps, w=7.5 | 0.675 [0.600, 0.740] | 0.900 | 0.600 | 0.700 | 0.500 |" in text
    assert "shape" not in text
    del rep["world"]  # the world from the accuracies the lines carry
    f.write_text(json.dumps(rep))
    assert hub.card_for(export, report=f).text == text
    rep["toybench"]["student"] = {k: v for k, v in rep["toybench"]["student"].items() if "count" not in k}
    rep["toybench"]["student"]["shape_acc"] = 0.8
    f.write_text(json.dumps(rep))
    text = hub.card_for(export, report=f).text
    assert (
        "held-out toy-world prompts" in text
        and "| run | score [95 % CI] | colour | shape | direction |\n" in text
    )
    assert "| student 4 steps, w=7.5 | 0.675 [0.600, 0.740] | 0.900 | 0.800 | 0.700 |\n" in text


def test_card_names_a_known_teacher_and_its_license(tiny_dirs, tmp_path):
    teacher, legacy = tiny_dirs
    export = shutil.copytree(legacy, tmp_path / "export")
    meta = json.loads((export / STUDENT_META).read_text())
    del meta["teacher_path"]
    meta["teacher"] = teacher_reference(teacher, export, arch="modelscope_1.7b")
    (export / STUDENT_META).write_text(json.dumps(meta))
    d = hub.card_for(export).data
    assert (d.base_model, d.license, d.library_name) == (
        "ali-vilab/text-to-video-ms-1.7b",
        "cc-by-nc-4.0",
        "t2vturbo",
    )


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """HfApi's create_repo / create_branch / upload_folder recording their calls; upload_folder copies the folder
    to tmp_path/hub/<repo>/<revision>."""
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, revision=None, ignore_patterns=None, **kw):
        calls.append(("upload_folder", repo_id, {"folder_path": folder_path, "revision": revision, **kw}))
        dest = tmp_path / "hub" / repo_id / (revision or "main")
        shutil.copytree(folder_path, dest, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return calls, tmp_path / "hub"


def test_push_uploads_a_complete_loadable_tree(run, fake_hub, capsys):
    _, export = run
    calls, hub_dir = fake_hub
    assert hub.main(["push", str(export), "me/toy-student", "--private", "--revision", "dev"]) == 0
    assert "https://huggingface.co/me/toy-student/commit/0" in capsys.readouterr().out
    names = [c[0] for c in calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0][2]["private"] is True and calls[0][2]["exist_ok"] is True
    assert calls[1][2]["branch"] == "dev" and calls[2][2]["revision"] == "dev"
    up = hub_dir / "me" / "toy-student" / "dev"
    rel = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))  # noqa: E731
    assert rel(up) == rel(export) and "README.md" in rel(up) and "teacher/unet/config.json" in rel(up)
    bb, net = StudentExport.resolve(up).load()
    ref = StudentExport.resolve(export).state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_push_errors_are_one_line(run, fake_hub, monkeypatch, capsys):
    _, export = run
    monkeypatch.setattr(hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN")
    assert hub.main(["push", str(export), "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Hugging Face token" in err and "hf auth login" in err

    import httpx2  # huggingface_hub's HTTP client

    url = "https://huggingface.co/api/repos/create"
    response = httpx2.Response(401, request=httpx2.Request("POST", url))

    def refuse(self, repo_id, **kw):
        raise HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}\nmore", response=response)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(hub, "get_token", lambda: "hf_test_token")
    assert hub.main(["push", str(export), "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed: HfHubHTTPError: 401 Client Error" in err
