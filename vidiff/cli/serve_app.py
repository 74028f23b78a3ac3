"""The page `vidiff serve` shows: a Gradio Blocks app over one loaded `VideoCascadePipeline`.

Every request goes through `vidiff.cli.jobs.run_jobs`, the function `vidiff generate` calls, so a clip made on the page
and one made on the command line with the same settings and seed are the same clip with the same sidecar. Requests
wait in Gradio's queue and reach the model one at a time (the pipeline and its scheduler are shared).

What a user can send is values and uploads, never paths: the page's inputs are text, numbers, a LoRA chosen by name
among those the server was started with, and an image or video uploaded into Gradio's cache (at most
--max-upload-mb); a gallery click is looked up by name among this server's own results, and Gradio serves files only
from its cache and the output folder.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np

from vidiff.cli.common import INPUT_ERRORS
from vidiff.cli.jobs import SCHEDULER_NAMES, Job, assign_seeds_and_outputs, check_model_settings, run_jobs
from vidiff.io.video import sidecar_path, write_video
from vidiff.errors import VidiffInputError
from vidiff.model_folder import read_json
from vidiff.pipelines.cascade import upscaler_geometry
from vidiff.pipelines.lora import check_scale

logger = logging.getLogger(__name__)

FPS = 8  # frames per second of the base frames, as `vidiff generate` writes by default
MAX_STEPS = 100  # the most denoising steps one request may ask for (the base's; the stages use cascade.json's)
MAX_SEED = 2**63 - 1
MAX_INTERPOLATE = 8
GALLERY_SIZE = 48  # the newest results the gallery shows
STAGE_PROGRESS = {"base": "base steps", "interpolation": "interpolation", "upscale": "upscaling"}
CSS = "#summary { min-height: 1.5em; }"
NO_LORA = "none"
DEFAULT_STRENGTH = 0.6  # how much of an uploaded video is redrawn (vidiff restyle's example)


@dataclass(frozen=True)
class PageDefaults:
    """What the page offers and starts from: the model's limits, and its folder's recommendations."""

    max_frames: int  # the base U-Net's limit
    num_frames: int
    steps: int
    guidance: float  # sampling.json
    size: int  # the base model's native frame side, in pixels
    multiple: int  # frame sides are multiples of this (the VAE's factor)
    interpolate: int  # cascade.json's factor (1: off)
    interpolate_choices: tuple[int, ...]
    upscale: int  # cascade.json's scale (1: off)
    upscale_choices: tuple[int, ...]


def page_defaults(pipe) -> PageDefaults:
    """The page's limits and starting values for a loaded `VideoCascadePipeline`."""
    base = pipe.base
    max_frames = base.unet.config.max_frames
    stages = pipe.settings
    interpolate_choices = (1, *range(2, min(MAX_INTERPOLATE, max_frames - 1) + 1)) if pipe.interpolation else (1,)
    upscale_choices = (1, pipe.upscale.scale, pipe.upscale.scale ** 2) if pipe.upscale else (1,)
    return PageDefaults(
        max_frames=max_frames, num_frames=min(16, max_frames), steps=25, guidance=pipe.guidance_scale,
        size=base.unet.unet.config.sample_size * base.vae_scale_factor, multiple=base.vae_scale_factor,
        interpolate=stages["interpolation"].default if pipe.interpolation else 1,
        interpolate_choices=interpolate_choices,
        upscale=stages["upscale"].default if pipe.upscale else 1, upscale_choices=upscale_choices)


