//! Fargate's rules, and roles checked against a real IAM over the embedded store.

use super::*;

fn container(json: serde_json::Value) -> ContainerDefinition {
    serde_json::from_value(json).unwrap()
}

#[test]
fn fargate_rules_name_what_needs_an_execution_role() {
    let plain = container(serde_json::json!({"name": "a", "image": "busybox"}));
    let secrets = container(serde_json::json!({"name": "a", "image": "busybox",
        "secrets": [{"name": "K", "valueFrom": "/p"}]}));
    let registry = container(serde_json::json!({"name": "a", "image": "busybox",
        "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:1:secret:x-AbCdEf"}}));
    let logs = container(serde_json::json!({"name": "a", "image": "busybox",
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}}));
    let message = |c: &ContainerDefinition| match fargate_role_rules(None, std::slice::from_ref(c)) {
        Err(ControlError::Client(m)) => Some(m),
        Ok(()) => None,
        Err(other) => panic!("{other:?}"),
    };
    assert_eq!(message(&plain), None);
    assert_eq!(message(&secrets).as_deref(), Some(SECRETS_NEED_ROLE));
    assert_eq!(message(&registry).as_deref(), Some(REGISTRY_AUTH_NEEDS_ROLE));
    assert_eq!(message(&logs).as_deref(), Some(AWSLOGS_NEEDS_ROLE));
    assert!(fargate_role_rules(Some("arn:aws:iam::1:role/exec"), &[secrets, registry, logs]).is_ok());
}

#[tokio::test]
async fn require_roles_refuses_at_registration_and_at_run_task_for_definitions_made_before() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn flotilla_store::Store> =
        Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let identity = flotilla_types::Identity { region: "us-east-1".into(), account: "123456789012".into() };
    let before = Control::new(store.clone(), identity.clone());
    before.create_cluster(Default::default()).await.unwrap();
    let spec = serde_json::json!({
        "family": "logged", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "busybox:latest", "logConfiguration": {
            "logDriver": "awslogs",
            "options": {"awslogs-group": "/ecs/x", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}}}],
    });
    let arn = before.register_task_definition(serde_json::from_value(spec.clone()).unwrap(), None).await.unwrap();
    let arn = arn.0.task_definition_arn;

    let strict = Control::new(store, identity).with_require_roles(true);
    let refused = strict.register_task_definition(serde_json::from_value(spec).unwrap(), None).await;
    assert!(matches!(&refused, Err(ControlError::Client(m)) if m == AWSLOGS_NEEDS_ROLE), "{refused:?}");
    let input = crate::RunTaskInput { task_definition: arn, ..Default::default() };
    let refused = strict.run_task(input).await;
    assert!(matches!(&refused, Err(ControlError::Client(m)) if m == AWSLOGS_NEEDS_ROLE), "{refused:?}");
}

#[test]
fn roles_are_names_or_iam_role_arns() {
    for good in [
        "exec",
        "ecsTaskExecutionRole",
        "arn:aws:iam::123456789012:role/exec",
        "arn:aws:iam::123456789012:role/a/b/x.y@z",
    ] {
        assert!(check_role_form(Some(good)).is_ok(), "{good}");
    }
    for bad in ["arn:aws:cloudformation:us-east-1:123456789012:stack/x", "arn:aws:iam::1:role/x", "has space", "a:b"] {
        assert!(
            matches!(check_role_form(Some(bad)), Err(ControlError::Client(m)) if m == "Role is not valid"),
            "{bad}"
        );
    }
}

#[test]
fn roles_by_name_or_arn() {
    assert_eq!(role_arn("123456789012", "exec"), "arn:aws:iam::123456789012:role/exec");
    let arn = "arn:aws:iam::123456789012:role/service/exec";
    assert_eq!(role_arn("123456789012", arn), arn);
    assert_eq!(role_name(arn), "exec");
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"SERVICE"},"Action":"sts:AssumeRole"}]}"#;

