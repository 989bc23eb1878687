//! ELBv2 actions as JSON keyed by the model's member names (what the Query reader hands over),
//! on a real control plane and store.

use std::sync::Arc;

use flotilla_control::{Control, ElbVpcs, Identity};
use flotilla_store::EmbeddedStore;
use serde_json::{Value, json};

use super::execute;
use crate::error::ApiError;
use crate::query::model::ELBV2;
use crate::server::ApiState;

struct Api {
    state: ApiState,
    subnets: Vec<String>,
    vpc: String,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn flotilla_store::Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
    let control = Arc::new(Control::new(store.clone(), identity.clone()));
    control.ensure_default_network().await.unwrap();
    let subnets = control.describe_subnets(&[], &[]).await.unwrap();
    let acm = Arc::new(flotilla_acm::Acm::new(store.clone(), identity.clone()));
    let elb = Arc::new(flotilla_elb::Elb::new(store, identity, acm.clone(), Arc::new(ElbVpcs(control.clone())), None));
    Api {
        vpc: subnets[0].vpc_id.clone(),
        subnets: subnets.into_iter().map(|s| s.id).collect(),
        state: ApiState::new(control, &[]).with_load_balancing(elb, acm),
        _dir: dir,
    }
}

impl Api {
    /// Runs `action`; every answer must be one the Query writer accepts for its output shape.
    async fn call(&self, action: &str, input: Value) -> Result<Value, ApiError> {
        let answer = execute(&self.state, action, input).await?;
        if let Err(problem) = crate::query::response(&ELBV2, action, "req-1", &answer) {
            panic!("{action} answered {answer}, which does not fit the model: {problem}");
        }
        Ok(answer)
    }

    async fn ok(&self, action: &str, input: Value) -> Value {
        self.call(action, input).await.unwrap_or_else(|e| panic!("{action}: {e:?}"))
    }

    async fn refused(&self, action: &str, input: Value) -> ApiError {
        match self.call(action, input).await {
            Err(e) => e,
            Ok(v) => panic!("{action} answered {v}"),
        }
    }

