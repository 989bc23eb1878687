//! What a new account has before anyone asks: the `ecsTaskExecutionRole` the ECS console makes
//! on first use (trusting `ecs-tasks.amazonaws.com`, with AWS's
//! `AmazonECSTaskExecutionRolePolicy` attached), so that task definitions written for Fargate,
//! which name it, run unmodified. It is made once per store: a marker records that it was, so
//! a role the operator deleted stays deleted.

use flotilla_store::{Compare, Op, Txn};

use crate::roles::NewRole;
use crate::{Iam, IamError};

/// The role's name, as the ECS console and AWS's documentation name it.
pub const TASK_EXECUTION_ROLE: &str = "ecsTaskExecutionRole";

const MARKER: &str = "iam-bootstrap/ecsTaskExecutionRole";

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

impl Iam {
    /// Makes `ecsTaskExecutionRole` unless it was made before (by this or another server, or
    /// by the operator). Safe to call on every start of every server.
    pub async fn ensure_task_execution_role(&self) -> Result<(), IamError> {
        if self.store.get(MARKER).await?.is_some() {
            return Ok(());
        }
        let made = self
            .create_role(NewRole {
                name: TASK_EXECUTION_ROLE,
                path: None,
                trust: TRUST,
                description: Some("Allows ECS tasks to call AWS services on your behalf."),
                max_session_duration: None,
            })
            .await;
        match made {
            Ok(_) => {
                let policy = crate::aws::policy_arn("/service-role/", "AmazonECSTaskExecutionRolePolicy");
                self.attach_role_policy(TASK_EXECUTION_ROLE, &policy).await?;
            }
            // Another server made it, or the operator did before this version: theirs stands.
            Err(IamError::EntityAlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let txn = Txn::new().when(Compare::absent(MARKER)).then(Op::put(MARKER, b"1".to_vec()));
        self.store.txn(txn).await?;
        Ok(())
    }
}
