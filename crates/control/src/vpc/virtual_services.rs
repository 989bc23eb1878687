//! Virtual services per VPC: Kubernetes ClusterIPs that every host serving the VPC routes
//! (`flotilla_net`'s DNAT, as kube-proxy would). One record per VPC and owner,
//! `ec2/virtual-services/<vpc-id>/<owner>`, written whole by its owner (the Fargate scheduler's
//! worker for EKS cluster `c` owns `eks:c`) and read, merged, into
//! [`flotilla_host::VpcView::virtual_services`]. Being under `ec2/`, each write fires the network
//! watch the agents follow, so they re-read the VPC.

use flotilla_host::{RuleProtocol, VirtualService};
use flotilla_store::{Op, Txn};

use super::{NetworkError, NetworkResource, check_id, decode, encode, keys};
use crate::Control;

fn check_owner(owner: &str) -> Result<(), NetworkError> {
    let ok = !owner.is_empty() && owner.len() <= 255 && !owner.contains('/');
    if ok { Ok(()) } else { Err(NetworkError::invalid_value(format!("The owner '{owner}' is invalid"))) }
}

fn check_service(service: &VirtualService) -> Result<(), NetworkError> {
    let what = format!("{}:{}", service.ip, service.port);
    if !matches!(service.protocol, RuleProtocol::Tcp | RuleProtocol::Udp) {
        return Err(NetworkError::invalid_value(format!("Virtual service {what}: the protocol must be TCP or UDP")));
    }
    if service.port == 0 || service.backends.iter().any(|b| b.port == 0) {
        return Err(NetworkError::invalid_value(format!("Virtual service {what}: port 0 is not a port")));
    }
    Ok(())
}

impl Control {
    /// Makes `owner`'s virtual services in `vpc_id` exactly `services` (none: removes its
    /// record). Writes only when they changed, so an owner may call it on every event.
    pub async fn set_virtual_services(
        &self,
        owner: &str,
        vpc_id: &str,
        services: Vec<VirtualService>,
    ) -> Result<(), NetworkError> {
        check_owner(owner)?;
        check_id(NetworkResource::Vpc, vpc_id)?;
        services.iter().try_for_each(check_service)?;
        let key = keys::virtual_services(vpc_id, owner);
        let current: Option<Vec<VirtualService>> = match self.store.get(&key).await? {
            Some(kv) => Some(decode(&kv)?),
            None => None,
        };
        if services.is_empty() {
            if current.is_some() {
                self.store.txn(Txn::new().then(Op::delete(key))).await?;
            }
            return Ok(());
        }
        if current.as_ref() == Some(&services) {
            return Ok(());
        }
        self.vpc(vpc_id).await?;
        self.store.txn(Txn::new().then(Op::put(key, encode(&services)))).await?;
        Ok(())
    }

    /// Every owner's virtual services in `vpc_id` (the first owner's where two name the same
    /// `ip:port`).
    pub async fn virtual_services(&self, vpc_id: &str) -> Result<Vec<VirtualService>, NetworkError> {
        let prefix = format!("{}{vpc_id}/", keys::VIRTUAL_SERVICES);
        let mut out: Vec<VirtualService> = Vec::new();
        for kv in self.store.list_prefix(&prefix).await? {
            let services: Vec<VirtualService> = decode(&kv)?;
            for s in services {
                if !out.iter().any(|o| (o.ip, o.port, o.protocol) == (s.ip, s.port, s.protocol)) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Every owner with virtual services in some VPC.
    pub async fn virtual_service_owners(&self) -> Result<Vec<String>, NetworkError> {
        let mut owners: Vec<String> = self
            .store
            .list_prefix(keys::VIRTUAL_SERVICES)
            .await?
            .iter()
            .filter_map(|kv| kv.key.rsplit_once('/').map(|(_, owner)| owner.to_owned()))
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Removes `owner`'s virtual services in every VPC (its EKS cluster is gone).
    pub async fn remove_virtual_services_of(&self, owner: &str) -> Result<(), NetworkError> {
        check_owner(owner)?;
        let suffix = format!("/{owner}");
        for kv in self.store.list_prefix(keys::VIRTUAL_SERVICES).await? {
            if kv.key.ends_with(&suffix) {
                self.store.txn(Txn::new().then(Op::delete(kv.key.clone()))).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_host::ServiceBackend;
    use flotilla_store::EmbeddedStore;

    use super::*;
    use crate::vpc::CreateVpcInput;
    use crate::{Control, Identity};

    fn service(ip: &str, backends: &[&str]) -> VirtualService {
        VirtualService {
            ip: ip.parse().unwrap(),
            port: 80,
            protocol: RuleProtocol::Tcp,
            backends: backends.iter().map(|b| ServiceBackend { ip: b.parse().unwrap(), port: 8080 }).collect(),
            names: vec![],
        }
    }

    #[tokio::test]
    async fn owners_write_whole_sets_that_a_vpc_reads_merged_and_the_network_watch_sees() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
        let c = Arc::new(Control::new(Arc::new(store), identity));
        let vpc = c.create_vpc(CreateVpcInput { cidr_block: "10.0.0.0/16".into(), tags: vec![] }).await.unwrap();
        let mut watch = c.store().watch(keys::PREFIX);

        c.set_virtual_services("eks:a", &vpc.id, vec![service("10.100.0.5", &["10.0.1.5"])]).await.unwrap();
        assert!(watch.next().await.unwrap().key().starts_with(keys::VIRTUAL_SERVICES));
        c.set_virtual_services("eks:b", &vpc.id, vec![service("10.100.0.6", &[]), service("10.100.0.5", &[])])
            .await
            .unwrap();
        let all = c.virtual_services(&vpc.id).await.unwrap();
        assert_eq!(
            all,
            vec![service("10.100.0.5", &["10.0.1.5"]), service("10.100.0.6", &[])],
            "the first owner's wins"
        );

        // The same set again writes nothing.
        let before = c.store().revision().await.unwrap();
        c.set_virtual_services("eks:a", &vpc.id, vec![service("10.100.0.5", &["10.0.1.5"])]).await.unwrap();
        assert_eq!(c.store().revision().await.unwrap(), before);

        assert_eq!(c.virtual_service_owners().await.unwrap(), vec!["eks:a", "eks:b"]);
        c.set_virtual_services("eks:a", &vpc.id, vec![]).await.unwrap();
        c.remove_virtual_services_of("eks:b").await.unwrap();
        assert!(c.virtual_services(&vpc.id).await.unwrap().is_empty());
        assert!(c.store().list_prefix(keys::VIRTUAL_SERVICES).await.unwrap().is_empty());

        let bad = |owner: &'static str, vpc: &'static str, s: VirtualService| {
            let c = c.clone();
            async move { c.set_virtual_services(owner, vpc, vec![s]).await.unwrap_err() }
        };
        assert!(matches!(
            bad("a/b", "vpc-12345678", service("10.1.0.1", &[])).await,
            NetworkError::InvalidParameterValue(_)
        ));
        assert!(matches!(bad("eks:a", "vpc-12345678", service("10.1.0.1", &[])).await, NetworkError::NotFound { .. }));
        let icmp = VirtualService { protocol: RuleProtocol::Icmp, ..service("10.1.0.1", &[]) };
        assert!(matches!(bad("eks:a", "vpc-12345678", icmp).await, NetworkError::InvalidParameterValue(_)));
    }
}