# ----------------------------------------------------------------------------------------------------------------
# This server's results
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One clip under the output folder: the MP4, its JSON sidecar (`record`) and a GIF beside them."""

    clip: Path
    record: dict

    @property
    def gif(self) -> Path:
        return self.clip.with_suffix(".gif")

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.clip)

    def settings(self) -> dict:
        """The page's inputs that made this clip, from its sidecar (the base's frames and size, before the stages)."""
        record = self.record
        base = record.get("base", {})
        width, height = base.get("size", (record["width"], record["height"]))
        return {"prompt": record["prompt"], "negative_prompt": record.get("negative_prompt") or "",
                "seed": str(record["seed"]), "num_frames": base.get("frames", record["num_frames"]),
                "steps": record["steps"], "guidance": record["guidance"], "scheduler": record["scheduler"],
                "interpolate": record.get("interpolation", {}).get("factor", 1),
                "upscale": record.get("upscale", {}).get("scale", 1), "height": height, "width": width,
                "lora": (record.get("loras") or [{}])[0].get("name", NO_LORA),
                "lora_scale": (record.get("loras") or [{}])[0].get("scale", 1.0),
                "image": None, "video": None, "strength": record.get("strength", DEFAULT_STRENGTH)}

    def caption(self) -> str:
        r = self.record
        return (f"{r['prompt']} · seed {r['seed']} · {r['frames']} frames {r['width']}x{r['height']} · "
                f"{r['steps']} steps")

    def summary(self) -> str:
        r = self.record
        timings = r.get("timings", {})
        seconds = timings.get("sample_s", 0) + timings.get("stages_s", 0)
        return (f"Seed **{r['seed']}** · {r['frames']} frames, {r['width']}x{r['height']}, {r['fps']} fps · "
                f"{seconds:.1f} s of sampling · `{self.clip.name}`")


class Results:
    """This server's results under its output folder, newest first. Those an earlier run left there (an MP4 with its
    sidecar and GIF) are listed again at start-up."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._by_gif: dict[str, Result] = {}  # GIF file name -> result, oldest first
        for clip in sorted(folder.glob("*.mp4"), key=lambda path: path.stat().st_mtime) if folder.is_dir() else ():
            if clip.with_suffix(".gif").is_file() and sidecar_path(clip).is_file():
                try:
                    self.add(clip)
                except (KeyError, TypeError, ValueError) as error:  # not a sidecar this page wrote
                    logger.warning("not listing %s: %s", clip, error)

    def add(self, clip: Path) -> Result:
        result = Result(clip, read_json(sidecar_path(clip)))
        result.settings()  # every field the page restores is there
        with self._lock:
            self._by_gif[result.gif.name] = result
        return result

    def get(self, gif_name: str) -> Result | None:
        with self._lock:
            return self._by_gif.get(gif_name)

    def gallery(self) -> list[tuple[str, str]]:
        """(GIF path, caption) of the newest results, newest first."""
        with self._lock:
            newest = list(self._by_gif.values())[::-1][:GALLERY_SIZE]
        return [(str(result.gif), result.caption()) for result in newest]


# ----------------------------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------------------------

