from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nf.twamp.timestamps import UNKNOWN_ERROR, ErrorEstimate, decode_timestamp, encode_timestamp


def test_after_the_2036_era_wrap() -> None:
    t = 2_085_978_496.5  # past 2036-02-07, NTP seconds wrap to era 1
    assert encode_timestamp(t)[:4] == (2_085_978_496 + 2_208_988_800 - 2**32).to_bytes(4, "big")
    assert decode_timestamp(encode_timestamp(t)) == t


def test_unix_epoch_is_ntp_2208988800() -> None:
    assert encode_timestamp(0.0) == (2_208_988_800).to_bytes(4, "big") + bytes(4)
    assert encode_timestamp(1.5)[4:] == (2**31).to_bytes(4, "big")


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_timestamp_round_trip_within_one_fraction_unit(t: float) -> None:
    assert abs(decode_timestamp(encode_timestamp(t)) - t) < 2**-31 + abs(t) * 1e-15 + 1e-6


@given(st.booleans(), st.integers(0, 63), st.integers(0, 255))
def test_error_estimate_round_trip(sync: bool, scale: int, mult: int) -> None:
    ee = ErrorEstimate(sync, scale, mult)
    assert ErrorEstimate.decode(ee.encode()) == ee


def test_error_estimate_bits() -> None:
    assert ErrorEstimate(True, 0, 1).encode() == b"\x80\x01"
    assert UNKNOWN_ERROR.encode() == b"\x3f\xff"


@given(st.floats(min_value=1e-9, max_value=1000.0))
def test_from_seconds_covers_the_error(error: float) -> None:
    ee = ErrorEstimate.from_seconds(error, True)
    assert 1 <= ee.multiplier <= 255
    assert ee.seconds >= error
    assert ee.seconds < 2 * error + 2**-32
