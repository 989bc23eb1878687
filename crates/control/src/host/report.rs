//! How a host's [`TaskReport`] becomes part of a task record. Pure: the caller loads the
//! record and commits the result with compare-and-write, so one report is one transaction.

use flotilla_host::TaskReport;
use flotilla_types::Timestamp;
use flotilla_types::task::{
    Attachment, AttachmentStatus, ContainerStatus, DesiredStatus, NetworkInterface, Task, TaskStatus,
};

/// Merges `report` into `task`. Statuses only move forward (a late or repeated report
/// changes nothing); a stop request keeps the first reason given.
pub(crate) fn merge(task: &mut Task, report: &TaskReport) {
    if let Some(stop) = &report.stop
        && task.desired_status != DesiredStatus::Stopped
    {
        task.desired_status = DesiredStatus::Stopped;
        task.stop_code = Some(stop.code);
        task.stopped_reason = Some(stop.reason.clone());
    }
    for c in &report.containers {
        let Some(tc) = task.container_mut(&c.name) else { continue };
        if let Some(status) = c.status
            && status > tc.last_status
        {
            tc.last_status = status;
        }
        if c.runtime_id.is_some() {
            tc.runtime_id.clone_from(&c.runtime_id);
        }
        if c.image_digest.is_some() {
            tc.image_digest.clone_from(&c.image_digest);
        }
        if c.exit_code.is_some() {
            tc.exit_code = c.exit_code;
        }
        if c.reason.is_some() {
            tc.reason.clone_from(&c.reason);
        }
        if c.health.is_some() {
            tc.health_status = c.health;
        }
        if c.restart_count.is_some() {
            tc.restart_count = c.restart_count;
        }
    }
    if report.health.is_some() {
        task.health_status = report.health;
    }
    if let Some(a) = &report.attachment {
        match task.attachments.iter_mut().find(|x| x.id == a.id) {
            Some(x) => {
                x.status = a.status;
                if let Some(details) = &a.interface {
                    x.details = details.to_pairs();
                }
            }
            None => task.attachments.push(Attachment::eni(&a.id, a.status, a.interface.as_ref())),
        }
        if a.status == AttachmentStatus::Attached {
            let ip = a.interface.as_ref().map(|d| d.private_ipv4_address.clone()).or_else(|| {
                let attachment = task.attachments.iter().find(|x| x.id == a.id)?;
                attachment.details.iter().find(|d| d.name.as_deref() == Some("privateIPv4Address"))?.value.clone()
            });
            for c in &mut task.containers {
                c.network_interfaces =
                    vec![NetworkInterface { attachment_id: Some(a.id.clone()), private_ipv4_address: ip.clone() }];
            }
        }
    }
    if let Some(to) = report.status {
        advance(task, to, report.at);
    }
}

