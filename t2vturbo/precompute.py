"""Stage 1 of the two-stage mode (T2V-Turbo-v2 as published): store the teacher's work per clip.

    python -m t2vturbo.precompute [experiment=...] data.urls='/data/clips-{000000..000099}.tar' \\
        data.resampled=false precompute.out=/data/pre [precompute.dtype=fp16] \\
        [precompute.shard_size=N] [precompute.shard_index=I precompute.num_shard_lists=K] \\
        [precompute.batch_size=B] [guidance=motion guidance.reference=invert]

Same Hydra config tree as ``t2vturbo.distill``; its ``precompute`` section (``out``, required here,
``dtype``, ``shard_size``, ``shard_index`` / ``num_shard_lists``, ``batch_size``, ``device``) is
documented in :class:`t2vturbo.config.PrecomputeConfig`.

Per clip, the draws are those of online training at the clip's *position* = its index among all
samples of the full source shard list (``objectives.draw(positions=[position])`` with the run seed):
grid index n, noise eps, z_{t_{n+k}} = a z0 + s eps. Each clip keeps this one (t, noise) for the
whole of training, as the reference does (online mode redraws them every step). With no skipped
samples, a single rank and no shuffling, the first epoch of online training draws exactly these.

Output (webdataset, ``{out}/{source shard stem}-{part:04d}.tar``; the standard clip layout plus one
safetensors member, so :class:`t2vturbo.data.shards.ClipStream` reads it unchanged and rewards,
which need captions and ``use_reward`` flags, keep working)::

    {key}.mp4                the source clip, bytes copied (ClipStream requires it; training decodes
                             it, which is cheap next to a teacher pass -- not used by the loss)
    {key}.txt                caption
    {key}.json               the source json plus ``precompute``: {short_caption, n, t_start, t_end,
                             mg, position, seed, src_url, src_key, dtype, guidance settings}
    {key}.pre.safetensors    n [] int64, z_t [C,F,h,w], out_c / out_u [C,F,h,w] (teacher raw outputs,
                             cond / uncond, at (z_t, t_start); w is drawn at train time), score
                             [C,F,h,w] (dE/dz_t; zeros where not guided), mg [] bool, cond [L, D]
                             (prompt embedding). Never pickle.

Restartable: every output shard is written to ``.{name}.tmp-{pid}`` and renamed when complete; a
``{stem}.done.json`` marks a finished source shard (skipped without reading it). A partly finished
source shard is re-read (videos decoded again, a cheap step) and only its missing parts computed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
from pathlib import Path

import hydra
import torch
import webdataset as wds
from omegaconf import DictConfig
from safetensors.torch import load, save

from .backbones import build_backbone, check_paths
from .config import ConfigError, validate
from .data.shards import ClipStream, _Skip, expand_shard_urls
from .diffusion import Parameterisation
from .guidance import MotionGuidance
from .train.objectives import ConsistencyDistillation
from .train.teacher import STORED_MEMBER, OnlineTeacher

log = logging.getLogger("t2vturbo.precompute")


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # precompute.dtype


def split_config(cfg) -> tuple[DictConfig, DictConfig]:
    """(validated root config, its ``precompute`` section) of a Hydra config or a plain dict."""
    vcfg = validate(cfg)
    if not vcfg.precompute.out:
        raise ConfigError("precompute.out is required (precompute.out=DIR)")
    if vcfg.data.kind != "shards":
        raise ConfigError("precompute reads clip shards: set data=... with data.kind=shards and data.urls")
    if vcfg.objective.name != "consistency_distillation":
        raise ConfigError("precompute needs objective.name=consistency_distillation")
    return vcfg, vcfg.precompute


def safe_member_key(key: str) -> str:
    """The key an output member is written under: the source key without absolute or ``.``/``..`` components, so
    extracting a precomputed shard cannot write outside its folder (the source key stays in the json's
    ``precompute.src_key``)."""
    parts = [p for p in str(key).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def chunk_of(urls: list[str], index: int, num: int) -> tuple[int, int]:
    """[lo, hi) of the contiguous chunk ``index`` of ``num`` over ``urls``."""
    n = len(urls)
    return index * n // num, (index + 1) * n // num


def count_samples(url: str) -> int:
    """Number of samples (distinct keys with an ``.mp4``) in a shard, reading only tar headers
    of local files (streams for other URLs)."""
    keys = set()
    if os.path.exists(url):
        with tarfile.open(url, "r:") as tf:
            names = tf.getnames()
    else:
        with wds.gopen(url, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            names = [m.name for m in tf]
    for name in names:
        base = os.path.basename(name)
        if "." in base and base.split(".", 1)[1] == "mp4":
            keys.add(os.path.join(os.path.dirname(name), base.split(".", 1)[0]))
    return len(keys)


def shard_stem(url: str) -> str:
    base = url.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


class Precomputer:
    """Teacher, objective and (optional) motion guidance of one precompute process."""

    def __init__(self, cfg, pre: DictConfig):
        check_paths(cfg)
        self.cfg, self.pre = cfg, pre
        dev = pre["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(dev)
        self.store_dtype = DTYPES[pre["dtype"]]
        self.bb = build_backbone(cfg.model, False, self.device, torch.float32)
        self.bb.eval()
        grid = Parameterisation.of(self.bb).grid(cfg.objective.num_ddim_timesteps)
        mg = (
            MotionGuidance.from_config(cfg.guidance, self.bb, grid, seed=cfg.seed)
            if cfg.guidance.motion
            else None
        )
        # the online objective's own draws, grid and teacher: stored clips equal online training's first epoch
        self.objective = ConsistencyDistillation(
            cfg.objective, self.bb, cfg.seed, OnlineTeacher(self.bb, cfg.objective.guidance_form, mg)
        )

    @property
    def mg(self):
        return self.objective.motion_guidance

    @torch.no_grad()
    def compute(
        self,
        video: torch.Tensor,
        captions: list[str],
        positions: list[int],
        use_motion_guide: list[bool] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """The stored tensors (float32, before the storage cast) of a batch of clips: the online teacher's
        outputs and motion score at the draws online training makes at these positions."""
        obj = self.objective
        nb = obj.solver.noised(obj, {"video": video, "caption": captions, "positions": positions})
        z0, cond, d, t_start, t_end, z_t = nb.z0, nb.cond, nb.draws, nb.t_start, nb.t_end, nb.z_t
        out_c, out_u = obj.solver.outputs(z_t, t_start, cond, nb.uncond)
        score = torch.zeros_like(z_t)
        guided = torch.zeros(len(positions), dtype=torch.bool)
        if self.mg is not None:
            batch = {"latents": z0, "positions": positions, "use_motion_guide": use_motion_guide}
            score, guided = self.mg.score(z_t, t_start, cond, batch)
            score, guided = score.float(), guided.cpu()
        res = []
        for b in range(len(positions)):
            res.append(
                {
                    "n": d.index[b].reshape(()).long(),
                    "z_t": z_t[b],
                    "out_c": out_c[b],
                    "out_u": out_u[b],
                    "score": score[b],
                    "mg": guided[b].reshape(()),
                    "cond": cond[b].float(),
                    "_t": (int(t_start[b]), int(t_end[b])),
                }
            )
        return res

    def stored(self, r: dict) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in r.items():
            if k.startswith("_"):
                continue
            out[k] = v.to(self.store_dtype) if v.is_floating_point() else v
        return out


def _write_part(path: Path, samples: list[dict]) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        w = wds.TarWriter(f, encoder=False)
        try:
            for s in samples:
                w.write(s)
        finally:
            w.close()
    os.replace(tmp, path)


def _precompute_shard(
    cfg, pre: DictConfig, worker: Precomputer, url: str, out: Path, offset: int, summary: dict
):
    """One source shard -> its output parts. Returns (number of source samples, part paths)."""
    d = cfg.data
    stem = shard_stem(url)
    shard_size = int(pre["shard_size"])
    bs = max(1, int(pre["batch_size"]))
    stream = ClipStream(
        [url],
        cfg.model.num_frames,
        (cfg.model.height, cfg.model.width),
        frame_stride=d.frame_stride,
        target_fps=d.target_fps,
        seed=cfg.seed,
        shuffle_buffer=0,
        resampled=False,
        rank=0,
        world_size=1,
        max_skip_fraction=None,
    )
    parts: list[str] = []
    part: list[dict] = []
    pending: list[tuple[dict, dict, int]] = []  # (raw sample, decoded item, position)
    n_src = 0

    def part_path(j: int) -> Path:
        return out / f"{stem}-{j:04d}.tar"

    def flush_pending():
        if not pending:
            return
        video = torch.stack([it["video"] for _, it, _ in pending])
        res = worker.compute(
            video,
            [it["caption"] for _, it, _ in pending],
            [p for _, _, p in pending],
            [bool(it["meta"].get("use_motion_guide", True)) for _, it, _ in pending],
        )
        for (raw, it, pos), r in zip(pending, res):
            t_s, t_e = r["_t"]
            meta = dict(it["meta"])
            meta["precompute"] = {
                "short_caption": it["caption"],
                "n": int(r["n"]),
                "t_start": t_s,
                "t_end": t_e,
                "mg": bool(r["mg"]),
                "position": pos,
                "seed": int(cfg.seed),
                "src_url": url,
                "src_key": it["key"],
                "dtype": pre["dtype"],
                "motion": bool(cfg.guidance.motion),
                "reference": cfg.guidance.reference if cfg.guidance.motion else None,
                "num_ddim_timesteps": int(cfg.objective.num_ddim_timesteps),
                "skip": int(cfg.objective.skip),
            }
            part.append(
                {
                    "__key__": safe_member_key(it["key"]),
                    "mp4": bytes(raw["mp4"]),
                    "txt": it["caption"].encode("utf-8"),
                    "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
                    f"{STORED_MEMBER}.safetensors": _safetensors_bytes(worker.stored(r)),
                }
            )
        pending.clear()

    def finalize(j: int):
        flush_pending()
        target = part_path(j)
        if part:
            _write_part(target, part)
            summary["written"].append(str(target))
            summary["clips"] += len(part)
            part.clear()
        elif target.exists():
            summary["skipped"].append(str(target))
        if target.exists():
            parts.append(str(target))

    # part j holds the usable clips among the source samples [j * shard_size, (j + 1) * shard_size)
    # (raw sample counts, so a finished part is skipped without decoding its clips)
    stream._reset_counters()
    cur = 0
    for s in stream._raw_samples(0, 1, (0, 1)):
        if "mp4" not in s:  # not a clip (count_samples counts keys with an mp4 only)
            continue
        i = n_src
        pos = offset + i
        n_src += 1
        j = i // shard_size if shard_size else 0
        if j != cur:
            finalize(cur)
            cur = j
        if part_path(j).exists():  # finished earlier: nothing to compute for this clip
            continue
        key = str(s.get("__key__", ""))
        try:
            item = stream._decode(s)
        except _Skip as sk:
            summary["skips"][sk.reason] = summary["skips"].get(sk.reason, 0) + 1
            log.warning("skip %s#%s: %s %s", url, key, sk.reason, sk.detail)
            continue
        pending.append((s, item, pos))
        if len(pending) >= bs:
            flush_pending()
    if n_src:
        finalize(cur)
    if stream.skipped:
        for r, c in stream.skipped.items():
            summary["skips"][r] = summary["skips"].get(r, 0) + c
    return n_src, parts


def precompute(cfg, pre: DictConfig) -> dict:
    """Run one chunk. Returns ``{"written": [...], "skipped": [...], "clips": N, "skips": {...}}``."""
    urls = expand_shard_urls(cfg.data.urls)
    lo, hi = chunk_of(urls, int(pre["shard_index"]), int(pre["num_shard_lists"]))
    out = Path(pre["out"])
    out.mkdir(parents=True, exist_ok=True)
    offset = sum(count_samples(u) for u in urls[:lo]) if lo else 0
    summary = {"written": [], "skipped": [], "clips": 0, "skips": {}, "chunk": [lo, hi]}
    worker = None
    for url in urls[lo:hi]:
        stem = shard_stem(url)
        done = out / f"{stem}.done.json"
        if done.exists():
            rec = json.loads(done.read_text())
            summary["skipped"] += rec["parts"]
            offset += rec["source_samples"]
            continue
        if worker is None:
            worker = Precomputer(cfg, pre)
        n_src, parts = _precompute_shard(cfg, pre, worker, url, out, offset, summary)
        offset += n_src
        tmp = done.parent / f".{done.name}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"source": url, "source_samples": n_src, "parts": parts}, indent=2))
        os.replace(tmp, done)
        log.info("%s: %d samples -> %d part(s)", url, n_src, len(parts))
    return summary


def read_pre(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of one ``{key}.pre.safetensors`` member."""
    return load(data)


def _main(cfg) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        vcfg, pre = split_config(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    s = precompute(vcfg, pre)
    log.info(
        "precompute chunk %s: wrote %d shard(s) (%d clips), skipped %d finished; sample skips %s",
        s["chunk"],
        len(s["written"]),
        s["clips"],
        len(s["skipped"]),
        s["skips"],
    )
    return s


def main():
    hydra.main(version_base="1.3", config_path="conf", config_name="config")(_main)()


if __name__ == "__main__":
    main()
