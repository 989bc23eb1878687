"""RunTask to RUNNING as a client sees it, against `podman run --rm` of the same cached image.

Usage (bench/runtask_running.sh sets all of this up):
    runtask_running.py ENDPOINT DATA_DIR IMAGE N
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the server's), BENCH_SUBNET (a subnet
for RunTask), BENCH_PODMAN (the podman command with its global flags, space separated) and
BENCH_PODMAN_PREFIX (container name prefix, so that the script's exit trap can remove them).

Flotilla, per round: boto3 RunTask of a busybox task whose container prints `ready` and then
waits for SIGTERM; the clock starts just before the RunTask request is sent. DescribeTasks is
then called in a loop with a 2 ms sleep between calls; "RUNNING" is the moment the response of
the first call showing lastStatus RUNNING arrives. "first line" is the `t` of the first line in
the container's `log.jsonl` (epoch ms, stamped by the shim as it reads the line from the
container's FIFO): that stamp is taken on the task's side whatever the client does, so it costs
the task nothing and does not depend on when this driver looks (it reads the file once RUNNING
has been seen, so as not to slow the DescribeTasks loop). Then StopTask and wait for STOPPED
(exit code 0).
podman, per round: `podman run --rm --network none --pull never IMAGE <same command>`, from just
before the spawn to the first stdout line read from the podman process; then `podman stop -t 2`
(SIGTERM, which the command's trap turns into exit 0, as StopTask does) and wait for
`podman run` to exit, having removed the container.
Rounds are interleaved (Flotilla, then podman), after one warm-up round of each.
"""

import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time

import boto3
from botocore.config import Config

# The trap goes first: the shell is its PID namespace's init, which the kernel does not let a
# SIGTERM kill without a handler, so a stop that came between the line and the trap would be
# lost and end in SIGKILL.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"]
POLL_S = 0.002
DEADLINE_S = 60.0


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(v, p):
    """Nearest rank, as bench/src/lib.rs computes it."""
    s = sorted(v)
    rank = min(max(math.ceil(p * len(s)), 1), len(s))
    return s[rank - 1]


def ecs_client(endpoint):
    # No retries: a failed call must fail the benchmark, not hide inside a figure.
    return boto3.client(
        "ecs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def register(ecs, image, family="bench-runtask-running", command=COMMAND, cluster="default"):
    """The cluster and a one-container awsvpc task definition of `image` running `command`."""
    ecs.create_cluster(clusterName=cluster)
    out = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": "main", "image": image, "essential": True, "command": command, "stopTimeout": 2}
        ],
    )
    return out["taskDefinition"]["taskDefinitionArn"]