struct World {
    control: Arc<Control>,
    iam: Arc<Iam>,
    secrets: Arc<flotilla_secrets::Secrets>,
    network: flotilla_types::task::NetworkConfiguration,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn flotilla_store::Store> =
            Arc::new(flotilla_store::EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
        let identity = flotilla_types::Identity { region: "us-east-1".into(), account: "123456789012".into() };
        let control = Arc::new(Control::new(store.clone(), identity.clone()));
        let iam = Iam::open(store.clone(), identity.clone(), &[]).await.unwrap();
        control.attach_iam(iam.clone());
        control.ensure_default_network().await.unwrap();
        control.create_cluster(Default::default()).await.unwrap();
        let subnet = control.describe_subnets(&[], &[]).await.unwrap().remove(0).id;
        let network =
            serde_json::from_value(serde_json::json!({"awsvpcConfiguration": {"subnets": [subnet]}})).unwrap();
        let kms = flotilla_kms::Kms::open(store.clone(), identity, flotilla_kms::MasterKey::generate()).await.unwrap();
        let secrets = flotilla_secrets::Secrets::new(store, kms);
        World { control, iam, secrets, network, _dir: dir }
    }

    async fn role(&self, name: &str, service: &str) -> String {
        let trust = TRUST.replace("SERVICE", service);
        let new =
            flotilla_iam::NewRole { name, path: None, trust: &trust, description: None, max_session_duration: None };
        self.iam.create_role(new).await.unwrap().arn
    }

    async fn register(&self, containers: serde_json::Value, roles: serde_json::Value) -> String {
        let mut spec = serde_json::json!({
            "family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": containers,
        });
        spec.as_object_mut().unwrap().extend(roles.as_object().unwrap().clone());
        let spec = serde_json::from_value(spec).unwrap();
        self.control.register_task_definition(spec, None).await.unwrap().0.task_definition_arn
    }

    async fn run(&self, definition: &str) -> Result<String, ControlError> {
        let input = crate::RunTaskInput {
            task_definition: definition.to_owned(),
            network_configuration: Some(self.network.clone()),
            ..Default::default()
        };
        Ok(self.control.run_task(input).await?.0.remove(0).task_arn)
    }