class Generator:
    """The page's work: check a request, run it through the cascade as `vidiff generate` does, write and list it."""

    def __init__(self, pipe, model: Path, output_dir: Path, load_s: float | None = None, loras=()):
        self.pipe = pipe
        self.loras = load_offered_loras(pipe.base, loras)  # name -> (default scale, sidecar record)
        self.model = Path(model)
        self.output_dir = Path(output_dir)
        self.load_s = load_s
        self.defaults = page_defaults(pipe)
        self.fold = upscaler_geometry(model)[1] if pipe.upscale else 1
        self.results = Results(self.output_dir)
        self.scheduler = pipe.base.scheduler  # as loaded; each request's scheduler is built from its config
        self.lock = threading.Lock()  # one request at a time on the pipeline (the queue runs one already)
        for name, desc in STAGE_PROGRESS.items():  # the page's progress bars follow the stages' own bars
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).set_progress_bar_config(desc=desc)
        pipe.show_progress = True

    def describe(self) -> str:
        stages = ["base"]
        if self.pipe.interpolation is not None:
            stages.append(f"interpolation (x{self.defaults.interpolate} by default)")
        if self.pipe.upscale is not None:
            stages.append(f"super-resolution (x{self.defaults.upscale} by default)")
        return (f"Model `{self.model.name}`: {' → '.join(stages)}; on {self.pipe.device}. Up to "
                f"{self.defaults.max_frames} frames of {self.defaults.size}x{self.defaults.size} before the stages.")

    def check(self, prompt, negative_prompt=None, seed=None, num_frames=None, steps=None, guidance=None,
              scheduler=None, interpolate=None, upscale=None, height=None, width=None, lora=None, lora_scale=None,
              image=None, video=None, strength=None) -> tuple[Job, str, dict, dict]:
        """(a `vidiff generate` job with its seed and output path, the scheduler, the cascade call's settings, what
        the sidecar records besides) for a request, every value checked against the model; None takes the page's
        default (a random seed, no LoRA, no image or video). A VidiffInputError names the problem."""
        d = self.defaults
        prompt = (prompt or "").strip()
        if not prompt:
            raise VidiffInputError("the prompt is empty; describe the clip, e.g. 'a red circle moving right'")
        scheduler = scheduler or SCHEDULER_NAMES[0]
        if scheduler not in SCHEDULER_NAMES:
            raise VidiffInputError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
        seed = _seed(seed)
        if image is not None and video:
            raise VidiffInputError("give an image to animate or a video to restyle, not both")
        frames = read_upload(video, "video") if video else None
        num_frames = len(frames) if frames is not None else num_frames  # a restyled clip keeps the video's length
        num_frames, steps, interpolate, upscale, height, width = (
            _whole(name, default if value is None else value)
            for name, value, default in (("frames", num_frames, d.num_frames), ("steps", steps, d.steps),
                                         ("interpolation", interpolate, d.interpolate),
                                         ("upscale", upscale, d.upscale), ("height", height, d.size),
                                         ("width", width, d.size)))
        if not 1 <= steps <= MAX_STEPS:
            raise VidiffInputError(f"steps {steps} must be within 1..{MAX_STEPS}")
        guidance = d.guidance if guidance is None else guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < math.inf:
            raise VidiffInputError(f"guidance {guidance!r} must be a number of at least 0")
        job = Job(prompt=prompt, negative_prompt=(negative_prompt or "").strip() or None, num_frames=num_frames,
                  height=height, width=width, steps=steps, guidance=float(guidance))
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = str(self.output_dir).replace("{", "{{").replace("}", "}}")
        [job] = assign_seeds_and_outputs([job], f"{folder}/{stamp}-{{slug}}-{{seed}}.mp4", seed)
        check_model_settings(self.model, [job])
        self.pipe.stage_settings(interpolate, upscale)
        if interpolate > 1 and num_frames < 2:
            raise VidiffInputError("interpolation needs at least 2 frames; raise the frames or turn interpolation off")
        if upscale > 1 and (height % self.fold or width % self.fold):
            raise VidiffInputError(f"{width}x{height} frames must be multiples of {self.fold} to upscale")
        call, record = {"interpolate": interpolate, "upscale": upscale}, {}
        for name, value in (("image", image), ("video", frames)):
            if value is not None:
                value = check_upload(value, name, height, width)
                call[name], record[name] = value, "uploaded"
        if frames is not None:
            call["strength"] = record["strength"] = _strength(strength)
        if lora not in (None, "", NO_LORA):
            if lora not in self.loras:
                raise VidiffInputError(f"unknown LoRA {lora!r}; this server offers "
                                       f"{', '.join(self.loras) or 'none (start it with --lora PATH)'}")
            default, entry = self.loras[lora]
            scale = check_scale(default if lora_scale is None else lora_scale, "LoRA scale")
            record["loras"] = [{**entry, "scale": scale}]
        return job, scheduler, call, record

    def generate(self, prompt, negative_prompt=None, seed=None, num_frames=None, steps=None, guidance=None,
                 scheduler=None, interpolate=None, upscale=None, height=None, width=None, lora=None, lora_scale=None,
                 image=None, video=None, strength=None,
                 progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's way to ask for it)
        """The `generate` event: (MP4, GIF, sidecar, summary). None takes the page's default (the API leaves the seed
        out: a random one). A bad request raises gr.Error, shown in the page; the server goes on serving."""
        # 1. Check the request
        try:
            job, scheduler, call, record = self.check(prompt, negative_prompt, seed, num_frames, steps, guidance,
                                                      scheduler, interpolate, upscale, height, width, lora,
                                                      lora_scale, image, video, strength)
        except INPUT_ERRORS as error:
            raise gr.Error(self.page_message(error), print_exception=False) from None

        # 2. Run it through the cascade and write it, as `vidiff generate` does (progress: the stages' bars)
        progress(0, desc="starting")
        with self.lock:
            try:
                self.pipe.base.scheduler = self.scheduler
                self.pipe.base.set_scheduler(scheduler)
                self.use_lora(record.get("loras"))
                [clip] = run_jobs(self.pipe, [job], fps=FPS, scheduler=scheduler, model=str(self.model),
                                  writer=partial(self.write, progress), load_s=self.load_s, record=record, **call)
            except INPUT_ERRORS as error:
                raise gr.Error(self.page_message(error), print_exception=False) from None
            except Exception as error:
                logger.exception("generation failed for %r", job.prompt)
                raise gr.Error(f"generation failed ({type(error).__name__}); the server's log has the details",
                               print_exception=False) from None

        # 3. List it, and show it
        return self.outputs(self.results.add(clip))

    def use_lora(self, chosen: list[dict] | None) -> None:
        """The request's LoRA at its scale, or none (the others loaded at start-up stay switched off)."""
        if not self.loras:
            return
        if chosen:
            self.pipe.base.enable_lora()
            self.pipe.base.set_adapters([chosen[0]["name"]], [chosen[0]["scale"]])
        else:
            self.pipe.base.disable_lora()

    def write(self, progress, frames, path, fps, metadata, overwrite=False) -> Path:
        """`run_jobs`' writer: the MP4 with its sidecar, then a GIF beside it, each written atomically (each request
        has its own names, so nothing is replaced unless `overwrite`)."""
        progress(1, desc="writing MP4 and GIF")
        path = write_video(frames, path, fps=fps, metadata=metadata, overwrite=overwrite)
        write_video(frames, Path(path).with_suffix(".gif"), fps=fps, overwrite=overwrite)
        return path

    def restore(self, evt: gr.SelectData):
        """A gallery click: that result's settings back into the inputs, and the result itself into the outputs."""
        value = evt.value if isinstance(evt.value, dict) else {}
        image = value.get("image") or {}
        name = Path(str(image.get("orig_name") or image.get("path") or "")).name
        result = self.results.get(name)
        if result is None:
            raise gr.Error("that result is not on this server any more; reload the page", print_exception=False)
        settings = result.settings()
        return (*(settings[name] for name in INPUT_NAMES), *self.outputs(result))

    @staticmethod
    def outputs(result: Result) -> tuple:
        return str(result.clip), str(result.gif), str(result.sidecar), result.summary()

    def page_message(self, error: Exception) -> str:
        """An error's first line, with the server's folders named rather than spelled out."""
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return message.replace(str(self.model), "the model").replace(str(self.output_dir), "the output folder")


def load_offered_loras(pipe, specs) -> dict[str, tuple[float, dict]]:
    """Load the LoRAs `vidiff serve --lora` offers, each as an adapter named after its file, switched off until a
    request picks it. Returns name -> (default scale, the sidecar's record of it)."""
    from vidiff.pipelines.lora import lora_record

    offered = {}
    for path, scale in specs:
        name = Path(path).stem
        while name in offered or name == NO_LORA:
            name += "_"
        pipe.load_lora_weights(path, adapter_name=name)
        offered[name] = (scale, {"name": name, **lora_record(path, scale)})
    if offered:
        pipe.disable_lora()
    return offered


def read_upload(path, what: str):
    """An uploaded video's frames (uint8, (f, h, w, 3)); a file that will not decode is the user's to fix."""
    from vidiff.io.video import read_video

    try:
        frames, _ = read_video(path)
    except Exception as error:  # any decoder failure: the upload, not the server
        raise VidiffInputError(f"the uploaded {what} could not be read ({type(error).__name__}); upload an MP4, "
                               "WebM or GIF") from None
    return frames


def check_upload(value, what: str, height: int, width: int):
    """An uploaded image (h, w, 3 or 4) or video's frames, as uint8 RGB at the request's size."""
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] not in (3, 4):
        raise VidiffInputError(f"the uploaded {what} is not an RGB {what}")
    array = array[..., :3]  # an alpha channel is dropped
    if array.shape[-3:-1] != (height, width):
        got_h, got_w = array.shape[-3:-1]
        raise VidiffInputError(f"the uploaded {what} is {got_w}x{got_h} but the clip is {width}x{height}; resize it "
                               "or set Height and Width to its size")
    return np.ascontiguousarray(array)


