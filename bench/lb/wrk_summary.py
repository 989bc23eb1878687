"""Reads wrk --latency output on stdin; prints NAME req/s p50_ms p99_ms MB/s (one line)."""
import re
import sys

text = sys.stdin.read()


def ms(label):
    m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def rate():
    m = re.search(r"^Transfer/sec:\s+([\d.]+)([KMG]?B)", text, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[m.group(2)]


rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
errors = re.search(r"^\s+Non-2xx or 3xx responses: (\d+)", text, re.M)
socket_errors = re.search(r"Socket errors: (.*)$", text, re.M)
note = ""
if errors:
    note += f" non2xx={errors.group(1)}"
if socket_errors:
    note += f" socket_errors=[{socket_errors.group(1)}]"
print(f"{sys.argv[1]} {float(rps.group(1)) if rps else float('nan'):.0f} {ms(50):.3f} {ms(99):.3f} {rate():.1f}{note}")
