"""Real signals for the audio models: speech from espeak-ng, and synthesized notes.

Speech is synthesized by espeak-ng (Debian: `apt-get install espeak-ng`), a real formant
synthesizer, in several of its voices; streams put utterances between stretches of quiet
room noise, so a voice-activity detector has speech to find and silence to reject. Notes are
harmonic tones with a piano-like attack and decay at known MIDI pitches. Mel features are
computed here the way librosa's `melspectrogram` defaults do (Slaney mel, power 2, centred
frames), since that is what the speaker encoder was trained on.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SENTENCES",
    "VOICES",
    "Note",
    "SpeechStream",
    "espeak_available",
    "mel_power",
    "notes_window",
    "speak",
    "speech_stream",
]

SENTENCES = (
    "The package was built and checked on every target.",
    "Please read the numbers back to me slowly.",
    "Seven boxes of apples arrived on Tuesday morning.",
    "Turn left at the second light and park near the gate.",
    "The weather report says rain will clear by noon.",
    "She measured the latency twice before the release.",
    "Open the window, the room is getting warm.",
    "Our train leaves at half past nine from platform four.",
    "Every artifact records where it was measured.",
    "He wrote the invoice total at the bottom of the page.",
    "A quiet voice is still a voice.",
    "Bring the blue folder and the signed contract.",
)
# espeak-ng voices (language + variant) that sound like different speakers
VOICES = ("en-us", "en-us+f3", "en-gb+m3", "en+f5")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", rate: int = 16000, speed: int = 160) -> np.ndarray:
    """espeak-ng's rendering of `text`, mono float32 in [-1, 1] at `rate` Hz."""
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(out)) as w:
            source_rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = pcm.astype(np.float32) / 32768.0
    g = np.gcd(rate, source_rate)
    return resample_poly(audio, rate // g, source_rate // g).astype(np.float32)


@dataclass(frozen=True)
class SpeechStream:
    """Audio at `rate` Hz with the sample spans [start, end) where an utterance was placed."""

    audio: np.ndarray
    rate: int
    speech: tuple[tuple[int, int], ...]


def _trim(audio: np.ndarray, level: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > level)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def speech_stream(seed: int, utterances: int = 3, rate: int = 16000) -> SpeechStream:
    """Quiet noise (about -50 dBFS) with `utterances` sentences by varying voices placed in
    it, 0.8-1.6 s apart; reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for i in range(utterances):
        gap = np.zeros(int(rate * rng.uniform(0.8, 1.6)), dtype=np.float32)
        sentence = SENTENCES[int(rng.integers(len(SENTENCES)))]
        voice = VOICES[(seed + i) % len(VOICES)]
        said = _trim(speak(sentence, voice, rate)) * float(rng.uniform(0.4, 0.9))
        parts += [gap, said]
        spans.append((pos + len(gap), pos + len(gap) + len(said)))
        pos += len(gap) + len(said)
    parts.append(np.zeros(int(rate * 0.8), dtype=np.float32))
    audio = np.concatenate(parts)
    audio = audio + rng.normal(0.0, 0.003, size=audio.shape).astype(np.float32)
    return SpeechStream(audio.astype(np.float32), rate, tuple(spans))


@dataclass(frozen=True)
class Note:
    midi: int
    start_s: float
    end_s: float


def _tone(midi: int, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    partials = sum(
        (0.6**k) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(6) if f0 * (k + 1) < rate / 2
    )
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * 1.5)
    return (partials * envelope).astype(np.float32)


def notes_window(
    seed: int, samples: int = 43844, rate: int = 22050
) -> tuple[np.ndarray, list[Note]]:
    """One basic-pitch input window (~2 s at 22050 Hz): two chords of 1-3 notes in a row,
    MIDI 48-84, with a little noise; returns the audio and the notes played."""
    rng = np.random.default_rng(seed)
    audio = np.zeros(samples, dtype=np.float32)
    notes: list[Note] = []
    for start_s, end_s in ((0.1, 0.95), (1.05, 1.9)):
        root = int(rng.integers(48, 76))
        chord = sorted(
            {root, *(root + int(s) for s in rng.choice([3, 4, 7, 12], int(rng.integers(0, 3))))}
        )
        begin = int(start_s * rate)
        for midi in chord:
            tone = _tone(midi, end_s - start_s, rate)
            audio[begin : begin + len(tone)] += tone / len(chord)
            notes.append(Note(midi, start_s, end_s))
    audio += rng.normal(0.0, 0.002, size=samples).astype(np.float32)
    return (0.5 * audio / max(1e-6, float(np.abs(audio).max()))).astype(np.float32), notes


def _mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style mel filterbank with area normalization (librosa's defaults)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    fft_freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(rate / 2)), n_mels + 2)
    )
    lower = (fft_freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_freqs[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def mel_power(
    audio: np.ndarray, rate: int = 16000, win_ms: int = 25, hop_ms: int = 10, n_mels: int = 40
) -> np.ndarray:
    """Mel power spectrogram [frames, n_mels] (not log), centred Hann frames."""
    n_fft = rate * win_ms // 1000
    hop = rate * hop_ms // 1000
    padded = np.pad(audio, n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    window = np.hanning(n_fft + 1)[:-1]  # periodic, as scipy's get_window("hann")
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    return (power @ _mel_filters(rate, n_fft, n_mels).T).astype(np.float32)
