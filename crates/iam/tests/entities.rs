//! IAM's entity rules, STS sessions and the in-memory view against the embedded store: what
//! the wire relies on, without the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_iam::{
    Decision, Iam, IamError, KeyStatus, NewPolicy, NewRole, PolicyScope, Principal, PrincipalKind, RequestContext,
    RequestPrincipal, Tuning,
};
use flotilla_store::{EmbeddedStore, Store};
use flotilla_types::Identity;

const ACCOUNT: &str = "123456789012";
const ROOT_KEY: &str = "AKIAROOTROOTROOTROOT";

fn identity() -> Identity {
    Identity::new("us-east-1", ACCOUNT)
}

fn root_keys() -> Vec<(String, String)> {
    vec![(ROOT_KEY.to_owned(), "root-secret".to_owned())]
}

async fn open(store: Arc<dyn Store>) -> Arc<Iam> {
    Iam::open(store, identity(), &root_keys()).await.unwrap()
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap())
}

fn ctx(principal: &Principal, action: &str, resource: &str) -> RequestContext {
    RequestContext {
        action: action.to_owned(),
        resource: resource.to_owned(),
        principal: RequestPrincipal::Aws { arn: principal.arn.clone(), account: principal.account.clone() },
        keys: BTreeMap::new(),
    }
}

fn allow(action: &str, resource: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}]}}"#
    )
}

fn deny(action: &str, resource: &str) -> String {
    allow(action, resource).replace("Allow", "Deny")
}

fn trust_account() -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    )
}

fn trust_service(service: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
    )
}

fn role<'a>(name: &'a str, trust: &'a str) -> NewRole<'a> {
    NewRole { name, path: None, trust, description: None, max_session_duration: None }
}

async fn user_principal(iam: &Iam, name: &str) -> Principal {
    let key = iam.create_access_key(name).await.unwrap();
    iam.lookup_key(&key.id).await.unwrap().unwrap().principal
}

#[tokio::test]
async fn users_and_access_keys() {
    let dir = tempfile::tempdir().unwrap();
    let iam = open(store(&dir)).await;
    let user = iam.create_user("alice", Some("/team/")).await.unwrap();
    assert_eq!(user.arn, format!("arn:aws:iam::{ACCOUNT}:user/team/alice"));
    assert!(user.id.starts_with("AIDA") && user.id.len() == 21, "{}", user.id);
    let again = iam.create_user("alice", None).await.unwrap_err();
    assert!(matches!(&again, IamError::EntityAlreadyExists(m) if m == "User with name alice already exists."));
    assert!(matches!(iam.create_user("bad name", None).await, Err(IamError::InvalidInput(_))));
    let missing = iam.get_user("bob").await.unwrap_err();
    assert!(matches!(&missing, IamError::NoSuchEntity(m) if m == "The user with name bob cannot be found."));

    let k1 = iam.create_access_key("alice").await.unwrap();
    assert!(k1.id.starts_with("AKIA") && k1.id.len() == 20, "{}", k1.id);
    assert_eq!(k1.secret.len(), 40);
    let k2 = iam.create_access_key("alice").await.unwrap();
    assert!(matches!(iam.create_access_key("alice").await, Err(IamError::LimitExceeded(_))));
    assert_eq!(iam.list_access_keys("alice").await.unwrap().len(), 2);

    let found = iam.lookup_key(&k1.id).await.unwrap().unwrap();
    assert_eq!(found.secret_access_key, k1.secret);
    assert!(found.active && found.session_token.is_none());
    assert_eq!(found.principal.arn, user.arn);
    assert_eq!(found.principal.kind, PrincipalKind::User { name: "alice".into() });

    iam.update_access_key("alice", &k1.id, KeyStatus::Inactive).await.unwrap();
    assert!(!iam.lookup_key(&k1.id).await.unwrap().unwrap().active);
    assert!(matches!(
        iam.update_access_key("alice", "AKIANOSUCHKEY0000000", KeyStatus::Active).await,
        Err(IamError::NoSuchEntity(_))
    ));

    // A user goes only once its keys and policies are gone.
    let conflict = iam.delete_user("alice").await.unwrap_err();
    assert!(matches!(&conflict, IamError::DeleteConflict(m) if m.contains("access keys")));
    iam.delete_access_key("alice", &k1.id).await.unwrap();
    iam.delete_access_key("alice", &k2.id).await.unwrap();
    assert!(iam.lookup_key(&k1.id).await.unwrap().is_none());
    iam.put_user_policy("alice", "p", &allow("ecs:List*", "*")).await.unwrap();
    assert!(matches!(iam.delete_user("alice").await, Err(IamError::DeleteConflict(_))));
    iam.delete_user_policy("alice", "p").await.unwrap();
    iam.delete_user("alice").await.unwrap();
    assert!(iam.list_users(None).await.unwrap().is_empty());

    let root = iam.lookup_key(ROOT_KEY).await.unwrap().unwrap();
    assert!(root.principal.is_root());
}

