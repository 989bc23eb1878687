"""Makes one internet-facing load balancer over ip targets through Flotilla's ELBv2 API, as a user
would, and waits until every target is healthy.

Usage: setup.py ENDPOINT application|network HTTP|TCP TARGET_IP:PORT...
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Prints "LISTENER_PORT TARGET_GROUP_ARN"; the listener is on the load-balancer address, 127.0.0.1.
"""
import os
import socket
import sys
import time

import boto3

DEADLINE_S = 60.0

endpoint, kind, protocol, *targets = sys.argv[1:]


def client(service):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])


ec2, elb = client("ec2"), client("elbv2")
subnets = sorted(ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"],
                 key=lambda s: s["AvailabilityZone"])[:2]
vpc = subnets[0]["VpcId"]
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()

args = {"Name": "bench", "Subnets": [x["SubnetId"] for x in subnets], "Scheme": "internet-facing", "Type": kind}
if kind == "application":
    # An ALB always has a security group: one admitting the listener's port from anywhere.
    sg = ec2.create_security_group(GroupName="bench-lb", Description="bench lb", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    args["SecurityGroups"] = [sg]
lb = elb.create_load_balancer(**args)["LoadBalancers"][0]["LoadBalancerArn"]
http = protocol in ("HTTP", "HTTPS")
tg = elb.create_target_group(
    Name="bench", Protocol=protocol, Port=80, VpcId=vpc, TargetType="ip",
    HealthCheckProtocol="HTTP" if http else "TCP", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
    HealthyThresholdCount=2, UnhealthyThresholdCount=2,
    **({"HealthCheckPath": "/"} if http else {}))["TargetGroups"][0]["TargetGroupArn"]
elb.register_targets(TargetGroupArn=tg, Targets=[
    {"Id": t.split(":")[0], "Port": int(t.split(":")[1])} for t in targets])
elb.create_listener(LoadBalancerArn=lb, Protocol=protocol, Port=port,
                    DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])

start = time.monotonic()
while True:
    health = [d["TargetHealth"] for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]]
    if len(health) == len(targets) and all(h["State"] == "healthy" for h in health):
        break
    if time.monotonic() - start > DEADLINE_S:
        sys.exit(f"targets never all healthy: {health}")
    time.sleep(0.2)
print(port, tg)
