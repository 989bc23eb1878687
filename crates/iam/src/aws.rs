//! AWS managed policies present in every account from the start, with AWS's own documents.
//! They are built in, never stored: AWS owns them and no account can change or delete them.

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_types::Timestamp;

use crate::record::{ManagedPolicy, PolicyVersion};
use crate::view::PolicyEntry;

/// (name, path, policy id, description, created and updated (ms since the epoch), document).
const POLICIES: &[(&str, &str, &str, &str, i64, &str)] = &[
    (
        "AdministratorAccess",
        "/",
        "ANPAIWMBCKSKIEE64ZLYK",
        "Provides full access to AWS services and resources.",
        1_423_247_986_000,
        include_str!("aws/AdministratorAccess.json"),
    ),
    (
        "AmazonECSTaskExecutionRolePolicy",
        "/service-role/",
        "ANPAJG4T4G4PGWVLDJ7ZU",
        "Provides access to other AWS service resources that are required to run Amazon ECS tasks",
        1_510_858_115_000,
        include_str!("aws/AmazonECSTaskExecutionRolePolicy.json"),
    ),
];

/// The ARN of an AWS managed policy.
pub fn policy_arn(path: &str, name: &str) -> String {
    format!("arn:aws:iam::aws:policy{path}{name}")
}

pub(crate) fn policies() -> HashMap<String, Arc<PolicyEntry>> {
    POLICIES
        .iter()
        .map(|&(name, path, id, description, created, document)| {
            let arn = policy_arn(path, name);
            let policy = ManagedPolicy {
                name: name.to_owned(),
                path: path.to_owned(),
                id: id.to_owned(),
                arn: arn.clone(),
                description: Some(description.to_owned()),
                created: Timestamp(created),
                updated: Timestamp(created),
                default_version: "v1".to_owned(),
                versions: vec![PolicyVersion {
                    id: "v1".to_owned(),
                    document: document.to_owned(),
                    created: Timestamp(created),
                }],
                attachments: 0,
                next_version: 2,
            };
            (arn, Arc::new(PolicyEntry::new(policy)))
        })
        .collect()
}