#[tokio::test]
async fn user_policies_decide() {
    let dir = tempfile::tempdir().unwrap();
    let iam = open(store(&dir)).await;
    iam.create_user("reader", None).await.unwrap();
    let reader = user_principal(&iam, "reader").await;
    let cluster = format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/prod");
    assert_eq!(
        iam.authorize(&reader, &ctx(&reader, "ecs:DescribeClusters", &cluster)).await.unwrap(),
        Decision::ImplicitDeny
    );

    iam.put_user_policy("reader", "read", &allow("ecs:Describe*", &cluster)).await.unwrap();
    assert_eq!(iam.authorize(&reader, &ctx(&reader, "ecs:DescribeClusters", &cluster)).await.unwrap(), Decision::Allow);
    assert_eq!(iam.authorize(&reader, &ctx(&reader, "ecs:RunTask", &cluster)).await.unwrap(), Decision::ImplicitDeny);
    assert_eq!(iam.list_user_policies("reader").await.unwrap(), vec!["read".to_owned()]);
    assert_eq!(iam.get_user_policy("reader", "read").await.unwrap(), allow("ecs:Describe*", &cluster));

    // A managed policy's explicit deny wins over the inline allow.
    let denial = iam
        .create_policy(NewPolicy { name: "no-describe", path: None, document: &deny("ecs:*", "*"), description: None })
        .await
        .unwrap();
    iam.attach_user_policy("reader", &denial.arn).await.unwrap();
    assert_eq!(
        iam.authorize(&reader, &ctx(&reader, "ecs:DescribeClusters", &cluster)).await.unwrap(),
        Decision::ExplicitDeny
    );
    let attached = iam.list_attached_user_policies("reader").await.unwrap();
    assert_eq!(attached, vec![("no-describe".to_owned(), denial.arn.clone())]);
    assert_eq!(iam.get_policy(&denial.arn).await.unwrap().attachments, 1);
    let conflict = iam.delete_policy(&denial.arn).await.unwrap_err();
    assert!(matches!(conflict, IamError::DeleteConflict(_)), "{conflict:?}");
    iam.detach_user_policy("reader", &denial.arn).await.unwrap();
    assert!(matches!(iam.detach_user_policy("reader", &denial.arn).await, Err(IamError::NoSuchEntity(_))));
    iam.delete_policy(&denial.arn).await.unwrap();
    assert_eq!(iam.authorize(&reader, &ctx(&reader, "ecs:DescribeClusters", &cluster)).await.unwrap(), Decision::Allow);

    let root = Principal::root(ACCOUNT);
    assert_eq!(iam.authorize(&root, &ctx(&root, "ecs:RunTask", "*")).await.unwrap(), Decision::Allow);
}