    async fn group(&self, name: &str) -> String {
        let input = json!({"Name": name, "Protocol": "HTTP", "Port": 80, "VpcId": self.vpc, "TargetType": "ip"});
        let out = self.ok("CreateTargetGroup", input).await;
        out["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_load_balancer_with_listener_rules_and_targets() {
    let api = api().await;
    let e = api
        .refused(
            "CreateTargetGroup",
            json!({"Name": "i", "Protocol": "HTTP", "Port": 80, "VpcId": api.vpc, "TargetType": "instance"}),
        )
        .await;
    assert_eq!(e.code, "ValidationError");
    assert!(e.message.contains("TargetType"), "{}", e.message);
    let web = api.group("web").await;
    let img = api.group("img").await;
    let tg = api.ok("DescribeTargetGroups", json!({"Names": ["web"]})).await;
    let tg = &tg["TargetGroups"][0];
    assert_eq!(tg["HealthCheckPort"], "traffic-port");
    assert_eq!(tg["Matcher"]["HttpCode"], "200");
    assert_eq!((tg["HealthCheckTimeoutSeconds"].as_u64(), tg["HealthyThresholdCount"].as_u64()), (Some(5), Some(5)));
    assert_eq!(tg["TargetType"], "ip");

    let lb = api
        .ok(
            "CreateLoadBalancer",
            json!({"Name": "front", "Subnets": &api.subnets[..2], "Tags": [{"Key": "team", "Value": "a"}]}),
        )
        .await;
    let lb = &lb["LoadBalancers"][0];
    let lb_arn = lb["LoadBalancerArn"].as_str().unwrap().to_owned();
    assert_eq!((lb["Type"].as_str(), lb["Scheme"].as_str()), (Some("application"), Some("internet-facing")));
    assert_eq!(lb["State"]["Code"], "active");
    assert_eq!(lb["SecurityGroups"].as_array().unwrap().len(), 1, "the VPC's default group");
    assert_eq!(lb["AvailabilityZones"].as_array().unwrap().len(), 2);
    let e = api.refused("CreateLoadBalancer", json!({"Name": "one", "Subnets": &api.subnets[..1]})).await;
    assert_eq!(e.code, "ValidationError");

    let listener = api
        .ok(
            "CreateListener",
            json!({"LoadBalancerArn": lb_arn, "Protocol": "HTTP", "Port": 8080,
                   "DefaultActions": [{"Type": "forward", "TargetGroupArn": web}]}),
        )
        .await;
    let listener_arn = listener["Listeners"][0]["ListenerArn"].as_str().unwrap().to_owned();
    assert_eq!(listener["Listeners"][0]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["Weight"], 1);
    let e = api
        .refused(
            "CreateListener",
            json!({"LoadBalancerArn": lb_arn, "Protocol": "HTTP", "Port": 8080,
                   "DefaultActions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}]}),
        )
        .await;
    assert_eq!(e.code, "DuplicateListener");

    let rule = |priority: i64, field: &str| {
        json!({"ListenerArn": listener_arn, "Priority": priority,
               "Conditions": [{"Field": field, "Values": ["/img/*"]}],
               "Actions": [{"Type": "forward", "ForwardConfig": {
                   "TargetGroups": [{"TargetGroupArn": img, "Weight": 3}, {"TargetGroupArn": web, "Weight": 1}],
                   "TargetGroupStickinessConfig": {"Enabled": true, "DurationSeconds": 60}}}]})
    };
    let created = api.ok("CreateRule", rule(10, "path-pattern")).await;
    assert_eq!(created["Rules"][0]["Priority"], "10");
    assert_eq!(created["Rules"][0]["Conditions"][0]["PathPatternConfig"]["Values"][0], "/img/*");
    assert_eq!(api.refused("CreateRule", rule(10, "path-pattern")).await.code, "PriorityInUse");
    assert_eq!(api.refused("CreateRule", rule(11, "bogus")).await.code, "ValidationError");
    let query = json!({"ListenerArn": listener_arn, "Priority": 20,
        "Conditions": [{"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}]}},
                       {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["blue"]}}],
        "Actions": [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]});
    api.ok("CreateRule", query).await;
    let rules = api.ok("DescribeRules", json!({"ListenerArn": listener_arn})).await;
    let rules = rules["Rules"].as_array().unwrap();
    assert_eq!(rules.iter().map(|r| r["Priority"].as_str().unwrap()).collect::<Vec<_>>(), ["10", "20", "default"]);
    assert_eq!(rules[2]["IsDefault"], true);
    assert_eq!(rules[1]["Actions"][0]["RedirectConfig"]["Host"], "#{host}");
    let e = api.refused("DeleteRule", json!({"RuleArn": rules[2]["RuleArn"]})).await;
    assert_eq!(e.code, "OperationNotPermitted");

    let e = api.refused("DeleteTargetGroup", json!({"TargetGroupArn": img})).await;
    assert_eq!(e.code, "ResourceInUse");
    let tgs = api.ok("DescribeTargetGroups", json!({"LoadBalancerArn": lb_arn})).await;
    assert_eq!(tgs["TargetGroups"].as_array().unwrap().len(), 2);
    assert_eq!(tgs["TargetGroups"][0]["LoadBalancerArns"][0], lb_arn.as_str());

    let e = api.refused("RegisterTargets", json!({"TargetGroupArn": web, "Targets": [{"Id": "i-0123456789"}]})).await;
    assert_eq!(e.code, "ValidationError");
    api.ok(
        "RegisterTargets",
        json!({"TargetGroupArn": web, "Targets": [{"Id": "172.31.0.10"}, {"Id": "172.31.0.11", "Port": 8080}]}),
    )
    .await;
    let health = api
        .ok(
            "DescribeTargetHealth",
            json!({"TargetGroupArn": web, "Targets": [{"Id": "172.31.0.11", "Port": 8080}, {"Id": "172.31.0.12"}]}),
        )
        .await;
    let health = health["TargetHealthDescriptions"].as_array().unwrap();
    assert_eq!(health[0]["TargetHealth"]["State"], "initial");
    assert_eq!(health[0]["HealthCheckPort"], "8080");
    assert_eq!(health[1]["TargetHealth"]["State"], "unused");
    assert_eq!(health[1]["TargetHealth"]["Reason"], "Target.NotRegistered");
    api.ok(
        "ModifyTargetGroupAttributes",
        json!({"TargetGroupArn": web, "Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}]}),
    )
    .await;
    api.ok("DeregisterTargets", json!({"TargetGroupArn": web, "Targets": [{"Id": "172.31.0.10"}]})).await;
    let all = api.ok("DescribeTargetHealth", json!({"TargetGroupArn": web})).await;
    assert_eq!(all["TargetHealthDescriptions"].as_array().unwrap().len(), 1);

    api.ok("AddTags", json!({"ResourceArns": [lb_arn, web], "Tags": [{"Key": "env", "Value": "prod"}]})).await;
    api.ok("RemoveTags", json!({"ResourceArns": [lb_arn], "TagKeys": ["team"]})).await;
    let tags = api.ok("DescribeTags", json!({"ResourceArns": [lb_arn, web]})).await;
    assert_eq!(tags["TagDescriptions"][0]["Tags"], json!([{"Key": "env", "Value": "prod"}]));
    assert_eq!(tags["TagDescriptions"][1]["ResourceArn"], web.as_str());

    api.ok("DeleteLoadBalancer", json!({"LoadBalancerArn": lb_arn})).await;
    api.ok("DeleteLoadBalancer", json!({"LoadBalancerArn": lb_arn})).await;
    api.ok("DeleteTargetGroup", json!({"TargetGroupArn": img})).await;
    let e = api.refused("DescribeListeners", json!({"ListenerArns": [listener_arn]})).await;
    assert_eq!(e.code, "ListenerNotFound");
}

#[tokio::test]
async fn pages_unknown_names_and_actions() {
    let api = api().await;
    for name in ["a", "b", "c"] {
        api.group(name).await;
    }
    let first = api.ok("DescribeTargetGroups", json!({"PageSize": 2})).await;
    assert_eq!(first["TargetGroups"].as_array().unwrap().len(), 2);
    let marker = first["NextMarker"].as_str().unwrap();
    let rest = api.ok("DescribeTargetGroups", json!({"PageSize": 2, "Marker": marker})).await;
    assert_eq!(rest["TargetGroups"][0]["TargetGroupName"], "c");
    assert!(rest.get("NextMarker").is_none());
    assert_eq!(api.refused("DescribeTargetGroups", json!({"Marker": "forged"})).await.code, "ValidationError");

    let e = api.refused("DescribeLoadBalancers", json!({"Names": ["nope"]})).await;
    assert_eq!(e.code, "LoadBalancerNotFound");
    let arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nope/0123456789abcdef";
    assert_eq!(
        api.refused("DescribeTargetGroups", json!({"TargetGroupArns": [arn]})).await.code,
        "TargetGroupNotFound"
    );
    assert_eq!(
        api.refused("RegisterTargets", json!({"TargetGroupArn": arn, "Targets": []})).await.code,
        "TargetGroupNotFound"
    );
    let listener =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/x/0123456789abcdef/0123456789abcdef";
    assert_eq!(api.refused("DeleteListener", json!({"ListenerArn": listener})).await.code, "ListenerNotFound");
    assert_eq!(api.refused("DeleteRule", json!({"RuleArn": "bogus"})).await.code, "RuleNotFound");
    assert_eq!(api.refused("CreateTrustStore", json!({})).await.code, "InvalidAction");
    assert_eq!(api.refused("CreateTargetGroup", json!({"Name": 5})).await.code, "ValidationError");

    let bare = ApiState::new(api.state.control.clone(), &[]);
    let e = execute(&bare, "DescribeLoadBalancers", json!({})).await.unwrap_err();
    assert_eq!(e.code, "ServiceUnavailable");
}