def first_log_t(path):
    """Epoch seconds of the first line of a container's log.jsonl, or None before it exists."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if not first.endswith(b"\n"):
        return None
    return json.loads(first)["t"] / 1000.0


def wait_stopped(ecs, arn):
    deadline = time.monotonic() + DEADLINE_S
    while True:
        task = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
        if task["lastStatus"] == "STOPPED":
            return task
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {arn} not STOPPED after {DEADLINE_S} s: {task['lastStatus']}")
        time.sleep(0.02)


def flotilla_round(ecs, data_dir, td):
    """Returns a dict of ms figures, all from the moment RunTask was sent."""
    subnet = os.environ["BENCH_SUBNET"]
    sent = time.time()
    out = ecs.run_task(
        cluster="default",
        taskDefinition=td,
        launchType="FARGATE",
        count=1,
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}},
    )
    returned = time.time()
    if out.get("failures") or len(out["tasks"]) != 1:
        raise RuntimeError(f"RunTask: {out}")
    arn = out["tasks"][0]["taskArn"]
    log = os.path.join(data_dir, "tasks", arn.rsplit("/", 1)[1], "containers", "main", "log.jsonl")
    polls, poll_ms = 0, []
    line_t = None
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            p0 = time.time()
            task = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
            seen = time.time()
            polls += 1
            poll_ms.append((seen - p0) * 1000)
            if task["lastStatus"] == "RUNNING":
                break
            if task["lastStatus"] == "STOPPED":
                raise RuntimeError(f"task stopped before RUNNING: {task}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"task not RUNNING after {DEADLINE_S} s: {task['lastStatus']}")
            time.sleep(POLL_S)
        while line_t is None:
            line_t = first_log_t(log)
            if line_t is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no first line in {log} after {DEADLINE_S} s")
                time.sleep(0.001)
    finally:
        # Stopped whatever happened above, so that a failed round leaves no task behind.
        ecs.stop_task(cluster="default", task=arn)
    stopped = wait_stopped(ecs, arn)
    code = stopped["containers"][0].get("exitCode")
    if code != 0:
        raise RuntimeError(f"task {arn} exited {code}, wanted 0 (the command's TERM trap): {stopped}")

    def stamp(field):
        # The task's own timestamps (the server's record of each step), for the breakdown.
        v = task.get(field)
        return (v.timestamp() - sent) * 1000 if v is not None else float("nan")

    return {
        "running": (seen - sent) * 1000,
        "line": (line_t - sent) * 1000,
        "line_after_response": (line_t - returned) * 1000,
        "api": (returned - sent) * 1000,
        "polls": polls,
        "poll_ms": median(poll_ms),
        "createdAt": stamp("createdAt"),
        "pullStartedAt": stamp("pullStartedAt"),
        "pullStoppedAt": stamp("pullStoppedAt"),
        "startedAt": stamp("startedAt"),
    }


def podman_ulimits():
    """`--ulimit` flags podman can apply on this machine.

    As root podman gives a container nofile and nproc of 1048576 unless told otherwise, and
    runc init then fails (EPERM) where the hard limits are lower, as on these machines (nofile
    20000 even for root). podman's own processes, and so runc init, run with nofile at the hard
    limit and nproc at most kernel.pid_max (32768 here): give the container exactly those.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    if nproc == resource.RLIM_INFINITY or nproc > pid_max:
        nproc = pid_max
    if nofile == resource.RLIM_INFINITY:
        nofile = 1048576
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def podman_round(podman, image, name):
    run = ["run", "--rm", "--network", "none", "--pull", "never", *podman_ulimits(), "--name", name, image]
    t0 = time.monotonic()
    p = subprocess.Popen(
        podman + run + COMMAND,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    first = p.stdout.readline()
    elapsed = (time.monotonic() - t0) * 1000
    # Stopped as StopTask stops a task: SIGTERM (the command's trap exits 0), SIGKILL after 2 s.
    # Not by signalling `podman run` itself: it proxies signals only once its attach is set
    # up, which can be after the first line; one run in a few then never exited.
    stop = subprocess.run(podman + ["stop", "-t", "2", name], stdout=subprocess.DEVNULL, check=False)
    try:
        code = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        code = None
    if code is None or stop.returncode != 0:
        subprocess.run(podman + ["rm", "-f", name], stdout=subprocess.DEVNULL, check=False)
        raise RuntimeError(f"podman run {name} did not stop (podman stop exited {stop.returncode})")
    if first.strip() != b"ready" or code != 0:
        raise RuntimeError(f"podman run {name} printed {first!r} and exited {code}")
    return elapsed


def row(name, v):
    print(
        f"{name:<34} {len(v):>3} {median(v):>8.1f} {percentile(v, 0.9):>8.1f} "
        f"{percentile(v, 0.0):>8.1f} {percentile(v, 1.0):>8.1f}"
    )


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: runtask_running.py ENDPOINT DATA_DIR IMAGE N")
    endpoint, data_dir, image, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    podman = shlex.split(os.environ["BENCH_PODMAN"])
    prefix = os.environ.get("BENCH_PODMAN_PREFIX") or f"flotilla-bench-{os.getpid()}"
    ecs = ecs_client(endpoint)
    td = register(ecs, image)

    # Warm-up: Flotilla's image cache and page cache, boto3's loaded models and connection,
    # podman's binary and storage.
    flotilla_round(ecs, data_dir, td)
    podman_round(podman, image, f"{prefix}-warm")

    fl, pm = [], []
    for i in range(n):
        fl.append(flotilla_round(ecs, data_dir, td))
        pm.append(podman_round(podman, image, f"{prefix}-{i}"))

    col = lambda k: [r[k] for r in fl]  # noqa: E731
    running, line = col("running"), col("line")
    print(f"RunTask to RUNNING as a client sees it, ms (N={n}, rounds interleaved; 0.25 vCPU task)")
    print(f"{'':<34} {'n':>3} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}")
    row("flotilla RunTask -> RUNNING seen", running)
    row("flotilla RunTask -> first line", line)
    row("podman run --rm -> first line", pm)
    r_pm, r_line = median(running) / median(pm), median(running) / median(line)
    print(
        f"ratio RUNNING/podman first line: median {r_pm:.2f}x, p90 {percentile(running, 0.9) / percentile(pm, 0.9):.2f}x"
    )
    print(
        f"ratio RUNNING/Flotilla's own first line: median {r_line:.2f}x, "
        f"p90 {percentile(running, 0.9) / percentile(line, 0.9):.2f}x"
    )
    met = median(running) < 50 and r_line <= 1.5
    print(
        f"target (median RUNNING under 50 ms, within 1.5x of the first line): {'met' if met else 'NOT met'} "
        f"({median(running):.1f} ms, {r_line:.2f}x)"
    )
    print(
        f"client's view: DescribeTasks round trip median {median(col('poll_ms')):.1f} ms, "
        f"{median(col('polls')):.0f} polls per round, one every {median([r['running'] / r['polls'] for r in fl]):.1f} ms "
        f"(2 ms sleep between them); "
        f"RunTask request itself {median(col('api')):.1f} ms; "
        f"first line after the RunTask response {median(col('line_after_response')):.1f} ms"
    )
    print()
    print("the task's own timestamps, ms after RunTask was sent (server clock, ms resolution), median:")
    for k in ("createdAt", "pullStartedAt", "pullStoppedAt", "line", "startedAt", "running"):
        label = {"line": "first line stamped (log.jsonl t)", "running": "RUNNING seen by the client"}.get(k, k)
        print(f"  {label:<34} {median(col(k)):>8.1f}")


if __name__ == "__main__":
    main()
