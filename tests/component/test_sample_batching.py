"""Per-prompt seeds and batching of t2vturbo.sample: a prompt's video does not depend on its neighbours, its
position or the batch size; --batch-size splits the prompts; the CLI's seeds are :func:`prompt_seeds`.

Batch invariance is checked with ``assert_close`` at a tight tolerance (1e-5 of the largest magnitude), not
bitwise: the same noise goes into every sample, but fp32 convolutions / matmuls on CPU may block their sums
differently for a batch of 1 and a batch of 3. Measured on the tiny UNet (one torch thread, as conftest sets):
7.9e-7 of the output's magnitude for one student pass, 2.1e-7 after 3 student steps, 1.5e-6 after 2 teacher
DDIM steps (cond + uncond batched). The controls (a batch-wide generator) differ by O(1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from t2vturbo.data.video_io import read_video
from t2vturbo.sample import load_student, main, prompt_seeds, sample_student, sample_teacher

P = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]
F, S = 4, 16  # the tiny_dirs export's clip size
TOL = 1e-5  # relative to the largest magnitude (measured: <= 1.5e-6)


def _close(a: torch.Tensor, b: torch.Tensor):
    torch.testing.assert_close(a, b, rtol=0, atol=TOL * float(b.abs().max()))


@pytest.fixture(scope="module")
def student(tiny_dirs):
    bb, net, meta = load_student(tiny_dirs[1])
    return bb, net, meta


# --------------------------------------------------------------------------------------------- prompt_seeds
def test_prompt_seeds_follow_the_documented_hash():
    got = prompt_seeds([P[0], P[1], P[0]], seed=5)
    want = [
        int.from_bytes(hashlib.sha256(f"5\n{k}\n{p}".encode()).digest()[:8], "big") >> 1
        for k, p in [(0, P[0]), (0, P[1]), (1, P[0])]
    ]
    assert got == want
    assert all(0 <= s < 2**63 for s in got)
    # a repeated prompt gets a new seed; order and neighbours do not matter; --seed does
    assert got[0] != got[2]
    assert prompt_seeds([P[1], P[0]], seed=5) == [got[1], got[0]]
    assert prompt_seeds([P[0]], seed=5) == got[:1]
    assert prompt_seeds([P[0]], seed=6) != got[:1]


# --------------------------------------------------------------------------------------------- samplers
def test_network_is_batch_invariant_on_cpu(student):
    """One student pass on 3 samples equals the 3 passes on one sample each (fp32 round-off only)."""
    bb, net, _ = student
    g = torch.Generator().manual_seed(0)
    z = torch.randn((3, *bb.latent_shape(F, S, S)), generator=g)
    t = torch.tensor([999, 749, 499])
    w, eta = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([0.0, 0.1, 0.2])
    with torch.no_grad():
        cond = bb.encode_text(P)
        batch = net(z, t, cond, w, eta)
        single = torch.cat(
            [net(z[i : i + 1], t[i : i + 1], cond[i : i + 1], w[i : i + 1], eta[i : i + 1]) for i in range(3)]
        )
    _close(batch, single)


def test_student_sample_does_not_depend_on_neighbours_or_position(student):
    bb, net, meta = student
    kw = dict(
        steps=3, num_ddim_timesteps=meta["num_ddim_timesteps"], num_frames=F, height=S, width=S, decode=False
    )
    s = prompt_seeds(P, seed=0)
    with torch.no_grad():
        alone = sample_student(bb, net, [P[0]], seed=[s[0]], **kw)
        alone_int = sample_student(bb, net, [P[0]], seed=s[0], **kw)
        batch = sample_student(bb, net, [P[1], P[2], P[0]], seed=[s[1], s[2], s[0]], **kw)
        pair = sample_student(bb, net, [P[0], P[1]], seed=[s[0], s[1]], **kw)
        # control: one generator for the whole batch (the int seed) makes P[0]'s noise depend on its position
        shared = sample_student(bb, net, [P[1], P[2], P[0]], seed=s[0], **kw)
    # a list of one seed is the int seed's stream: bitwise
    torch.testing.assert_close(alone, alone_int, rtol=0, atol=0)
    _close(batch[2], alone[0])
    _close(pair[0], alone[0])
    _close(pair[1], batch[0])
    assert (shared[2] - alone[0]).abs().max() > 1e-2 * alone.abs().max()
    # the re-noising is per sample too: the same z_T with the neighbour's re-noising would differ
    assert (batch[0] - batch[2]).abs().max() > 1e-2 * alone.abs().max()


def test_student_seed_list_must_match_the_prompts(student):
    bb, net, _ = student
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        sample_student(bb, net, P, seed=[1, 2], steps=1, num_frames=F, height=S, width=S, decode=False)


def test_teacher_sample_does_not_depend_on_neighbours_or_position(student):
    bb, _, _ = student
    kw = dict(steps=2, num_frames=F, height=S, width=S, decode=False)
    s = prompt_seeds(P, seed=3)
    alone = sample_teacher(bb, [P[2]], seed=[s[2]], **kw)
    batch = sample_teacher(bb, [P[2], P[0], P[1]][::-1], seed=[s[1], s[0], s[2]], **kw)
    torch.testing.assert_close(alone, sample_teacher(bb, [P[2]], seed=s[2], **kw), rtol=0, atol=0)
    _close(batch[2], alone[0])


# --------------------------------------------------------------------------------------------- CLI
def _run(export: Path, prompts, out: Path, *extra) -> list[Path]:
    args = ["--checkpoint", str(export), "--steps", "2", "--out", str(out), "--device", "cpu", "--crf", "0"]
    for p in prompts:
        args += ["--prompt", p]
    assert main([*args, *extra]) == 0
    return sorted(out.glob("*.mp4"))


def test_cli_video_of_a_prompt_is_the_same_alone_in_any_batch(tiny_dirs, tmp_path, capsys):
    """[P0] alone == P0 at position 2 of [P1, P2, P0] with --batch-size 3 == with --batch-size 1 (lossless
    files, so only a uint8 rounding flip of the fp32 round-off could differ: <= 1 level, on almost no pixel)."""
    export = tiny_dirs[1]
    (alone,) = _run(export, [P[0]], tmp_path / "a")
    three = _run(export, [P[1], P[2], P[0]], tmp_path / "b3", "--batch-size", "3")
    ones = _run(export, [P[1], P[2], P[0]], tmp_path / "b1", "--batch-size", "1")
    err = capsys.readouterr().err
    assert "3/3" in err and "prompt" in err  # the progress bar (stderr)
    assert [p.name[:4] for p in three] == ["000_", "001_", "002_"] and P[0].replace(" ", "_") in three[2].name
    ref = read_video(alone).astype(np.int16)
    for other in (three[2], ones[2]):
        d = np.abs(read_video(other).astype(np.int16) - ref)
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, (other, d.max(), (d > 0).mean())
    for a, b in zip(three, ones):
        assert np.abs(read_video(a).astype(np.int16) - read_video(b).astype(np.int16)).max() <= 1
    # different prompts (and seeds) give different videos
    assert np.abs(read_video(three[0]).astype(np.int16) - ref).mean() > 5


def test_cli_splits_prompts_into_batches_with_per_prompt_seeds(tiny_dirs, tmp_path, monkeypatch, capsys):
    import t2vturbo.sample as sample_mod

    calls = []

    def fake(bb, net, prompts, seed=None, num_frames=F, height=S, width=S, **kw):
        calls.append((list(prompts), list(seed)))
        return torch.zeros(len(prompts), num_frames, 3, height, width)

    monkeypatch.setattr(sample_mod, "sample_student", fake)
    prompts = [P[0], P[1], P[2], P[0], P[1]]
    _run(tiny_dirs[1], prompts, tmp_path / "s", "--batch-size", "2", "--seed", "9")
    seeds = prompt_seeds(prompts, seed=9)
    assert calls == [(prompts[0:2], seeds[0:2]), (prompts[2:4], seeds[2:4]), (prompts[4:], seeds[4:])]
    assert len(set(seeds)) == 5  # the repeated prompts get new seeds
    assert "5/5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag,value,msg",
    [
        ("--batch-size", "0", "--batch-size must be >= 1"),
        ("--crf", "52", "--crf must be in [0, 51]"),
        ("--crf", "-1", "--crf must be in [0, 51]"),
    ],
)
def test_cli_rejects_bad_batch_size_and_crf(tiny_dirs, tmp_path, capsys, flag, value, msg):
    with pytest.raises(SystemExit) as ei:
        main(["--checkpoint", str(tiny_dirs[1]), "--prompt", P[0], "--out", str(tmp_path / "s"), flag, value])
    assert ei.value.code == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