/// Moves lastStatus to `to` (unless already there or past it) with the timestamps ECS sets.
fn advance(t: &mut Task, to: TaskStatus, at: Timestamp) {
    if !t.last_status.can_transition_to(to) {
        return;
    }
    t.last_status = to;
    let now = Some(at);
    match to {
        TaskStatus::Pending => t.pull_started_at = t.pull_started_at.or(now),
        TaskStatus::Activating => t.pull_stopped_at = t.pull_stopped_at.or(now),
        TaskStatus::Running => {
            t.started_at = t.started_at.or(now);
            t.connectivity = Some("CONNECTED".into());
            t.connectivity_at = t.connectivity_at.or(now);
        }
        TaskStatus::Stopping => t.stopping_at = t.stopping_at.or(now),
        TaskStatus::Deprovisioning => t.execution_stopped_at = t.execution_stopped_at.or(now),
        TaskStatus::Stopped => {
            t.stopped_at = t.stopped_at.or(now);
            t.execution_stopped_at = t.execution_stopped_at.or(now);
            t.desired_status = DesiredStatus::Stopped;
            for c in &mut t.containers {
                c.last_status = ContainerStatus::Stopped;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use flotilla_host::{AttachmentReport, ContainerReport};
    use flotilla_types::task::{Container, InterfaceDetails, StopCode};

    use super::*;

    const ARN: &str = "arn:aws:ecs:us-east-1:000000000000:task/c/1";

    fn task() -> Task {
        let container = |name: &str| Container {
            container_arn: format!("arn:aws:ecs:us-east-1:000000000000:container/c/1/{name}"),
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/c/1".into(),
            name: name.into(),
            image: "busybox".into(),
            image_digest: None,
            runtime_id: None,
            last_status: ContainerStatus::Pending,
            exit_code: None,
            reason: None,
            network_bindings: Vec::new(),
            network_interfaces: Vec::new(),
            health_status: None,
            restart_count: None,
            cpu: None,
            memory: None,
            memory_reservation: None,
            managed_agents: Vec::new(),
        };
        Task {
            cpu: "256".into(),
            memory: "512".into(),
            containers: vec![container("web"), container("sidecar")],
            availability_zone: "us-east-1a".into(),
            health_status: None,
            ..Task::provisioning(
                ARN.into(),
                "arn:aws:ecs:us-east-1:000000000000:cluster/c".into(),
                "arn:aws:ecs:us-east-1:000000000000:task-definition/f:1".into(),
                Timestamp(1),
            )
        }
    }

    #[test]
    fn container_and_task_running_land_together() {
        let mut t = task();
        let report = TaskReport::new(ARN)
            .status(TaskStatus::Running)
            .container(ContainerReport { status: Some(ContainerStatus::Running), ..ContainerReport::new("web") })
            .container(ContainerReport { status: Some(ContainerStatus::Running), ..ContainerReport::new("sidecar") });
        merge(&mut t, &report);
        assert_eq!(t.last_status, TaskStatus::Running);
        assert_eq!(t.started_at, Some(report.at));
        assert_eq!(t.connectivity.as_deref(), Some("CONNECTED"));
        assert!(t.containers.iter().all(|c| c.last_status == ContainerStatus::Running));
    }

    #[test]
    fn statuses_never_go_back() {
        let mut t = task();
        merge(&mut t, &TaskReport::new(ARN).status(TaskStatus::Running));
        let started = t.started_at;
        merge(
            &mut t,
            &TaskReport::new(ARN)
                .status(TaskStatus::Pending)
                .container(ContainerReport { status: Some(ContainerStatus::Stopped), ..ContainerReport::new("web") }),
        );
        assert_eq!(t.last_status, TaskStatus::Running);
        assert_eq!(t.started_at, started);
        merge(
            &mut t,
            &TaskReport::new(ARN)
                .container(ContainerReport { status: Some(ContainerStatus::Running), ..ContainerReport::new("web") }),
        );
        assert_eq!(t.containers[0].last_status, ContainerStatus::Stopped, "a stopped container stays stopped");
    }

    #[test]
    fn the_first_stop_reason_wins() {
        let mut t = task();
        merge(&mut t, &TaskReport::new(ARN).stop(StopCode::EssentialContainerExited, "first"));
        merge(&mut t, &TaskReport::new(ARN).stop(StopCode::TaskFailedToStart, "second"));
        assert_eq!(t.desired_status, DesiredStatus::Stopped);
        assert_eq!(t.stop_code, Some(StopCode::EssentialContainerExited));
        assert_eq!(t.stopped_reason.as_deref(), Some("first"));
        merge(&mut t, &TaskReport::new(ARN).status(TaskStatus::Stopped));
        assert!(t.containers.iter().all(|c| c.last_status == ContainerStatus::Stopped));
        assert!(t.stopped_at.is_some() && t.execution_stopped_at.is_some());
    }

    #[test]
    fn an_attached_interface_shows_on_every_container() {
        let mut t = task();
        let details = InterfaceDetails {
            subnet_id: "subnet-1".into(),
            network_interface_id: "eni-1".into(),
            mac_address: "02:00:00:00:00:01".into(),
            private_dns_name: "ip-10-0-0-5.ec2.internal".into(),
            private_ipv4_address: "10.0.0.5".into(),
        };
        let precreated =
            AttachmentReport { id: "a-1".into(), status: AttachmentStatus::Precreated, interface: Some(details) };
        merge(&mut t, &TaskReport::new(ARN).attachment(precreated));
        assert!(t.containers[0].network_interfaces.is_empty());
        let attached = AttachmentReport { id: "a-1".into(), status: AttachmentStatus::Attached, interface: None };
        merge(&mut t, &TaskReport::new(ARN).attachment(attached));
        assert_eq!(t.attachments.len(), 1);
        assert_eq!(t.attachments[0].status, AttachmentStatus::Attached);
        assert_eq!(t.attachments[0].details.len(), 5, "details are kept when a report omits them");
        for c in &t.containers {
            assert_eq!(c.network_interfaces[0].private_ipv4_address.as_deref(), Some("10.0.0.5"));
            assert_eq!(c.network_interfaces[0].attachment_id.as_deref(), Some("a-1"));
        }
        let deleted = AttachmentReport { id: "a-1".into(), status: AttachmentStatus::Deleted, interface: None };
        merge(&mut t, &TaskReport::new(ARN).attachment(deleted));
        assert_eq!(t.attachments[0].status, AttachmentStatus::Deleted);
    }
}
