#!/usr/bin/env bash
# EKS on Fargate: pod creation to Running for N Flotilla-scheduled pods (the seed's Deployment
# scaled from 0 to N on a cluster `aws eks create-cluster` launched, pods handed to the Fargate
# scheduler by the profile's admission webhook), against N RunTasks of the same container in
# the same run as the floor, rounds interleaved. Driver: bench/eks_pods.py.
# Usage: bench/eks_pods.sh [N] [ROUNDS]
N=${1:-50}
ROUNDS=${2:-3}
source "$(dirname "$0")/common.sh"
need kubectl etcd
KUBE_BIN=$(bash ../shared/tools/kubernetes/unpack.sh 2>/dev/null || bash /work/shared/tools/kubernetes/unpack.sh)
start_registry
# N small tasks at once on this machine: offer more than its hardware, as the tests do.
start_flotilla --overcommit-cpu 64 --overcommit-memory 8 --kubernetes-bin "$KUBE_BIN" \
  --eks-webhook-listen "127.0.0.1:$(port)"
aws_local() {
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" "$@"
}
# The launched plane outlives Flotilla by design: delete the cluster before the common trap.
eks_cleanup() {
  set +e
  aws_local eks delete-fargate-profile --cluster-name bench --fargate-profile-name fp >/dev/null 2>&1
  for _ in $(seq 300); do
    [ "$(aws_local eks list-fargate-profiles --cluster-name bench --query 'length(fargateProfileNames)' 2>/dev/null)" = 0 ] && break
    sleep 0.2
  done
  aws_local eks delete-cluster --name bench >/dev/null 2>&1
  for _ in $(seq 300); do
    [ "$(aws_local eks list-clusters --query 'length(clusters)' 2>/dev/null)" = 0 ] && break
    sleep 0.2
  done
  cleanup
}
trap eks_cleanup EXIT
aws_local ecs create-cluster --cluster-name default >/dev/null
ROLE=$(aws_local iam create-role --role-name eks --query Role.Arn --output text --assume-role-policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"eks.amazonaws.com"},"Action":"sts:AssumeRole"}]}')
SUBNETS=$(aws_local ec2 describe-subnets --query 'Subnets[].[AvailabilityZone,SubnetId]' --output text \
  | sort -u -k1,1 | head -2 | awk '{print $2}' | paste -sd,)
aws_local eks create-cluster --name bench --role-arn "$ROLE" --resources-vpc-config "subnetIds=$SUBNETS" >/dev/null
for _ in $(seq 1200); do
  S=$(aws_local eks describe-cluster --name bench --query cluster.status --output text)
  [ "$S" = ACTIVE ] && break; [ "$S" = FAILED ] && { echo "cluster FAILED" >&2; exit 1; }; sleep 0.2
done
aws_local eks create-fargate-profile --cluster-name bench --fargate-profile-name fp --pod-execution-role-arn "$ROLE" \
  --selectors namespace=fargate-workload >/dev/null
for _ in $(seq 300); do
  [ "$(aws_local eks describe-fargate-profile --cluster-name bench --fargate-profile-name fp \
    --query fargateProfile.status --output text)" = ACTIVE ] && break; sleep 0.2
done
KC=$WORK/kubeconfig
aws_local eks update-kubeconfig --name bench --kubeconfig "$KC" >/dev/null
export AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL=$ENDPOINT AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
kubectl --kubeconfig "$KC" create namespace fargate-workload >/dev/null
for _ in $(seq 300); do
  kubectl --kubeconfig "$KC" -n fargate-workload get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2
done
# The seed's Deployment (shared/seeds 003), at 0 replicas; the same container as the peer's.
kubectl --kubeconfig "$KC" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: fargate-workload}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: $IMAGE
        command: ["sh", "-c", "echo hello; exec sleep 3600"]
YAML
BENCH_SUBNET_ONE=${SUBNETS%%,*}
python3 bench/eks_pods.py "$ENDPOINT" "$IMAGE" "$BENCH_SUBNET_ONE" "$KC" "$N" "$ROUNDS"
