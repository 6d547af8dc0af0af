"""bench/guidance_response.py: does a student follow w the way its teacher does?"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import REPO

_spec = importlib.util.spec_from_file_location("guidance_response", REPO / "bench" / "guidance_response.py")
gr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gr)

PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle standing still"]
SIZE = dict(num_frames=4, height=16, width=16)


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    """(teacher backbone, student export) of the shared tiny fixture (tests/conftest.py)."""
    from t2vturbo.backbones import load_backbone

    teacher, export = tiny_dirs
    return load_backbone("unet3d", str(teacher)), export


def _teacher(bb, steps=2):
    from t2vturbo.sample import sample_teacher

    return lambda ps, w, seed: sample_teacher(
        bb, ps, steps=steps, guidance=w, seed=seed, decode=False, **SIZE
    )


def test_reference_against_itself_is_the_identity(tiny):
    bb, _ = tiny
    t = _teacher(bb)
    rep = gr.response_table(t, t, PROMPTS, [1.0, 8.0], batch=2)
    assert rep["mse"][0][0] == 0.0 and rep["mse"][1][1] == 0.0
    assert rep["effective_guidance"] == [1.0, 8.0]
    assert rep["response"] == pytest.approx(1.0) and rep["response_ci95"] == pytest.approx([1.0, 1.0])
    # the off-diagonal entry, recomputed by hand (batches of 2 prompts use seeds 0 and 2)
    a = torch.cat([t(PROMPTS[:2], 1.0, 0), t(PROMPTS[2:], 1.0, 2)]).flatten(1)
    b = torch.cat([t(PROMPTS[:2], 8.0, 0), t(PROMPTS[2:], 8.0, 2)]).flatten(1)
    by_hand = (a - b).pow(2).mean(1).mean().item()
    assert by_hand > 0
    assert rep["mse"][0][1] == pytest.approx(by_hand, rel=1e-6) == rep["reference_move_mse"]


def test_fresh_student_responds_and_one_without_its_w_projection_does_not(tiny, tmp_path, capsys):
    bb, export = tiny
    out = tmp_path / "gr.json"
    assert gr.main(["--student", str(export), "--prompts", "3", "--steps", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["guidance"] == [2.0, 3.0, 4.0, 6.0]  # the export's w_range: ends, quarter, midpoint
    # the w projection is random at init (the official init), so a fresh student's samples already move with w
    assert rep["response"] > 0 and rep["student_move_mse"] > 0 and rep["reference_move_mse"] > 0
    assert len({tuple(row) for row in rep["mse"]}) == 4
    printed = capsys.readouterr().out
    assert "nearest teacher w" in printed and "as far as the teacher" in printed

    sample, reference, _, net = gr.student_samplers(str(export), steps=2, reference_steps=2)
    with torch.no_grad():
        net.base.unet.time_embedding.cond_proj.weight.zero_()  # w's projection: the student ignores w
    rep2 = gr.response_table(sample, reference, PROMPTS, [2.0, 6.0])
    assert rep2["response"] == 0.0 and rep2["student_move_mse"] == 0.0


def test_errors(tiny):
    bb, _ = tiny
    t = _teacher(bb)
    with pytest.raises(ValueError, match="at least two"):
        gr.response_table(t, t, PROMPTS, [4.0])
    same = lambda ps, w, seed: t(ps, 4.0, seed)  # noqa: E731
    with pytest.raises(ValueError, match="no response to compare with"):
        gr.response_table(t, same, PROMPTS, [2.0, 6.0])


def test_prompts_are_the_exports_worlds(tiny, tmp_path):
    """guidance_response samples the held-out prompts of the export's toy world: its config's data.world, else its
    teacher's MANIFEST.json world, else toy's; ``world`` overrides. Checked against response_table on each world's
    first two prompts of ToyBench's seed-0 shuffle (the crowd and toy prompts give different tables)."""
    from t2vturbo.eval.guidance_response import guidance_response, samplers
    from t2vturbo.eval.toybench import select_prompts
    from t2vturbo.sample import load_student

    _, export = tiny
    bb, net, meta = load_student(export)
    ws = [2.0, 6.0]
    sample, reference = samplers(bb, net, meta, steps=1, reference_steps=1)
    want = {w: gr.response_table(sample, reference, select_prompts(2, 0, w), ws) for w in ("toy", "crowd")}
    assert want["toy"]["mse"] != want["crowd"]["mse"]

    def run(m, world=None):
        rep = guidance_response(
            bb, net, m, num_prompts=2, steps=1, reference_steps=1, guidance=ws, world=world
        )
        return rep["world"], {k: rep[k] for k in want["toy"]}

    crowd_cfg = {**meta, "config": {"data": {"kind": "toy", "world": "crowd"}}}
    assert run(crowd_cfg) == ("crowd", want["crowd"])
    assert run(crowd_cfg, world="toy") == ("toy", want["toy"])
    assert run(meta) == ("toy", want["toy"])  # no config, a teacher without MANIFEST.json
    teacher = tmp_path / "teacher"  # the world the teacher's MANIFEST.json records
    teacher.mkdir()
    (teacher / "MANIFEST.json").write_text(json.dumps({"world": "crowd"}))
    assert run({**meta, "teacher_path": str(teacher)}) == ("crowd", want["crowd"])
    with pytest.raises(ValueError, match=r"num_prompts must be in \[1, 108\]"):
        guidance_response(bb, net, crowd_cfg, num_prompts=109)