def _strength(value) -> float:
    value = DEFAULT_STRENGTH if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise VidiffInputError(f"strength {value!r} must be within (0, 1]: 1 redraws everything, lower keeps more of "
                               "the video")
    return float(value)


def _whole(name: str, value) -> int:
    """A whole number from the page (its sliders send floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise VidiffInputError(f"{name} {value!r} must be a whole number")
    return int(value)


def _seed(value) -> int | None:
    """The seed box's text (or the API's number) as a seed; None for a blank (a random seed)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise VidiffInputError(f"seed {text!r} must be a whole number, or blank for a random one") from None
    if not 0 <= seed <= MAX_SEED:
        raise VidiffInputError(f"seed {seed} must be within 0..{MAX_SEED}, or blank for a random one")
    return seed


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------

INPUT_NAMES = ("prompt", "negative_prompt", "seed", "num_frames", "steps", "guidance", "scheduler", "interpolate",
               "upscale", "height", "width", "lora", "lora_scale", "image", "video",
               "strength")  # Generator.generate's parameters, in the API's order


def build_app(generator: Generator, max_queue: int, url: str = "URL") -> gr.Blocks:
    """The Blocks app. Its `generate` event (api_name "generate") takes INPUT_NAMES, the prompt first and each other
    with the model's default, and returns the MP4 first:
    `Client(url).predict("a blue square moving left", api_name="/generate")`."""
    d = generator.defaults

    def factor_choices(values: tuple[int, ...]) -> list[tuple[str, int]]:
        return [("off" if value == 1 else f"x{value}", value) for value in values]

    # Gradio serves copies of the results from its cache; a day-old copy goes (the output folder keeps the clips)
    with gr.Blocks(title="vidiff", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as app:
        gr.Markdown(f"## vidiff\n{generator.describe()}")
        with gr.Row():
            with gr.Column(scale=5):
                prompt = gr.Textbox(label="Prompt", placeholder="a red circle moving right", lines=2, elem_id="prompt")
                negative_prompt = gr.Textbox("", label="Negative prompt", placeholder="optional", elem_id="negative")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Group():
                    with gr.Row():
                        seed = gr.Textbox("", label="Seed", placeholder="random", info="blank: a random one",
                                          elem_id="seed")
                        scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value=SCHEDULER_NAMES[0], label="Scheduler")
                    num_frames = gr.Slider(1, d.max_frames, value=d.num_frames, step=1, label="Frames",
                                           info=f"keyframes from the base model (at most {d.max_frames})",
                                           elem_id="frames")
                    with gr.Row():
                        steps = gr.Slider(1, MAX_STEPS, value=d.steps, step=1, label="Steps", elem_id="steps")
                        guidance = gr.Slider(0, 20, value=d.guidance, step=0.1, label="Guidance")
                    with gr.Row():
                        interpolate = gr.Dropdown(factor_choices(d.interpolate_choices), value=d.interpolate,
                                                  label="Interpolation", info="(N - 1) x K + 1 frames",
                                                  elem_id="interpolate")
                        upscale = gr.Dropdown(factor_choices(d.upscale_choices), value=d.upscale, label="Upscale",
                                              info="S times the size", elem_id="upscale")
                    with gr.Row():
                        height = gr.Slider(d.multiple, 2 * d.size, value=d.size, step=d.multiple, label="Height")
                        width = gr.Slider(d.multiple, 2 * d.size, value=d.size, step=d.multiple, label="Width")
                with gr.Accordion("LoRA, image to animate, video to restyle", open=False):
                    with gr.Row():
                        lora = gr.Dropdown([NO_LORA, *generator.loras], value=NO_LORA, label="LoRA",
                                           info="those this server was started with (--lora)", elem_id="lora")
                        lora_scale = gr.Slider(-2, 2, value=1.0, step=0.05, label="LoRA scale")
                    with gr.Row():
                        image = gr.Image(label="Image to animate (frame 0)", type="numpy", sources=["upload"],
                                         image_mode="RGB", elem_id="image")
                        video_in = gr.Video(label="Video to restyle", sources=["upload"], elem_id="video-in")
                    strength = gr.Slider(0.05, 1, value=DEFAULT_STRENGTH, step=0.05, label="Strength",
                                         info="of a restyled video: 1 redraws everything")
            with gr.Column(scale=6):
                video = gr.Video(label="Clip (MP4)", autoplay=True, loop=True, interactive=False, height=360,
                                 elem_id="clip")
                summary = gr.Markdown(label="Summary", elem_id="summary")
                with gr.Row():
                    gif = gr.DownloadButton("Download GIF", size="md", elem_id="gif")
                    sidecar = gr.DownloadButton("Download settings (JSON sidecar)", size="md", elem_id="sidecar")
        gallery = gr.Gallery(label="This server's results: click one to restore its settings", columns=8,
                             fit_columns=False, height=220, allow_preview=False, object_fit="contain",
                             elem_id="gallery")
        gr.Markdown(f"From Python: `gradio_client.Client(\"{url}\").predict(\"a blue square moving left\", "
                    "api_name=\"/generate\")` returns the MP4's path first.")

        inputs = [prompt, negative_prompt, seed, num_frames, steps, guidance, scheduler, interpolate, upscale,
                  height, width, lora, lora_scale, image, video_in, strength]
        outputs = [video, gif, sidecar, summary]
        button.click(generator.generate, inputs, outputs, api_name="generate", concurrency_limit=1).then(
            generator.results.gallery, None, gallery, queue=False, api_visibility="private")
        gallery.select(generator.restore, None, [*inputs, *outputs], queue=False, api_visibility="private")
        app.load(generator.results.gallery, None, gallery, queue=False, api_visibility="private")
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    return app
