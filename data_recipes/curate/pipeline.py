"""The curation pipeline of one chunk: probe -> scenes -> scores -> filter -> dedup -> caption -> shards.

Each stage reads the records of the stages before it and writes its own, one per item, to a
:class:`~data_recipes.curate.store.StageFile` in the chunk's work dir, so a rerun of the same
command skips completed stages and completed items (docs/DATA.md, "Curation").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import webdataset as wds
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import scenes as scenes_mod
from . import scores as scores_mod
from . import video as video_mod
from .inputs import chunk_slice, list_inputs
from .store import FORMAT, StageFile, fingerprint

__all__ = ["STAGES", "Clip", "Curation", "format_summary", "run"]

log = logging.getLogger("data_recipes.curate")

STAGES = ("probe", "scenes", "scores", "filter", "dedup", "caption", "shards")
_TAR_MTIME = 0.0  # fixed tar member mtime: reproducible shards
_CAPTION_BATCH = 16


@dataclass(frozen=True)
class Clip:
    id: str  # "{video id}_{k:04d}"; also the shard key
    video: str  # global input index, "{i:08d}"
    path: str
    fps: float
    fps_fraction: str
    start_frame: int
    end_frame: int  # exclusive
    scene: int
    caption: str | None
    caption_source: str | None
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _abs(p: str | None) -> str | None:
    return None if p is None else str(Path(p).expanduser().resolve())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class Curation:
    """One chunk's run (see the module docstring); ``cfg`` is a validated :class:`CurateConfig`."""

    def __init__(self, cfg: DictConfig, command: str | None = None):
        self.cfg = cfg
        self.r = cfg.curate_recipe
        self.command = command
        c = cfg.chunk
        self.tag = f"{c.index:05d}-of-{c.count:05d}"
        self.out = Path(cfg.output).expanduser().resolve()
        root = Path(cfg.work_dir).expanduser().resolve() if cfg.work_dir else self.out / "_work"
        self.work = root / f"chunk-{self.tag}"
        videos = list_inputs(cfg.input)
        self.num_inputs = len(videos)
        self.videos = {f"{i:08d}": videos[i] for i in chunk_slice(len(videos), c.index, c.count)}
        self.files: dict[str, StageFile] = {}
        self.clips: list[Clip] = []
        self._ocr = self._clip = self._captioner = None
        self._text_cache: dict[str, Any] = {}

        m, r = cfg.models, self.r
        settings = {
            "probe": {"videos": [[k, v.path, v.caption] for k, v in self.videos.items()]},
            "scenes": {"scenes": _plain(r.scenes), "clips": _plain(r.clips)},
            "scores": {"scores": _plain(r.scores), "clip": _abs(m.clip), "aesthetic": _abs(m.aesthetic)},
            "filter": _plain(r.filter),
            "dedup": _plain(r.dedup),
            "caption": {"caption": _plain(r.caption), "captioner": _abs(m.captioner)},
            "shards": {
                "output": _plain(r.output),
                "dir": str(self.out),
                "chunk": [c.index, c.count],
                "recipe": r.name,
            },
        }
        self.fingerprints: dict[str, str] = {}
        prev = ""
        for stage in STAGES:
            prev = self.fingerprints[stage] = fingerprint(prev, settings[stage])

    # ---- helpers ---------------------------------------------------------------------------
    def _bar(self, stage: str, total: int, unit: str) -> tqdm:
        return tqdm(
            total=total, desc=f"curate {stage}", unit=unit, disable=not self.cfg.progress, leave=False
        )

    def _run_stage(self, stage: str, fn: Callable[[StageFile], None]) -> dict[str, dict[str, Any]]:
        sf = StageFile(self.work, stage, self.fingerprints[stage])
        if stage == "shards" and sf.complete and not self._shards_intact(sf):
            sf.done_path.unlink()
        self.files[stage] = sf
        if sf.complete:
            log.info("stage %s: complete (%d records), skipped", stage, len(sf.records))
            return sf.records
        before = len(sf.records)
        try:
            fn(sf)
        finally:
            sf.close()
        sf.finish()
        log.info("stage %s: done, %d records (%d new)", stage, len(sf.records), len(sf.records) - before)
        return sf.records

    def _kept(self, stage: str) -> list[Clip]:
        recs = self.files[stage].records
        return [c for c in self.clips if recs.get(c.id, {}).get("kept")]

    @property
    def ocr(self) -> scores_mod.TextAreaScorer:
        if self._ocr is None:
            self._ocr = scores_mod.TextAreaScorer(_plain(self.r.scores.ocr.engine_kwargs))
        return self._ocr

    @property
    def clip_scorer(self) -> scores_mod.ClipScorer:
        if self._clip is None:
            m = self.cfg.models
            self._clip = scores_mod.ClipScorer(m.clip, m.aesthetic, device=self.cfg.device)
        return self._clip

    @property
    def captioner(self) -> scores_mod.Captioner:
        if self._captioner is None:
            cc = self.r.caption
            self._captioner = scores_mod.Captioner(
                self.cfg.models.captioner, self.cfg.device, cc.max_new_tokens, cc.num_beams
            )
        return self._captioner

    # ---- stage 1: probe --------------------------------------------------------------------
    def _probe(self, sf: StageFile) -> None:
        with self._bar("probe", len(self.videos), "video") as bar:
            for vid, v in self.videos.items():
                bar.update()
                if vid in sf.records:
                    continue
                rec: dict[str, Any] = {
                    "id": vid, "path": v.path, "caption": v.caption, "caption_source": v.caption_source,
                }  # fmt: skip
                if not Path(v.path).is_file():
                    rec.update(kept=False, reason="missing file", detail=v.path)
                else:
                    try:
                        rec.update(video_mod.probe(v.path), kept=True, reason=None)
                    except Exception as e:
                        rec.update(kept=False, reason="unreadable", detail=f"{type(e).__name__}: {e}")
                sf.append(rec)

    # ---- stage 2: scenes -------------------------------------------------------------------
    def _scenes(self, sf: StageFile) -> None:
        sc, cl = self.r.scenes, self.r.clips
        todo = [r for r in self.files["probe"].records.values() if r["kept"]]
        with self._bar("scenes", len(todo), "video") as bar:
            for v in todo:
                bar.update()
                if v["id"] in sf.records:
                    continue
                fps = float(v["fps"])
                try:
                    found = scenes_mod.detect_scenes(
                        v["path"], fps, sc.threshold, sc.min_scene_len, sc.backend
                    )
                except Exception as e:
                    sf.append({
                        "id": v["id"], "kept": False, "reason": "scene detection failed",
                        "detail": f"{type(e).__name__}: {e}", "scenes": [], "clips": [], "dropped": [],
                    })  # fmt: skip
                    continue
                clips, dropped = [], []
                for si, (a, b) in enumerate(found):
                    keep, drop = scenes_mod.split_scene(a, b, fps, cl.min_seconds, cl.max_seconds)
                    for s, e in keep:
                        clips.append(
                            {
                                "id": f"{v['id']}_{len(clips):04d}",
                                "start_frame": s,
                                "end_frame": e,
                                "scene": si,
                            }
                        )
                    for s, e in drop:
                        dropped.append({
                            "start_frame": s, "end_frame": e, "scene": si, "reason": "too short",
                            "detail": f"{(e - s) / fps:.3g} s < min_seconds={cl.min_seconds:g}",
                        })  # fmt: skip
                sf.append({
                    "id": v["id"], "kept": bool(clips), "reason": None if clips else "no clips",
                    "scenes": [[a, b] for a, b in found], "clips": clips, "dropped": dropped,
                })  # fmt: skip

    def _build_clips(self) -> None:
        probe, scenes = self.files["probe"].records, self.files["scenes"].records
        self.clips = []
        for vid in sorted(scenes):
            v = probe[vid]
            for c in scenes[vid]["clips"]:
                self.clips.append(
                    Clip(
                        id=c["id"],
                        video=vid,
                        path=v["path"],
                        fps=float(v["fps"]),
                        fps_fraction=v["fps_fraction"],
                        start_frame=int(c["start_frame"]),
                        end_frame=int(c["end_frame"]),
                        scene=int(c["scene"]),
                        caption=v.get("caption"),
                        caption_source=v.get("caption_source"),
                        width=int(v["width"]),
                        height=int(v["height"]),
                    )  # fmt: skip
                )

    # ---- stage 3: scores -------------------------------------------------------------------
    def _score_plan(self, c: Clip) -> dict[str, Any]:
        s = self.r.scores
        n, a = c.num_frames, c.start_frame
        gap, starts = scores_mod.motion_pairs(n, c.fps, s.motion.num_pairs, s.motion.gap_seconds)
        plan: dict[str, Any] = {
            "motion": [[a + i, a + i + gap] for i in starts],
            "phash": [a + i for i in video_mod.spread(n, s.phash.num_frames)],
        }
        if s.ocr.enabled:
            plan["ocr"] = [a + i for i in video_mod.spread(n, s.ocr.num_frames)]
        if self.cfg.models.clip is not None:
            plan["clip"] = [a + i for i in video_mod.spread(n, s.clip.num_frames)]
        return plan

    @staticmethod
    def _plan_frames(plan: dict[str, Any]) -> set[int]:
        need = {i for pair in plan["motion"] for i in pair}
        for k in ("phash", "ocr", "clip"):
            need.update(plan.get(k, []))
        return need

    def _text_embedding(self, caption: str | None):
        if not caption:
            return None
        if caption not in self._text_cache:
            self._text_cache[caption] = self.clip_scorer.text_embeds([caption])[0]
        return self._text_cache[caption]

    def _score_clip(self, c: Clip, plan: dict[str, Any], frames: dict[int, Any]) -> dict[str, Any]:
        s = self.r.scores
        out: dict[str, float] = {}
        if plan["motion"]:
            grey: dict[int, Any] = {}
            for i in {i for p in plan["motion"] for i in p}:
                grey[i] = scores_mod.grey_small(frames[i], s.motion.size)
            gap = plan["motion"][0][1] - plan["motion"][0][0]
            out["motion"] = scores_mod.motion_score(
                [(grey[i], grey[j]) for i, j in plan["motion"]], gap / c.fps
            )
        if "ocr" in plan:
            out["text_area"] = max(self.ocr(frames[i]) for i in plan["ocr"])
        if "clip" in plan:
            emb = self._text_embedding(c.caption)
            out.update(scores_mod.clip_scores(self.clip_scorer, [frames[i] for i in plan["clip"]], emb))
        hashes = [scores_mod.phash_hex(frames[i], s.phash.hash_size) for i in plan["phash"]]
        return {"id": c.id, "kept": True, "reason": None, "scores": out, "phash": hashes, "frames": plan}

    def _scores(self, sf: StageFile) -> None:
        with self._bar("scores", len(self.clips), "clip") as bar:
            for _, group in itertools.groupby(self.clips, key=lambda c: c.video):
                group = list(group)
                todo = [c for c in group if c.id not in sf.records]
                bar.update(len(group) - len(todo))
                if not todo:
                    continue
                plans = {c.id: self._score_plan(c) for c in todo}
                last = {c.id: max(self._plan_frames(plans[c.id])) for c in todo}
                todo.sort(key=lambda c: last[c.id])
                need = set().union(*(self._plan_frames(p) for p in plans.values()))
                frames: dict[int, Any] = {}
                pos, error = 0, None
                decoded = video_mod.iter_frames(todo[0].path, need)
                while pos < len(todo):
                    try:
                        i, rgb = next(decoded)
                    except StopIteration:
                        break
                    except Exception as e:  # a decoding failure drops this video's remaining clips
                        error = f"{type(e).__name__}: {e}"
                        break
                    frames[i] = rgb
                    while pos < len(todo) and last[todo[pos].id] <= i:
                        c = todo[pos]  # every frame of this clip's plan is decoded: score it
                        sf.append(self._score_clip(c, plans[c.id], frames))
                        for j in self._plan_frames(plans[c.id]):
                            frames.pop(j, None)
                        pos += 1
                        bar.update()
                decoded.close()
                for c in todo[pos:]:
                    detail = error or f"the video ended before frame {last[c.id]}"
                    sf.append({"id": c.id, "kept": False, "reason": "decode error", "detail": detail})
                    bar.update()

    # ---- stage 4: filter -------------------------------------------------------------------
    def _filter(self, sf: StageFile) -> None:
        thresholds = _plain(self.r.filter)
        scored = self.files["scores"].records
        todo = self._kept("scores")
        for c in tqdm(todo, desc="curate filter", unit="clip", disable=not self.cfg.progress, leave=False):
            if c.id in sf.records:
                continue
            failed = scores_mod.apply_filters(scored[c.id]["scores"], thresholds)
            sf.append({
                "id": c.id, "kept": not failed, "reason": failed[0][0] if failed else None,
                "detail": "; ".join(d for _, d in failed) or None, "failed": [r for r, _ in failed],
            })  # fmt: skip

    # ---- stage 5: dedup --------------------------------------------------------------------
    def _dedup(self, sf: StageFile) -> None:
        d = self.r.dedup
        scored = self.files["scores"].records
        kept = {c.id: c for c in self._kept("filter")}
        values = None if d.keep == "first" else {i: scored[i]["scores"].get(d.keep) for i in kept}
        todo = [kept[i] for i in scores_mod.dedup_order(list(kept), values)]
        index = scores_mod.NearDuplicateIndex(d.max_distance)
        for c in tqdm(todo, desc="curate dedup", unit="clip", disable=not self.cfg.progress, leave=False):
            bits = scores_mod.phash_bits(scored[c.id]["phash"])
            rec = sf.records.get(c.id)
            if rec is None:
                dup, dist = index.query(bits) if d.enabled else (None, None)
                if dup is None:
                    rec = {"id": c.id, "kept": True, "reason": None, "nearest_distance": dist}
                else:
                    rec = {
                        "id": c.id, "kept": False, "reason": "duplicate", "duplicate_of": dup, "distance": dist,
                        "detail": f"phash distance {dist:.3g} <= max_distance={d.max_distance:g} to {dup}",
                    }  # fmt: skip
                sf.append(rec)
            if rec["kept"]:
                index.add(c.id, bits)

    # ---- stage 6: caption ------------------------------------------------------------------
    def _caption(self, sf: StageFile) -> None:
        cc = self.r.caption
        use_model = self.cfg.models.captioner is not None
        todo_all = self._kept("dedup")
        with self._bar("caption", len(todo_all), "clip") as bar:
            for _, group in itertools.groupby(todo_all, key=lambda c: c.video):
                group = list(group)
                todo = [c for c in group if c.id not in sf.records]
                bar.update(len(group) - len(todo))
                ask = [c for c in todo if use_model and (cc.model_mode == "always" or not c.caption)]
                model_caps: dict[str, str] = {}
                errors: dict[str, str] = {}
                if ask:
                    mids = {c.id: c.start_frame + c.num_frames // 2 for c in ask}
                    try:
                        frames = dict(video_mod.iter_frames(ask[0].path, mids.values()))
                    except Exception as e:
                        frames, err = {}, f"{type(e).__name__}: {e}"
                    else:
                        err = "the video ended before the clip's middle frame"
                    have = [c for c in ask if mids[c.id] in frames]
                    for k in range(0, len(have), _CAPTION_BATCH):
                        batch = have[k : k + _CAPTION_BATCH]
                        for c, cap in zip(batch, self.captioner([frames[mids[c.id]] for c in batch])):
                            model_caps[c.id] = cap
                    errors = {c.id: err for c in ask if mids[c.id] not in frames}
                for c in todo:
                    cap, src = c.caption, c.caption_source
                    if model_caps.get(c.id):
                        cap, src = model_caps[c.id], "model"
                    rec: dict[str, Any] = {
                        "id": c.id,
                        "caption": cap or "",
                        "caption_source": src if cap else None,
                    }
                    if c.id in errors:
                        rec["model_error"] = errors[c.id]
                    if cap or cc.allow_empty:
                        rec.update(kept=True, reason=None)
                    else:
                        detail = (
                            "captioning model gave an empty caption"
                            if c.id in model_caps
                            else (
                                "no caption in the input metadata"
                                + ("" if use_model else " and no captioning model")
                            )
                        )
                        rec.update(kept=False, reason="no caption", detail=detail)
                    sf.append(rec)
                    bar.update()

    # ---- stage 7: shards -------------------------------------------------------------------
    def shard_name(self, s: int) -> str:
        return f"{self.r.output.shard_prefix}-{self.cfg.chunk.index:05d}-{s:06d}.tar"

    def _shards_intact(self, sf: StageFile) -> bool:
        for name, rec in sf.records.items():
            p = self.out / name
            if not p.is_file() or p.stat().st_size != rec.get("bytes"):
                log.info("stage shards: %s is missing or changed; rewriting what is needed", name)
                return False
        return True

    def _encode_group(self, group: list[Clip]) -> Iterator[tuple[Clip, bytes | str, tuple[int, int]]]:
        """``(clip, mp4 bytes or an error message, (w, h))`` for clips of one video, in time order."""
        o = self.r.output
        need: set[int] = set()
        for c in group:
            need.update(range(c.start_frame, c.end_frame))
        cur, enc = 0, None

        def finish(c: Clip, enc: video_mod.ClipEncoder | None, why: str | None):
            size = video_mod.output_size(c.width, c.height, o.max_short_side)
            if enc is not None and enc.num_frames == c.num_frames and why is None:
                return c, enc.finish(), enc.size
            if enc is not None:
                enc.abort()
            got = 0 if enc is None else enc.num_frames
            return c, why or f"decoded {got} of {c.num_frames} frames", size

        error = None
        try:
            for i, rgb in video_mod.iter_frames(group[0].path, need):
                while cur < len(group) and i >= group[cur].end_frame:
                    yield finish(group[cur], enc, None)
                    cur, enc = cur + 1, None
                if cur == len(group):
                    break
                c = group[cur]
                if i >= c.start_frame:
                    if enc is None:
                        h, w = rgb.shape[:2]
                        enc = video_mod.ClipEncoder(
                            c.fps_fraction, video_mod.output_size(w, h, o.max_short_side), o.crf, o.preset
                        )
                    enc.add(rgb)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        while cur < len(group):
            yield finish(group[cur], enc, error)
            cur, enc = cur + 1, None

    def _sample(self, c: Clip, mp4: bytes, size: tuple[int, int], caption: dict[str, Any]) -> dict[str, Any]:
        sc = self.files["scores"].records[c.id]
        dd = self.files["dedup"].records[c.id]
        meta = {
            "fps": c.fps,
            "fps_fraction": c.fps_fraction,
            "num_frames": c.num_frames,
            "width": size[0],
            "height": size[1],
            "source": c.path,
            "source_width": c.width,
            "source_height": c.height,
            "video_id": c.video,
            "clip_id": c.id,
            "scene": c.scene,
            "start": c.start_frame / c.fps,
            "end": c.end_frame / c.fps,
            "start_frame": c.start_frame,
            "end_frame": c.end_frame,
            "scores": sc["scores"],
            "phash": sc["phash"],
            "nearest_distance": dd.get("nearest_distance"),
            "caption_source": caption["caption_source"],
            "recipe": self.r.name,
            "format": FORMAT,
        }
        return {
            "__key__": c.id,
            "mp4": mp4,
            "txt": caption["caption"].encode("utf-8"),
            "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
        }

    def _write_shard(self, name: str, members: list[Clip]) -> dict[str, Any]:
        caps = self.files["caption"].records
        final, tmp = self.out / name, self.out / f".{name}.tmp-{os.getpid()}"
        keys: list[str] = []
        dropped: list[dict[str, Any]] = []
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, mtime=_TAR_MTIME, encoder=False)
            try:
                for _, group in itertools.groupby(members, key=lambda c: c.video):
                    for c, data, size in self._encode_group(list(group)):
                        if isinstance(data, str):
                            dropped.append({"id": c.id, "reason": "encode error", "detail": data})
                            continue
                        writer.write(self._sample(c, data, size, caps[c.id]))
                        keys.append(c.id)
            finally:
                writer.close()
        os.replace(tmp, final)
        return {
            "id": name, "kept": True, "count": len(keys), "keys": keys, "dropped": dropped,
            "bytes": final.stat().st_size, "sha256": _sha256(final),
        }  # fmt: skip

    def _shards(self, sf: StageFile) -> None:
        final = self._kept("caption")
        n = self.r.output.shard_size
        names = [self.shard_name(s) for s in range(math.ceil(len(final) / n))]
        self.out.mkdir(parents=True, exist_ok=True)
        with self._bar("shards", len(final), "clip") as bar:
            for s, name in enumerate(names):
                members = final[s * n : (s + 1) * n]
                rec = sf.records.get(name)
                p = self.out / name
                if rec is None or not p.is_file() or p.stat().st_size != rec["bytes"]:
                    sf.append(self._write_shard(name, members))
                bar.update(len(members))
        prefix = f"{self.r.output.shard_prefix}-{self.cfg.chunk.index:05d}-"
        for p in self.out.glob(f"{prefix}*.tar"):
            if p.name not in names:
                log.info("removing stale shard %s", p)
                p.unlink()

    # ---- summary / index -------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """Rows ``{stage, unit, in, kept, dropped: {reason: n}}`` computed from the stage files."""

        def row(stage: str, unit: str, n_in: int, kept: int, dropped: Counter) -> dict[str, Any]:
            return {
                "stage": stage,
                "unit": unit,
                "in": n_in,
                "kept": kept,
                "dropped": dict(sorted(dropped.items())),
            }

        def simple(stage: str, unit: str) -> dict[str, Any]:
            recs = list(self.files[stage].records.values())
            return row(stage, unit, len(recs), sum(bool(r["kept"]) for r in recs),
                       Counter(r["reason"] for r in recs if not r["kept"]))  # fmt: skip

        rows = [simple("probe", "video")]
        pieces, dropped = 0, Counter()
        for r in self.files["scenes"].records.values():
            pieces += len(r["clips"]) + len(r["dropped"])
            dropped.update(d["reason"] for d in r["dropped"])
            if r["reason"] == "scene detection failed":
                pieces += 1
                dropped[r["reason"]] += 1
        rows.append(row("scenes", "clip", pieces, len(self.clips), dropped))
        rows += [simple(s, "clip") for s in ("scores", "filter", "dedup", "caption")]
        shards = list(self.files["shards"].records.values())
        written = sum(r["count"] for r in shards)
        bad = Counter(d["reason"] for r in shards for d in r["dropped"])
        rows.append(row("shards", "clip", written + sum(bad.values()), written, bad))
        return rows

    def _index(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        shards = list(self.files["shards"].records.values())
        info = [{k: r[k] for k in ("count", "bytes", "sha256")} | {"name": r["id"]} for r in shards]
        names = [r["id"] for r in shards]
        return {
            "format": FORMAT,
            "chunk": {"index": self.cfg.chunk.index, "count": self.cfg.chunk.count},
            "shards": names,
            "urls": "::".join(names),
            "count": sum(r["count"] for r in shards),
            "shard_info": info,
            "command": self.command,
            "input": str(self.cfg.input),
            "num_inputs": self.num_inputs,
            "num_videos": len(self.videos),
            "models": _plain(self.cfg.models),
            "recipe": _plain(self.r),
            "work_dir": str(self.work),
            "summary": rows,
            "layout": {
                "mp4": "H.264 clip",
                "txt": "caption",
                "json": "metadata: fps, source, start/end, scores, ...",
            },
        }

    def _merge_indices(self) -> Path | None:
        """Write ``{output}/index.json`` over all chunks once every chunk's index exists."""
        n = self.cfg.chunk.count
        parts = []
        for i in range(n):
            p = self.out / f"index-{i:05d}-of-{n:05d}.json"
            if not p.is_file():
                return None
            parts.append(json.loads(p.read_text()))
        total: dict[str, dict[str, Any]] = {}
        for part in parts:
            for r in part["summary"]:
                t = total.setdefault(
                    r["stage"],
                    {"stage": r["stage"], "unit": r["unit"], "in": 0, "kept": 0, "dropped": Counter()},
                )
                t["in"] += r["in"]
                t["kept"] += r["kept"]
                t["dropped"].update(r["dropped"])
        rows = [t | {"dropped": dict(sorted(t["dropped"].items()))} for t in total.values()]
        names = [s for part in parts for s in part["shards"]]
        merged = {
            "format": FORMAT,
            "chunks": n,
            "shards": names,
            "urls": "::".join(names),
            "count": sum(part["count"] for part in parts),
            "shard_info": [s for part in parts for s in part["shard_info"]],
            "commands": [part["command"] for part in parts],
            "input": parts[0]["input"],
            "num_inputs": parts[0]["num_inputs"],
            "models": parts[0]["models"],
            "recipe": parts[0]["recipe"],
            "chunk_indices": [f"index-{i:05d}-of-{n:05d}.json" for i in range(n)],
            "summary": rows,
            "layout": parts[0]["layout"],
        }
        _write_json(self.out / "index.json", merged)
        return self.out / "index.json"

    # ---- driver ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or finish) every stage; returns ``{"summary", "shards", "count", "index", ...}``."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        log.info(
            "curating chunk %s: %d of %d input videos -> %s (work dir %s)",
            self.tag, len(self.videos), self.num_inputs, self.out, self.work,
        )  # fmt: skip
        self._run_stage("probe", self._probe)
        self._run_stage("scenes", self._scenes)
        self._build_clips()
        for stage, fn in (
            ("scores", self._scores),
            ("filter", self._filter),
            ("dedup", self._dedup),
            ("caption", self._caption),
            ("shards", self._shards),
        ):
            self._run_stage(stage, fn)
        rows = self.summary()
        index = self._index(rows)
        index_path = self.out / f"index-{self.tag}.json"
        _write_json(index_path, index)
        summary = {
            "chunk": index["chunk"],
            "stages": rows,
            "shards": index["shards"],
            "count": index["count"],
        }
        _write_json(self.work / "summary.json", summary)
        merged = self._merge_indices()
        print(format_summary(rows, f"curation summary, chunk {self.tag}"))
        print(f"{len(index['shards'])} shard(s), {index['count']} clips -> {index_path}")
        if merged is not None:
            print(f"all {self.cfg.chunk.count} chunk(s) done -> {merged}")
        return summary | {"index": str(index_path), "merged_index": None if merged is None else str(merged)}


def format_summary(rows: list[dict[str, Any]], title: str = "curation summary") -> str:
    """A plain-text table: stage, unit, in, kept, dropped per reason."""
    head = ("stage", "unit", "in", "kept", "dropped")
    body = [
        (r["stage"], r["unit"], str(r["in"]), str(r["kept"]),
         ", ".join(f"{k}: {v}" for k, v in r["dropped"].items()) or "-")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = [title]
    for x in [head, *body]:
        cells = [
            x[0].ljust(widths[0]),
            x[1].ljust(widths[1]),
            x[2].rjust(widths[2]),
            x[3].rjust(widths[3]),
            x[4],
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run(cfg: DictConfig, command: str | None = None) -> dict[str, Any]:
    """Curate the chunk ``cfg.chunk`` of ``cfg.input`` (``cfg`` validated by :func:`validate`)."""
    return Curation(cfg, command).run()
