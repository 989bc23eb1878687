"""From a service task's death to its replacement RUNNING, against podman's --restart=always.

Usage (bench/service_recovery.sh sets all of this up):
    service_recovery.py ENDPOINT DATA_DIR IMAGE N
Environment: as bench/runtask_running.py (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, BENCH_SUBNET,
BENCH_PODMAN, BENCH_PODMAN_PREFIX).

Flotilla: one service of desiredCount 1 whose busybox task runs `sleep`. Per round, with the
service steady (one task RUNNING, runningCount 1, pendingCount 0): read the container's host
PID from the task's `state.json` (the shim's record), SIGKILL it from the host; the clock starts
just before the kill. Then ListTasks (serviceName, desiredStatus RUNNING) and DescribeTasks of
any task other than the killed one, in a loop with a 1 ms sleep; "RUNNING seen" is when the
response of the first call that shows the replacement RUNNING arrives. "container started" is
the shim's `startedAt` stamp (epoch ms) in the replacement's `state.json`, read afterwards.
podman: `podman run -d --restart=always` of the same image and command; per round SIGKILL its
process (`State.Pid`) from the host; "restart seen" is when `podman inspect` (polled with a 1 ms
sleep) first shows a different State.Pid with State.Running true; "restarted" is the new
`State.StartedAt` podman recorded, read from that same inspect.
Rounds are interleaved (Flotilla, then podman), after one warm-up kill of each. The service is
scaled to 0 and deleted at the end, whatever happened.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from runtask_running import ecs_client, median, percentile, podman_ulimits, register, row

CLUSTER = "default"
SERVICE = "bench-recovery"
COMMAND = ["sleep", "1000000"]
POLL_S = 0.001
DEADLINE_S = 60.0


def deadline_passed(start, what):
    if time.monotonic() - start > DEADLINE_S:
        raise RuntimeError(f"{what} after {DEADLINE_S} s")


def create_service(ecs, image):
    td = register(ecs, image, family="bench-service-recovery", command=COMMAND, cluster=CLUSTER)
    ecs.create_service(
        cluster=CLUSTER,
        serviceName=SERVICE,
        taskDefinition=td,
        desiredCount=1,
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [os.environ["BENCH_SUBNET"]]}},
    )


def remove_service(ecs):
    """Scale to 0 and delete, then wait until the service's tasks are all STOPPED."""
    ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=0)
    ecs.delete_service(cluster=CLUSTER, service=SERVICE, force=True)
    start = time.monotonic()
    while ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"]:
        deadline_passed(start, "service tasks still not stopping")
        time.sleep(0.05)
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="STOPPED")["taskArns"]
    while arns:
        tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=arns[:100])["tasks"]
        if all(t["lastStatus"] == "STOPPED" for t in tasks):
            arns = arns[100:]
            continue
        deadline_passed(start, "service tasks not STOPPED")
        time.sleep(0.05)


