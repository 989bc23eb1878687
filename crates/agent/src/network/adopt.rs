//! A restarted agent adopting a running task's interface: when the kernel already has it as
//! its lease says (rules, host link) and this agent serves its VPC's host side with its
//! groups, there is nothing to apply. The full `attach` would re-apply the interface's rules
//! through one `nft` run per task, whose cost grows with the table: at 1,000 tasks that made a
//! restart take tens of seconds. The host's interfaces are listed once, at the first adoption.

use std::collections::{BTreeSet, HashMap};

use flotilla_host::InterfaceLease;
use flotilla_net::InterfaceStatus;

use super::Networking;

impl Networking {
    pub(super) async fn wired(&self, lease: &InterfaceLease) -> bool {
        let listed = self
            .listed
            .get_or_init(|| async {
                let statuses = self.blocking(|net| net.list_interfaces()).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list the host's interfaces; adopted tasks' interfaces are applied again");
                    Vec::new()
                });
                statuses.into_iter().map(|s| (s.id.clone(), s)).collect::<HashMap<String, InterfaceStatus>>()
            })
            .await;
        let as_leased = listed.get(&lease.id).is_some_and(|s| {
            let groups: BTreeSet<&String> = s.security_groups.iter().collect();
            s.link_present
                && s.ip == Some(lease.private_ip)
                && s.vpc_id.as_deref() == Some(lease.vpc_id.as_str())
                && s.public_ip == lease.public_ip
                && groups == lease.security_groups.iter().collect()
        });
        if !as_leased {
            return false;
        }
        // The VPC's host side (resolver served, groups applied) is made once, by whichever
        // adopted task comes first; the others wait for it here rather than each attaching.
        if !self.hosts_side_of(lease) {
            let _turn = self.vpc_turn.write().await;
            if !self.hosts_side_of(lease)
                && let Err(e) = self.ensure_host_side(&lease.vpc_id, &lease.security_groups).await
            {
                tracing::warn!(vpc = %lease.vpc_id, error = %e, "cannot make the VPC's host side while adopting");
                return false;
            }
        }
        true
    }

    /// Whether this agent serves the lease's VPC with all of its groups applied.
    fn hosts_side_of(&self, lease: &InterfaceLease) -> bool {
        if !self.served.lock().expect("served lock").contains(&lease.vpc_id) {
            return false;
        }
        let synced = self.synced.lock().expect("synced lock");
        synced.0.contains(&lease.vpc_id) && lease.security_groups.iter().all(|g| synced.1.contains_key(g))
    }
}
