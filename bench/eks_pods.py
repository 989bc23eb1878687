"""EKS on Fargate: a Deployment scaled from 0 to N (pods to Running on fargate-ip nodes, as
kubectl sees them) against N RunTasks of the same container (tasks to RUNNING, as
DescribeTasks says), in the same run, rounds interleaved. Driver for bench/eks_pods.sh.

Usage: eks_pods.py ENDPOINT IMAGE SUBNET KUBECONFIG N ROUNDS
"""

import json
import os
import statistics
import subprocess
import sys
import time

import boto3

endpoint, image, subnet, kubeconfig, n, rounds = sys.argv[1:7]
n, rounds = int(n), int(rounds)
NS = "fargate-workload"
ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")


def kubectl(*args):
    out = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {args}: {out.stderr}")
    return out.stdout


def wait(what, check, deadline=600):
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def running_pods():
    pods = json.loads(kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
    return sum(
        1
        for p in pods
        if p["status"].get("phase") == "Running"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        and p["spec"].get("nodeName", "").startswith("fargate-ip-")
    )


def pods_round():
    kubectl("scale", "deployment", "web", "-n", NS, f"--replicas={n}")
    start = time.monotonic()
    wait(f"{n} Running pods", lambda: running_pods() == n)
    took = time.monotonic() - start
    kubectl("scale", "deployment", "web", "-n", NS, "--replicas=0")
    wait("no pods and no fargate nodes", lambda: kubectl("get", "pods", "-n", NS, "-o", "name").strip() == ""
         and "fargate-ip-" not in kubectl("get", "nodes", "-o", "name"))
    return took


ecs.register_task_definition(
    family="bench-eks-peer",
    networkMode="awsvpc",
    requiresCompatibilities=["FARGATE"],
    cpu="256",
    memory="512",
    containerDefinitions=[{"name": "web", "image": image, "essential": True, "stopTimeout": 2,
                           "command": ["sh", "-c", "echo hello; exec sleep 3600"]}],
)
network = {"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}}


def tasks_round():
    start = time.monotonic()
    arns = []
    for _ in range(0, n, 10):
        out = ecs.run_task(cluster="default", taskDefinition="bench-eks-peer", count=min(10, n - len(arns)),
                           launchType="FARGATE", networkConfiguration=network)
        arns += [t["taskArn"] for t in out["tasks"]]

    def all_running():
        statuses = []
        for i in range(0, len(arns), 100):
            statuses += [t["lastStatus"] for t in ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"]]
        return all(s == "RUNNING" for s in statuses)

    wait(f"{n} RUNNING tasks", all_running)
    took = time.monotonic() - start
    for arn in arns:
        ecs.stop_task(cluster="default", task=arn)

    def all_stopped():
        return all(t["lastStatus"] == "STOPPED" for i in range(0, len(arns), 100)
                   for t in ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"])

    wait("tasks STOPPED", all_stopped)
    return took


# Warm-up: the image cached, the first pod through admission and scheduling.
tasks_round_n, n = n, 1
pods_round()
tasks_round()
n = tasks_round_n
pod_times, task_times, ratios = [], [], []
for r in range(rounds):
    t = tasks_round()
    p = pods_round()
    task_times.append(t)
    pod_times.append(p)
    ratios.append(p / t)
    print(f"round {r + 1}: {n} pods to Running {p:.2f}s, {n} RunTasks to RUNNING {t:.2f}s, ratio {p / t:.2f}", flush=True)
print(f"median: pods {statistics.median(pod_times):.2f}s, tasks {statistics.median(task_times):.2f}s, "
      f"pods/tasks ratio {statistics.median(ratios):.2f} (paired per round)")