def replacement(ecs, exclude):
    """The service's RUNNING task that is not in `exclude`, or None."""
    arns = [a for a in ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"]
            if a not in exclude]
    if not arns:
        return None
    return next((t for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"),
                None)


def wait_steady(ecs, exclude):
    """Waits until the service runs exactly one task, not in `exclude`, and counts it; returns it."""
    start = time.monotonic()
    while True:
        task = replacement(ecs, exclude)
        if task is not None:
            svc = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
            live = ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"]
            if svc["runningCount"] == 1 and svc["pendingCount"] == 0 and live == [task["taskArn"]]:
                return task
        deadline_passed(start, "service not steady")
        time.sleep(0.01)


def container_state(data_dir, arn):
    """The `main` container's record in the task's state.json (the shim's), once it has a PID."""
    path = os.path.join(data_dir, "tasks", arn.rsplit("/", 1)[1], "state.json")
    start = time.monotonic()
    while True:
        try:
            with open(path) as f:
                state = json.load(f)
            main = next(c for c in state["containers"] if c["name"] == "main")
            if main.get("pid"):
                return main
        except (FileNotFoundError, json.JSONDecodeError, StopIteration):
            pass
        deadline_passed(start, f"no container PID in {path}")
        time.sleep(0.005)


def wait_stopped(ecs, arn):
    start = time.monotonic()
    while True:
        task = ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
        if task["lastStatus"] == "STOPPED":
            return task
        deadline_passed(start, f"killed task {arn} not STOPPED")
        time.sleep(0.01)


def flotilla_round(ecs, data_dir, task):
    """Kills `task`'s container; returns (ms figures from the kill, the replacement task)."""
    old = task["taskArn"]
    pid = container_state(data_dir, old)["pid"]
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    start, polls = time.monotonic(), 0
    while True:
        new = replacement(ecs, {old})
        polls += 1
        if new is not None:
            seen = time.time()
            break
        deadline_passed(start, "no replacement RUNNING")
        time.sleep(POLL_S)
    if new.get("group") != f"service:{SERVICE}" or not new.get("startedBy", "").startswith("ecs-svc/"):
        raise RuntimeError(f"replacement is not the service's task: {new}")
    container = container_state(data_dir, new["taskArn"])
    stopped = wait_stopped(ecs, old)
    wait_steady(ecs, {old})

    def ms(t):
        return (t - killed) * 1000 if t is not None else float("nan")

    def stamp(task, field):
        v = task.get(field)
        return ms(v.timestamp()) if v is not None else float("nan")

    started = ms(container["startedAt"] / 1000.0) if container.get("startedAt") else float("nan")
    figures = {
        "running": ms(seen),
        "container": started,
        "polls": polls,
        "old executionStoppedAt": stamp(stopped, "executionStoppedAt"),
        "old stoppedAt": stamp(stopped, "stoppedAt"),
        "new createdAt": stamp(new, "createdAt"),
        "new pullStartedAt": stamp(new, "pullStartedAt"),
        "new container started (shim)": started,
        "new startedAt": stamp(new, "startedAt"),
        "RUNNING seen by the client": ms(seen),
    }
    return figures, new


def podman_inspect(podman, name):
    out = subprocess.run(
        podman + ["inspect", "--format", "{{.State.Pid}} {{.State.Running}} {{.State.StartedAt.UnixNano}}", name],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    ).stdout.split()
    return int(out[0]), out[1] == "true", int(out[2]) / 1e9


def podman_start(podman, image, name):
    run = ["run", "-d", "--restart=always", "--network", "none", "--pull", "never", *podman_ulimits(), "--name", name]
    subprocess.run(podman + run + [image] + COMMAND, stdout=subprocess.DEVNULL, check=True)
    pid, running, _ = podman_inspect(podman, name)
    if not running or pid <= 0:
        raise RuntimeError(f"podman container {name} is not running")
    return pid


def podman_round(podman, name, pid):
    """SIGKILLs the container's process; returns (ms figures from the kill, the new PID)."""
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    start, polls = time.monotonic(), 0
    while True:
        new_pid, running, started = podman_inspect(podman, name)
        polls += 1
        if running and new_pid > 0 and new_pid != pid:
            seen = time.time()
            break
        deadline_passed(start, f"podman did not restart {name}")
        time.sleep(POLL_S)
    return {"seen": (seen - killed) * 1000, "started": (started - killed) * 1000, "polls": polls}, new_pid


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: service_recovery.py ENDPOINT DATA_DIR IMAGE N")
    endpoint, data_dir, image, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    podman = shlex.split(os.environ["BENCH_PODMAN"])
    name = f"{os.environ.get('BENCH_PODMAN_PREFIX') or f'flotilla-bench-{os.getpid()}'}-restart"
    ecs = ecs_client(endpoint)

    create_service(ecs, image)
    fl, pm = [], []
    try:
        task = wait_steady(ecs, set())
        pid = podman_start(podman, image, name)
        # Warm-up: a first replacement and a first restart, not counted.
        _, task = flotilla_round(ecs, data_dir, task)
        _, pid = podman_round(podman, name, pid)
        for _ in range(n):
            figures, task = flotilla_round(ecs, data_dir, task)
            fl.append(figures)
            figures, pid = podman_round(podman, name, pid)
            pm.append(figures)
    finally:
        remove_service(ecs)
        subprocess.run(podman + ["rm", "-f", "-t", "0", name], stdout=subprocess.DEVNULL, check=False)

    running, container = [r["running"] for r in fl], [r["container"] for r in fl]
    seen, started = [r["seen"] for r in pm], [r["started"] for r in pm]
    print(f"Service task killed (SIGKILL from the host) to its replacement running, ms (N={n}, rounds interleaved)")
    print(f"{'':<34} {'n':>3} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}")
    row("flotilla kill -> RUNNING seen", running)
    row("flotilla kill -> container started", container)
    row("podman kill -> restart seen", seen)
    row("podman kill -> State.StartedAt", started)
    print(
        f"ratio flotilla RUNNING seen / podman restart seen: median {median(running) / median(seen):.2f}x, "
        f"p90 {percentile(running, 0.9) / percentile(seen, 0.9):.2f}x"
    )
    print(
        f"ratio flotilla container started / podman StartedAt: median {median(container) / median(started):.2f}x, "
        f"p90 {percentile(container, 0.9) / percentile(started, 0.9):.2f}x"
    )
    met = median(running) < 500
    verdict = "met" if met else "NOT met"
    print(f"target (median kill -> replacement RUNNING under 500 ms): {verdict} ({median(running):.1f} ms)")
    print(
        f"client's view: {median([r['polls'] for r in fl]):.0f} ListTasks(+DescribeTasks) polls per Flotilla round, "
        f"{median([r['polls'] for r in pm]):.0f} podman inspects per podman round"
    )
    print()
    print("Flotilla's own timestamps, ms after the kill (server clock, ms resolution), median:")
    for k in ("old executionStoppedAt", "old stoppedAt", "new createdAt", "new pullStartedAt",
              "new container started (shim)", "new startedAt", "RUNNING seen by the client"):
        print(f"  {k:<34} {median([r[k] for r in fl]):>8.1f}")


if __name__ == "__main__":
    main()
