"""Human-readable counts (no TensorFlow import, so `cnnbuilder list` stays fast)."""


def format_count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))
