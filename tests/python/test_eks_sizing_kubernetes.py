"""EKS on Fargate's pod sizing, through the real Kubernetes Python client: pods created in a
Fargate profile's namespace of a cluster `aws eks create-cluster` launched (the real 1.20 API
server and controller manager) are annotated with the size Fargate provisions for them, per
AWS's rules: the largest init container against the sum of the app containers, requests (or
limits where only limits are given), plus 256 MB, rounded up to the next Fargate size.

The pods run on simulated hosts (`--simulated-hosts`): the scheduler does everything it does for
a real pod (size, task, address, node, binding, annotation) while the tasks' containers only
pretend, which is all the sizing needs.
"""
import base64
import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import ACCESS_KEY, ROOT, SECRET_KEY, Server, free_port

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402

NS = "sizing"
TRUST = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
})


def kube_binaries():
    tools = [os.environ.get("FLOTILLA_KUBE_TOOLS"), os.path.join(ROOT, "..", "shared", "tools", "kubernetes"),
             "/work/shared/tools/kubernetes"]
    for t in tools:
        if t and os.path.exists(os.path.join(t, "unpack.sh")):
            return subprocess.run(["bash", os.path.join(t, "unpack.sh")], check=True, capture_output=True,
                                  text=True).stdout.strip()
    pytest.fail(f"no Kubernetes tools (unpack.sh) in any of {tools}; set FLOTILLA_KUBE_TOOLS")


def wait(what, seconds, check):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    server = Server("--simulated-hosts", "3", "--kubernetes-bin", kube_binaries(),
                    "--eks-webhook-listen", f"127.0.0.1:{free_port()}")
    eks = server.client("eks")
    try:
        role = server.client("iam").create_role(RoleName="eks", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
        subnets, zones = [], set()
        for s in server.client("ec2").describe_subnets()["Subnets"]:
            if s["AvailabilityZone"] not in zones:
                zones.add(s["AvailabilityZone"])
                subnets.append(s["SubnetId"])
        eks.create_cluster(name="sizing", roleArn=role, resourcesVpcConfig={"subnetIds": subnets[:2]})

        def active():
            c = eks.describe_cluster(name="sizing")["cluster"]
            assert c["status"] != "FAILED", c.get("health")
            return c if c["status"] == "ACTIVE" else None

        described = wait("the cluster to be ACTIVE", 240, active)
        eks.create_fargate_profile(clusterName="sizing", fargateProfileName="fp", podExecutionRoleArn=role,
                                   selectors=[{"namespace": NS}])
        wait("the profile to be ACTIVE", 60, lambda: eks.describe_fargate_profile(
            clusterName="sizing", fargateProfileName="fp")["fargateProfile"]["status"] == "ACTIVE")
        # `aws eks get-token`, as kubectl's exec plugin runs it: Flotilla verifies the token.
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        env.pop("AWS_PROFILE", None)
        token = json.loads(subprocess.run(["aws", "eks", "get-token", "--cluster-name", "sizing"], env=env,
                                          check=True, capture_output=True, text=True).stdout)["status"]["token"]
        ca = tempfile.NamedTemporaryFile(suffix=".crt", delete=False)
        ca.write(base64.b64decode(described["certificateAuthority"]["data"]))
        ca.close()
        config = k8s.Configuration()
        config.host = described["endpoint"]
        config.ssl_ca_cert = ca.name
        config.api_key = {"authorization": "Bearer " + token}
        api = k8s.CoreV1Api(k8s.ApiClient(config))
        api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
        # Pods are admitted once the controller manager has made the namespace's service account
        # and (Kubernetes 1.20) its token.
        wait("the namespace's default service account and its token", 60,
             lambda: any(a.metadata.name == "default" and a.secrets
                         for a in api.list_namespaced_service_account(NS).items))
        yield api
    finally:
        try:
            for p in eks.list_fargate_profiles(clusterName="sizing")["fargateProfileNames"]:
                eks.delete_fargate_profile(clusterName="sizing", fargateProfileName=p)
            wait("the profiles to go", 60, lambda: not eks.list_fargate_profiles(clusterName="sizing")[
                "fargateProfileNames"])
            eks.delete_cluster(name="sizing")
            wait("the cluster to go", 60, lambda: "sizing" not in eks.list_clusters()["clusters"])
        finally:
            server.stop()


def container(name, requests=None, limits=None):
    return k8s.V1Container(name=name, image="busybox", command=["sleep", "3600"],
                           resources=k8s.V1ResourceRequirements(requests=requests, limits=limits))


def provisioned(api, name, containers, init_containers=None):
    """Creates the pod and returns the size Fargate provisioned for it."""
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name, namespace=NS),
                    spec=k8s.V1PodSpec(containers=containers, init_containers=init_containers,
                                       termination_grace_period_seconds=0))
    api.create_namespaced_pod(NS, pod)

    def annotated():
        p = api.read_namespaced_pod(name, NS)
        assert p.spec.scheduler_name == "fargate-scheduler", "the profile's admission did not hand it over"
        return (p.metadata.annotations or {}).get("CapacityProvisioned")

    size = wait(f"{name}'s CapacityProvisioned", 90, annotated)
    api.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    return size


# Each case: AWS's rule, the pod, and what Fargate provisions.
CASES = [
    # Nothing asked: the smallest size.
    ("no-requests", [container("app")], None, "0.25vCPU 0.5GB"),
    # FARGATE.md's example: 2 vCPU / 4 GB is a size, but 256 MB more needs the next memory step.
    ("two-vcpu", [container("app", {"cpu": "2", "memory": "3584Mi"})], None, "2vCPU 4GB"),
    # App containers add up (a sidecar counts): 0.5 vCPU, 512Mi + 256Mi -> 1 GB.
    ("sidecar", [container("app", {"cpu": "250m", "memory": "256Mi"}),
                 container("proxy", {"cpu": "250m", "memory": "256Mi"})], None, "0.5vCPU 1GB"),
    # The largest init container wins when it is larger than the app's sum.
    ("init-larger", [container("app", {"cpu": "250m", "memory": "512Mi"})],
     [container("migrate", {"cpu": "2", "memory": "4Gi"})], "2vCPU 5GB"),
    # ...and the app's sum wins when the init containers are smaller (max, not sum, of inits).
    ("init-smaller", [container("app", {"cpu": "1", "memory": "2Gi"})],
     [container("a", {"cpu": "500m", "memory": "1Gi"}), container("b", {"cpu": "500m", "memory": "1Gi"})],
     "1vCPU 3GB"),
    # Limits without requests: Kubernetes makes the requests equal to the limits.
    ("limits-only", [container("app", None, {"cpu": "1", "memory": "1Gi"})], None, "1vCPU 2GB"),
    # Requests below limits: requests decide.
    ("requests-under-limits", [container("app", {"cpu": "250m", "memory": "256Mi"}, {"cpu": "2", "memory": "4Gi"})],
     None, "0.25vCPU 0.5GB"),
    # AWS's doc example: 1 vCPU and 8 GB need 8.25 GB, beyond 1 vCPU's largest memory: 2 vCPU.
    ("memory-bound", [container("app", {"cpu": "1", "memory": "8Gi"})], None, "2vCPU 9GB"),
]


@pytest.mark.parametrize("name,containers,inits,expected", CASES, ids=[c[0] for c in CASES])
def test_pods_are_provisioned_at_fargate_s_size(cluster, name, containers, inits, expected):
    assert provisioned(cluster, name, containers, inits) == expected