    /// What the agent is told when it asks for the task's secrets.
    async fn task_secrets(&self, task_arn: &str, logs: Option<Arc<flotilla_logs::LogStore>>) -> Result<(), String> {
        use flotilla_host::HostApi;
        let mut api = crate::LocalHostApi::new(self.control.clone(), Some(self.secrets.clone()));
        if let Some(logs) = logs {
            api = api.with_logs(logs);
        }
        match api.task_secrets(task_arn).await {
            Ok(_) => Ok(()),
            Err(flotilla_host::HostApiError::Refused { reason }) => Err(reason),
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn run_task_refuses_roles_that_do_not_exist_or_do_not_trust_ecs_tasks() {
    let w = World::new().await;
    let exec = w.role("exec", ECS_TASKS).await;
    w.role("for-ec2", "ec2.amazonaws.com").await;
    let app = serde_json::json!([{"name": "app", "image": "busybox:latest"}]);
    let missing = "arn:aws:iam::123456789012:role/missing";
    let refused = |r: Result<String, ControlError>, role: &str| match r {
        Err(ControlError::Client(m)) => assert_eq!(m, unable_to_assume(role)),
        other => panic!("{other:?}"),
    };
    let td = w.register(app.clone(), serde_json::json!({"executionRoleArn": missing})).await;
    refused(w.run(&td).await, missing);
    let td = w.register(app.clone(), serde_json::json!({"taskRoleArn": "for-ec2", "executionRoleArn": exec})).await;
    refused(w.run(&td).await, "for-ec2");
    let td = w.register(app, serde_json::json!({"taskRoleArn": "exec", "executionRoleArn": exec})).await;
    w.run(&td).await.unwrap();
}

#[tokio::test]
async fn the_execution_role_reads_secrets_and_writes_logs_or_the_task_stops_with_awss_words() {
    let w = World::new().await;
    let exec = w.role("exec", ECS_TASKS).await;
    let secret = w
        .secrets
        .create_secret(flotilla_secrets::NewSecret {
            kms_key_id: None,
            name: "db".into(),
            value: Some(flotilla_secrets::SecretValue::String(r#"{"pw":"p"}"#.into())),
            description: None,
            token: None,
        })
        .await
        .unwrap();
    let containers = serde_json::json!([{"name": "app", "image": "busybox:latest",
        "secrets": [{"name": "PW", "valueFrom": format!("{}:pw::", secret.arn)}],
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": "/ecs/t", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}}}]);
    let td = w.register(containers, serde_json::json!({"executionRoleArn": exec})).await;
    let task = w.run(&td).await.unwrap();
    let id = task.rsplit('/').next().unwrap().to_owned();
    let who = format!("User: arn:aws:sts::123456789012:assumed-role/exec/{id} is not authorized to perform:");

    let reason = w.task_secrets(&task, None).await.unwrap_err();
    let expected = format!(
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
         unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret {} from \
         secrets manager: AccessDeniedException: {who} secretsmanager:GetSecretValue on resource: {} because no \
         identity-based policy allows the secretsmanager:GetSecretValue action status code: 400, request id: ",
        secret.arn, secret.arn
    );
    assert!(reason.starts_with(&expected), "{reason}\n{expected}");

    let allow = |actions: &[&str]| {
        serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
            .to_string()
    };
    w.iam.put_role_policy("exec", "secrets", &allow(&["secretsmanager:GetSecretValue"])).await.unwrap();
    let logs_dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(flotilla_logs::LogStore::open(logs_dir.path()).unwrap());
    let reason = w.task_secrets(&task, Some(logs.clone())).await.unwrap_err();
    let stream = format!("arn:aws:logs:us-east-1:123456789012:log-group:/ecs/t:log-stream:ecs/app/{id}");
    let expected = format!(
        "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed \
         to create Cloudwatch log stream: AccessDeniedException: {who} logs:CreateLogStream on resource: {stream} \
         because no identity-based policy allows the logs:CreateLogStream action"
    );
    assert!(reason.starts_with(&expected), "{reason}\n{expected}");

    w.iam.put_role_policy("exec", "streams", &allow(&["logs:CreateLogStream", "logs:PutLogEvents"])).await.unwrap();
    let reason = w.task_secrets(&task, Some(logs.clone())).await.unwrap_err();
    assert!(reason.contains("failed to create Cloudwatch log group: AccessDeniedException: "), "{reason}");
    assert!(reason.contains("logs:CreateLogGroup on resource: arn:aws:logs:us-east-1:123456789012:log-group:/ecs/t"));
    // A group that exists needs no creating.
    logs.ensure_group("/ecs/t").await.unwrap();
    w.task_secrets(&task, Some(logs)).await.unwrap();

    // An explicit deny wins over the allow, and the reason says so.
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"secretsmanager:*","Resource":"*"}]}"#;
    w.iam.put_role_policy("exec", "deny", deny).await.unwrap();
    let reason = w.task_secrets(&task, None).await.unwrap_err();
    assert!(reason.contains("with an explicit deny in an identity-based policy status code: 400"), "{reason}");
}

#[tokio::test]
async fn private_registry_credentials_are_read_as_the_execution_role() {
    let w = World::new().await;
    let exec = w.role("exec", ECS_TASKS).await;
    let login = w
        .secrets
        .create_secret(flotilla_secrets::NewSecret {
            kms_key_id: None,
            name: "login".into(),
            value: Some(flotilla_secrets::SecretValue::String(r#"{"username":"u","password":"p"}"#.into())),
            description: None,
            token: None,
        })
        .await
        .unwrap();
    // By name: policies see the secret's full ARN all the same.
    let containers = serde_json::json!([{"name": "app", "image": "registry.example:5000/app:1",
        "repositoryCredentials": {"credentialsParameter": "login"}}]);
    let td = w.register(containers, serde_json::json!({"executionRoleArn": exec})).await;
    let task = w.run(&td).await.unwrap();
    let reason = w.task_secrets(&task, None).await.unwrap_err();
    assert!(
        reason.starts_with(
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval \
             failed: unable to retrieve secret from asm: service call has been retried 1 time(s): asm fetching \
             secret from the service for login: AccessDeniedException: "
        ),
        "{reason}"
    );
    assert!(reason.contains(&format!("secretsmanager:GetSecretValue on resource: {} because", login.arn)), "{reason}");
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": login.arn}]});
    w.iam.put_role_policy("exec", "login", &policy.to_string()).await.unwrap();
    w.task_secrets(&task, None).await.unwrap();
}
