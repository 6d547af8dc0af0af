"""The training loop: one config in, components built once, a short loop, DeepSpeed as a wrapper."""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from safetensors.torch import save_file

from . import checkpoint as ckpt
from .build import build_backbone, build_dataset, check_paths
from .ema import EMA, gathered
from .engine import device_for, init_distributed, initialize
from .logger import MetricLogger
from .lora import add_lora, mark_trainable, merge_lora
from .objectives import ConsistencyDistillation, DiffusionTraining

log = logging.getLogger("t2vturbo")

STUDENT_FILE = "student.safetensors"
STUDENT_META = "t2vturbo_student.json"


def seed_everything(seed: int):
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def memory_stats(device) -> dict[str, float]:
    """Peak memory so far: ``max_rss_mib`` (this process, from getrusage) and, on CUDA,
    ``cuda_max_allocated_mib`` (torch's allocator peak on ``device``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"max_rss_mib": rss / (2**20 if sys.platform == "darwin" else 1024)}  # bytes on macOS, KiB on Linux
    if torch.device(device).type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


class NonFiniteLossError(RuntimeError):
    pass


def _all_true(flag: bool, device) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        check_paths(cfg)
        self.rank, self.world, local_rank = init_distributed()
        seed_everything(cfg.seed)  # same initial student (w/eta projections) on every rank and run
        self.device = device_for(local_rank)
        tc = cfg.train
        self.dtype = torch.bfloat16 if tc.precision == "bf16" else torch.float32
        self.out = Path(cfg.output_dir)
        self.is_cd = cfg.objective.name == "consistency_distillation"
        self.is_rf = cfg.objective.name == "reward_finetune"  # VADER mode
        # the trained network is a student (sampled with the consistency sampler, exported as one)
        self.trains_student = self.is_cd or (self.is_rf and cfg.objective.finetune == "student")

        self.bb = build_backbone(cfg.model, tc.gradient_checkpointing, self.device, self.dtype)
        self.latent_shape = self.bb.latent_shape(cfg.model.num_frames, cfg.model.height, cfg.model.width)
        self.precomputed = self.is_cd and cfg.data.precomputed
        if self.precomputed:
            from .precomputed import NoiseSchedule, PrecomputedConsistencyDistillation

            # stored teacher outputs / motion scores: the objective needs the schedule only
            self.objective = PrecomputedConsistencyDistillation(
                cfg.objective, NoiseSchedule.from_backbone(self.bb).to(self.device), cfg.seed,
                motion=cfg.guidance.motion, lam=cfg.guidance.lam,
            )
        elif self.is_cd and self.bb.prediction_type == "flow":  # flow-matching teacher (Wan): Euler solver
            from .flow_objective import FlowConsistencyDistillation

            self.objective = FlowConsistencyDistillation(cfg.objective, self.bb, cfg.seed, motion=cfg.guidance.motion)
        elif self.is_cd:
            self.objective = ConsistencyDistillation(cfg.objective, self.bb, cfg.seed)
        if self.is_cd:
            if cfg.guidance.motion and not self.precomputed:
                from ..guidance import MotionGuidance

                self.objective.motion_guidance = MotionGuidance.from_config(
                    cfg.guidance, self.bb, self.objective.grid, seed=cfg.seed
                )
            if cfg.reward.weights:
                from .reward_term import RewardTerm

                self.objective.reward_term = RewardTerm(cfg.reward, self.bb, cfg.seed, self.rank, self.world, self.device)
                if self.rank == 0:
                    log.info("rewards %s (image on ranks %s, video on ranks %s)", self.objective.reward_term.betas,
                             cfg.reward.image_ranks or "all", cfg.reward.video_ranks or "all")
            module = self.bb.make_student()
            lcfg = cfg.model.lora
            if lcfg.enabled:
                add_lora(module.base, lcfg.rank, lcfg.alpha, lcfg.target_modules)
            mark_trainable(module, lcfg.enabled)
            if self.precomputed:  # the teacher only initialises the student (and export): off the GPU
                self.bb.teacher.to("cpu")
            self.ema = EMA(module, cfg.objective.ema_decay) if cfg.objective.target == "ema" else None
        elif self.is_rf:
            from .reward_finetune import RewardFinetune
            from .reward_term import RewardTerm

            self.objective = RewardFinetune(cfg.objective, self.bb, cfg.seed)
            self.objective.reward_term = RewardTerm(cfg.reward, self.bb, cfg.seed, self.rank, self.world, self.device)
            lcfg = cfg.model.lora
            if self.trains_student:
                module = self.bb.make_student()
                if cfg.objective.init_from:
                    self._load_student_export(module, cfg.objective.init_from)
                if lcfg.enabled:
                    add_lora(module.base, lcfg.rank, lcfg.alpha, lcfg.target_modules)
            else:  # a copy: self.bb.teacher stays the clean frozen teacher (export merges into a copy of it)
                import copy

                module = copy.deepcopy(self.bb.teacher)
                module.requires_grad_(True)
                module.train()
                if tc.gradient_checkpointing:
                    from ..backbones.unet3d import enable_block_checkpointing

                    enable_block_checkpointing(module.unet)
                if lcfg.enabled:
                    add_lora(module.unet, lcfg.rank, lcfg.alpha, lcfg.target_modules)
            mark_trainable(module, lcfg.enabled)
            self.ema = None
            if self.rank == 0:
                log.info("reward fine-tuning (VADER mode) of the %s: %d sampling steps, gradient through the last %s; "
                         "rewards %s", cfg.objective.finetune, cfg.objective.sample_steps,
                         cfg.objective.grad_steps or "all", self.objective.reward_term.betas)
        else:
            self.objective = DiffusionTraining(cfg.objective, self.bb, cfg.seed, cfg.data.caption_dropout)
            module = self.bb.trainable_teacher()
            self.ema = None
        module.to(self.device)
        self.engine, self.optimizer, self.ds_config = initialize(module, tc, OmegaConf.to_container(cfg.deepspeed), self.world)
        self.dataset = build_dataset(cfg)
        self._stream = None
        self.logger = MetricLogger(self.out, enabled=self.rank == 0)
        self.step = 0
        self.micro = 0  # global micro-batches consumed (the data position)
        self.skipped = 0
        self._stop_signal = None
        self._resume()

    def _load_student_export(self, module, path):
        """Initialise ``module`` (a fresh student) from a student export folder (VADER mode)."""
        from safetensors.torch import load_file

        from ..sample import STUDENT_FILE, STUDENT_META

        d = Path(path)
        if not (d / STUDENT_FILE).is_file() and (d / "export" / STUDENT_FILE).is_file():
            d = d / "export"
        if not (d / STUDENT_FILE).is_file():
            raise FileNotFoundError(f"objective.init_from={str(path)!r} is not a student export: expected "
                                    f"{STUDENT_FILE} and {STUDENT_META} (OUTPUT_DIR/export of a distillation run)")
        meta = json.loads((d / STUDENT_META).read_text()) if (d / STUDENT_META).is_file() else {}
        mine = getattr(self.bb, "model_dir", None)
        if meta.get("teacher_path") and mine and Path(meta["teacher_path"]).resolve() != Path(mine).resolve():
            log.warning("objective.init_from was distilled from %s, model.path is %s", meta["teacher_path"], mine)
        missing, unexpected = module.load_state_dict(load_file(str(d / STUDENT_FILE)), strict=False)
        if missing or unexpected:
            raise ValueError(f"student export {d} does not fit model.path's student: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        if self.rank == 0:
            log.info("initialised the student from %s (step %s)", d, meta.get("step"))

    # ---- state ---------------------------------------------------------------------------
    @property
    def ckpt_dir(self):
        return self.out / "checkpoints"

    def _resume(self):
        st = ckpt.load(self.engine, self.ckpt_dir, self.ema)
        if st is not None:
            self.step, self.micro, self.skipped = st["step"], st["micro"], st.get("skipped", 0)
            if self.rank == 0:
                log.info("resumed from %s (step %d)", self.ckpt_dir / st["tag"], self.step)

    def save_checkpoint(self):
        state = {"step": self.step, "micro": self.micro, "skipped": self.skipped, "world_size": self.world}
        return ckpt.save(self.engine, self.ckpt_dir, self.step, state, self.ema, self.cfg.train.keep_checkpoints)

    # ---- data ----------------------------------------------------------------------------
    def positions(self, micro: int) -> list[int]:
        mb = self.cfg.train.micro_batch_size
        base = micro * mb * self.world + self.rank * mb
        return list(range(base, base + mb))

    def _stream_batches(self):
        """Batches of a streaming dataset (webdataset shards), resumed at the saved position."""
        from torch.utils.data import DataLoader

        from ..data.shards import collate_clips

        mb = self.cfg.train.micro_batch_size
        self.dataset.load_state_dict({"epoch": 0, "samples_seen": self.micro * mb})
        loader = DataLoader(self.dataset, batch_size=mb, num_workers=self.cfg.data.num_workers,
                            collate_fn=collate_clips, drop_last=True)
        epoch = 0
        while True:
            yield from loader
            epoch += 1  # a finite (not resampled) stream: next epoch
            self.dataset.set_epoch(epoch)

    def batch(self, positions):
        """One micro-batch. ``positions`` are the global sample positions (they key the random
        draws); map-style data is indexed by them, streams are read in order."""
        if not isinstance(self.dataset, torch.utils.data.IterableDataset):
            items = [self.dataset[p % len(self.dataset)] for p in positions]
            video = torch.stack([it["video"] for it in items])
            captions = [it["caption"] for it in items]
            return {"video": video, "caption": captions, "positions": positions}
        if self._stream is None:
            self._stream = self._stream_batches()
        b = next(self._stream)
        meta = b["meta"]
        out = {
            "video": b["video"], "caption": b["caption"], "positions": positions,
            # per-sample flags (a mixture source's, AND the sample json's own; data/mixture.py)
            "use_reward": [bool(m.get("use_reward", True)) for m in meta],
            "use_motion_guide": [bool(m.get("use_motion_guide", True)) for m in meta],
            "reward_caption": [m.get("reward_caption") or c for m, c in zip(meta, b["caption"])],
        }
        if "pre" in b:  # precomputed shards (t2vturbo.precompute)
            out["pre"], out["meta"] = b["pre"], b["meta"]
        return out

    def data_stats(self) -> dict:
        if hasattr(self.dataset, "skip_stats") and self.cfg.data.num_workers == 0:
            st = self.dataset.skip_stats()
            first = ", ".join(f"{r['url'].rsplit('/', 1)[-1]}#{r['key']}:{r['reason']}" for r in st.get("first", [])[:5])
            out = {"data_skipped": st.get("skipped", 0), "data_seen": st.get("seen", 0), "data_first_skips": first}
            for name, n in st.get("by_source", {}).items():
                out[f"data_drawn/{name}"] = n
            return out
        return {}

    # ---- one micro-batch -----------------------------------------------------------------
    def micro_loss(self, batch):
        if self.precomputed:
            if "pre" not in batch:
                raise ValueError("data.precomputed=true but the shards have no {key}.pre.safetensors")
            pre = {k: v.to(self.device) for k, v in batch["pre"].items()}
            eta = torch.full((len(batch["caption"]),), float(self.cfg.guidance.eta))
            target_net = self.ema.model if self.ema is not None else self.engine.module
            return self.objective.loss(self.engine, target_net, {**batch, "pre": pre}, eta, dtype=self.dtype)
        if self.is_rf:
            return self.objective.loss(self.engine, batch, self.latent_shape)
        z0 = self.bb.encode_video(batch["video"].to(self.device, self.dtype))
        cond = self.bb.encode_text(batch["caption"])
        uncond = self.bb.null_cond(len(batch["caption"]))
        d = self.objective.draws(batch["positions"], self.latent_shape)
        if self.is_cd:
            eta = torch.full((z0.shape[0],), float(self.cfg.guidance.eta))
            target_net = self.ema.model if self.ema is not None else self.engine.module
            return self.objective.loss(self.engine, target_net, z0, cond, uncond, d, eta, batch)
        return self.objective.loss(self.engine, z0, cond, uncond, d)

    # ---- loop ----------------------------------------------------------------------------
    def _install_signals(self):
        """USR1 / USR2 (a preemption or time-limit notice: Slurm's --signal, submitit's USR2) and TERM:
        finish the current step, checkpoint, stop; after USR1/USR2 under Slurm the job is requeued
        (see the stop block in :meth:`train`). A handler installed earlier (``t2vturbo.distill`` puts
        one in place at start-up) hands over a signal that arrived before the loop."""
        import os

        def handler(signum, frame):
            if self._stop_signal is None or signum == signal.SIGTERM:
                self._stop_signal = signum

        for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
            early = getattr(signal.getsignal(s), "received", None)
            if early is not None and self._stop_signal is None:
                self._stop_signal = early
            try:
                signal.signal(s, handler)
            except ValueError:  # not the main thread
                pass
        self._slurm_job = os.environ.get("SLURM_JOB_ID") if os.environ.get("T2V_REQUEUE", "1") != "0" else None

    def train(self):
        tc = self.cfg.train
        self._install_signals()
        bar = None
        if self.rank == 0 and tc.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, desc=self.cfg.experiment_name, dynamic_ncols=True)
        t_last, logs_acc = time.time(), {}
        while self.step < tc.max_steps:
            batch = self.batch(self.positions(self.micro))
            self.micro += 1
            loss, logs, _ = self.micro_loss(batch)
            if not _all_true(bool(torch.isfinite(loss).item()), self.device):
                self.skipped += 1
                self.logger.log(self.step, {"skipped_nonfinite": self.skipped, "event": "nonfinite_loss"})
                if self.skipped > tc.max_nan_skips:
                    latest = ckpt.latest_tag(self.ckpt_dir) if self.ckpt_dir.exists() else None
                    raise NonFiniteLossError(
                        f"{self.skipped} non-finite losses (limit train.max_nan_skips={tc.max_nan_skips}); "
                        f"last good checkpoint: {self.ckpt_dir / latest if latest else 'none'}"
                    )
                continue
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.backward(loss)
            own_norm = self._grad_norm() if boundary and self.engine.get_global_grad_norm() is None else None
            self.engine.step()
            for k, v in logs.items():
                logs_acc[k] = logs_acc.get(k, 0.0) + float(v) / tc.grad_accum
            if not boundary:
                continue
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.engine.module)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                dt = (time.time() - t_last) / max(1, tc.log_every if self.step % tc.log_every == 0 else 1)
                gn = self.engine.get_global_grad_norm()
                gn = own_norm if gn is None else gn
                self.logger.log(
                    self.step,
                    {
                        **logs_acc,
                        "loss": loss.item(),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "grad_norm": float(gn) if gn is not None else float("nan"),
                        "step_time": dt,
                        "samples_per_s": tc.micro_batch_size * tc.grad_accum * self.world / dt,
                        "skipped_nonfinite": self.skipped,
                        **memory_stats(self.device),
                        **self.data_stats(),
                    },
                )
                t_last = time.time()
            logs_acc = {}
            if tc.eval_every and self.step % tc.eval_every == 0 and self.trains_student:
                self.validate()
            saved = False
            if (tc.ckpt_every and self.step % tc.ckpt_every == 0) or self.step == tc.max_steps:
                self.save_checkpoint()
                saved = True
            if self._stop_signal is not None or self.world > 1:
                # All ranks stop after the same step: a signal reaches the tasks at slightly different
                # times, so they agree on it (max over ranks: TERM wins over USR1/USR2).
                stop = torch.tensor([float(self._stop_signal or 0)], device=self.device)
                if self.world > 1:
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                stop = int(stop.item())
            else:
                stop = 0
            if stop:
                self._stop_signal = stop
                if not saved:
                    self.save_checkpoint()  # at this very step: the resumed run logs step + 1 next
                if self.rank == 0:
                    log.warning("signal %s: checkpoint written at step %d, exiting", signal.Signals(stop).name, self.step)
                if stop != signal.SIGTERM and self._slurm_job and self.step < tc.max_steps:
                    import os
                    import subprocess

                    requeued = torch.zeros(1, device=self.device)
                    if self.rank == 0:
                        self.logger.tb.flush()
                        try:
                            r = subprocess.run(["scontrol", "requeue", self._slurm_job], capture_output=True,
                                               text=True, timeout=120)
                            err = "" if r.returncode == 0 else (r.stderr or r.stdout).strip()
                        except (OSError, subprocess.TimeoutExpired) as e:
                            err = str(e)
                        if not err:
                            log.warning("requeued Slurm job %s: it resumes from step %d", self._slurm_job, self.step)
                            requeued[0] = 1
                        else:
                            log.error("scontrol requeue %s failed (%s): resubmit to resume from step %d",
                                      self._slurm_job, err, self.step)
                    if self.world > 1:
                        dist.all_reduce(requeued, op=dist.ReduceOp.MAX)
                    if requeued.item() > 0:
                        # Slurm now ends this run (TERM, then KILL): wait for it, so that nothing after
                        # the checkpoint (export, a launcher's "job done" file) runs in a requeued job.
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        time.sleep(float(os.environ.get("T2V_REQUEUE_WAIT_S", "300")))
                break
        if bar is not None:
            bar.close()
        if self.step >= tc.max_steps and tc.export:
            self.export()
        self.logger.close()
        return self.step

    def _grad_norm(self):
        """Global grad norm before clipping (ZeRO-0 fp32, where DeepSpeed does not report it;
        gradients are already averaged over ranks at the boundary)."""
        if self.engine.zero_optimization_stage() > 0 or self.dtype != torch.float32:
            return None
        sq = [p.grad.detach().float().pow(2).sum() for p in self.engine.module.parameters() if p.grad is not None]
        return torch.stack(sq).sum().sqrt().item() if sq else 0.0

    # ---- validation and export -----------------------------------------------------------
    def student_for_inference(self):
        return self.ema.model if self.ema is not None else self.engine.module

    @torch.no_grad()
    def validate(self):
        from ..data.video_io import write_video
        from ..sample import sample_student

        net = self.student_for_inference()
        o = self.cfg.objective
        self.eval_guidance = self.cfg.train.eval_guidance if self.cfg.train.eval_guidance is not None else (o.w_min + o.w_max) / 2
        was_training = net.training
        net.eval()
        prompts = list(self.cfg.data.validation_prompts)
        for steps in self.cfg.train.eval_steps:
            video = sample_student(
                self.bb, net, prompts, steps=steps, num_ddim_timesteps=self.cfg.objective.num_ddim_timesteps,
                guidance=self.eval_guidance, num_frames=self.cfg.model.num_frames, height=self.cfg.model.height,
                width=self.cfg.model.width, seed=0, sigma_data=self.cfg.objective.sigma_data,
                timestep_scaling=self.cfg.objective.timestep_scaling,
            )
            if self.rank == 0:
                from ..eval.metrics import clip_metrics

                d = self.out / "samples" / f"step-{self.step:08d}"
                d.mkdir(parents=True, exist_ok=True)
                agg: dict[str, float] = {}
                for i, v in enumerate(video):
                    v = v.float().cpu()
                    write_video(d / f"{steps}steps_{i}.mp4", v)
                    self.logger.log_video(self.step, f"val/{steps}steps/{i}", v)
                    m = clip_metrics(v)
                    for k in ("temporal_flicker", "flow_magnitude", "dynamic", "motion_smoothness", "sharpness"):
                        agg[k] = agg.get(k, 0.0) + float(m[k]) / len(video)
                # weight-free metrics make collapse visible early (static / solid / blurry clips)
                self.logger.log(self.step, {f"val/{steps}steps/{k}": x for k, x in agg.items()})
        net.train(was_training)

    def _gathered_state_dict(self, module):
        with gathered(list(module.parameters())):  # full tensors under ZeRO-3
            return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}

    def _export_diffusers(self, out: Path):
        """EXPORT/diffusers: the student as a plain diffusers pipeline (UNet3D + diffusers VAE only)."""
        from diffusers import AutoencoderKL

        from ..backbones.unet3d import UNet3DBackbone

        if not self.cfg.train.export_diffusers:
            return
        if not isinstance(self.bb, UNet3DBackbone) or not isinstance(self.bb.vae, AutoencoderKL):
            log.info("no diffusers pipeline export: needs a UNet3D student with a diffusers VAE (have %s, %s)",
                     type(self.bb).__name__, type(getattr(self.bb, "vae", None)).__name__)
            return
        from ..export_pipeline import export_pipeline

        export_pipeline(out, out / "diffusers")
        log.info("diffusers pipeline: DiffusionPipeline.from_pretrained(%r), 4 steps, guidance_scale=1", str(out / "diffusers"))

    def export(self):
        out = Path(self.cfg.train.export_dir or (self.out / "export"))
        if self.trains_student:
            import copy

            src = self.student_for_inference()
            sd = self._gathered_state_dict(src)
            if self.rank == 0:
                net = copy.deepcopy(self.bb.make_student())
                if self.cfg.model.lora.enabled:
                    add_lora(net.base, self.cfg.model.lora.rank, self.cfg.model.lora.alpha, self.cfg.model.lora.target_modules)
                net.load_state_dict(sd)
                if self.cfg.model.lora.enabled:
                    merge_lora(net.base)
                out.mkdir(parents=True, exist_ok=True)
                teacher_dir = out / "teacher"
                if getattr(self.bb, "model_dir", None) is None and not teacher_dir.exists():
                    self.bb.save_pretrained(teacher_dir)  # tiny random teacher: keep it with the student
                meta = {
                    "family": self.cfg.model.family,
                    "teacher_path": getattr(self.bb, "model_dir", None) or str(teacher_dir.resolve()),
                    # load_backbone(family, teacher_path, **backbone_kwargs) rebuilds the teacher
                    "backbone_kwargs": (
                        {"fps": int(self.cfg.model.fps), "tokenizer_path": self.cfg.model.tokenizer_path}
                        if self.cfg.model.family == "videocrafter2" else {}
                    ),
                    "prediction_type": self.bb.prediction_type,
                    "num_ddim_timesteps": self.cfg.objective.num_ddim_timesteps,
                    "sigma_data": self.cfg.objective.sigma_data,
                    "timestep_scaling": self.cfg.objective.timestep_scaling,
                    "num_frames": self.cfg.model.num_frames,
                    "height": self.cfg.model.height,
                    "width": self.cfg.model.width,
                    "weights": "ema" if self.ema is not None else "student",
                    "guidance": (self.cfg.objective.w_min + self.cfg.objective.w_max) / 2,
                    "eta": float(self.cfg.guidance.eta) if self.cfg.guidance.motion else 0.0,
                    "w_range": [self.cfg.objective.w_min, self.cfg.objective.w_max],
                    "step": self.step,
                    "config": OmegaConf.to_container(self.cfg),
                }
                tmp = out / (STUDENT_FILE + ".tmp")
                save_file({k: v.contiguous().float() for k, v in net.state_dict().items()}, str(tmp))
                tmp.replace(out / STUDENT_FILE)
                (out / STUDENT_META).write_text(json.dumps(meta, indent=2))
                self._export_diffusers(out)
        else:
            sd = self._gathered_state_dict(self.engine.module)
            if self.rank == 0:
                import copy

                teacher = copy.deepcopy(self.bb.teacher)
                lcfg = self.cfg.model.lora
                if self.is_rf and lcfg.enabled:  # VADER mode on the teacher: merge its LoRA
                    add_lora(teacher.unet, lcfg.rank, lcfg.alpha, lcfg.target_modules)
                teacher.load_state_dict(sd)
                if self.is_rf and lcfg.enabled:
                    merge_lora(teacher.unet)
                self.bb.save_pretrained(out, unet=teacher.unet)
                (out / "t2vturbo_teacher.json").write_text(
                    json.dumps({"step": self.step, "config": OmegaConf.to_container(self.cfg)}, indent=2)
                )
        if dist.is_initialized():
            dist.barrier()
        if self.rank == 0:
            log.info("exported to %s", out)
        return out
