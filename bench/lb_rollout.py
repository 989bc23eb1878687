"""Requests failed during rolling deployments behind an application load balancer, and drain time.

Usage (bench/lb_rollout.sh sets all of this up):
    lb_rollout.py ENDPOINT IMAGE CLIENTS ROLLOUTS
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, BENCH_SUBNET (unused: the service spans
the first two default subnets).

Set-up through boto3, as a user would: a security group admitting port 80 from the VPC, an
internet-facing ALB over two zones, an `ip` target group (health check `/`, interval 5 s,
thresholds 2, the default deregistration delay of 300 s), an HTTP listener on a free port of
the load-balancer address (127.0.0.1), a service of 2 tasks of busybox `httpd` whose page names
the revision. Then ROLLOUTS times: CLIENTS threads request `GET /` back to back (a new
connection each, `Connection: close`) while `update-service` rolls to a new revision, until the
deployment is COMPLETED and every answer is the new page; every answer that is not a 200, and
every connection error, is a failure. Meanwhile DescribeTargetHealth is polled every 50 ms: the
drain time of a target is from when it was first seen `draining` to when it was first seen gone.
"""

import http.client
import os
import socket
import statistics
import sys
import threading
import time

import boto3
from botocore.config import Config

CLUSTER = "default"
SERVICE = "bench-rollout"
DEADLINE_S = 300.0


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def web(ecs, image, version):
    script = (
        f"mkdir -p /www && echo '{version}' > /www/index.html && exec httpd -f -p 80 -h /www"
    )
    out = ecs.register_task_definition(
        family="bench-rollout",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{
            "name": "web", "image": image, "essential": True, "command": ["sh", "-c", script],
            "portMappings": [{"containerPort": 80}], "stopTimeout": 2,
        }],
    )
    return out["taskDefinition"]["taskDefinitionArn"]


def wait(what, check, pace=0.1):
    start = time.monotonic()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() - start > DEADLINE_S:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(pace)


def steady(ecs, td):
    s = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    d = s["deployments"]
    return (len(d) == 1 and d[0]["rolloutState"] == "COMPLETED" and d[0]["taskDefinition"] == td
            and s["runningCount"] == 2)


class Load:
    def __init__(self, port, n):
        self.port, self.stop = port, threading.Event()
        self.lock = threading.Lock()
        self.ok, self.failures, self.last = 0, [], {}
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, i):
        while not self.stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                c.request("GET", "/", headers={"Connection": "close"})
                r = c.getresponse()
                body = r.read().decode().strip()
                c.close()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                        self.last[i] = body
                    else:
                        self.failures.append(f"HTTP {r.status}")
            except OSError as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")

    def all_say(self, page):
        with self.lock:
            return len(self.last) == len(self.threads) and all(v == page for v in self.last.values())

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def main():
    endpoint, image, clients, rollouts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ecs, ec2, elb = client("ecs", endpoint), client("ec2", endpoint), client("elbv2", endpoint)
    ecs.create_cluster(clusterName=CLUSTER)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = sorted(ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"],
                     key=lambda s: s["AvailabilityZone"])[:2]
    subnets = [s["SubnetId"] for s in subnets]
    group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "172.31.0.0/16"}]}])
    lb = elb.create_load_balancer(Name="web", Subnets=subnets, SecurityGroups=[group],
                                  Type="application")["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip",
                                 HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                 HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    port = free_port()
    elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=port,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    td = web(ecs, image, "v0")
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=td, desiredCount=2,
                       launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group]}},
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 80}])
    wait("the first deployment", lambda: steady(ecs, td))

    rows = []
    drains = []
    try:
        for n in range(1, rollouts + 1):
            page = f"v{n}"
            td = web(ecs, image, page)
            load = Load(port, clients)
            seen_draining, gone = {}, {}
            start = time.monotonic()
            ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=td)

            def finished():
                now = time.monotonic()
                states = {d["Target"]["Id"]: d["TargetHealth"]["State"]
                          for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]}
                for ip, state in states.items():
                    if state == "draining":
                        seen_draining.setdefault(ip, now)
                for ip in seen_draining:
                    if ip not in states:
                        gone.setdefault(ip, now)
                return steady(ecs, td) and load.all_say(page)

            wait(f"rollout {n}", finished, pace=0.05)
            took = time.monotonic() - start
            load.finish()
            rows.append((n, load.ok, len(load.failures), took, load.failures[:3]))
            drains += [gone[ip] - seen_draining[ip] for ip in gone]
    finally:
        ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=0)
        ecs.delete_service(cluster=CLUSTER, service=SERVICE, force=True)
        wait("the service's tasks to stop",
             lambda: not ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"])

    print(f"{clients} clients, {rollouts} rolling deployments of 2 tasks behind a Flotilla ALB "
          "(deregistration delay 300 s)")
    print(f"{'rollout':>8} {'answered':>9} {'failed':>7} {'took s':>7}")
    for n, ok, failed, took, examples in rows:
        print(f"{n:>8} {ok:>9} {failed:>7} {took:>7.1f}" + (f"  e.g. {examples}" if examples else ""))
    total_failed = sum(r[2] for r in rows)
    print(f"failed requests in all: {total_failed} of {sum(r[1] + r[2] for r in rows)}")
    if drains:
        print(f"drain time per old target (first seen draining -> gone, polled every 50 ms): "
              f"median {statistics.median(drains) * 1000:.0f} ms, max {max(drains) * 1000:.0f} ms, n={len(drains)}")


if __name__ == "__main__":
    main()
