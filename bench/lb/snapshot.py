"""A one-load-balancer LbSnapshot (flotilla-host's JSON) for lb-plane.

Usage: snapshot.py application|network HTTP|TCP LISTEN_IP LISTEN_PORT TARGET_IP:PORT...
"""
import json
import sys

kind, protocol, ip, port, *targets = sys.argv[1:]
http = protocol in ("HTTP", "HTTPS")
group = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/bench/0000000000000001"
print(json.dumps({
    "loadBalancers": [{
        "arn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/bench/0000000000000001",
        "name": "bench",
        "kind": kind,
        "scheme": "internal",
        "vpcId": "vpc-bench",
        "dnsName": "internal-bench-1234567890.us-east-1.elb.amazonaws.com",
        "addresses": [{"subnetId": "subnet-bench", "privateIp": ip, "publicIp": None}],
        "securityGroups": [],
        "idleTimeoutS": 60 if http else 350,
        "listeners": [{
            "arn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/bench/0000000000000001/0000000000000001",
            "port": int(port),
            "protocol": protocol,
            "certificates": [],
            "rules": [],
            # Fields of ActionSpec's variants keep their Rust names: serde's rename_all on an enum
            # renames only the variants.
            "defaultAction": {"type": "forward", "target_groups": [{"arn": group, "weight": 1}], "stickiness_s": None},
        }],
    }],
    "targetGroups": [{
        "arn": group,
        "name": "bench",
        "protocol": "HTTP" if http else "TCP",
        "port": 80,
        "vpcId": "vpc-bench",
        "healthCheck": {
            "enabled": True, "protocol": "HTTP" if http else "TCP", "port": None, "path": "/",
            "intervalS": 5, "timeoutS": 2, "healthyThreshold": 2, "unhealthyThreshold": 2, "matcher": "200",
        },
        "deregistrationDelayS": 300,
        "slowStartS": 0,
        "stickinessS": None,
        "targets": [
            {"ip": t.split(":")[0], "port": int(t.split(":")[1]), "draining": False, "healthy": True}
            for t in targets
        ],
    }],
}))
