//! The policy evaluator against the examples of AWS's IAM documentation ("Policy evaluation
//! logic", "IAM JSON policy elements": Action, NotAction, Resource, NotResource, Condition and
//! its operators, policy variables, multivalued context keys, Principal): each case is a set of
//! policies, a request and the decision AWS documents for it. Then the documents IAM refuses,
//! with its `MalformedPolicyDocument` messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_iam::policy::{Decision, Policy, PolicyKind, PolicySet, RequestContext, RequestPrincipal, evaluate};

const ACCOUNT: &str = "123456789012";

use Decision::{Allow, ExplicitDeny as Deny, ImplicitDeny as Implicit};

struct Case {
    name: &'static str,
    /// Each a policy's `Statement` array (wrapped in a `2012-10-17` document) or a whole
    /// document (starting with `{`).
    policies: &'static [&'static str],
    action: &'static str,
    resource: &'static str,
    keys: &'static [(&'static str, &'static str)],
    want: Decision,
}

fn document(p: &str) -> String {
    if p.trim_start().starts_with('{') {
        p.to_owned()
    } else {
        format!(r#"{{"Version":"2012-10-17","Statement":{p}}}"#)
    }
}

fn context(action: &str, resource: &str, keys: &[(&str, &str)], principal: RequestPrincipal) -> RequestContext {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in keys {
        map.entry(k.to_ascii_lowercase()).or_default().push((*v).to_owned());
    }
    RequestContext { action: action.to_owned(), resource: resource.to_owned(), principal, keys: map }
}

fn alice() -> RequestPrincipal {
    RequestPrincipal::Aws { arn: format!("arn:aws:iam::{ACCOUNT}:user/alice"), account: ACCOUNT.to_owned() }
}

const CLUSTER_PROD: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/prod";
const CLUSTER_DEV: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/dev";

const IDENTITY_CASES: &[Case] = &[
    // --- Evaluation logic: default deny, allow, explicit deny wins.
    Case {
        name: "no policy: implicit deny",
        policies: &[],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "allow on the resource",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    Case {
        name: "allow on another resource: implicit deny",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_DEV,
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "another action: implicit deny",
        policies: &[r#"[{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "explicit deny beats allow in the same policy",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ecs:RunTask","Resource":"*"}]"#,
        ],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Deny,
    },
    Case {
        name: "explicit deny in one policy beats allow in another",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]"#,
            r#"[{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]"#,
        ],
        action: "ecs:DeleteCluster",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Deny,
    },
    Case {
        name: "deny of another action leaves the allow",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    Case {
        name: "deny alone is still a deny, not an allow",
        policies: &[r#"[{"Effect":"Deny","Action":"ecs:RunTask","Resource":"*"}]"#],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "statement object instead of array",
        policies: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"*"}}"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/app/db",
        keys: &[],
        want: Allow,
    },
    // --- Action: wildcards, case-insensitivity, lists.
    Case {
        name: "Describe* matches DescribeClusters",
        policies: &[r#"[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*"}]"#],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    Case {
        name: "Describe* does not match RunTask",
        policies: &[r#"[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "action matching ignores case",
        policies: &[r#"[{"Effect":"Allow","Action":"ECS:runtask","Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "a wildcard in the middle of an action",
        policies: &[r#"[{"Effect":"Allow","Action":"ecs:*Task","Resource":"*"}]"#],
        action: "ecs:StopTask",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "? matches exactly one character",
        policies: &[r#"[{"Effect":"Allow","Action":"ecs:?unTask","Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "? does not match zero characters",
        policies: &[r#"[{"Effect":"Allow","Action":"ecs:?RunTask","Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "service prefix must match: ecs:* is not ecr",
        policies: &[r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]"#],
        action: "ecr:GetAuthorizationToken",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "Action * allows every service",
        policies: &[r#"[{"Effect":"Allow","Action":"*","Resource":"*"}]"#],
        action: "secretsmanager:GetSecretValue",
        resource: "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        keys: &[],
        want: Allow,
    },
    // --- NotAction (the documentation's examples).
    Case {
        name: "Allow NotAction iam:*: any other service is allowed",
        policies: &[r#"[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]"#],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "Allow NotAction iam:*: IAM is not allowed",
        policies: &[r#"[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]"#],
        action: "iam:CreateUser",
        resource: "arn:aws:iam::123456789012:user/bob",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "Allow NotAction iam:* with Allow iam:ChangePassword (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"},{"Effect":"Allow","Action":"iam:ChangePassword","Resource":"*"}]"#,
        ],
        action: "iam:ChangePassword",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "Deny NotAction with MFA: no MFA key denies everything outside IAM",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"iam:*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]"#,
        ],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[],
        want: Deny,
    },
    Case {
        name: "Deny NotAction with MFA: IAM actions stay allowed",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"iam:*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]"#,
        ],
        action: "iam:ListUsers",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "Deny NotAction with MFA: signed in with MFA is not denied",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"iam:*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]"#,
        ],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[("aws:MultiFactorAuthPresent", "true")],
        want: Allow,
    },
    Case {
        name: "Deny NotAction list: actions in the list are not denied",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":["ecs:Describe*","ecs:List*"],"Resource":"*"}]"#,
        ],
        action: "ecs:ListTasks",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    // --- Resource and NotResource.
    Case {
        name: "resource ARNs are case-sensitive (user/Bob is not user/bob)",
        policies: &[r#"[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::123456789012:user/Bob"}]"#],
        action: "iam:GetUser",
        resource: "arn:aws:iam::123456789012:user/bob",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "users under a path (documentation example user/accounting/*)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::123456789012:user/accounting/*"}]"#,
        ],
        action: "iam:GetUser",
        resource: "arn:aws:iam::123456789012:user/accounting/carol",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "a path wildcard does not reach another path",
        policies: &[
            r#"[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::123456789012:user/accounting/*"}]"#,
        ],
        action: "iam:GetUser",
        resource: "arn:aws:iam::123456789012:user/marketing/dave",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "wildcards in the region and account segments",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"arn:aws:ecs:*:*:cluster/prod"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    Case {
        name: "a wildcard inside a segment stays in it",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"arn:aws:ecs:us-*-1:123456789012:cluster/prod"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: "arn:aws:ecs:us-east:x-1:123456789012:cluster/prod",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "a trailing wildcard expands past colons (task definition revisions)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:RunTask","Resource":"arn:aws:ecs:us-east-1:123456789012:task-definition/web*"}]"#,
        ],
        action: "ecs:RunTask",
        resource: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:7",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "family:* does not match another family",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:RunTask","Resource":"arn:aws:ecs:us-east-1:123456789012:task-definition/web:*"}]"#,
        ],
        action: "ecs:RunTask",
        resource: "arn:aws:ecs:us-east-1:123456789012:task-definition/worker:1",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "? in a resource",
        policies: &[
            r#"[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"arn:aws:secretsmanager:us-east-1:123456789012:secret:db-??????"}]"#,
        ],
        action: "secretsmanager:GetSecretValue",
        resource: "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "NotResource: everything but the payroll objects (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"s3:*","NotResource":["arn:aws:s3:::HRBucket/Payroll","arn:aws:s3:::HRBucket/Payroll/*"]}]"#,
        ],
        action: "s3:GetObject",
        resource: "arn:aws:s3:::HRBucket/Handbook.pdf",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "NotResource: the payroll objects are not allowed",
        policies: &[
            r#"[{"Effect":"Allow","Action":"s3:*","NotResource":["arn:aws:s3:::HRBucket/Payroll","arn:aws:s3:::HRBucket/Payroll/*"]}]"#,
        ],
        action: "s3:GetObject",
        resource: "arn:aws:s3:::HRBucket/Payroll/2026.csv",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "Deny NotResource: a deny outside one cluster",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:*","NotResource":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}]"#,
        ],
        action: "ecs:DescribeClusters",
        resource: CLUSTER_DEV,
        keys: &[],
        want: Deny,
    },
    // --- Policy variables.
    Case {
        name: "${aws:username} in a resource: own folder",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/home/${aws:username}/*"}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/home/alice/token",
        keys: &[("aws:username", "alice")],
        want: Allow,
    },
    Case {
        name: "${aws:username} in a resource: another user's folder",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/home/${aws:username}/*"}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/home/bob/token",
        keys: &[("aws:username", "alice")],
        want: Implicit,
    },
    Case {
        name: "a variable with no value in the request does not match",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/home/${aws:username}/*"}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/home//token",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "version 2008-10-17 takes ${...} literally",
        policies: &[
            r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/home/${aws:username}/*"}]}"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/home/alice/token",
        keys: &[("aws:username", "alice")],
        want: Implicit,
    },
    Case {
        name: "a variable's default value",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/team/${aws:PrincipalTag/team, 'company-wide'}/*"}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/team/company-wide/motd",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "${*} is a literal asterisk",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"arn:aws:ssm:us-east-1:123456789012:parameter/odd${*}name"}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "arn:aws:ssm:us-east-1:123456789012:parameter/oddXname",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "a variable in a condition value",
        policies: &[
            r#"[{"Effect":"Allow","Action":"iam:GetUser","Resource":"*","Condition":{"StringEquals":{"iam:ResourceTag/owner":"${aws:username}"}}}]"#,
        ],
        action: "iam:GetUser",
        resource: "arn:aws:iam::123456789012:user/alice",
        keys: &[("aws:username", "alice"), ("iam:ResourceTag/owner", "alice")],
        want: Allow,
    },
    // --- String operators.
    Case {
        name: "StringEquals matches",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Allow,
    },
    Case {
        name: "StringEquals is case-sensitive",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"Alice"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Implicit,
    },
    Case {
        name: "StringEqualsIgnoreCase ignores case",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Allow,
    },
    Case {
        name: "StringNotEqualsIgnoreCase",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotEqualsIgnoreCase":{"aws:username":"ALICE"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Implicit,
    },
    Case {
        name: "condition key names ignore case",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"AWS:UserName":"alice"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Allow,
    },
    Case {
        name: "StringEquals: * is not a wildcard",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"a*"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Implicit,
    },
    Case {
        name: "StringLike: * is a wildcard",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:username":"a*"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice")],
        want: Allow,
    },
    Case {
        name: "StringNotLike",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotLike":{"aws:username":["a*","b*"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "carol")],
        want: Allow,
    },
    Case {
        name: "StringNotEquals with several values is a NOR",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestedRegion":["us-east-1","eu-west-1"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:RequestedRegion", "eu-west-1")],
        want: Implicit,
    },
    Case {
        name: "aws:RequestedRegion: several values are an OR",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:RequestedRegion":["us-east-1","us-west-2"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:RequestedRegion", "us-west-2")],
        want: Allow,
    },
    Case {
        name: "deny outside the approved regions (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":["iam:*","sts:*"],"Resource":"*","Condition":{"StringNotEquals":{"aws:RequestedRegion":["eu-central-1","eu-west-1"]}}}]"#,
        ],
        action: "ecs:RunTask",
        resource: "*",
        keys: &[("aws:RequestedRegion", "us-east-1")],
        want: Deny,
    },
    Case {
        name: "a positive operator on an absent key is false",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/team":"web"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "a negated operator on an absent key is true",
        policies: &[
            r#"[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalTag/team":"web"}}},{"Effect":"Allow","Action":"*","Resource":"*"}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Deny,
    },
    Case {
        name: "several keys in one operator are an AND (one fails)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice","aws:RequestedRegion":"us-east-1"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice"), ("aws:RequestedRegion", "eu-west-1")],
        want: Implicit,
    },
    Case {
        name: "several operators are an AND (both hold)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice"},"Bool":{"aws:SecureTransport":"false"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:username", "alice"), ("aws:SecureTransport", "false")],
        want: Allow,
    },
    // --- ARN operators and ecs:cluster.
    Case {
        name: "ArnEquals ecs:cluster: the named cluster",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:RunTask","Resource":"*","Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}}}]"#,
        ],
        action: "ecs:RunTask",
        resource: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1",
        keys: &[("ecs:cluster", CLUSTER_PROD)],
        want: Allow,
    },
    Case {
        name: "ArnEquals ecs:cluster: another cluster",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:RunTask","Resource":"*","Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}}}]"#,
        ],
        action: "ecs:RunTask",
        resource: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1",
        keys: &[("ecs:cluster", CLUSTER_DEV)],
        want: Implicit,
    },
    Case {
        name: "ArnLike with a wildcard",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnLike":{"ecs:cluster":"arn:aws:ecs:*:123456789012:cluster/p*"}}}]"#,
        ],
        action: "ecs:ListTasks",
        resource: CLUSTER_PROD,
        keys: &[("ecs:cluster", CLUSTER_PROD)],
        want: Allow,
    },
    Case {
        name: "ArnNotLike",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnNotLike":{"ecs:cluster":"arn:aws:ecs:*:*:cluster/prod"}}}]"#,
        ],
        action: "ecs:ListTasks",
        resource: CLUSTER_PROD,
        keys: &[("ecs:cluster", CLUSTER_PROD)],
        want: Implicit,
    },
    Case {
        name: "ArnLike aws:PrincipalArn",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::123456789012:user/*"}}}]"#,
        ],
        action: "logs:PutLogEvents",
        resource: "*",
        keys: &[("aws:PrincipalArn", "arn:aws:iam::123456789012:user/alice")],
        want: Allow,
    },
    // --- IP addresses.
    Case {
        name: "IpAddress: inside one of the ranges (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "203.0.113.7")],
        want: Allow,
    },
    Case {
        name: "IpAddress: outside",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "198.51.100.1")],
        want: Implicit,
    },
    Case {
        name: "NotIpAddress deny: from elsewhere (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "198.51.100.1")],
        want: Deny,
    },
    Case {
        name: "NotIpAddress deny: from inside",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "192.0.2.10")],
        want: Allow,
    },
    Case {
        name: "IpAddress: IPv6 range (documentation example 2001:DB8:1234:5678::/64)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"2001:DB8:1234:5678::/64"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "2001:db8:1234:5678::42")],
        want: Allow,
    },
    Case {
        name: "IpAddress: a single address",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.1"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:SourceIp", "127.0.0.2")],
        want: Implicit,
    },
    // --- Dates, numbers, booleans, Null.
    Case {
        name: "a window of time (documentation example): inside",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-04-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2020-06-30T23:59:59Z"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:CurrentTime", "2020-05-15T12:00:00Z")],
        want: Allow,
    },
    Case {
        name: "a window of time: after it",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-04-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2020-06-30T23:59:59Z"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:CurrentTime", "2026-12-07T00:00:00Z")],
        want: Implicit,
    },
    Case {
        name: "DateLessThanEquals against epoch seconds",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThanEquals":{"aws:EpochTime":"1600000000"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:EpochTime", "1600000000")],
        want: Allow,
    },
    Case {
        name: "NumericLessThanEquals (documentation example s3:max-keys 10)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::example_bucket","Condition":{"NumericLessThanEquals":{"s3:max-keys":"10"}}}]"#,
        ],
        action: "s3:ListBucket",
        resource: "arn:aws:s3:::example_bucket",
        keys: &[("s3:max-keys", "10")],
        want: Allow,
    },
    Case {
        name: "NumericLessThanEquals: over",
        policies: &[
            r#"[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::example_bucket","Condition":{"NumericLessThanEquals":{"s3:max-keys":"10"}}}]"#,
        ],
        action: "s3:ListBucket",
        resource: "arn:aws:s3:::example_bucket",
        keys: &[("s3:max-keys", "11")],
        want: Implicit,
    },
    Case {
        name: "NumericGreaterThan with a number in the policy",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericGreaterThan":{"aws:MultiFactorAuthAge":3600}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:MultiFactorAuthAge", "7200")],
        want: Allow,
    },
    Case {
        name: "Bool aws:SecureTransport false: deny plain HTTP (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "*",
        keys: &[("aws:SecureTransport", "false")],
        want: Deny,
    },
    Case {
        name: "Bool with a JSON boolean",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":true}}}]"#,
        ],
        action: "ssm:GetParameter",
        resource: "*",
        keys: &[("aws:SecureTransport", "false")],
        want: Implicit,
    },
    Case {
        name: "Null true: the key is absent (long-term credentials)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:TokenIssueTime":"true"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "Null true: the key is present",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:TokenIssueTime":"true"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:TokenIssueTime", "2026-12-07T00:00:00Z")],
        want: Implicit,
    },
    Case {
        name: "Null false: the key must be present",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:TokenIssueTime":"false"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[("aws:TokenIssueTime", "2026-12-07T00:00:00Z")],
        want: Allow,
    },
    // --- IfExists.
    Case {
        name: "StringLikeIfExists: an absent key passes (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ec2:*","Resource":"*","Condition":{"StringLikeIfExists":{"ec2:InstanceType":["t1.*","t2.*","m3.*"]}}}]"#,
        ],
        action: "ec2:DescribeVpcs",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    Case {
        name: "StringLikeIfExists: a present key must match",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ec2:*","Resource":"*","Condition":{"StringLikeIfExists":{"ec2:InstanceType":["t1.*","t2.*","m3.*"]}}}]"#,
        ],
        action: "ec2:RunInstances",
        resource: "*",
        keys: &[("ec2:InstanceType", "c5.large")],
        want: Implicit,
    },
    Case {
        name: "IpAddressIfExists: no source address passes",
        policies: &[
            r#"[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}}]"#,
        ],
        action: "ecs:ListClusters",
        resource: "*",
        keys: &[],
        want: Allow,
    },
    // --- Set operators.
    Case {
        name: "ForAllValues: every requested tag key is allowed (documentation example)",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[("aws:TagKeys", "environment"), ("aws:TagKeys", "cost-center")],
        want: Allow,
    },
    Case {
        name: "ForAllValues: one requested tag key is not allowed",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[("aws:TagKeys", "environment"), ("aws:TagKeys", "owner")],
        want: Implicit,
    },
    Case {
        name: "ForAllValues: an absent key is true",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Allow,
    },
    Case {
        name: "ForAnyValue: one requested tag key matches",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[("aws:TagKeys", "owner"), ("aws:TagKeys", "cost-center")],
        want: Allow,
    },
    Case {
        name: "ForAnyValue: an absent key is false",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[],
        want: Implicit,
    },
    Case {
        name: "ForAnyValue:StringLike with a wildcard",
        policies: &[
            r#"[{"Effect":"Deny","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"aws:*"}}},{"Effect":"Allow","Action":"*","Resource":"*"}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[("aws:TagKeys", "team"), ("aws:TagKeys", "aws:reserved")],
        want: Deny,
    },
    Case {
        name: "ForAllValues:StringNotEquals: none of the keys is forbidden",
        policies: &[
            r#"[{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringNotEquals":{"aws:TagKeys":"owner"}}}]"#,
        ],
        action: "ecs:TagResource",
        resource: CLUSTER_PROD,
        keys: &[("aws:TagKeys", "team"), ("aws:TagKeys", "env")],
        want: Allow,
    },
    // --- One cluster's reader: the issue's example.
    Case {
        name: "one cluster's reader reads that cluster's tasks",
        policies: &[
            r#"[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*","Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}}}]"#,
        ],
        action: "ecs:DescribeTasks",
        resource: "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef",
        keys: &[("ecs:cluster", CLUSTER_PROD)],
        want: Allow,
    },
    Case {
        name: "one cluster's reader does not see another cluster's tasks",
        policies: &[
            r#"[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*","Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/prod"}}}]"#,
        ],
        action: "ecs:DescribeTasks",
        resource: "arn:aws:ecs:us-east-1:123456789012:task/dev/0123456789abcdef",
        keys: &[("ecs:cluster", CLUSTER_DEV)],
        want: Implicit,
    },
];

#[test]
fn identity_policies_decide_as_aws_documents() {
    assert!(IDENTITY_CASES.len() >= 60, "{} cases", IDENTITY_CASES.len());
    let mut failures = Vec::new();
    for case in IDENTITY_CASES {
        let policies: Vec<Policy> = case
            .policies
            .iter()
            .map(|p| Policy::parse(&document(p), PolicyKind::Identity).unwrap_or_else(|e| panic!("{}: {e}", case.name)))
            .collect();
        let ctx = context(case.action, case.resource, case.keys, alice());
        let got = evaluate(&policies, &ctx);
        if got != case.want {
            failures.push(format!("{}: got {got:?}, want {:?}", case.name, case.want));
        }
        // As every request evaluates a principal's policies: through a set, which remembers
        // each action's statements; twice, the second time from what it remembered.
        let set = PolicySet::new(policies.into_iter().map(Arc::new).collect());
        for round in ["first", "remembered"] {
            let got = ctx.with_borrowed(|ctx| set.evaluate(ctx));
            if got != case.want {
                failures.push(format!("{} (policy set, {round}): got {got:?}, want {:?}", case.name, case.want));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        IDENTITY_CASES.len(),
        failures.join("\n")
    );
}

struct TrustCase {
    name: &'static str,
    policy: &'static str,
    principal: fn() -> RequestPrincipal,
    want: Decision,
}

const ECS_TASKS_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const ACCOUNT_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
const USER_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/alice"]},"Action":"sts:AssumeRole"}]}"#;
const ROLE_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/deployer"},"Action":"sts:AssumeRole"}]}"#;

fn ecs_tasks() -> RequestPrincipal {
    RequestPrincipal::Service("ecs-tasks.amazonaws.com".to_owned())
}
fn lambda() -> RequestPrincipal {
    RequestPrincipal::Service("lambda.amazonaws.com".to_owned())
}
fn bob() -> RequestPrincipal {
    RequestPrincipal::Aws { arn: format!("arn:aws:iam::{ACCOUNT}:user/bob"), account: ACCOUNT.to_owned() }
}
fn deployer_session() -> RequestPrincipal {
    RequestPrincipal::Aws {
        arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci"),
        account: ACCOUNT.to_owned(),
    }
}

const TRUST_CASES: &[TrustCase] = &[
    TrustCase { name: "ECS tasks may assume a task role", policy: ECS_TASKS_TRUST, principal: ecs_tasks, want: Allow },
    TrustCase { name: "another service may not", policy: ECS_TASKS_TRUST, principal: lambda, want: Implicit },
    TrustCase {
        name: "a user may not assume a service's role",
        policy: ECS_TASKS_TRUST,
        principal: alice,
        want: Implicit,
    },
    TrustCase { name: "the account principal trusts its users", policy: ACCOUNT_TRUST, principal: bob, want: Allow },
    TrustCase {
        name: "the account principal is not a service",
        policy: ACCOUNT_TRUST,
        principal: ecs_tasks,
        want: Implicit,
    },
    TrustCase { name: "a named user", policy: USER_TRUST, principal: alice, want: Allow },
    TrustCase { name: "another user", policy: USER_TRUST, principal: bob, want: Implicit },
    TrustCase { name: "a role's sessions", policy: ROLE_TRUST, principal: deployer_session, want: Allow },
    TrustCase {
        name: "Principal * trusts anyone",
        policy: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}]}"#,
        principal: bob,
        want: Allow,
    },
    TrustCase {
        name: "an account id as principal",
        policy: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}"#,
        principal: alice,
        want: Allow,
    },
    TrustCase {
        name: "Deny with NotPrincipal: everyone but alice is denied",
        policy: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"},{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"sts:AssumeRole"}]}"#,
        principal: bob,
        want: Deny,
    },
    TrustCase {
        name: "a trust policy's condition",
        policy: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:username":"carol"}}}]}"#,
        principal: alice,
        want: Implicit,
    },
];

#[test]
fn trust_policies_match_principals() {
    for case in TRUST_CASES {
        let policy = Policy::parse(case.policy, PolicyKind::Trust).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let ctx = context("sts:AssumeRole", "*", &[("aws:username", "alice")], (case.principal)());
        assert_eq!(evaluate([&policy], &ctx), case.want, "{}", case.name);
    }
}

/// Documents IAM refuses, with its `MalformedPolicyDocument` message.
const REFUSALS: &[(PolicyKind, &str, &str)] = &[
    (PolicyKind::Identity, "not json", "Syntax errors in policy."),
    (PolicyKind::Identity, r#"["Statement"]"#, "Syntax errors in policy."),
    (PolicyKind::Identity, r#"{"Version":"2012-10-17"}"#, "Missing required field Statement"),
    (PolicyKind::Identity, r#"{"Version":"2012-10-18","Statement":[]}"#, "The policy failed legacy parsing"),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Actions":"ecs:*","Resource":"*"}]}"#,
        "Unknown field Actions",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statment":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]}"#,
        "Unknown field Statment",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecs:*","Resource":"*"}]}"#,
        "Policy document should not specify a principal.",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*"}]}"#,
        "Policy statement must contain resources.",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
        "Policy statement must contain actions.",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Action":"ecs:*","Resource":"*"}]}"#,
        "Missing required field Effect",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Alow","Action":"ecs:*","Resource":"*"}]}"#,
        "Invalid effect: Alow",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"RunTask","Resource":"*"}]}"#,
        "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"cluster/prod"}]}"#,
        "Resource cluster/prod must be in ARN format or \"*\".",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEqual":{"aws:username":"a"}}}]}"#,
        "Policy has an invalid condition operator: StringEqual",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"NullIfExists":{"aws:username":"true"}}}]}"#,
        "Policy has an invalid condition operator: NullIfExists",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}]}"#,
        "Invalid value for condition operator IpAddress: 10.0.0.0/33",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"iam:*","Resource":"*"}]}"#,
        "Statement IDs (SID) in a single policy must be unique.",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"no spaces","Effect":"Allow","Action":"ecs:*","Resource":"*"}]}"#,
        "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*",
    ),
    (
        PolicyKind::Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","NotAction":"iam:*","Resource":"*"}]}"#,
        "Syntax errors in policy.",
    ),
    (PolicyKind::Identity, r#"{"Version":"2012-10-17","Statement":[]}"#, "Syntax errors in policy."),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#,
        "Missing required field Principal",
    ),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"ecs:RunTask"}]}"#,
        "AssumeRole policy may only specify STS AssumeRole actions.",
    ),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole","Resource":"*"}]}"#,
        "Has prohibited field Resource",
    ),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"sts:AssumeRole"}]}"#,
        "Invalid principal in policy: \"AWS\":\"bob\"",
    ),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/*"},"Action":"sts:AssumeRole"}]}"#,
        "Invalid principal in policy: \"AWS\":\"arn:aws:iam::123456789012:user/*\"",
    ),
    (
        PolicyKind::Trust,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Robot":"r2"},"Action":"sts:AssumeRole"}]}"#,
        "Unknown field Robot",
    ),
];

#[test]
fn malformed_documents_are_refused_with_iams_messages() {
    for (kind, text, message) in REFUSALS {
        match Policy::parse(text, *kind) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert_eq!(e.0, *message, "{text}"),
        }
    }
}

#[test]
fn principals_of_another_account_are_refused() {
    let other = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"sts:AssumeRole"}]}"#;
    let policy = Policy::parse(other, PolicyKind::Trust).expect("AWS accepts it syntactically");
    let e = policy.check_principal_account(ACCOUNT).unwrap_err();
    assert_eq!(e.0, "Invalid principal in policy: \"AWS\":\"999999999999\"");
    let other_user = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/alice","arn:aws:iam::999999999999:user/eve"]},"Action":"sts:AssumeRole"}]}"#;
    let policy = Policy::parse(other_user, PolicyKind::Trust).unwrap();
    assert_eq!(
        policy.check_principal_account(ACCOUNT).unwrap_err().0,
        "Invalid principal in policy: \"AWS\":\"arn:aws:iam::999999999999:user/eve\""
    );
    for own in [ECS_TASKS_TRUST, ACCOUNT_TRUST, USER_TRUST, ROLE_TRUST] {
        Policy::parse(own, PolicyKind::Trust).unwrap().check_principal_account(ACCOUNT).unwrap();
    }
}
