//! Amazon Resource Names for the resources Flotilla serves.
//!
//! Every ARN Flotilla hands out is built here, from the installation's [`Identity`], so the
//! formats live in one file: ECS resources as [`Arn`] (which also parses them back), and the
//! other services' ARNs as strings, since only their owners ever read them back.

use std::fmt;

/// The region and account of one installation: what every ARN it makes carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub account: String,
}

impl Identity {
    pub fn new(region: impl Into<String>, account: impl Into<String>) -> Identity {
        Identity { region: region.into(), account: account.into() }
    }

    /// `arn:aws:<service>:<region>:<account>:<resource>`.
    fn regional(&self, service: &str, resource: fmt::Arguments<'_>) -> String {
        format!("arn:aws:{service}:{}:{}:{resource}", self.region, self.account)
    }

    /// An ECS ARN of this installation.
    pub fn ecs(&self, kind: ResourceKind, resource: impl Into<String>) -> Arn {
        Arn::new(&self.region, &self.account, kind, resource)
    }

    pub fn cluster(&self, name: &str) -> Arn {
        self.ecs(ResourceKind::Cluster, name)
    }

    pub fn task(&self, cluster: &str, task_id: &str) -> Arn {
        self.ecs(ResourceKind::Task, format!("{cluster}/{task_id}"))
    }

    pub fn container(&self, cluster: &str, task_id: &str, container_id: &str) -> Arn {
        self.ecs(ResourceKind::Container, format!("{cluster}/{task_id}/{container_id}"))
    }

    pub fn task_definition(&self, family: &str, revision: u32) -> Arn {
        self.ecs(ResourceKind::TaskDefinition, format!("{family}:{revision}"))
    }

    pub fn service(&self, cluster: &str, name: &str) -> Arn {
        self.ecs(ResourceKind::Service, format!("{cluster}/{name}"))
    }