#[tokio::test]
async fn managed_policies_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let iam = open(store(&dir)).await;
    let aws = iam.list_policies(PolicyScope::Aws, None, false).await.unwrap();
    let names: Vec<&str> = aws.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["AdministratorAccess", "AmazonECSTaskExecutionRolePolicy"]);
    let exec = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";
    let (version, default) = iam.get_policy_version(exec, "v1").await.unwrap();
    assert!(default && version.document.contains("ecr:GetAuthorizationToken"));
    assert!(matches!(iam.delete_policy(exec).await, Err(IamError::InvalidInput(_))));

    iam.create_user("u", None).await.unwrap();
    iam.attach_user_policy("u", exec).await.unwrap();
    assert_eq!(iam.get_policy(exec).await.unwrap().attachments, 1);
    assert!(iam.list_policies(PolicyScope::Local, None, false).await.unwrap().is_empty());

    // Ten managed policies at most.
    for n in 0..9 {
        let p = iam
            .create_policy(NewPolicy {
                name: &format!("p{n}"),
                path: Some("/x/"),
                document: &allow("s3:*", "*"),
                description: None,
            })
            .await
            .unwrap();
        iam.attach_user_policy("u", &p.arn).await.unwrap();
    }
    let extra = iam
        .create_policy(NewPolicy { name: "p9", path: None, document: &allow("s3:*", "*"), description: None })
        .await
        .unwrap();
    let limit = iam.attach_user_policy("u", &extra.arn).await.unwrap_err();
    assert!(matches!(&limit, IamError::LimitExceeded(m) if m.contains("PoliciesPerUser: 10")), "{limit:?}");
    let dup =
        iam.create_policy(NewPolicy { name: "p9", path: None, document: &allow("s3:*", "*"), description: None }).await;
    assert!(matches!(dup, Err(IamError::EntityAlreadyExists(_))));
    let missing = format!("arn:aws:iam::{ACCOUNT}:policy/nope");
    assert!(matches!(iam.attach_user_policy("u", &missing).await, Err(IamError::NoSuchEntity(_))));
    assert!(matches!(iam.delete_user("u").await, Err(IamError::DeleteConflict(_))));

    // Versions: a new default, the old one deletable, the default not.
    let v2 = iam.create_policy_version(&extra.arn, &allow("s3:Get*", "*"), true).await.unwrap();
    assert_eq!(v2.id, "v2");
    assert_eq!(iam.get_policy(&extra.arn).await.unwrap().default_version, "v2");
    assert!(matches!(iam.delete_policy_version(&extra.arn, "v2").await, Err(IamError::DeleteConflict(_))));
    assert!(matches!(iam.delete_policy(&extra.arn).await, Err(IamError::DeleteConflict(_))));
    iam.delete_policy_version(&extra.arn, "v1").await.unwrap();
    iam.delete_policy(&extra.arn).await.unwrap();

    // Sizes count characters other than whitespace: a user's inline policies 2,048, a role's
    // 10,240, a managed policy 6,144.
    let big = |n: usize| {
        let actions: Vec<String> = (0..n).map(|i| format!("\"s3:GetObject{i:05}\"")).collect();
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":[{}],"Resource":"*"}}]}}"#,
            actions.join(",")
        )
    };
    assert!(matches!(iam.put_user_policy("u", "big", &big(120)).await, Err(IamError::LimitExceeded(_))));
    iam.put_user_policy("u", "small", &big(50)).await.unwrap();
    let spaced = format!("{}{}", big(50), " ".repeat(5000));
    iam.put_user_policy("u", "small", &spaced).await.unwrap();
    iam.create_role(role("r", &trust_account())).await.unwrap();
    iam.put_role_policy("r", "big", &big(120)).await.unwrap();
    assert!(matches!(iam.put_role_policy("r", "huge", &big(600)).await, Err(IamError::LimitExceeded(_))));
    let managed = iam.create_policy(NewPolicy { name: "m", path: None, document: &big(400), description: None }).await;
    assert!(matches!(managed, Err(IamError::LimitExceeded(_))));

    let broken = iam.put_user_policy("u", "broken", "{\"Version\":").await.unwrap_err();
    assert!(matches!(broken, IamError::MalformedPolicyDocument(_)), "{broken:?}");
    let with_principal = trust_account().replace("sts:AssumeRole", "s3:GetObject");
    assert!(matches!(iam.put_user_policy("u", "p", &with_principal).await, Err(IamError::MalformedPolicyDocument(_))));
}

