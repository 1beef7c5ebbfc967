"""The demo page: a video, sentences, and for each sentence its top-k moments on a timeline.

    python -m vdi.app --checkpoint runs/synthetic/best/model.pt          # http://127.0.0.1:7860
    python -m vdi.app --checkpoint ... --host 0.0.0.0                     # open to the network (warns)

Pick one of the world's test videos (the checkpoint's synthetic world: ``<shard root>/../videos``
with the annotated test and OOD sentences as examples) or upload a video file, type one or more
sentences (one per line), and each sentence gets its top-k moments as bars on the video's
timeline with their scores; clicking a bar plays the video from the moment's start. The
sentence's static / dynamic split (Q^s: noun chunks, Q^d: the rest; what the injection losses
train on) is shown beside it. Everything goes through :class:`vdi.predict.Predictor` (long videos
through its windows); a video is decoded and encoded once and kept in a small cache while the
sentences change. Bad input (an undecodable upload, an empty sentence, a video longer than
``--max-seconds``) is shown on the page as one line. Gradio is the field's convention for these
demos (Lighthouse, UniVTG); it is the ``[app]`` extra and only this module imports it.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from vdi.cli import run_cli
from vdi.errors import InputError, user_errors
from vdi.predict import EncodedVideo, Moment, Predictor
from vdi.text import ParsedQuery, QueryError, QueryParser, normalize_query

DEFAULT_PORT = 7860
MAX_SENTENCES = 10
CACHE_SIZE = 8  # encoded videos kept while sentences change (a few MB of features each)
EXAMPLE_SPLITS = ("test", "ood")  # the world's held-out videos: never seen in training

# Clicking a bar seeks the page's video to the moment's start and plays it. One delegated
# listener on the component's root, which stays while its HTML is replaced by each answer.
SEEK_ON_CLICK = """
element.addEventListener('click', (event) => {
  const bar = event.target.closest('[data-start]');
  const video = element.querySelector('video');
  if (!bar || !video) return;
  video.currentTime = parseFloat(bar.dataset.start);
  video.play();
});
"""

PAGE_CSS = """
.vdi-sentence { margin: 0.6em 0 0.2em; font-weight: 600; }
.vdi-split { font-size: 0.85em; color: #555; margin-bottom: 0.3em; }
.vdi-track { position: relative; height: 30px; background: #eef1f5; border-radius: 4px; margin-bottom: 0.2em; }
.vdi-bar { position: absolute; top: 3px; height: 24px; border-radius: 3px; cursor: pointer;
           background: #2f6fde; color: white; font-size: 11px; line-height: 24px; overflow: hidden;
           white-space: nowrap; padding-left: 3px; box-sizing: border-box; }
.vdi-bar:hover { outline: 2px solid #f5a623; }
.vdi-axis { display: flex; justify-content: space-between; font-size: 0.75em; color: #777; }
.vdi-moments { font-size: 0.85em; border-collapse: collapse; margin-bottom: 0.8em; }
.vdi-moments td, .vdi-moments th { padding: 1px 8px; border-bottom: 1px solid #e3e3e3; text-align: right; }
"""


@dataclass(frozen=True)
class ExampleVideo:
    label: str  # what the drop-down shows
    path: Path
    sentences: list[str]  # its annotated sentences


def world_examples(predictor: Predictor, videos: str | Path | None = None) -> list[ExampleVideo]:
    """The checkpoint's world's held-out videos with their annotated sentences (none when the
    folder or its annotations are not there, e.g. a model trained on real features)."""
    folder = Path(videos) if videos else Path(predictor.cfg.data.shard_root).parent / "videos"
    annotations = folder.parent / "annotations"
    examples = []
    for split in EXAMPLE_SPLITS:
        listing = annotations / f"{split}.txt"
        if not listing.is_file():
            continue
        sentences: dict[str, list[str]] = {}
        for line in listing.read_text().splitlines():
            head, _, sentence = line.partition("##")
            if sentence:
                sentences.setdefault(head.split()[0], []).append(sentence)
        for video_id, texts in sentences.items():
            path = next(iter(sorted(folder.glob(f"{video_id}.*"))), None)
            if path is not None:
                examples.append(ExampleVideo(f"{split}: {video_id}", path, texts))
    return examples


def probe_duration(path: Path) -> float:
    """The container's duration in seconds (0 when it does not say), without decoding frames."""
    import av

    from vdi.video import VideoDecodeError

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path.name}: no video stream; upload a video file (e.g. .mp4)")
            if container.duration:
                return container.duration / 1_000_000  # av.time_base
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base) if stream.duration else 0.0
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            f"{path.name} cannot be decoded as a video ({error.strerror or error}); upload a video file such as .mp4"
        ) from None


class Demo:
    """The page's logic without the page: encode (cached), parse, predict, render."""

    def __init__(self, predictor: Predictor, max_seconds: float = 600.0, examples: list[ExampleVideo] | None = None):
        self.predictor = predictor
        self.max_seconds = max_seconds
        self.examples = {example.label: example for example in examples or []}
        self.parser = QueryParser(predictor.cfg.text.spacy_model)
        self._cache: OrderedDict[tuple, EncodedVideo] = OrderedDict()

    def encoded(self, path: str | Path) -> EncodedVideo:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"video {path.name} not found; pick a test video or upload one")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        duration = probe_duration(path)
        if duration > self.max_seconds:
            raise InputError(
                f"{path.name} is {duration:.0f} s long, over this page's limit of {self.max_seconds:.0f} s "
                "(start it with a larger --max-seconds)"
            )
        video = self.predictor.encode_video(path)
        self._cache[key] = video
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return video

    def sentences(self, text: str) -> list[str]:
        lines = [normalize_query(line) for line in (text or "").splitlines()]
        sentences = [line for line in lines if line]
        if not sentences:
            raise QueryError("no sentence given: type one or more sentences, one per line")
        if len(sentences) > MAX_SENTENCES:
            raise InputError(f"{len(sentences)} sentences; this page answers at most {MAX_SENTENCES} at a time")
        return sentences

    def answer(self, path: str | Path, text: str, top_k: int) -> tuple[EncodedVideo, list[ParsedQuery], list]:
        sentences = self.sentences(text)
        video = self.encoded(path)
        moments = self.predictor.predict(video, sentences, int(top_k))
        return video, self.parser.parse(sentences), moments

    def handle(self, label: str | None, upload: str | None, text: str, top_k: float) -> tuple[str, str]:
        """The page's answer to "Find moments": (the timelines' HTML, "") or ("", the error line).
        An upload wins over the chosen test video."""
        try:
            if upload:
                path = Path(upload)
            elif label in self.examples:
                path = self.examples[label].path
            else:
                raise InputError("no video: pick a test video or upload a video file")
            video, parsed, moments = self.answer(path, text, int(top_k))
            return render_answer(f"/gradio_api/file={quote(str(path))}", video, parsed, moments), ""
        except user_errors() as error:  # one readable line; anything else is a bug and keeps its traceback
            return "", error_line(error)


def render_answer(video_url: str, video: EncodedVideo, parsed: list[ParsedQuery], moments: list[list[Moment]]) -> str:
    """The video and one timeline per sentence (bars carry data-start/data-end/data-score)."""
    duration = max(video.duration, 1e-6)
    parts = [
        f'<video src="{html.escape(video_url)}" controls preload="auto" style="width:100%;max-height:360px"></video>',
        f'<div class="vdi-axis"><span>0 s</span><span>{duration / 2:.1f} s</span><span>{duration:.1f} s</span></div>',
    ]
    for query, found in zip(parsed, moments):
        parts.append(f'<div class="vdi-sentence">{html.escape(query.query)}</div>')
        static, dynamic = html.escape(query.static or "(none)"), html.escape(query.dynamic or "(none)")
        parts.append(f'<div class="vdi-split">Q<sup>s</sup>: {static} &nbsp;|&nbsp; Q<sup>d</sup>: {dynamic}</div>')
        bars = []
        rows = []
        # lower-ranked moments are drawn first and fainter, so the best one stays on top
        for rank in reversed(range(len(found))):
            moment = found[rank]
            left = 100 * min(max(moment.start / duration, 0.0), 1.0)
            width = max(100 * (moment.end - moment.start) / duration, 0.5)
            opacity = 1.0 if rank == 0 else max(0.25, 0.75 - 0.12 * rank)
            label = f"#{rank + 1} {moment.start:.1f}-{moment.end:.1f} s"
            bars.append(
                f'<div class="vdi-bar" data-rank="{rank + 1}" data-start="{moment.start}" data-end="{moment.end}" '
                f'data-score="{moment.score:.4f}" title="{label}, score {moment.score:.3f} (click to play)" '
                f'style="left:{left:.2f}%;width:{min(width, 100 - left):.2f}%;opacity:{opacity:.2f}">{label}</div>'
            )
        for rank, moment in enumerate(found, start=1):
            rows.append(
                f"<tr><td>#{rank}</td><td>{moment.start:.2f} s</td><td>{moment.end:.2f} s</td>"
                f"<td>{moment.score:.3f}</td></tr>"
            )
        parts.append(f'<div class="vdi-track">{"".join(bars)}</div>')
        parts.append(
            '<table class="vdi-moments"><tr><th>rank</th><th>start</th><th>end</th><th>score</th></tr>'
            f"{''.join(rows)}</table>"
        )
    windows = len(video.windows)
    parts.append(
        f'<div class="vdi-split">{duration:.1f} s video, {windows} window(s); click a bar to play its moment</div>'
    )
    return "".join(parts)


def error_line(error: BaseException) -> str:
    """A user error as the page's one line (the message names the problem and the fix)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"**Error:** {html.escape(message, quote=False)}"


def build_page(demo: Demo):
    import gradio as gr

    choices = list(demo.examples)

    def pick(label: str | None):
        example = demo.examples.get(label or "")
        return None, "\n".join(example.sentences[:3]) if example else gr.update()

    with gr.Blocks(title="vdi: find moments in a video") as page:
        gr.Markdown(
            "# vdi: video moment retrieval\nPick a test video of the synthetic world or upload one, type sentences "
            "(one per line) and find when they happen. Click a bar to play that moment."
        )
        with gr.Row():
            with gr.Column(scale=1):
                video_choice = gr.Dropdown(
                    choices, value=choices[0] if choices else None, label="Test video", elem_id="vdi-video-choice"
                )
                upload = gr.File(label="...or upload a video", type="filepath", elem_id="vdi-upload")
                sentences = gr.Textbox(
                    label="Sentences (one per line)",
                    lines=4,
                    value="\n".join(demo.examples[choices[0]].sentences[:3]) if choices else "",
                    elem_id="vdi-sentences",
                )
                top_k = gr.Slider(1, 10, value=3, step=1, label="Moments per sentence (top-k)")
                button = gr.Button("Find moments", variant="primary", elem_id="vdi-find")
                error = gr.Markdown(elem_id="vdi-error")
            with gr.Column(scale=2):
                answer = gr.HTML(elem_id="vdi-answer", js_on_load=SEEK_ON_CLICK, css_template=PAGE_CSS)
        video_choice.change(pick, video_choice, [upload, sentences])
        button.click(demo.handle, [video_choice, upload, sentences, top_k], [answer, error])
    return page


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.app", description="The demo page (Gradio).")
    parser.add_argument("--checkpoint", required=True, help="runs/<name>/best/model.pt")
    parser.add_argument("--videos", default=None, help="folder of example videos (default: the checkpoint's world)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (warns)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="longest video the page accepts")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload the page accepts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} not found; train one first (make demo)")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError('the demo page needs Gradio: pip install -e ".[app]"') from None
    predictor = Predictor.from_checkpoint(args.checkpoint, args.device)
    examples = world_examples(predictor, args.videos)
    demo = Demo(predictor, args.max_seconds, examples)
    if args.host not in ("127.0.0.1", "localhost") or args.share:
        print(
            "warning: the demo page is open to the network (anyone who can reach it can upload files and use "
            "this machine's CPU); it has no authentication",
            file=sys.stderr,
        )
    folders = sorted({str(example.path.parent) for example in examples})
    print(f"{len(examples)} test video(s); serving on http://{args.host}:{args.port}")
    build_page(demo).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=folders,
        max_file_size=f"{args.max_upload_mb:g}mb",
        show_error=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