    /// A service deployment: `service-deployment/<cluster>/<service>/<id>`.
    pub fn service_deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        self.ecs(ResourceKind::ServiceDeployment, format!("{cluster}/{service}/{id}")).to_string()
    }

    /// A service revision: `service-revision/<cluster>/<service>/<id>`.
    pub fn service_revision(&self, cluster: &str, service: &str, id: &str) -> String {
        self.ecs(ResourceKind::ServiceRevision, format!("{cluster}/{service}/{id}")).to_string()
    }

    pub fn capacity_provider(&self, name: &str) -> Arn {
        self.ecs(ResourceKind::CapacityProvider, name)
    }

    /// An ECS attachment (a task's elastic network interface).
    pub fn attachment(&self, attachment_id: &str) -> Arn {
        self.ecs(ResourceKind::Attachment, attachment_id)
    }

    /// A CloudWatch Logs group, without the `:*` that DescribeLogGroups' `arn` adds.
    pub fn log_group(&self, name: &str) -> String {
        self.regional("logs", format_args!("log-group:{name}"))
    }

    pub fn log_stream(&self, group: &str, stream: &str) -> String {
        self.regional("logs", format_args!("log-group:{group}:log-stream:{stream}"))
    }

    pub fn vpc(&self, id: &str) -> String {
        self.regional("ec2", format_args!("vpc/{id}"))
    }

    pub fn subnet(&self, id: &str) -> String {
        self.regional("ec2", format_args!("subnet/{id}"))
    }

    pub fn security_group(&self, id: &str) -> String {
        self.regional("ec2", format_args!("security-group/{id}"))
    }

    pub fn security_group_rule(&self, id: &str) -> String {
        self.regional("ec2", format_args!("security-group-rule/{id}"))
    }

    pub fn network_interface(&self, id: &str) -> String {
        self.regional("ec2", format_args!("network-interface/{id}"))
    }

    /// An SSM parameter: `/app/db` and `app/db` both become `parameter/app/db`, as on AWS.
    pub fn ssm_parameter(&self, name: &str) -> String {
        self.regional("ssm", format_args!("parameter/{}", name.trim_start_matches('/')))
    }

    /// A Secrets Manager secret; `suffix` is the random six characters AWS appends to the name.
    pub fn secret(&self, name: &str, suffix: &str) -> String {
        self.regional("secretsmanager", format_args!("secret:{name}-{suffix}"))
    }

    /// Cloud Map: `kind` is `namespace` or `service`.
    pub fn servicediscovery(&self, kind: &str, id: &str) -> String {
        self.regional("servicediscovery", format_args!("{kind}/{id}"))
    }

    pub fn servicediscovery_namespace(&self, id: &str) -> String {
        self.servicediscovery("namespace", id)
    }

    pub fn servicediscovery_service(&self, id: &str) -> String {
        self.servicediscovery("service", id)
    }

    /// An Elastic Load Balancing v2 resource: `loadbalancer/app/<name>/<id>`, `targetgroup/...`.
    fn elbv2(&self, resource: fmt::Arguments<'_>) -> String {
        self.regional("elasticloadbalancing", resource)
    }

    /// A load balancer; `kind` is `app` (application) or `net` (network).
    pub fn load_balancer(&self, kind: &str, name: &str, id: &str) -> String {
        self.elbv2(format_args!("loadbalancer/{kind}/{name}/{id}"))
    }

    pub fn target_group(&self, name: &str, id: &str) -> String {
        self.elbv2(format_args!("targetgroup/{name}/{id}"))
    }

    pub fn listener(&self, kind: &str, lb_name: &str, lb_id: &str, id: &str) -> String {
        self.elbv2(format_args!("listener/{kind}/{lb_name}/{lb_id}/{id}"))
    }

    pub fn listener_rule(&self, kind: &str, lb_name: &str, lb_id: &str, listener_id: &str, id: &str) -> String {
        self.elbv2(format_args!("listener-rule/{kind}/{lb_name}/{lb_id}/{listener_id}/{id}"))
    }

    /// An ACM certificate; `id` is a UUID.
    pub fn acm_certificate(&self, id: &str) -> String {
        self.regional("acm", format_args!("certificate/{id}"))
    }

    /// An EFS file system; `id` is `fs-...`.
    pub fn efs_file_system(&self, id: &str) -> String {
        self.regional("elasticfilesystem", format_args!("file-system/{id}"))
    }

    /// An EKS cluster.
    pub fn eks_cluster(&self, name: &str) -> String {
        self.regional("eks", format_args!("cluster/{name}"))
    }

    /// An EKS Fargate profile; `id` is the uuid EKS appends to every profile's ARN.
    pub fn eks_fargate_profile(&self, cluster: &str, name: &str, id: &str) -> String {
        self.regional("eks", format_args!("fargateprofile/{cluster}/{name}/{id}"))
    }

    /// An EFS access point; `id` is `fsap-...`.
    pub fn efs_access_point(&self, id: &str) -> String {
        self.regional("elasticfilesystem", format_args!("access-point/{id}"))
    }

    /// A KMS key; `id` is a UUID.
    pub fn kms_key(&self, id: &str) -> String {
        self.regional("kms", format_args!("key/{id}"))
    }

    /// A KMS alias; `name` is `alias/...`.
    pub fn kms_alias(&self, name: &str) -> String {
        self.regional("kms", format_args!("{name}"))
    }

    /// The account's root user: who registers task definitions here (IAM is global, so no region).
    pub fn iam_root(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account)
    }

    /// An IAM user; `path` is `/` or `/a/b/`.
    pub fn iam_user(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:user{path}{name}", self.account)
    }

    /// An IAM role; `path` is `/` or `/a/b/`.
    pub fn iam_role(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:role{path}{name}", self.account)
    }

    /// A customer managed IAM policy; `path` is `/` or `/a/b/`.
    pub fn iam_policy(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:policy{path}{name}", self.account)
    }

    /// A role's session, as STS names the principal using temporary credentials.
    pub fn sts_assumed_role(&self, role_name: &str, session_name: &str) -> String {
        format!("arn:aws:sts::{}:assumed-role/{role_name}/{session_name}", self.account)
    }
}

/// The ECS resource kinds Flotilla names with ARNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cluster,
    TaskDefinition,
    Task,
    Service,
    ServiceDeployment,
    ServiceRevision,
    CapacityProvider,
    ContainerInstance,
    Container,
    Attachment,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::TaskDefinition => "task-definition",
            ResourceKind::Task => "task",
            ResourceKind::Service => "service",
            ResourceKind::ServiceDeployment => "service-deployment",
            ResourceKind::ServiceRevision => "service-revision",
            ResourceKind::CapacityProvider => "capacity-provider",
            ResourceKind::ContainerInstance => "container-instance",
            ResourceKind::Container => "container",
            ResourceKind::Attachment => "attachment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cluster" => ResourceKind::Cluster,
            "task-definition" => ResourceKind::TaskDefinition,
            "task" => ResourceKind::Task,
            "service" => ResourceKind::Service,
            "service-deployment" => ResourceKind::ServiceDeployment,
            "service-revision" => ResourceKind::ServiceRevision,
            "capacity-provider" => ResourceKind::CapacityProvider,
            "container-instance" => ResourceKind::ContainerInstance,
            "container" => ResourceKind::Container,
            "attachment" => ResourceKind::Attachment,
            _ => return None,
        })
    }
}

/// `arn:aws:ecs:<region>:<account>:<kind>/<resource>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceKind,
    /// Everything after `<kind>/`, e.g. `family:3` or `cluster-name/task-id`.
    pub resource: String,
}