#[tokio::test]
async fn roles_and_assume_role() {
    let dir = tempfile::tempdir().unwrap();
    let iam = open(store(&dir)).await;
    let r = iam.create_role(role("app", &trust_account())).await.unwrap();
    assert_eq!(r.arn, format!("arn:aws:iam::{ACCOUNT}:role/app"));
    assert_eq!(r.max_session_duration, 3600);
    assert!(matches!(iam.create_role(role("app", &trust_account())).await, Err(IamError::EntityAlreadyExists(_))));
    let trust = trust_account();
    let long = NewRole { max_session_duration: Some(50_000), ..role("long", &trust) };
    assert!(matches!(iam.create_role(long).await, Err(IamError::InvalidInput(_))));
    assert!(matches!(iam.create_role(role("x", "not json")).await, Err(IamError::MalformedPolicyDocument(_))));
    // Flotilla is one account: a principal of another could never be anyone.
    let foreign = trust_account().replace(ACCOUNT, "999999999999");
    match iam.create_role(role("x", &foreign)).await {
        Err(IamError::MalformedPolicyDocument(m)) => assert!(m.contains("999999999999"), "{m}"),
        other => panic!("{other:?}"),
    }
    iam.put_role_policy("app", "read", &allow("ssm:GetParameter", "*")).await.unwrap();

    // The root may assume any role its account trusts.
    let root = Principal::root(ACCOUNT);
    let creds = iam.assume_role(&root, &r.arn, "s1", None).await.unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"));
    assert_eq!(creds.assumed_role_arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/s1"));
    let session = iam.lookup_key(&creds.access_key_id).await.unwrap().unwrap();
    assert_eq!(session.session_token.as_deref(), Some(creds.session_token.as_str()));
    assert!(session.expiration.unwrap() > creds.expiration - 3601);
    let p = session.principal;
    assert_eq!(iam.authorize(&p, &ctx(&p, "ssm:GetParameter", "*")).await.unwrap(), Decision::Allow);
    assert_eq!(iam.authorize(&p, &ctx(&p, "ssm:PutParameter", "*")).await.unwrap(), Decision::ImplicitDeny);

    // A user needs its own policies to allow it too, when the trust names only the account.
    iam.create_user("dev", None).await.unwrap();
    let dev = user_principal(&iam, "dev").await;
    let refused = iam.assume_role(&dev, &r.arn, "s2", None).await.unwrap_err();
    assert!(matches!(&refused, IamError::AccessDenied(m) if m.contains("sts:AssumeRole")), "{refused:?}");
    iam.put_user_policy("dev", "assume", &allow("sts:AssumeRole", &r.arn)).await.unwrap();
    iam.assume_role(&dev, &r.arn, "s2", None).await.unwrap();
    assert!(matches!(iam.assume_role(&dev, &r.arn, "s", None).await, Err(IamError::InvalidInput(_))));
    assert!(matches!(iam.assume_role(&dev, &r.arn, "s2", Some(899)).await, Err(IamError::InvalidInput(_))));
    assert!(matches!(iam.assume_role(&dev, &r.arn, "s2", Some(7200)).await, Err(IamError::InvalidInput(_))));
    let nowhere = format!("arn:aws:iam::{ACCOUNT}:role/none");
    assert!(matches!(iam.assume_role(&dev, &nowhere, "s2", None).await, Err(IamError::AccessDenied(_))));

    // A trust policy naming a service lets only that service assume the role.
    iam.create_role(role("task", &trust_service("ecs-tasks.amazonaws.com"))).await.unwrap();
    let task = iam.get_role("task").await.unwrap();
    iam.assume_role_for_service(&task.arn, "ecs-tasks.amazonaws.com", "t1", 3600).await.unwrap();
    let other = iam.assume_role_for_service(&task.arn, "lambda.amazonaws.com", "t1", 3600).await;
    assert!(matches!(other, Err(IamError::AccessDenied(_))));
    assert!(matches!(iam.assume_role(&root, &task.arn, "s3", None).await, Err(IamError::AccessDenied(_))));
    assert!(matches!(
        iam.assume_role_for_service(&nowhere, "ecs-tasks.amazonaws.com", "t1", 900).await,
        Err(IamError::NoSuchEntity(_))
    ));

    // The execution role's view: a role's own policies.
    let any = Principal::root(ACCOUNT);
    assert_eq!(iam.role_authorize(&r.arn, &ctx(&any, "ssm:GetParameter", "*")).await.unwrap(), Decision::Allow);
    assert!(matches!(
        iam.role_authorize(&nowhere, &ctx(&any, "ssm:GetParameter", "*")).await,
        Err(IamError::NoSuchEntity(_))
    ));

    assert!(matches!(iam.delete_role("app").await, Err(IamError::DeleteConflict(_))));
    iam.delete_role_policy("app", "read").await.unwrap();
    iam.delete_role("app").await.unwrap();
    // Its sessions are left with nothing.
    assert_eq!(iam.authorize(&p, &ctx(&p, "ssm:GetParameter", "*")).await.unwrap(), Decision::ImplicitDeny);
}

/// Sessions of a second, and a collector running every 100 ms: AWS's 900-second minimum would
/// make expiry untestable here, so the test opens IAM with `open_tuned`, the constructor that
/// exists for this (the wire always uses `open`, with AWS's limits).
#[tokio::test]
async fn expired_sessions_are_refused_then_collected() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning { collect_every: Duration::from_millis(100), keep_expired: Duration::ZERO, min_session: 1 };
    let iam = Iam::open_tuned(store(&dir), identity(), &root_keys(), tuning).await.unwrap();
    let r = iam.create_role(role("short", &trust_service("ecs-tasks.amazonaws.com"))).await.unwrap();
    let creds = iam.assume_role_for_service(&r.arn, "ecs-tasks.amazonaws.com", "t1", 1).await.unwrap();
    let found = iam.lookup_key(&creds.access_key_id).await.unwrap().unwrap();
    assert_eq!(found.expiration, Some(creds.expiration));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while iam.lookup_key(&creds.access_key_id).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the expired session was never collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two IAMs over one store stand for two servers: what one writes, the other's view sees.
#[tokio::test]
async fn another_servers_writes_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let shared = store(&dir);
    let (a, b) = (open(shared.clone()).await, open(shared).await);
    a.create_user("carol", None).await.unwrap();
    let key = a.create_access_key("carol").await.unwrap();
    let carol = b.lookup_key(&key.id).await.unwrap().expect("b finds a's key").principal;
    let request = ctx(&carol, "logs:PutLogEvents", "*");
    a.put_user_policy("carol", "logs", &allow("logs:*", "*")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.authorize(&carol, &request).await.unwrap() != Decision::Allow {
        assert!(tokio::time::Instant::now() < deadline, "b never saw a's policy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let iam = open(store(&dir)).await;
        iam.create_user("dave", None).await.unwrap();
        iam.create_access_key("dave").await.unwrap()
    };
    // Wait for the first store to let go of the file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match EmbeddedStore::open(dir.path().join("store.redb")) {
            Ok(s) => break s,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "the store stayed open: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let iam = open(Arc::new(reopened)).await;
    let found = iam.lookup_key(&key.id).await.unwrap().unwrap();
    assert_eq!(found.principal.arn, format!("arn:aws:iam::{ACCOUNT}:user/dave"));
}

#[tokio::test]
async fn the_task_execution_role_is_made_once_and_a_deleted_one_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let iam = open(store.clone()).await;
    iam.ensure_task_execution_role().await.unwrap();
    let role = iam.get_role(flotilla_iam::TASK_EXECUTION_ROLE).await.unwrap();
    assert_eq!(role.arn, "arn:aws:iam::123456789012:role/ecsTaskExecutionRole");
    let attached = iam.list_attached_role_policies(flotilla_iam::TASK_EXECUTION_ROLE).await.unwrap();
    let policy = flotilla_iam::aws_policy_arn("/service-role/", "AmazonECSTaskExecutionRolePolicy");
    assert!(attached.iter().any(|(_, arn)| *arn == policy), "{attached:?}");
    // It trusts the tasks' service and its policy lets the platform write logs.
    let creds = iam.assume_role_for_service(&role.arn, "ecs-tasks.amazonaws.com", "t1", 3600).await.unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"));
    let principal = Principal::root("123456789012");
    let mut logs = ctx(&principal, "logs:CreateLogStream", "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/web:*");
    logs.principal =
        flotilla_iam::RequestPrincipal::Aws { arn: creds.assumed_role_arn.clone(), account: "123456789012".into() };
    assert!(iam.role_authorize(&role.arn, &logs).await.unwrap().allowed());

    // A second start (or a second server) changes nothing; once deleted, it stays deleted.
    iam.ensure_task_execution_role().await.unwrap();
    iam.detach_role_policy(flotilla_iam::TASK_EXECUTION_ROLE, &policy).await.unwrap();
    iam.delete_role(flotilla_iam::TASK_EXECUTION_ROLE).await.unwrap();
    // Another server (or this one restarted) on the same store.
    let iam = open(store).await;
    iam.ensure_task_execution_role().await.unwrap();
    assert!(matches!(
        iam.get_role(flotilla_iam::TASK_EXECUTION_ROLE).await,
        Err(flotilla_iam::IamError::NoSuchEntity(_))
    ));
}
