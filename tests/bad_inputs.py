"""A generator of bad inputs, each run through the command a user would type, with what it must get.

Every case writes one bad input (a video, an annotation file in one of the four formats, a
feature file, a shard, a manifest, a checkpoint, a config, a query file, a sweep space) next to
small good data, runs the command line in-process (``main(argv)``) and classifies the outcome:

* ``error``: exit status != 0, no traceback, exactly one ``error:`` line naming the thing (the
  case's pattern) and the fix;
* ``skip``: exit status 0, the job goes on, and a counted skip is printed (the pattern);
* ``warn``: exit status 0 and a warning naming the problem (the pattern).

``tests/test_bad_inputs.py`` runs every case; ``python tests/bad_inputs.py`` runs them all and
prints the README's reliability table from what they actually printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import write_toy_shards, write_video

PROJECT = Path(__file__).resolve().parents[1]
CLIP = ["--clip", "vdi-test-tiny", "--pretrained", "none"]
EXTRACT = [*CLIP, "--fps", "2", "--workers", "0"]


@dataclass
class Assets:
    """Good data the cases start from (built once): toy shards, a checkpoint, a video, features."""

    root: Path
    shards: Path  # shard root with train/ and test/
    checkpoint: Path
    video: Path
    videos: Path  # a folder of two good videos (good0, good1)
    features: Path  # features of the two good videos


@dataclass
class Case:
    name: str  # what is bad, as a user would say it
    kind: str  # video, annotations, features, shards, manifest, checkpoint, config, queries, sweep
    expect: str  # error | skip | warn
    pattern: str  # regex the printed line must match
    build: Callable[[Assets, Path], tuple[str, list[str]]]  # -> (tool, argv)


def build_assets(root: Path) -> Assets:
    import torch
    from toy import planted_samples

    from vdi.checkpoint import save_inference_checkpoint
    from vdi.config import load_config, pin_paths, to_dict
    from vdi.injection import build_vdi_model

    root.mkdir(parents=True, exist_ok=True)
    shards = root / "shards"
    write_toy_shards(planted_samples(8, num_frames=12, seed=3), shards / "train", per_shard=4)
    write_toy_shards(planted_samples(8, num_frames=12, seed=4), shards / "test", per_shard=4, split="test")
    torch.manual_seed(0)
    cfg = pin_paths(load_config("tiny", [f"data.shard_root={shards}", f"run.root={root / 'runs'}"]))
    model = build_vdi_model(cfg)
    checkpoint = root / "model.pt"
    metadata = {"feature_fps": 2.0, "max_train_duration": 16.0, "clip_weights": "random"}
    save_inference_checkpoint(checkpoint, model.retriever.state_dict(), to_dict(cfg), {}, 1, metadata)
    videos = root / "videos"
    videos.mkdir()
    for index in range(2):
        write_video(videos / f"good{index}.mp4", 2.0, seed=index)
    annotations = root / "annotations"
    annotations.mkdir()
    _jsonl(annotations / "train.jsonl", [_record(f"good{i}") for i in range(2)])
    features = root / "features"
    _run("data_prep", ["features", "--dataset", "mine", "--annotations", str(annotations), *EXTRACT,
                       "--videos", str(videos), "--features", str(features)])  # fmt: skip
    return Assets(root, shards, checkpoint, videos / "good0.mp4", videos, features)


# -- writing bad inputs -----------------------------------------------------------------------


def _record(video: str, **extra) -> dict:
    return {"video": video, "moments": [{"start": 0.2, "end": 1.5, "sentence": "a person opens the door"}], **extra}


def _jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target) if source.is_dir() else shutil.copy(source, target)
    return target


def _videos_with(assets: Assets, tmp: Path, name: str, write: Callable[[Path], None]) -> list[str]:
    """A videos folder (the two good ones and ``name``), its annotations, and `build` arguments."""
    videos = _copy(assets.videos, tmp / "videos")
    write(videos / name)
    annotations = tmp / "annotations"
    annotations.mkdir()
    _jsonl(annotations / "train.jsonl", [_record("good0"), _record("good1"), _record(Path(name).stem)])
    return ["build", "--dataset", "mine", "--annotations", str(annotations), *EXTRACT, "--videos", str(videos),
            "--features", str(tmp / "features"), "--out", str(tmp / "out")]  # fmt: skip


def _annotation(tmp: Path, name: str, text: str | bytes, assets: Assets) -> list[str]:
    """`shards` over the good features with one annotation file ``name`` (its reader is picked
    by its suffix: .txt Charades-STA, .json ActivityNet / CG, .jsonl own data)."""
    target = tmp / name
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["shards", "--dataset", "mine", "--annotations", str(target), "--split", "train",
            "--features", str(assets.features), "--out", str(tmp / "out")]  # fmt: skip


def _charades(assets: Assets, tmp: Path, text: str | bytes) -> tuple[str, list[str]]:
    # Charades-STA's reader is picked by the dataset's file name; ids are the good videos'
    return "data_prep", _annotation(tmp, "charades_sta_train.txt", text, assets)


def _activitynet(assets: Assets, tmp: Path, data) -> tuple[str, list[str]]:
    text = data if isinstance(data, str) else json.dumps(data)
    return "data_prep", _annotation(tmp, "train.json", text, assets)


def _own(assets: Assets, tmp: Path, lines: list[str]) -> tuple[str, list[str]]:
    return "data_prep", _annotation(tmp, "train.jsonl", "\n".join(lines) + "\n", assets)


def _good_moment() -> dict:
    return {"duration": 2.0, "timestamps": [[0.2, 1.5]], "sentences": ["a person opens the door"]}


def _evaluate(assets: Assets, tmp: Path, shards: Path, *extra: str) -> tuple[str, list[str]]:
    return "vdi.evaluate", ["--checkpoint", str(assets.checkpoint), "--shard-root", str(shards), "--split", "test",
                            *extra]  # fmt: skip


def _broken_test_split(assets: Assets, tmp: Path, damage: Callable[[Path], None]) -> tuple[str, list[str]]:
    shards = _copy(assets.shards, tmp / "shards")
    damage(shards / "test")
    return _evaluate(assets, tmp, shards)


def _flip(path: Path, offset: int, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    path.write_bytes(bytes(data))


def _edit_manifest(split: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((split / "manifest.json").read_text())
    edit(manifest)
    (split / "manifest.json").write_text(json.dumps(manifest))


def _predict(assets: Assets, tmp: Path, *arguments: str, checkpoint: Path | None = None) -> tuple[str, list[str]]:
    return "vdi.predict", ["--checkpoint", str(checkpoint or assets.checkpoint), str(assets.video), *arguments]


def _edited_checkpoint(assets: Assets, tmp: Path) -> tuple[str, list[str]]:
    import torch

    payload = torch.load(assets.checkpoint, weights_only=True)
    name = next(k for k, v in payload["retriever"].items() if k.startswith("head.") and v.ndim == 2)
    payload["retriever"][name] = torch.zeros(3, 3)
    torch.save(payload, tmp / "edited.pt")
    return _predict(assets, tmp, "a person opens the door", checkpoint=tmp / "edited.pt")


def _train(assets: Assets, tmp: Path, *overrides: str, config: str = "tiny") -> tuple[str, list[str]]:
    return "vdi.train", ["--config", config, f"data.shard_root={assets.shards}", f"run.root={tmp / 'runs'}",
                         "data.num_workers=0", "track.enabled=false", *overrides]  # fmt: skip


def _reused_run_name(assets: Assets, tmp: Path) -> tuple[str, list[str]]:
    from vdi.config import load_config, pin_paths, to_yaml

    tool, argv = _train(assets, tmp, "run.name=mine")
    run_dir = tmp / "runs" / "mine"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "model.pt").write_bytes(b"the earlier run's weights")
    earlier = pin_paths(load_config("tiny", [*argv[2:], "model.hidden_size=48"]))
    (run_dir / "config.yaml").write_text(to_yaml(earlier))
    return tool, argv


def _queries_file(assets: Assets, tmp: Path, data: bytes) -> tuple[str, list[str]]:
    (tmp / "queries.txt").write_bytes(data)
    return _predict(assets, tmp, "--queries", str(tmp / "queries.txt"))


def _space(tmp: Path, text: str | None) -> tuple[str, list[str]]:
    path = tmp / "space.yaml"
    if text is not None:
        path.write_text(text)
    return "sweeps/lambda_sweep.py", ["--space", str(path), "--storage", str(tmp / "sweeps")]


def _audio_only(path: Path) -> None:
    import av

    container = av.open(str(path), "w", format="matroska")
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), dtype=np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _truncated(path: Path, faststart: bool) -> None:
    import av

    rng = np.random.default_rng(0)
    container = av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {})
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
    for _ in range(64):  # 8 s
        for packet in stream.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (40, 48, 3), np.uint8), "rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])


GOOD_CHARADES = "good0 0.2 1.5##a person opens the door\n"
LONG_QUERY = ("a person slowly opens the old wooden door " * 300).encode()

CASES: list[Case] = [
    # videos
    Case("a video file that is not a video", "video", "skip", r"2 extracted, 1 failed \(cannot open 1\)",
         lambda a, t: ("data_prep", _videos_with(a, t, "bad.mp4", lambda p: p.write_bytes(b"junk" * 300)))),
    Case("an empty (0-byte) video file", "video", "skip", r"1 failed \(cannot open 1\)",
         lambda a, t: ("data_prep", _videos_with(a, t, "empty.mp4", lambda p: p.write_bytes(b"")))),
    Case("an mp4 cut short (index lost)", "video", "skip", r"1 failed \(cannot open 1\)",
         lambda a, t: ("data_prep", _videos_with(a, t, "cut.mp4", lambda p: _truncated(p, False)))),
    Case("an mp4 cut short (index first)", "video", "warn", r"1 shorter than their container declares",
         lambda a, t: ("data_prep", _videos_with(a, t, "cut.mp4", lambda p: _truncated(p, True)))),
    Case("an audio-only file", "video", "skip", r"1 failed \(no video stream 1\)",
         lambda a, t: ("data_prep", _videos_with(a, t, "sound.mkv", _audio_only))),
    Case("an annotated video missing from the folder", "video", "skip", r"1 failed \(missing 1\)",
         lambda a, t: ("data_prep", _videos_with(a, t, "absent.mp4", lambda p: None))),
    # annotations: Charades-STA text
    Case("Charades-STA text in latin-1", "annotations", "error", r"is not UTF-8 text \(byte 0xe9 on line 2\).*iconv",
         lambda a, t: _charades(a, t, (GOOD_CHARADES + "good1 0.0 1.0##a caf\u00e9 door\n").encode("latin-1"))),
    Case("a Charades-STA line without '##'", "annotations", "skip", r"unparsable lines 1 \(e\.g\. line 2\)",
         lambda a, t: _charades(a, t, GOOD_CHARADES + "good1 0.0 1.0 a person sits\n")),
    Case("a Charades-STA start of 'nan'", "annotations", "skip", r"non-finite start/end 1",
         lambda a, t: _charades(a, t, GOOD_CHARADES + "good1 nan 1.0##a person sits\n")),
    Case("a Charades-STA file with no usable line", "annotations", "error", r"no usable annotation",
         lambda a, t: _charades(a, t, "just some words\n")),
    # annotations: ActivityNet Captions JSON
    Case("ActivityNet JSON that is not JSON", "annotations", "error", r"train\.json is not valid JSON",
         lambda a, t: _activitynet(a, t, "{'v_1': oops")),
    Case("ActivityNet JSON that is a list", "annotations", "error", r"expected an object keyed by video id",
         lambda a, t: _activitynet(a, t, [1, 2])),
    Case("ActivityNet timestamps ['a', 2] and [null, 3]", "annotations", "skip", r"unparsable timestamps 2",
         lambda a, t: _activitynet(a, t, {"good0": {"duration": 2.0, "timestamps": [["a", 2], [None, 3], [0.2, 1.5]],
                                                    "sentences": ["x", "y", "a person opens the door"]}})),
    Case("an ActivityNet duration of NaN", "annotations", "skip", r"non-finite or non-positive duration 1",
         lambda a, t: _activitynet(a, t, {"good0": _good_moment(), "good1": {**_good_moment(), "duration": "NaN"}})),
    Case("an ActivityNet entry without sentences", "annotations", "skip", r"malformed video entries.* 1 \(e\.g\. video good1",
         lambda a, t: _activitynet(a, t, {"good0": _good_moment(), "good1": {"duration": 2.0, "timestamps": []}})),
    # annotations: CG JSON (ActivityNet layout plus novel-word lists)
    Case("a CG entry with more timestamps than sentences", "annotations", "skip", r"malformed video entries",
         lambda a, t: _activitynet(a, t, {"good0": {**_good_moment(), "news": [["door"]]},
                                          "good1": {**_good_moment(), "timestamps": [[0, 1], [1, 2]]}})),
    # annotations: JSONL (own data)
    Case("a JSONL line that is not JSON", "annotations", "skip", r"unparsable lines .* 1 \(e\.g\. line 2\)",
         lambda a, t: _own(a, t, [json.dumps(_record("good0")), "{not json"])),
    Case("a JSONL moment without an end", "annotations", "skip", r"moments without numeric start, end and a sentence 1",
         lambda a, t: _own(a, t, [json.dumps(_record("good0")),
                                  json.dumps({"video": "good1", "moments": [{"start": 0, "sentence": "a dog"}]})])),
    Case("a JSONL duration of NaN", "annotations", "skip", r"non-finite or non-positive duration 1",
         lambda a, t: _own(a, t, [json.dumps(_record("good0")), '{"video": "good1", "duration": NaN, "moments": '
                                  '[{"start": 0, "end": 1, "sentence": "a dog"}]}'])),
    Case("a JSONL duration far from the video's", "annotations", "warn", r"1 annotated durations differ from the decoded",
         lambda a, t: _own(a, t, [json.dumps(_record("good0")), json.dumps(_record("good1", duration=50.0))])),
    Case("an annotation file of unknown format", "annotations", "error", r"train\.csv: unknown annotation format",
         lambda a, t: ("data_prep", _annotation(t, "train.csv", "video,start,end\n", a))),
    # feature files
    Case("a feature file cut in half", "features", "skip", r"1 damaged feature files skipped",
         lambda a, t: _damaged_features(a, t)),
    Case("a features folder made with other settings", "features", "error", r"holds features made with other settings \(fps 2.0 there, 4.0 here\): use another folder",
         lambda a, t: ("data_prep", ["features", "--dataset", "mine", "--annotations", str(a.root / "annotations"),
                                     *CLIP, "--fps", "4", "--workers", "0", "--videos", str(a.videos),
                                     "--features", str(_copy(a.features, t / "features"))])),
    Case("a features folder without features.json", "features", "error", r"no features\.json in .*extract features first",
         lambda a, t: ("data_prep", ["shards", "--dataset", "mine", "--annotations", str(a.root / "annotations"),
                                     "--features", str(t), "--out", str(t / "out")])),
    # shards and manifests
    Case("a shard cut short", "shards", "error", r"shard-000001\.tar has \d+ bytes.*data\.skip_corrupt=true",
         lambda a, t: _broken_test_split(a, t, lambda s: (s / "shard-000001.tar").write_bytes(
             (s / "shard-000001.tar").read_bytes()[:-2048]))),
    Case("bytes flipped inside a shard", "shards", "error", r"shard-000000\.tar has content whose sha256 differs",
         lambda a, t: _broken_test_split(a, t, lambda s: _flip(s / "shard-000000.tar", 1500))),
    Case("a manifest whose video count was edited", "manifest", "error", r"says 150 videos .* but its shards list 8",
         lambda a, t: _broken_test_split(a, t, lambda s: _edit_manifest(s, lambda m: m.update(num_videos=150)))),
    Case("a manifest that is not JSON", "manifest", "error", r"manifest\.json is not a valid shard manifest",
         lambda a, t: _broken_test_split(a, t, lambda s: (s / "manifest.json").write_text("{oops"))),
    Case("a split without a manifest", "manifest", "error", r"no manifest\.json in .*data_prep shards",
         lambda a, t: _broken_test_split(a, t, lambda s: (s / "manifest.json").unlink())),
    Case("shards made with another CLIP", "manifest", "error", r"encoder ViT-B-32 != model\.clip\.name vdi-test-tiny",
         lambda a, t: _broken_test_split(a, t, lambda s: _edit_manifest(
             s, lambda m: m["encoder"].update(name="ViT-B-32")))),
    Case("a misspelt split among good ones", "shards", "error", r"no split .tset. in .* \(its splits: test, train\)",
         lambda a, t: ("vdi.evaluate", [*_evaluate(a, t, a.shards)[1], "tset"])),
    Case("--json into a folder that does not exist", "shards", "error", r"--json .*: folder .* does not exist",
         lambda a, t: _evaluate(a, t, a.shards, "--json", str(t / "nowhere" / "m.json"))),
    # checkpoints
    Case("a checkpoint that is not one", "checkpoint", "error", r"is not a readable vdi checkpoint",
         lambda a, t: _predict(a, t, "a dog", checkpoint=_written(t / "x.pt", b"junk" * 100))),
    Case("a checkpoint with an edited weight", "checkpoint", "error", r"its weights do not fit the model .*size mismatch",
         _edited_checkpoint),
    Case("a checkpoint path that does not exist", "checkpoint", "error", r"checkpoint .*none\.pt not found",
         lambda a, t: _predict(a, t, "a dog", checkpoint=t / "none.pt")),
    Case("--device on a GPU this machine lacks", "checkpoint", "error", r"--device cuda:99: (no CUDA GPU|this machine has)",
         lambda a, t: _predict(a, t, "a dog", "--device", "cuda:99")),
    # configs
    Case("a misspelt config key", "config", "error", r"unknown config key 'optim\.lrr'.*did you mean 'optim\.lr'",
         lambda a, t: _train(a, t, "optim.lrr=0.1")),
    Case("eval.nms_threshold=2.0", "config", "error", r"'eval\.nms_threshold' is 2\.0; it must be > 0 and <= 1",
         lambda a, t: _train(a, t, "eval.nms_threshold=2.0")),
    Case("model.num_clips=0", "config", "error", r"'model\.num_clips' is 0; it must be >= 1",
         lambda a, t: _train(a, t, "model.num_clips=0")),
    Case("optim.lr=-0.1", "config", "error", r"'optim\.lr' is -0\.1; it must be > 0",
         lambda a, t: _train(a, t, "optim.lr=-0.1")),
    Case("a config YAML that is not YAML", "config", "error", r"is not valid YAML",
         lambda a, t: _train(a, t, config=str(_written(t / "c.yaml", b"model: [unclosed")))),
    Case("a run.name reused with another architecture", "config", "error",
         r"holds a run made with another config \(model\.hidden_size 48 -> 32\).*run\.restart=true", _reused_run_name),
    # query files
    Case("a --queries file in latin-1", "queries", "error", r"queries file .* is not UTF-8 text",
         lambda a, t: _queries_file(a, t, "a person opens the caf\u00e9 door\n".encode("latin-1"))),
    Case("a --queries file of blank lines", "queries", "error", r"no sentence given",
         lambda a, t: _queries_file(a, t, b"\n  \n\n")),
    Case("a 2,000-word query", "queries", "warn", r"sentence 1 is longer than the text tower's context and was truncated",
         lambda a, t: _queries_file(a, t, LONG_QUERY)),
    # tracking and sweeps
    Case("tracking replay of a folder that is not a run", "tracking", "error", r"is not a run folder \(no tracking\.json\)",
         lambda a, t: ("vdi.tracking", ["replay", str(t / "missing")])),
    Case("a sweep --space file that does not exist", "sweep", "error", r"search-space file .* not found",
         lambda a, t: _space(t, None)),
    Case("a sweep --space file that is not YAML", "sweep", "error", r"search-space file .* is not valid YAML",
         lambda a, t: _space(t, "space: [unclosed")),
    Case("a sweep --space naming an unknown key", "sweep", "error", r"unknown config key 'loss\.lambda_vcc'",
         lambda a, t: _space(t, "base_config: tiny\nmetric: val/R1@0.5\nmode: max\n"
                                "space:\n  loss.lambda_vcc: {type: uniform, low: 0, high: 1}\n")),
]  # fmt: skip


def _damaged_features(assets: Assets, tmp: Path) -> tuple[str, list[str]]:
    features = _copy(assets.features, tmp / "features")
    damaged = features / "videos" / "good1.npz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return "data_prep", ["shards", "--dataset", "mine", "--annotations", str(assets.root / "annotations"),
                         "--features", str(features), "--out", str(tmp / "out")]  # fmt: skip


# -- running a case -----------------------------------------------------------------------------


def _tool(name: str) -> Callable[[list[str]], int]:
    if name == "data_prep":
        from data_prep.__main__ import main
    elif name == "vdi.train":
        from vdi.train import main
    elif name == "vdi.evaluate":
        from vdi.evaluate import main
    elif name == "vdi.predict":
        from vdi.predict import main
    elif name == "vdi.tracking":
        from vdi.tracking import main
    else:
        sys.path.insert(0, str(PROJECT / "sweeps"))
        from lambda_sweep import main
    return main


def _run(tool: str, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _tool(tool)(argv)
        except SystemExit as stop:  # argparse, or a script's SystemExit("error: ...")
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
                code = 2
            else:
                code = stop.code or 0
    return int(code), out.getvalue(), err.getvalue()


@dataclass
class Outcome:
    case: Case
    command: str
    code: int
    stdout: str
    stderr: str
    line: str  # the printed line that matched the case's pattern ('' when none did)
    problems: list[str]


def run_case(case: Case, assets: Assets, tmp: Path) -> Outcome:
    import warnings

    tmp.mkdir(parents=True, exist_ok=True)
    tool, argv = case.build(assets, tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, stdout, stderr = _run(tool, argv)
    lines = [line for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
    line = next((line for line in lines if re.search(case.pattern, line)), "")
    problems = []
    if "Traceback" in stderr:
        problems.append("printed a traceback")
    if not line:
        problems.append(f"no printed line matches {case.pattern!r}")
    if case.expect == "error":
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        if code == 0:
            problems.append("exited 0")
        if len(errors) != 1 or not re.search(case.pattern, errors[0] if errors else ""):
            problems.append(f"not exactly one matching 'error:' line (got {errors})")
    elif code != 0:
        problems.append(f"exited {code}; the job should go on")
    command = f"python -m {tool}" if not tool.endswith(".py") else f"python {tool}"
    return Outcome(case, f"{command} {argv[0]}" if tool == "data_prep" else command, code, stdout, stderr, line,
                   problems)  # fmt: skip


def _shown(line: str, tmp: Path) -> str:
    line = line.replace(str(tmp) + "/", "").replace(str(tmp), ".")
    line = re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", line)  # absolute paths -> their last part
    return (line[:150] + " ...") if len(line) > 150 else line


def main() -> int:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="vdi-bad-inputs-"))
    assets = build_assets(root / "assets")
    print("| # | bad input | kind | command | result | what it printed |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for number, case in enumerate(CASES, start=1):
        tmp = root / f"case{number:02d}"
        outcome = run_case(case, assets, tmp)
        result = {"error": "one-line error", "skip": "counted skip, goes on", "warn": "warning, goes on"}[case.expect]
        if outcome.problems:
            failed += 1
            result = "FAILED: " + "; ".join(outcome.problems)
        shown = _shown(outcome.line, tmp).replace("|", "\\|")
        print(f"| {number} | {case.name} | {case.kind} | `{outcome.command}` | {result} | `{shown}` |")
    shutil.rmtree(root, ignore_errors=True)
    print(f"\n{len(CASES)} bad inputs, {len(CASES) - failed} handled as expected", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
