"""A small bank of synthesized room impulse responses, made once per training run (seeded).

pyroomacoustics' image-source method in shoebox rooms (absorption and reflection order from Sabine's formula
via ``inverse_sabine``). Sabine's formula is only approximate for the image-source model (its decay came out
up to ~25 % off the asked reverberation time here), so each response's decay is set to the asked RT60 by an
exponential envelope: its RT60 is read from its Schroeder curve (-5 to -25 dB) and the amplitude multiplied by
``exp(-6.91 t (1/T_asked - 1/T_read))``. Responses start at the direct sound (no propagation delay) and end
60 dB down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astedge.errors import UserError

#: Room sizes drawn (metres: length, width, height), source and microphone at least this far from any wall.
ROOM_LOW, ROOM_HIGH, WALL_GAP = (3.0, 3.0, 2.4), (8.0, 6.0, 3.5), 0.5


@dataclass(frozen=True)
class RoomBank:
    responses: list[np.ndarray]  # float32 impulse responses at the bank's rate, unit energy
    rt60: list[float]  # the reverberation time asked of each (seconds)
    rooms: list[tuple[float, float, float]]  # their sizes (metres)


def schroeder_rt60(response: np.ndarray, rate: int, top_db: float = -5.0, bottom_db: float = -25.0) -> float:
    """Reverberation time from the energy decay curve's slope between `top_db` and `bottom_db` (T20 x 3)."""
    energy = np.cumsum(np.asarray(response, np.float64)[::-1] ** 2)[::-1]
    curve = 10 * np.log10(np.maximum(energy / energy[0], 1e-30))
    start, stop = int(np.argmax(curve <= top_db)), int(np.argmax(curve <= bottom_db))
    if stop <= start + 1:
        return 0.0
    slope = np.polyfit(np.arange(start, stop) / rate, curve[start:stop], 1)[0]
    return float(-60.0 / slope) if slope < 0 else float("inf")


def room_response(rt60: float, size: np.ndarray, source: np.ndarray, mic: np.ndarray, rate: int) -> np.ndarray:
    """One shoebox room's impulse response with the decay of `rt60` seconds, from the direct sound to -60 dB."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(rt60, size)
    room = pra.ShoeBox(size, fs=rate, materials=pra.Material(absorption), max_order=order)
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    response = np.asarray(room.rir[0][0], np.float64)
    lead = pra.constants.get("frac_delay_length") // 2  # the direct sound's fractional-delay filter, half of it
    response = response[max(0, int(np.argmax(np.abs(response))) - lead):]
    measured = schroeder_rt60(response, rate)
    if 0 < measured < np.inf:
        response *= np.exp(-6.907755 * np.arange(len(response)) / rate * (1.0 / rt60 - 1.0 / measured))
    energy = np.cumsum(response[::-1] ** 2)[::-1]
    response = response[: max(1, int(np.argmax(energy <= energy[0] * 1e-6)))]
    return (response / np.sqrt(np.sum(response**2))).astype(np.float32)


def synthesize_rooms(count: int, rt60_range: tuple[float, float], rate: int, seed: int = 0) -> RoomBank:
    """`count` rooms of reverberation times uniform in `rt60_range`, sizes, source and microphone places drawn
    from `seed` (the same seed, the same bank). A room too large for its RT60 is shrunk until Sabine allows it."""
    rng = np.random.default_rng([seed, 0x5257])
    responses, times, sizes = [], [], []
    for _ in range(count):
        rt60 = float(rng.uniform(*rt60_range))
        size = rng.uniform(ROOM_LOW, ROOM_HIGH)
        places = rng.uniform(0, 1, (2, 3))
        while True:
            try:
                inner = size - 2 * WALL_GAP
                response = room_response(rt60, size, WALL_GAP + places[0] * inner, WALL_GAP + places[1] * inner, rate)
                break
            except ValueError:  # inverse_sabine: the room is too large for so short a reverberation
                size = size * 0.8
                if size.min() < 3 * WALL_GAP:
                    raise UserError(f"no room reverberates as briefly as {rt60:.2f} s: raise augment.rt60") from None
        responses.append(response)
        times.append(rt60)
        sizes.append(tuple(float(v) for v in size))
    return RoomBank(responses, times, sizes)