impl Arn {
    pub fn new(region: &str, account: &str, kind: ResourceKind, resource: impl Into<String>) -> Self {
        Arn { region: region.to_owned(), account: account.to_owned(), kind, resource: resource.into() }
    }

    /// Parses an ECS ARN; `None` for anything else (other services, malformed strings).
    pub fn parse(s: &str) -> Option<Arn> {
        let rest = s.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let tail = parts.next()?;
        if partition.is_empty() || service != "ecs" || region.is_empty() || account.is_empty() {
            return None;
        }
        let (kind, resource) = tail.split_once('/')?;
        if resource.is_empty() {
            return None;
        }
        Some(Arn::new(region, account, ResourceKind::parse(kind)?, resource))
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:aws:ecs:{}:{}:{}/{}", self.region, self.account, self.kind.as_str(), self.resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let arn = Arn::new("us-east-1", "123456789012", ResourceKind::TaskDefinition, "web:3");
        let s = arn.to_string();
        assert_eq!(s, "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3");
        assert_eq!(Arn::parse(&s), Some(arn));
    }

    #[test]
    fn builders_spell_each_service_as_aws_does() {
        let id = Identity::new("us-east-1", "123456789012");
        let base = "us-east-1:123456789012";
        let cases = [
            (id.cluster("default").to_string(), format!("arn:aws:ecs:{base}:cluster/default")),
            (id.task("default", "abc").to_string(), format!("arn:aws:ecs:{base}:task/default/abc")),
            (id.container("c", "t", "x").to_string(), format!("arn:aws:ecs:{base}:container/c/t/x")),
            (id.task_definition("web", 3).to_string(), format!("arn:aws:ecs:{base}:task-definition/web:3")),
            (id.service("c", "web").to_string(), format!("arn:aws:ecs:{base}:service/c/web")),
            (id.capacity_provider("FARGATE").to_string(), format!("arn:aws:ecs:{base}:capacity-provider/FARGATE")),
            (id.attachment("a1").to_string(), format!("arn:aws:ecs:{base}:attachment/a1")),
            (id.log_group("/ecs/app"), format!("arn:aws:logs:{base}:log-group:/ecs/app")),
            (id.log_stream("/ecs/app", "s"), format!("arn:aws:logs:{base}:log-group:/ecs/app:log-stream:s")),
            (id.vpc("vpc-1"), format!("arn:aws:ec2:{base}:vpc/vpc-1")),
            (id.subnet("subnet-1"), format!("arn:aws:ec2:{base}:subnet/subnet-1")),
            (id.security_group("sg-1"), format!("arn:aws:ec2:{base}:security-group/sg-1")),
            (id.security_group_rule("sgr-1"), format!("arn:aws:ec2:{base}:security-group-rule/sgr-1")),
            (id.network_interface("eni-1"), format!("arn:aws:ec2:{base}:network-interface/eni-1")),
            (id.ssm_parameter("/app/db"), format!("arn:aws:ssm:{base}:parameter/app/db")),
            (id.ssm_parameter("key"), format!("arn:aws:ssm:{base}:parameter/key")),
            (id.secret("prod/db", "AbCdEf"), format!("arn:aws:secretsmanager:{base}:secret:prod/db-AbCdEf")),
            (id.servicediscovery_namespace("ns-1"), format!("arn:aws:servicediscovery:{base}:namespace/ns-1")),
            (id.servicediscovery_service("srv-1"), format!("arn:aws:servicediscovery:{base}:service/srv-1")),
            (
                id.load_balancer("app", "web", "0123456789abcdef"),
                format!("arn:aws:elasticloadbalancing:{base}:loadbalancer/app/web/0123456789abcdef"),
            ),
            (id.target_group("tg", "1"), format!("arn:aws:elasticloadbalancing:{base}:targetgroup/tg/1")),
            (id.listener("net", "web", "2", "3"), format!("arn:aws:elasticloadbalancing:{base}:listener/net/web/2/3")),
            (
                id.listener_rule("app", "web", "2", "3", "4"),
                format!("arn:aws:elasticloadbalancing:{base}:listener-rule/app/web/2/3/4"),
            ),
            (id.iam_root(), "arn:aws:iam::123456789012:root".to_owned()),
        ];
        for (built, expected) in cases {
            assert_eq!(built, expected);
        }
        assert_eq!(Arn::parse(&id.task("default", "abc").to_string()), Some(id.task("default", "abc")));
    }

    #[test]
    fn rejects_foreign_and_malformed() {
        assert_eq!(Arn::parse("arn:aws:iam::123456789012:role/x"), None);
        assert_eq!(Arn::parse("arn:aws:ecs:us-east-1:1:cluster/"), None);
        assert_eq!(Arn::parse("arn:aws:ecs:us-east-1:1:bogus/x"), None);
        assert_eq!(Arn::parse("web:3"), None);
    }
}
